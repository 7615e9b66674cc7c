package releasekey

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestKeyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	pub, err := GenerateKeyFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateKeyFiles(dir); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("keygen over a key: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, PrivateKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("release.key: %v %v", err, st.Mode())
	}
	priv, err := LoadPrivateKey(filepath.Join(dir, PrivateKeyFile))
	if err != nil || !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) {
		t.Fatalf("load: %v", err)
	}
	line, err := os.ReadFile(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParsePublicKey(string(line))
	if err != nil || !bytes.Equal(back, pub) {
		t.Fatalf("parse release.pub: %v", err)
	}
	if _, err := ParsePublicKey("ssh-ed25519 AAAA"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a foreign key: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, PrivateKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrivateKey(filepath.Join(dir, PrivateKeyFile)); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("a key others may read: %v", err)
	}
}
