package main

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestFullDataDir: peers whose data dirs sit on a small file system. A put
// larger than the space left and a fetch into a store with no room fail
// with resource_exhausted and leave the peer serving; after a restart the
// store opens and verifies, and once space is freed the same fetch
// completes.
func TestFullDataDir(t *testing.T) {
	small := testnet.SmallTmpfs(t, 256)
	bin := testnet.BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	work := t.TempDir()
	pn := processPair(ctx, t, bin, filepath.Join(small, "peers"), work, nil)
	p1, p2 := pn.Peers[0], pn.Peers[1]
	randomFile := func(name string, size int) string {
		p := filepath.Join(work, name)
		b := make([]byte, size)
		_, _ = rand.Read(b)
		testnet.WriteFile(t, p, b, 0o644)
		return p
	}

	// A put larger than the disk.
	huge := randomFile("huge.bin", 200<<20)
	if r := run(t, bin, "put", "--data", p1.DataDir, huge); r.code == 0 || !strings.Contains(r.stderr, "no space left") {
		t.Fatalf("a put larger than the disk: exit %d %s", r.code, r.stderr)
	} else {
		t.Logf("put: %s", strings.TrimSpace(r.stderr))
	}
	if err := os.Remove(huge); err != nil {
		t.Fatal(err)
	}

	// A tree of 60 MiB on peer 1; 100 MiB of ballast beside the stores:
	// peer 2 has no room to fetch the tree and keep the store's reserve.
	tree := filepath.Join(work, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = randomFile("tree/a.bin", 30<<20)
	_ = randomFile("tree/b.bin", 30<<20)
	r := run(t, bin, "ws", "add", "--data", p1.DataDir, tree)
	if r.code != 0 {
		t.Fatalf("ws add: %s", r.stderr)
	}
	root := strings.TrimSpace(r.stdout)
	logDF(t, small, "after ws add")
	ballast := filepath.Join(small, "ballast")
	testnet.WriteFile(t, ballast, make([]byte, 100<<20), 0o644)
	dest := filepath.Join(work, "copy")
	r = run(t, bin, "ws", "get", "--data", p2.DataDir, root, dest)
	logDF(t, small, "after the refused fetch")
	if r.code == 0 || !strings.Contains(r.stderr, "no space left") {
		t.Fatalf("a fetch into a full store: exit %d %s", r.code, r.stderr)
	}
	t.Logf("ws get: %s", strings.TrimSpace(r.stderr))
	for _, p := range []*testnet.ProcessPeer{p1, p2} {
		select {
		case <-p.Exited(): // a peer that died is reaped at once
			b, _ := os.ReadFile(p.LogFile)
			t.Fatalf("%s stopped on a full disk; its log ends:\n%s", p.Name, b[max(0, len(b)-3000):])
		case <-time.After(time.Second):
		}
	}
	// After a restart the store opens and what it holds verifies.
	if err := p2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p2.Exited()
	if err := p2.Restart(ctx); err != nil {
		b, _ := os.ReadFile(p2.LogFile)
		t.Fatalf("restart on a full disk: %v\n%s", err, b[max(0, len(b)-3000):])
	}
	if r := run(t, bin, "ws", "verify", "--data", p2.DataDir); r.code != 0 {
		t.Fatalf("ws verify after a full disk: %s %s", r.stdout, r.stderr)
	}
	if err := pn.WaitRejoined(ctx, p2); err != nil {
		t.Fatal(err)
	}
	// Space freed: the same fetch completes.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(dest)
	if r := run(t, bin, "ws", "get", "--data", p2.DataDir, root, dest); r.code != 0 {
		t.Fatalf("the fetch once space is freed: %s", r.stderr)
	}
	if r := run(t, bin, "ws", "verify", "--data", p2.DataDir, root); r.code != 0 {
		t.Fatalf("ws verify of the tree: %s %s", r.stdout, r.stderr)
	}
}

func logDF(t *testing.T, path, when string) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err == nil {
		t.Logf("%s: %d MiB free of %d", when, int64(st.Bavail)*st.Bsize>>20, int64(st.Blocks)*st.Bsize>>20)
	}
}
