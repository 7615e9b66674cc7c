// Package releasekey reads and writes release signing keys. It needs only
// the standard library, so that the CLI links it without the peer.
package releasekey

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Key files: one line each, a type word then the key in base64, so that a
// public key pastes into config.toml's trusted_keys as it is.
const (
	publicKeyType  = "cortex-release-ed25519"
	privateKeyType = "cortex-release-ed25519-private"
	// PrivateKeyFile and PublicKeyFile are the names keygen writes.
	PrivateKeyFile = "release.key"
	PublicKeyFile  = "release.pub"
)

// KeyID is a short printable id of a public key.
func KeyID(pub []byte) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// FormatPublicKey is a public key as release.pub holds it.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return publicKeyType + " " + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey reads a public key as release.pub (and trusted_keys)
// holds it.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	typ, b64, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok || typ != publicKeyType {
		return nil, fmt.Errorf("release public key %.40q: want %q then the key in base64: %w", s, publicKeyType, errdefs.ErrInvalid)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("release public key %.40q: not %d bytes of base64: %w", s, ed25519.PublicKeySize, errdefs.ErrInvalid)
	}
	return ed25519.PublicKey(b), nil
}

// GenerateKeyFiles writes a new key pair into dir: release.key (0600) and
// release.pub. It refuses to replace an existing key.
func GenerateKeyFiles(dir string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate release key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	keyPath := filepath.Join(dir, PrivateKeyFile)
	line := privateKeyType + " " + base64.StdEncoding.EncodeToString(priv.Seed()) + "\n"
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%s exists: a release key is never replaced silently (move it away first): %w", keyPath, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", keyPath, err)
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", keyPath, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", keyPath, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", keyPath, err)
	}
	pubPath := filepath.Join(dir, PublicKeyFile)
	if err := os.WriteFile(pubPath, []byte(FormatPublicKey(pub)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", pubPath, err)
	}
	return pub, nil
}

// LoadPrivateKey reads release.key, refusing one that others may read.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("release key %s has mode %v: others may read it (chmod 600 %s): %w", path, st.Mode().Perm(), path, errdefs.ErrPermissionDenied)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	typ, b64, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok || typ != privateKeyType {
		return nil, fmt.Errorf("release key %s: not a %s file: %w", path, privateKeyType, errdefs.ErrInvalid)
	}
	seed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("release key %s: damaged: %w", path, errdefs.ErrInvalid)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
