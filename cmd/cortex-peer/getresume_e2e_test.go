package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestCLIGetInterruptedResumes: Ctrl-C stops a get cleanly, keeping what
// it fetched in a partial copy beside the destination and nothing at the
// destination; the same get completes it, fetching only the rest. The
// provider serves at 2 MB/s so that the interrupt lands half-way.
func TestCLIGetInterruptedResumes(t *testing.T) {
	bin := testnet.BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	work := t.TempDir()
	pn := processPair(ctx, t, bin, t.TempDir(), work, map[string]string{"serve_bytes_per_second = 0": "serve_bytes_per_second = 2000000"})
	p1, p2 := pn.Peers[0].DataDir, pn.Peers[1].DataDir
	data := make([]byte, 6<<20)
	_, _ = rand.Read(data)
	src := filepath.Join(work, "big.bin")
	testnet.WriteFile(t, src, data, 0o644)
	r := run(t, bin, "put", "--data", p1, src)
	if r.code != 0 {
		t.Fatalf("put: %s", r.stderr)
	}
	c := strings.TrimSpace(r.stdout)
	dest := filepath.Join(work, "got.bin")

	get := exec.Command(bin, "get", "--data", p2, c, "-o", dest)
	var stderr bytes.Buffer
	get.Stderr = &stderr
	if err := get.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := get.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := get.Wait(); !errors.As(err, &ee) || !strings.Contains(stderr.String(), "interrupted") || !strings.Contains(stderr.String(), "resume") {
		t.Fatalf("an interrupted get: %v, %s", err, stderr.String())
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the destination exists after an interrupted get: %v", err)
	}
	partials, _ := filepath.Glob(filepath.Join(work, ".got.bin.cortex-partial-*"))
	if len(partials) != 1 {
		t.Fatalf("partial copies: %v", partials)
	}

	r = run(t, bin, "get", "--json", "--data", p2, c, "-o", dest)
	var got struct {
		Fetched int64 `json:"fetched_bytes"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil {
		t.Fatalf("the second get: exit %d %s", r.code, r.stderr)
	}
	if b, err := os.ReadFile(dest); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the resumed file differs (%v)", err)
	}
	if got.Fetched == 0 || got.Fetched >= int64(len(data)) {
		t.Fatalf("the second get fetched %d of %d bytes: it did not resume", got.Fetched, len(data))
	}
	t.Logf("interrupted, then resumed: the second get fetched %d of %d bytes", got.Fetched, len(data))
	if partials, _ := filepath.Glob(filepath.Join(work, ".got.bin.cortex-partial-*")); len(partials) != 0 {
		t.Fatalf("partial copies left: %v", partials)
	}
}

// processPair starts two peer processes in dir, whose APIs may touch
// work, with edits to their config files; they stop when the test ends.
func processPair(ctx context.Context, t *testing.T, bin, dir, work string, edits map[string]string) *testnet.ProcessNet {
	t.Helper()
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 2, Dir: dir, Heartbeat: 300 * time.Millisecond,
		AllowedRoots: []string{work}, ConfigEdits: edits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pn.Stop() })
	if err := pn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return pn
}
