package workspace_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestWorkspaceOverBitswap moves a tree with an empty file (the bitswap
// zero-length-block trap), an empty directory, a symlink, an executable and
// a multi-chunk file between two real peers, then a one-file delta.
func TestWorkspaceOverBitswap(t *testing.T) {
	tn := testnet.New(t, 2)
	ctx := testnet.Context(t, 60*time.Second)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	big := make([]byte, 3<<20)
	_, _ = rand.Read(big)
	testnet.WriteFile(t, filepath.Join(src, "empty"), nil, 0o644)
	testnet.WriteFile(t, filepath.Join(src, "sub", "also-empty"), nil, 0o644)
	testnet.WriteFile(t, filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	testnet.WriteFile(t, filepath.Join(src, "big.bin"), big, 0o644)
	testnet.WriteFile(t, filepath.Join(src, "a.txt"), []byte("hello\n"), 0o644)
	if err := os.Mkdir(filepath.Join(src, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}

	c1, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := apiclient.Dial(tn.Peers[1].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()

	added, err := c1.WorkspaceAdd(ctx, src, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if added.GetFiles() != 5 || added.GetSymlinks() != 1 {
		t.Fatalf("add: %+v", added)
	}
	dest := filepath.Join(t.TempDir(), "copy")
	got, err := c2.WorkspaceGet(ctx, added.GetCid(), dest, 20*time.Second, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetFetchedBlocks() == 0 || got.GetFiles() != 5 {
		t.Fatalf("get: %+v", got)
	}
	// "fetched N of M blocks": M is the DAG's blocks, never fewer than
	// fetched (the bulk stream brought them all, so the walk found the
	// root complete and counted none).
	if got.GetBlocks() < got.GetFetchedBlocks() {
		t.Fatalf("get: fetched %d of %d blocks", got.GetFetchedBlocks(), got.GetBlocks())
	}
	for _, rel := range []string{"empty", "sub/also-empty", "run.sh", "big.bin", "a.txt"} {
		a, _ := os.ReadFile(filepath.Join(src, rel))
		b, err := os.ReadFile(filepath.Join(dest, rel))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs after the round trip: %v", rel, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dest, "run.sh")); err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("exec bit lost: %v %v", st.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(dest, "link")); err != nil || target != "a.txt" {
		t.Fatalf("symlink: %q %v", target, err)
	}
	if st, err := os.Stat(filepath.Join(dest, "emptydir")); err != nil || !st.IsDir() {
		t.Fatalf("empty dir: %v", err)
	}

	// One file changes: peer 2 fetches only the new blocks.
	testnet.WriteFile(t, filepath.Join(src, "a.txt"), []byte("hello, changed\n"), 0o644)
	added2, err := c1.WorkspaceAdd(ctx, src, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if added2.GetFilesRead() != 1 {
		t.Fatalf("incremental add read %d files", added2.GetFilesRead())
	}
	got2, err := c2.WorkspaceGet(ctx, added2.GetCid(), filepath.Join(t.TempDir(), "copy2"), 20*time.Second, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got2.GetBlocks() < got2.GetFetchedBlocks() {
		t.Fatalf("delta: fetched %d of %d blocks", got2.GetFetchedBlocks(), got2.GetBlocks())
	}
	if got2.GetFetchedBlocks() != 2 {
		t.Fatalf("delta fetched %d blocks, want 2 (new root, new leaf)", got2.GetFetchedBlocks())
	}
	changes, err := c2.WorkspaceDiff(ctx, added.GetCid(), added2.GetCid(), 0)
	if err != nil || len(changes) != 1 || changes[0].GetPath() != "a.txt" {
		t.Fatalf("diff: %v %v", changes, err)
	}
	// The result merges into peer 2's copy.
	resp, err := c2.WorkspaceMerge(ctx, added.GetCid(), added2.GetCid(), dest)
	rep := resp.GetReport()
	if err != nil || len(rep.GetApplied()) != 1 {
		t.Fatalf("merge: %+v %v", rep, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "a.txt")); string(b) != "hello, changed\n" {
		t.Fatalf("merged a.txt: %q", b)
	}
}

func TestWorkspaceErrors(t *testing.T) {
	tn := testnet.New(t, 1)
	ctx := testnet.Context(t, 30*time.Second)
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WorkspaceGet(ctx, "not-a-cid", "/tmp/x", time.Second, false, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad CID: %v", err)
	}
	if _, err := c.WorkspaceAdd(ctx, "relative/path", false, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("relative path: %v", err)
	}
	// A root nobody has: the fetch gives up after the stall timeout with a
	// clear error instead of hanging.
	missing := "bafkreie5cvv4h45feyalwqhbagebuoceukxvamxksoxibbuvsf3cykcvxy"
	_, err = c.WorkspaceGet(ctx, missing, filepath.Join(t.TempDir(), "x"), time.Second, false, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "no block") {
		t.Fatalf("missing root: %v", err)
	}
	// ws diff and dag export of a root nobody has take the same bound
	// (they used to wait the 60 s default, with no way to ask for less).
	if _, err := c.WorkspaceDiff(ctx, missing, missing, time.Second); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "no block") {
		t.Fatalf("diff of a missing root: %v", err)
	}
	if err := c.ExportCAR(ctx, missing, time.Second, io.Discard); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "no block") {
		t.Fatalf("export of a missing root: %v", err)
	}
}

// A peer never imports a data dir: not its own, not one inside the tree
// asked for (a testnet's, ~/.cortex-peer under ~), whether by ws add or as
// a task's workspace. Its identity, mesh key and token would travel.
func TestDataDirsAreNeverImported(t *testing.T) {
	tn := testnet.New(t, 1)
	ctx := testnet.Context(t, time.Minute)
	c := tn.Clients(t)[0]
	home := t.TempDir()
	testnet.WriteFile(t, filepath.Join(home, "proj", "main.go"), []byte("package main\n"), 0o644)
	for _, name := range []string{"config.toml", "identity.key", "api.token", "mesh.key"} {
		testnet.WriteFile(t, filepath.Join(home, ".cortex-peer", name), []byte("secret\n"), 0o600)
	}
	for _, dir := range []string{tn.Peers[0].Dir, home} {
		_, err := c.WorkspaceAdd(ctx, dir, false, nil)
		if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "data dir") {
			t.Errorf("ws add %s: %v, want permission denied naming the data dir", dir, err)
		}
	}
	_, err := c.Run(ctx, &apiv1.RunRequest{Workspace: home, Spec: &apiv1.TaskSpec{Command: []string{"cat", ".cortex-peer/identity.key"}}}, nil)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), ".cortex-peer") {
		t.Errorf("run --workspace over a data dir: %v, want permission denied naming .cortex-peer", err)
	}
	// Left out by .cortexignore, the rest of the tree goes.
	testnet.WriteFile(t, filepath.Join(home, ".cortexignore"), []byte(".cortex-peer/\n"), 0o644)
	if _, err := c.WorkspaceAdd(ctx, home, false, nil); err != nil {
		t.Errorf("ws add with the data dir ignored: %v", err)
	}
}

// ws get keeps modes, and a link out of the tree (a virtualenv's
// interpreter) is skipped and reported unless allowed, not a failure.
func TestGetKeepsModesAndReportsEscapingLinks(t *testing.T) {
	tn := testnet.New(t, 1)
	ctx := testnet.Context(t, 30*time.Second)
	c := tn.Clients(t)[0]
	src := t.TempDir()
	testnet.WriteFile(t, filepath.Join(src, "secret.env"), []byte("A=1\n"), 0o600)
	testnet.WriteFile(t, filepath.Join(src, "private", "key"), []byte("k\n"), 0o644)
	if err := os.Chmod(filepath.Join(src, "private"), 0o700); err != nil {
		t.Fatal(err)
	}
	testnet.WriteFile(t, filepath.Join(src, "venv", "bin", "activate"), []byte("# sh\n"), 0o644)
	if err := os.Symlink("/usr/bin/python3", filepath.Join(src, "venv", "bin", "python")); err != nil {
		t.Fatal(err)
	}
	added, err := c.WorkspaceAdd(ctx, src, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "copy")
	got, err := c.WorkspaceGet(ctx, added.GetCid(), dest, 0, false, nil)
	if err != nil {
		t.Fatalf("ws get of a tree with an absolute link: %v", err)
	}
	if sk := got.GetSkippedLinks(); len(sk) != 1 || sk[0].GetPath() != "venv/bin/python" || sk[0].GetTarget() != "/usr/bin/python3" {
		t.Fatalf("skipped links %v", sk)
	}
	if _, err := os.Lstat(filepath.Join(dest, "venv", "bin", "python")); !os.IsNotExist(err) {
		t.Fatalf("escaping link created without the flag: %v", err)
	}
	for rel, want := range map[string]os.FileMode{"secret.env": 0o600, "private": 0o700, "private/key": 0o644} {
		st, err := os.Stat(filepath.Join(dest, rel))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %04o", rel, st.Mode(), err, want)
		}
	}
	allowed := filepath.Join(t.TempDir(), "copy")
	got, err = c.WorkspaceGet(ctx, added.GetCid(), allowed, 0, true, nil)
	if err != nil || len(got.GetSkippedLinks()) != 0 {
		t.Fatalf("ws get --allow-escaping-links: %+v %v", got, err)
	}
	if target, err := os.Readlink(filepath.Join(allowed, "venv", "bin", "python")); err != nil || target != "/usr/bin/python3" {
		t.Fatalf("link with the flag: %q %v", target, err)
	}
}
