package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

func TestParseRollout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		err  string // part of the error; "" for none
	}{
		{in: "20%", want: 0.2},
		{in: "0.2", want: 0.2},
		{in: "1", want: 1},
		{in: "100%", want: 1},
		{in: " 5 % ", want: 0.05},
		{in: "0.5%", want: 0.005},
		{in: "0", err: "more than 0"},
		{in: "0%", err: "more than 0"},
		{in: "-10%", err: "more than 0"},
		{in: "150%", err: "at most 100%"},
		{in: "1.01", err: "at most 100%"},
		{in: "20", err: "did you mean 20%?"},
		{in: "abc", err: "want a percentage"},
		{in: "", err: "want a percentage"},
		{in: "%", err: "want a percentage"},
		{in: "NaN", err: "want a percentage"},
		{in: "Inf%", err: "want a percentage"},
	} {
		got, err := parseRollout(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseRollout(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got < tc.want-1e-12 || got > tc.want+1e-12 {
			t.Errorf("parseRollout(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatRollout(t *testing.T) {
	for in, want := range map[float64]string{1: "100%", 0.2: "20%", 0.05: "5%", 0.125: "12.5%"} {
		if got := formatRollout(in); got != want {
			t.Errorf("formatRollout(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestHashBinary(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("cortex"), 3<<20) // past one progress step
	p := filepath.Join(dir, "bin")
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	var events int
	sum, n, err := hashBinary(p, func(*apiv1.Progress) { events++ })
	want := sha256.Sum256(data)
	if err != nil || sum != hex.EncodeToString(want[:]) || n != int64(len(data)) {
		t.Fatalf("hashBinary: %s %d %v, want %x %d", sum, n, err, want, len(data))
	}
	if events == 0 {
		t.Error("no progress while hashing")
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hashBinary(empty, nil); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty binary: %v", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, releasekey.MaxBinarySize+1); err != nil { // sparse
		t.Fatal(err)
	}
	if _, _, err := hashBinary(big, nil); err == nil || !strings.Contains(err.Error(), "over the 512.0MiB") {
		t.Errorf("binary over the cap: %v", err)
	}
	if _, _, err := hashBinary(dir, nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory as the binary: %v", err)
	}
}

// publish refuses what it can before it reaches a peer: --data names a
// directory where none runs, so getting that far would fail otherwise.
func TestReleasePublishRefusesEarly(t *testing.T) {
	dir := t.TempDir()
	if _, err := releasekey.GenerateKeyFiles(dir); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, releasekey.PrivateKeyFile)
	bin := filepath.Join(dir, "cortex-peerd")
	if err := os.WriteFile(bin, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		err   string
		usage bool
	}{
		{[]string{"--binary", bin, "--version", "1.4.0"}, "--key release.key is required", true},
		{[]string{"--key", key, "--version", "1.4.0"}, "--binary PATH is required", true},
		{[]string{"--key", key, "--binary", bin}, "--version is required", true},
		{[]string{"--key", key, "--binary", bin, "--version", "latest"}, "not a semantic version", true},
		{[]string{"--key", key, "--binary", bin, "--version", "1.4.0", "--rollout", "150%"}, "at most 100%", true},
		{[]string{"--key", key, "--binary", bin, "--version", "1.4.0", "--expires", "-1h"}, "--expires", true},
		{[]string{"--key", key, "--binary", bin, "--version", "1.4.0", "--platform", "linux"}, "platform", true},
		{[]string{"--key", key, "--binary", empty, "--version", "1.4.0"}, "is empty", false},
		{[]string{"--key", filepath.Join(dir, "none.key"), "--binary", bin, "--version", "1.4.0"}, "release key", false},
	} {
		g := &Globals{}
		root := NewRoot(g)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"release", "publish", "--data", filepath.Join(dir, "no-peer")}, tc.args...))
		err := root.Execute()
		_, isUsage := err.(UsageError)
		if err == nil || !strings.Contains(err.Error(), tc.err) || isUsage != tc.usage {
			t.Errorf("publish %q: %v (usage %v); want %q (usage %v)", tc.args, err, isUsage, tc.err, tc.usage)
		}
	}
}

func TestPrintUpdateStatus(t *testing.T) {
	now := time.Unix(1_700_000_100, 0)
	var b bytes.Buffer
	err := printUpdateStatus(&b, &apiv1.UpdateStatus{
		Version: "1.4.0", Current: "1.4.0", Previous: "", Highest: "1.4.0", State: "trial",
		Enabled: true, Supervised: false, TrustedKeys: []string{"0123abcd01234567"}, HealthTimeoutMs: 120_000,
		Releases: []*apiv1.UpdateRelease{{Version: "1.4.0", Binary: "bafyrelease", Length: 43_200_000, Rollout: 0.2, KeyId: "0123abcd01234567",
			From: "12D3KooWabcdefghijklmnop", Verdict: "installed", SeenUnix: 1_700_000_000, ExpiresUnix: 1_702_592_000}},
		Failures: []*apiv1.UpdateFailure{{Version: "1.3.9", Peer: "12D3KooWqrstuvwxyz012345", Reason: "not healthy\nwithin 2m", AtUnix: 1_700_000_040}},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{"running:", "1.4.0", "previous:", "state:", "trial", "health timeout:", "2m0s",
		"supervised:", "cannot swap binaries", "0123abcd01234567", "41.2MiB", "20%", "installed", "1m40s ago",
		"2023-12-14T22:13:20Z", "…ghijklmnop", "1.3.9", "not healthy within 2m"} {
		if !strings.Contains(s, want) {
			t.Errorf("status lacks %q:\n%s", want, s)
		}
	}
}
