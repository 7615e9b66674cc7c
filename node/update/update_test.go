package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/node/release"
	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
	"github.com/cortex-peer/cortex-peer/node/update/releasedir"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestWindow(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 3, h, m, 0, 0, time.Local) }
	for _, c := range []struct {
		w          string
		open, shut []time.Time
	}{
		{"", []time.Time{at(0, 0), at(13, 37)}, nil},
		{"02:00-05:00", []time.Time{at(2, 0), at(4, 59)}, []time.Time{at(1, 59), at(5, 0), at(14, 0)}},
		{"22:00-04:00", []time.Time{at(23, 0), at(0, 30), at(3, 59)}, []time.Time{at(4, 0), at(12, 0), at(21, 59)}},
	} {
		w, err := ParseWindow(c.w)
		if err != nil {
			t.Fatalf("%q: %v", c.w, err)
		}
		if w.String() != c.w {
			t.Errorf("%q prints as %q", c.w, w.String())
		}
		for _, tm := range c.open {
			if !w.Open(tm) {
				t.Errorf("%q shut at %s", c.w, tm.Format("15:04"))
			}
		}
		for _, tm := range c.shut {
			if w.Open(tm) {
				t.Errorf("%q open at %s", c.w, tm.Format("15:04"))
			}
		}
	}
	for _, bad := range []string{"2-5", "02:00", "25:00-01:00", "02:00-02:00", "02:60-03:00", "x"} {
		if _, err := ParseWindow(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("window %q: %v", bad, err)
		}
	}
}

func signed(t testing.TB, key ed25519.PrivateKey, version, binary string) releasekey.Signed {
	t.Helper()
	now := time.Now().UTC()
	s, err := releasekey.Sign(releasekey.Manifest{
		Version: version, Platform: "linux/amd64", Binary: binary, Length: 10,
		SHA256: strings.Repeat("ab", 32), Published: now, Expires: now.Add(time.Hour), Rollout: 1,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const cidA = "bafkreicf2vjl5unfwv36ij3f7xkydt5f2jdzbibl442x667eyjwzw2qcjy"

// What the release topic's validator lets through: one well-formed part
// whose signatures verify; everything else is refused before delivery.
func TestValidateMessage(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	good := signed(t, key, "1.4.0", cidA)
	other := signed(t, key, "1.4.0", "bafkreiabvi5tdrg6f6ogpqmn7lqpj5gjlc53zsnxw2ljn7tqyl7lk7bjvu")
	enc := func(m message) []byte { b, _ := json.Marshal(m); return b }
	forged := good
	forged.Manifest = []byte(strings.Replace(string(good.Manifest), "1.4.0", "9.9.9", 1))
	for _, c := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"release", enc(message{Release: &good}), true},
		{"failure", enc(message{Failure: &failure{Version: "1.4.0", Reason: "exited"}}), true},
		{"proof", enc(message{Equivocation: []releasekey.Signed{good, other}}), true},
		{"forged release", enc(message{Release: &forged}), false},
		{"proof of nothing", enc(message{Equivocation: []releasekey.Signed{good, good}}), false},
		{"proof of one", enc(message{Equivocation: []releasekey.Signed{good}}), false},
		{"two parts", enc(message{Release: &good, Failure: &failure{Version: "1.4.0"}}), false},
		{"empty", []byte(`{}`), false},
		{"bad failure version", enc(message{Failure: &failure{Version: "../x"}}), false},
		{"long reason", enc(message{Failure: &failure{Version: "1.4.0", Reason: strings.Repeat("x", maxReason+1)}}), false},
		{"unknown field", []byte(`{"release":null,"x":1}`), false},
		{"garbage", []byte("\x00\xff"), false},
	} {
		err := validateMessage("", c.data)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// Nothing from the wire makes the validator panic.
func FuzzValidateMessage(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	good := signed(f, key, "1.4.0", cidA)
	b, _ := json.Marshal(message{Release: &good})
	f.Add(b)
	f.Add([]byte(`{"failure":{"version":"1.0.0","reason":"x"}}`))
	f.Add([]byte(`{"equivocation":[{},{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = validateMessage("", data)
	})
}

// fakeBinaries serves one body for every fetch: what a hostile peer could
// serve under a signed CID.
type fakeBinaries struct{ body []byte }

func (f fakeBinaries) Fetch(_ context.Context, _ cid.Cid, dest string) error {
	return os.WriteFile(dest, f.body, 0o644)
}
func (f fakeBinaries) Read(context.Context, cid.Cid, int64, io.Writer) error { return nil }
func (f fakeBinaries) Keep(string, cid.Cid) error                            { return nil }

type countRestarts struct{ n int }

func (c *countRestarts) Restart(context.Context) { c.n++ }

// A binary longer, shorter or other than signed is never installed: the
// current version and the links stay as they were, and nothing restarts.
func TestInstallRefusesAnotherBinary(t *testing.T) {
	signedBody := []byte("the signed binary")
	sum := sha256.Sum256(signedBody)
	now := time.Now().UTC()
	m := releasekey.Manifest{Version: "1.4.0", Platform: "linux/amd64", Binary: cidA, Length: int64(len(signedBody)),
		SHA256: hex.EncodeToString(sum[:]), Published: now, Expires: now.Add(time.Hour), Rollout: 1}
	for name, body := range map[string][]byte{
		"longer":  append(bytes.Clone(signedBody), '!'),
		"shorter": signedBody[:5],
		"other":   []byte("the signed binarY"),
	} {
		t.Run(name, func(t *testing.T) {
			dir := releasedir.New(t.TempDir())
			restarts := &countRestarts{}
			s := &Service{cfg: Config{Releases: dir}, deps: Deps{Binaries: fakeBinaries{body}, Restarter: restarts}, log: slog.New(slog.DiscardHandler)}
			err := s.install(context.Background(), releasekey.Signed{Key: make([]byte, 32)}, m)
			if !errors.Is(err, release.ErrBinaryMismatch) {
				t.Fatalf("install of a %s binary: %v", name, err)
			}
			if cur, _ := dir.Current(); cur != "" || restarts.n != 0 {
				t.Fatalf("current %q, restarts %d", cur, restarts.n)
			}
			if _, err := os.Stat(dir.BinaryPath("1.4.0")); err == nil {
				t.Fatal("the refused binary was installed")
			}
		})
	}
	// The signed bytes install and restart.
	dir := releasedir.New(t.TempDir())
	restarts := &countRestarts{}
	s := &Service{cfg: Config{Releases: dir}, deps: Deps{Binaries: fakeBinaries{signedBody}, Restarter: restarts}, log: slog.New(slog.DiscardHandler)}
	if err := s.install(context.Background(), releasekey.Signed{Key: make([]byte, 32)}, m); err != nil {
		t.Fatal(err)
	}
	if cur, _ := dir.Current(); cur != "1.4.0" || restarts.n != 1 {
		t.Fatalf("current %q, restarts %d", cur, restarts.n)
	}
}
