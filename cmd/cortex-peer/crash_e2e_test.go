package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestKillNineDuringStoreWork: a peer killed with SIGKILL in the middle of
// an import (put), a fetch (get), a GC and a merge opens its store again
// after a restart, every stored block verifies and every pin's DAG is
// whole (ws verify exits 0), a merged directory holds only whole files,
// and the same command run again completes.
func TestKillNineDuringStoreWork(t *testing.T) {
	bin := testnet.BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	work := t.TempDir()
	pn := processPair(ctx, t, bin, t.TempDir(), work, nil)
	p1, p2 := pn.Peers[0], pn.Peers[1]
	src := filepath.Join(work, "big.bin")
	data := make([]byte, 192<<20)
	_, _ = rand.Read(data)
	testnet.WriteFile(t, src, data, 0o644)
	// killDuring starts args against p, kills p with SIGKILL after delay,
	// restarts it, and checks its store.
	killDuring := func(what string, p *testnet.ProcessPeer, delay time.Duration, args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--data", p.DataDir)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		if err := p.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("%s: kill: %v", what, err)
		}
		<-p.Exited()
		err := cmd.Wait()
		t.Logf("%s: killed after %s; the command: %v", what, delay, err)
		if err := p.Restart(ctx); err != nil {
			t.Fatalf("%s: restart: %v", what, err)
		}
		verifyStore(t, bin, p)
	}

	// A whole put first: its time places the next kill half-way; its
	// blocks, unpinned, are what the GC is killed in the middle of.
	start := time.Now()
	r := run(t, bin, "put", "--data", p1.DataDir, src)
	if r.code != 0 {
		t.Fatalf("put: %s", r.stderr)
	}
	took := time.Since(start)
	c := strings.TrimSpace(r.stdout)
	if r := run(t, bin, "unpin", "--data", p1.DataDir, c); r.code != 0 {
		t.Fatalf("unpin: %s", r.stderr)
	}
	killDuring("gc", p1, 20*time.Millisecond, "ws", "gc")
	if r := run(t, bin, "ws", "gc", "--data", p1.DataDir); r.code != 0 {
		t.Fatalf("gc after the kill: %s", r.stderr)
	}

	killDuring("put", p1, took/2, "put", src)
	if r := run(t, bin, "put", "--data", p1.DataDir, src); r.code != 0 || strings.TrimSpace(r.stdout) != c {
		t.Fatalf("put after the kill: %s %s", r.stdout, r.stderr)
	}
	if err := pn.WaitRejoined(ctx, p1); err != nil {
		t.Fatal(err)
	}

	dest := filepath.Join(work, "got.bin")
	killDuring("get", p2, 400*time.Millisecond, "get", c, "-o", dest)
	if err := pn.WaitRejoined(ctx, p2); err != nil {
		t.Fatal(err)
	}
	if r := run(t, bin, "get", "--data", p2.DataDir, c, "-o", dest); r.code != 0 {
		t.Fatalf("get after the kill: %s", r.stderr)
	}
	if b, err := os.ReadFile(dest); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the file got after the kill differs (%v)", err)
	}
	if r := run(t, bin, "ws", "verify", "--data", p2.DataDir, c); r.code != 0 {
		t.Fatalf("ws verify of the file got: %s %s", r.stdout, r.stderr)
	}

	// A merge killed half-way: every file of the directory is whole, old
	// or new, and the merge run again completes.
	base, theirs := filepath.Join(work, "base"), filepath.Join(work, "theirs")
	v1, v2 := make([]byte, 48<<20), make([]byte, 48<<20)
	_, _ = rand.Read(v1)
	_, _ = rand.Read(v2)
	for _, f := range []struct {
		dir  string
		data []byte
	}{{base, v1}, {theirs, v2}} {
		for _, name := range []string{"one.bin", "two.bin", "three.bin"} {
			testnet.WriteFile(t, filepath.Join(f.dir, name), f.data, 0o644)
		}
	}
	add := func(dir string) string {
		r := run(t, bin, "ws", "add", "--data", p1.DataDir, dir)
		if r.code != 0 {
			t.Fatalf("ws add %s: %s", dir, r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}
	baseCID, theirsCID := add(base), add(theirs)
	timed, mine := filepath.Join(work, "timed"), filepath.Join(work, "mine")
	for _, d := range []string{timed, mine} {
		if r := run(t, bin, "ws", "get", "--data", p1.DataDir, baseCID, d); r.code != 0 {
			t.Fatalf("ws get: %s", r.stderr)
		}
	}
	start = time.Now()
	if r := run(t, bin, "ws", "merge", "--data", p1.DataDir, baseCID, theirsCID, timed); r.code != 0 {
		t.Fatalf("ws merge: %s", r.stderr)
	}
	killedPid := p1.Pid()
	killDuring("merge", p1, time.Since(start)/2, "ws", "merge", baseCID, theirsCID, mine)
	for _, name := range []string{"one.bin", "two.bin", "three.bin"} {
		b, err := os.ReadFile(filepath.Join(mine, name))
		if err != nil || !bytes.Equal(b, v1) && !bytes.Equal(b, v2) {
			t.Fatalf("%s after a merge killed half-way is neither the old file nor the new (%d bytes, %v)", name, len(b), err)
		}
	}
	left := scratchIn(t, mine, ".cortex-merge-")
	t.Logf("the killed merge left %v", left)
	if len(left) == 0 {
		// Killed between two files: leave what a kill in the middle of
		// one leaves, a scratch file named by the dead peer's pid.
		testnet.WriteFile(t, filepath.Join(mine, fmt.Sprintf(".one.bin.cortex-merge-%d.0f3a9c1b2d4e", killedPid)), v2[:1<<20], 0o644)
	}
	if r := run(t, bin, "ws", "merge", "--data", p1.DataDir, baseCID, theirsCID, mine); r.code != 0 {
		t.Fatalf("ws merge after the kill: %s %s", r.stdout, r.stderr)
	}
	for _, name := range []string{"one.bin", "two.bin", "three.bin"} {
		if b, err := os.ReadFile(filepath.Join(mine, name)); err != nil || !bytes.Equal(b, v2) {
			t.Fatalf("%s after the merge run again differs (%v)", name, err)
		}
	}
	// The merge run again removed the scratch files the killed one left.
	if left := scratchIn(t, mine, ".cortex-merge-"); len(left) > 0 {
		t.Fatalf("scratch files of the killed merge still there after the next: %v", left)
	}
	if b, _ := os.ReadFile(p1.LogFile); !bytes.Contains(b, []byte("removed scratch files an interrupted merge left")) {
		t.Fatal("the merge run again did not log the scratch files it removed")
	}
	// A scratch file the killed merge left is no part of the workspace.
	if r := run(t, bin, "ws", "add", "--data", p1.DataDir, mine); r.code != 0 || strings.TrimSpace(r.stdout) != theirsCID {
		entries, _ := os.ReadDir(mine)
		t.Fatalf("the merged directory imports as %s, want %s (%v): %s", strings.TrimSpace(r.stdout), theirsCID, entries, r.stderr)
	}
}

// scratchIn lists the names in dir that hold mark.
func scratchIn(t *testing.T, dir, mark string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), mark) {
			out = append(out, e.Name())
		}
	}
	return out
}

