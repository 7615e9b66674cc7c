package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

var now = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

const someCID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"

func binaryOf(b []byte) (length int64, sum string) {
	h := sha256.Sum256(b)
	return int64(len(b)), hex.EncodeToString(h[:])
}

func manifest(version string, bin []byte) Manifest {
	n, sum := binaryOf(bin)
	return Manifest{Version: version, Platform: "linux/amd64", Binary: someCID, Length: n, SHA256: sum,
		Published: now.Add(-time.Hour), Expires: now.Add(720 * time.Hour), Rollout: 1}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t *testing.T, m Manifest, k ed25519.PrivateKey) Signed {
	t.Helper()
	s, err := Sign(m, k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every hostile release of the lifecycle issue is refused with its own
// kind; a good one passes.
func TestVerify(t *testing.T) {
	key, other := newKey(t), newKey(t)
	pol := Policy{TrustedKeys: []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}, Platform: "linux/amd64", Highest: "1.3.0", Now: now}
	bin := []byte("the new binary")
	good := sign(t, manifest("1.4.0", bin), key)
	if m, err := Verify(good, pol); err != nil || m.Version != "1.4.0" {
		t.Fatalf("a good release: %v %+v", err, m)
	}
	// The envelope survives the wire.
	wire, err := good.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(wire)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(back, pol); err != nil {
		t.Fatalf("after the wire: %v", err)
	}

	splice := func(edit func(*Manifest)) Signed {
		var m Manifest
		if err := json.Unmarshal(good.Manifest, &m); err != nil {
			t.Fatal(err)
		}
		edit(&m)
		b, _ := json.Marshal(m)
		return Signed{Manifest: b, Key: good.Key, Signature: good.Signature}
	}
	expired := manifest("1.4.0", bin)
	expired.Published, expired.Expires = now.Add(-48*time.Hour), now.Add(-time.Hour)
	for _, c := range []struct {
		name string
		s    Signed
		pol  Policy
		want error
	}{
		{"unknown key", sign(t, manifest("1.4.0", bin), other), pol, ErrUntrustedKey},
		{"spliced CID", splice(func(m *Manifest) { m.Binary = "bafkreiabcd" }), pol, ErrBadSignature},
		{"spliced platform", splice(func(m *Manifest) { m.Platform = "linux/arm64" }), pol, ErrBadSignature},
		{"spliced rollout", splice(func(m *Manifest) { m.Rollout = 0.5 }), pol, ErrBadSignature},
		{"signature of other bytes", Signed{Manifest: good.Manifest, Key: good.Key, Signature: sign(t, manifest("1.4.1", bin), key).Signature}, pol, ErrBadSignature},
		{"equal version (replay)", sign(t, manifest("1.3.0", bin), key), pol, ErrNotNewer},
		{"older version", sign(t, manifest("1.2.9", bin), key), pol, ErrNotNewer},
		{"expired", sign(t, expired, key), pol, ErrExpired},
		{"other platform", sign(t, func() Manifest { m := manifest("1.4.0", bin); m.Platform = "darwin/arm64"; return m }(), key), pol, ErrWrongPlatform},
		{"short key", Signed{Manifest: good.Manifest, Key: good.Key[:8], Signature: good.Signature}, pol, ErrMalformed},
		{"no trusted key", good, Policy{Platform: "linux/amd64", Now: now}, ErrUntrustedKey},
	} {
		if _, err := Verify(c.s, c.pol); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}

	// Unknown fields and trailing bytes in signed bytes are refused too:
	// what was signed must be what is read.
	extra := append(bytes.TrimSuffix(bytes.Clone(good.Manifest), []byte("}")), []byte(`,"x":1}`)...)
	if _, err := Verify(Signed{Manifest: extra, Key: good.Key, Signature: ed25519.Sign(key, extra)}, pol); !errors.Is(err, ErrMalformed) {
		t.Errorf("an unknown field: %v", err)
	}

	// Sign refuses a manifest it would not accept.
	bad := manifest("1.4", bin)
	bad.Version = "one"
	if _, err := Sign(bad, key); !errors.Is(err, ErrMalformed) {
		t.Errorf("sign a bad version: %v", err)
	}
	huge := manifest("1.4.0", bin)
	huge.Length = MaxBinarySize + 1
	if _, err := Sign(huge, key); !errors.Is(err, ErrTooLarge) || !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("sign a binary over the cap: %v", err)
	}
	if _, err := Decode(make([]byte, MaxSignedSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("an envelope over its cap: %v", err)
	}
	if _, err := Decode([]byte("{not json")); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage: %v", err)
	}
}

