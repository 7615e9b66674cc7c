// Package release is the mesh's self-update: release manifests signed with
// an ed25519 release key, and the checks a peer that trusts the key runs
// before it acts on one (signature, platform, a version strictly above the
// highest ever installed, expiry, size, and the binary's length and hash).
//
// A manifest travels as a Signed envelope: the manifest's exact bytes (JSON),
// the public key and the signature over those bytes. Signing bytes rather
// than a structure means no canonical encoding is needed: what was signed is
// what is decoded.
package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Bounds of what a peer accepts from the wire.
const (
	MaxSignedSize = releasekey.MaxSignedSize
	MaxBinarySize = releasekey.MaxBinarySize
)

// Kinds of refusal, each wrapping an errdefs kind.
var (
	ErrMalformed      = releasekey.ErrMalformed
	ErrUntrustedKey   = fmt.Errorf("release signed by a key this peer does not trust: %w", errdefs.ErrPermissionDenied)
	ErrBadSignature   = fmt.Errorf("release signature does not verify: %w", errdefs.ErrPermissionDenied)
	ErrWrongPlatform  = fmt.Errorf("release is for another platform: %w", errdefs.ErrInvalid)
	ErrNotNewer       = fmt.Errorf("release is not newer than the highest version installed: %w", errdefs.ErrInvalid)
	ErrExpired        = fmt.Errorf("release manifest has expired: %w", errdefs.ErrInvalid)
	ErrTooLarge       = releasekey.ErrTooLarge
	ErrBinaryMismatch = fmt.Errorf("release binary differs from what was signed: %w", errdefs.ErrInvalid)
	ErrEquivocation   = fmt.Errorf("one version signed twice with different binaries: %w", errdefs.ErrPermissionDenied)
)

// Manifest describes one release of the peer's binary; Signed is one as it
// travels. Both live in releasekey so that the CLI signs without the peer.
type (
	Manifest = releasekey.Manifest
	Signed   = releasekey.Signed
)

// Sign encodes m and signs it with key.
func Sign(m Manifest, key ed25519.PrivateKey) (Signed, error) { return releasekey.Sign(m, key) }

// Decode parses an envelope from the wire, refusing one over the cap.
func Decode(b []byte) (Signed, error) {
	if len(b) > MaxSignedSize {
		return Signed{}, fmt.Errorf("release of %d bytes, cap %d: %w", len(b), MaxSignedSize, ErrTooLarge)
	}
	var s Signed
	if err := protocol.DecodeStrictJSON(b, &s); err != nil {
		return Signed{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return s, nil
}

// Policy is what a peer checks a release against.
type Policy struct {
	TrustedKeys []ed25519.PublicKey
	Platform    string    // this peer's GOOS/GOARCH
	Highest     string    // the highest version ever installed here ("" : none)
	Now         time.Time // the time checked against the expiry
}

// Verify checks an envelope against the policy and returns its manifest.
// Every check runs before anything is acted on; the order puts the cheap
// ones that need no trust first.
func Verify(s Signed, p Policy) (Manifest, error) {
	if len(s.Key) != ed25519.PublicKeySize || len(s.Signature) != ed25519.SignatureSize {
		return Manifest{}, fmt.Errorf("%w: key of %d bytes, signature of %d", ErrMalformed, len(s.Key), len(s.Signature))
	}
	if !Trusts(p.TrustedKeys, s.Key) {
		return Manifest{}, fmt.Errorf("%w (key %s)", ErrUntrustedKey, releasekey.KeyID(s.Key))
	}
	if !ed25519.Verify(s.Key, s.Manifest, s.Signature) {
		return Manifest{}, ErrBadSignature
	}
	var m Manifest
	if err := protocol.DecodeStrictJSON(s.Manifest, &m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := check(m); err != nil {
		return Manifest{}, err
	}
	if m.Platform != p.Platform {
		return Manifest{}, fmt.Errorf("%w: %s, this peer is %s", ErrWrongPlatform, m.Platform, p.Platform)
	}
	if p.Highest != "" && releasekey.CompareVersions(m.Version, p.Highest) <= 0 {
		return Manifest{}, fmt.Errorf("%w: %s, installed up to %s", ErrNotNewer, m.Version, p.Highest)
	}
	if !p.Now.Before(m.Expires) {
		return Manifest{}, fmt.Errorf("%w: at %s", ErrExpired, m.Expires.Format(time.RFC3339))
	}
	return m, nil
}

// Trusts reports whether key is one of keys.
func Trusts(keys []ed25519.PublicKey, key []byte) bool {
	return slices.ContainsFunc(keys, func(k ed25519.PublicKey) bool { return bytes.Equal(k, key) })
}

// check validates a manifest's fields, its binary's CID included.
func check(m Manifest) error {
	if err := m.Check(); err != nil {
		return err
	}
	if _, err := cid.Parse(m.Binary); err != nil {
		return fmt.Errorf("%w: binary CID %q: %v", ErrMalformed, m.Binary, err)
	}
	return nil
}

// CheckBinary reads a binary and checks its length and hash against m.
// It reads at most one byte past the signed length.
func CheckBinary(m Manifest, r io.Reader) error {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, m.Length+1))
	if err != nil {
		return fmt.Errorf("read release binary: %w", err)
	}
	if n != m.Length {
		return fmt.Errorf("%w: %d bytes or more, signed %d", ErrBinaryMismatch, n, m.Length)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(m.SHA256) {
		return fmt.Errorf("%w: sha256 %s, signed %s", ErrBinaryMismatch, got, m.SHA256)
	}
	return nil
}

// InRollout reports whether peer id (as printed, 12D3KooW…) is in the fraction of peers that
// install m: a hash of the peer and the version, so that each release picks
// its own first peers, and widening the fraction keeps those already in.
func InRollout(id string, m Manifest) bool {
	return RolloutPoint(id, m.Version) < m.Rollout
}

// RolloutPoint is where peer id falls in [0, 1) for version: the peer is
// in every rollout of that version above it.
func RolloutPoint(id, version string) float64 {
	h := sha256.Sum256([]byte(id + "\x00" + version))
	return float64(binary.BigEndian.Uint64(h[:8])>>11) / float64(1<<53)
}

// Ledger remembers the manifests seen per key and version, to catch a key
// that signs one version twice with different binaries: both are refused
// from then on, and the two envelopes are the proof.
type Ledger struct {
	seen map[string]Signed // key id + version -> first envelope
	bad  map[string]bool
}

// Observe records s (already verified as m). It returns ErrEquivocation,
// with the earlier envelope as proof, when the same key signed the same
// version over another binary, and for every later envelope of that
// version.
func (l *Ledger) Observe(s Signed, m Manifest) (proof Signed, err error) {
	if l.seen == nil {
		l.seen, l.bad = map[string]Signed{}, map[string]bool{}
	}
	k := releasekey.KeyID(s.Key) + "/" + releasekey.CanonicalVersion(m.Version)
	first, ok := l.seen[k]
	if !ok {
		l.seen[k] = s
		return Signed{}, nil
	}
	var fm Manifest
	if err := protocol.DecodeStrictJSON(first.Manifest, &fm); err != nil {
		return Signed{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if l.bad[k] || fm.Binary != m.Binary || !strings.EqualFold(fm.SHA256, m.SHA256) || fm.Length != m.Length || fm.Platform != m.Platform {
		l.bad[k] = true
		return first, fmt.Errorf("%w: %s by key %s", ErrEquivocation, m.Version, releasekey.KeyID(s.Key))
	}
	return Signed{}, nil
}