// kill -9 of a coordinator after its task's result came and before the
// merge into the caller's directory was done (the executor serves at
// 20 MB/s, so fetching the 40 MB result takes two seconds): started again,
// the coordinator fetches and merges it, and its store verifies. It used
// to keep the record as delivered and never merge, with the result's root
// pinned and its blocks missing.
func TestKillCoordinatorBeforeMerge(t *testing.T) {
	bin := testnet.BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	work := t.TempDir()
	edits := map[string]string{"serve_bytes_per_second = 0": "serve_bytes_per_second = 20000000"}
	maps.Copy(edits, testnet.TestNamespaceEdit)
	pn := processPair(ctx, t, bin, t.TempDir(), work, edits)
	coord, exec := pn.Peers[0], pn.Peers[1]
	ws := filepath.Join(work, "ws")
	testnet.WriteFile(t, filepath.Join(ws, "keep.txt"), []byte("mine\n"), 0o644)
	running := make(chan result, 1)
	go func() {
		running <- run(t, bin, "run", "--data", coord.DataDir, "--peer", exec.ID, "--workspace", ws, "--",
			"sh", "-c", "dd if=/dev/urandom of=big.bin bs=1M count=40 2>/dev/null; echo made")
	}()
	var id string
	waitFor(t, "the result at the coordinator, before its merge", 90*time.Second, func() bool {
		r := run(t, bin, "tasks", "--json", "--data", coord.DataDir)
		var list []struct {
			ID    string `json:"task_id"`
			State string `json:"state"`
		}
		if json.Unmarshal([]byte(r.stdout), &list) != nil || len(list) == 0 {
			return false
		}
		id = list[0].ID
		return list[0].State == "delivered"
	})
	if err := coord.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-coord.Exited()
	<-running
	if _, err := os.Stat(filepath.Join(ws, "big.bin")); err == nil {
		t.Log("the merge was done before the kill: the window was missed")
	}
	if err := coord.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restarted coordinator to merge the result", 60*time.Second, func() bool {
		st, err := os.Stat(filepath.Join(ws, "big.bin"))
		return err == nil && st.Size() == 40<<20
	})
	if b, err := os.ReadFile(filepath.Join(ws, "keep.txt")); err != nil || string(b) != "mine\n" {
		t.Fatalf("the caller's own file after the merge: %q %v", b, err)
	}
	waitFor(t, "the record to say merged", 30*time.Second, func() bool {
		r := run(t, bin, "result", "--json", "--data", coord.DataDir, id)
		return strings.Contains(r.stdout, `"merge"`)
	})
	verifyStore(t, bin, coord)
}