// A binary longer or shorter than signed, or with other bytes, is refused.
func TestCheckBinary(t *testing.T) {
	bin := []byte("the new binary")
	m := manifest("1.4.0", bin)
	if err := CheckBinary(m, bytes.NewReader(bin)); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"longer":  append(bytes.Clone(bin), '!'),
		"shorter": bin[:len(bin)-1],
		"other":   []byte("the new binarY"),
	} {
		if err := CheckBinary(m, bytes.NewReader(b)); !errors.Is(err, ErrBinaryMismatch) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The same version signed twice with different binaries: both refused,
// the first envelope returned as proof; the same manifest seen twice is
// fine.
func TestLedgerEquivocation(t *testing.T) {
	key := newKey(t)
	a := manifest("1.4.0", []byte("binary a"))
	b := manifest("1.4.0", []byte("binary b"))
	sa, sb := sign(t, a, key), sign(t, b, key)
	var l Ledger
	if _, err := l.Observe(sa, a); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Observe(sa, a); err != nil {
		t.Fatalf("the same release twice: %v", err)
	}
	proof, err := l.Observe(sb, b)
	if !errors.Is(err, ErrEquivocation) || !bytes.Equal(proof.Manifest, sa.Manifest) {
		t.Fatalf("a second binary for 1.4.0: %v", err)
	}
	if _, err := l.Observe(sa, a); !errors.Is(err, ErrEquivocation) {
		t.Fatalf("the first one after the proof: %v", err)
	}
}

// Rollout picks about the fraction asked for, and widening it keeps the
// peers already in.
func TestInRollout(t *testing.T) {
	m := manifest("1.4.0", []byte("x"))
	var ids []peer.ID
	for i := range 2000 {
		ids = append(ids, peer.ID("peer-"+string(rune('a'+i%26))+strings.Repeat("x", i/26)))
	}
	count := func(frac float64) (n int, in map[peer.ID]bool) {
		m.Rollout = frac
		in = map[peer.ID]bool{}
		for _, id := range ids {
			if InRollout(string(id), m) {
				n++
				in[id] = true
			}
		}
		return n, in
	}
	n20, in20 := count(0.2)
	if n20 < 300 || n20 > 500 {
		t.Fatalf("20%% rollout picked %d of 2000", n20)
	}
	n50, in50 := count(0.5)
	if n50 < 850 || n50 > 1150 {
		t.Fatalf("50%% rollout picked %d of 2000", n50)
	}
	for id := range in20 {
		if !in50[id] {
			t.Fatalf("peer %s left the rollout when it widened", id)
		}
	}
	if n, _ := count(1); n != len(ids) {
		t.Fatalf("a full rollout picked %d of %d", n, len(ids))
	}
}

// FuzzDecodeVerify: whatever arrives on the wire, decoding and verifying
// end in a manifest or an error, never a panic.
//
//	go test -run '^$' -fuzz FuzzDecodeVerify -fuzztime 60s ./node/release/
func FuzzDecodeVerify(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := Sign(manifest("1.4.0", []byte("bin")), key)
	wire, _ := good.Encode()
	f.Add(wire)
	f.Add([]byte(`{"manifest":"e30=","key":"","signature":""}`))
	f.Add([]byte(`{}`))
	pol := Policy{TrustedKeys: []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}, Platform: "linux/amd64", Highest: "1.0.0", Now: now}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			return
		}
		if m, err := Verify(s, pol); err == nil && m.Version == "" {
			t.Fatal("verified a manifest with no version")
		}
	})
}
