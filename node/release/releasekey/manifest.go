package releasekey

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/semver"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Bounds of a release, checked on both sides of the wire.
const (
	// MaxSignedSize bounds an envelope (manifest, key and signature).
	MaxSignedSize = 4 << 10
	// MaxBinarySize bounds the binary a manifest may name.
	MaxBinarySize = 512 << 20
)

// Kinds of a manifest's own faults, each wrapping an errdefs kind.
var (
	ErrMalformed = fmt.Errorf("malformed release manifest: %w", errdefs.ErrInvalid)
	ErrTooLarge  = fmt.Errorf("release over its size cap: %w", errdefs.ErrResourceExhausted)
)

// Manifest describes one release of the peer's binary. It lives here, with
// the keys, so that the CLI signs releases without linking the peer.
type Manifest struct {
	Version  string `json:"version"`  // semantic version, "1.4.0"
	Platform string `json:"platform"` // GOOS/GOARCH, "linux/amd64"
	Binary   string `json:"binary"`   // CID of the binary's file DAG
	Length   int64  `json:"length"`   // the binary's length in bytes
	SHA256   string `json:"sha256"`   // hex SHA-256 of the binary
	// Published and Expires bound when peers act on it.
	Published time.Time `json:"published"`
	Expires   time.Time `json:"expires"`
	// Rollout is the fraction of peers that install it, in (0, 1].
	Rollout float64 `json:"rollout"`
}

// Signed is a manifest as it travels: its bytes, the key that signed them
// and the signature. Signing bytes rather than a structure means no
// canonical encoding is needed: what was signed is what is decoded.
type Signed struct {
	Manifest  []byte `json:"manifest"`
	Key       []byte `json:"key"` // ed25519 public key, 32 bytes
	Signature []byte `json:"signature"`
}

// Sign encodes m and signs it with key.
func Sign(m Manifest, key ed25519.PrivateKey) (Signed, error) {
	if err := m.Check(); err != nil {
		return Signed{}, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return Signed{}, fmt.Errorf("encode manifest: %w", err)
	}
	return Signed{Manifest: b, Key: key.Public().(ed25519.PublicKey), Signature: ed25519.Sign(key, b)}, nil
}

// Encode is the envelope's wire form.
func (s Signed) Encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode release: %w", err)
	}
	if len(b) > MaxSignedSize {
		return nil, fmt.Errorf("release of %d bytes, cap %d: %w", len(b), MaxSignedSize, ErrTooLarge)
	}
	return b, nil
}

// Check validates a manifest's fields on their own (the binary's CID is
// checked by the peer, which parses CIDs).
func (m Manifest) Check() error {
	switch {
	case !semver.IsValid(CanonicalVersion(m.Version)):
		return fmt.Errorf("%w: version %q is not a semantic version (1.4.0)", ErrMalformed, m.Version)
	case !validPlatform(m.Platform):
		return fmt.Errorf("%w: platform %q, want GOOS/GOARCH", ErrMalformed, m.Platform)
	case m.Length <= 0:
		return fmt.Errorf("%w: length %d", ErrMalformed, m.Length)
	case m.Length > MaxBinarySize:
		return fmt.Errorf("binary of %d bytes, cap %d: %w", m.Length, MaxBinarySize, ErrTooLarge)
	case len(m.SHA256) != 64 || !isHex(m.SHA256):
		return fmt.Errorf("%w: sha256 %q", ErrMalformed, m.SHA256)
	case m.Rollout <= 0 || m.Rollout > 1:
		return fmt.Errorf("%w: rollout %v, want (0, 1]", ErrMalformed, m.Rollout)
	case m.Expires.IsZero() || !m.Published.Before(m.Expires):
		return fmt.Errorf("%w: expires %v, published %v", ErrMalformed, m.Expires, m.Published)
	case m.Binary == "":
		return fmt.Errorf("%w: no binary CID", ErrMalformed)
	}
	return nil
}

// CanonicalVersion is v with the "v" semver wants.
func CanonicalVersion(v string) string {
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	return v
}

// CompareVersions compares two semantic versions ("1.4.0" or "v1.4.0") as
// semver does; an invalid version is below every valid one.
func CompareVersions(a, b string) int {
	return semver.Compare(CanonicalVersion(a), CanonicalVersion(b))
}

// ValidVersion reports whether v is a semantic version.
func ValidVersion(v string) bool { return v != "" && semver.IsValid(CanonicalVersion(v)) }

func validPlatform(p string) bool {
	goos, goarch, ok := strings.Cut(p, "/")
	return ok && goos != "" && goarch != "" && !strings.ContainsAny(goarch, "/ ")
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}
