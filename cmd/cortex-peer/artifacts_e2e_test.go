package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestCLIArtifacts: a file and a directory put on one peer are got on
// another by CID, whole or by range; a destination that exists is refused
// unless --force.
func TestCLIArtifacts(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := t.TempDir()
	_, peers := startTestnet(t, bin, dir, "2")
	p1, p2 := filepath.Join(dir, "peer1"), filepath.Join(dir, "peer2")
	src := t.TempDir()
	data := make([]byte, 12<<20+12345)
	_, _ = rand.Read(data)
	file := filepath.Join(src, "app.bin")
	testnet.WriteFile(t, file, data, 0o644)

	r := run(t, bin, "put", "--json", "--data", p1, file)
	var put struct {
		CID   string `json:"cid"`
		Bytes int64  `json:"bytes"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &put) != nil || put.Bytes != int64(len(data)) {
		t.Fatalf("put: exit %d %q %s", r.code, r.stdout, r.stderr)
	}

	out := t.TempDir()
	dest := filepath.Join(out, "app")
	r = run(t, bin, "get", "--json", "--data", p2, put.CID, "-o", dest)
	var got struct {
		Bytes     int64            `json:"bytes"`
		Fetched   int64            `json:"fetched_bytes"`
		Providers map[string]int64 `json:"providers"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil {
		t.Fatalf("get: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(dest); !bytes.Equal(b, data) {
		t.Fatal("the file got differs from the file put")
	}
	if got.Bytes != int64(len(data)) || got.Fetched < int64(len(data)) || len(got.Providers) != 1 {
		t.Fatalf("get result: %+v", got)
	}
	for id, n := range got.Providers {
		if !strings.Contains(peers[0], id) || n < int64(len(data)) {
			t.Fatalf("providers %v, want peer1 (%s) with the file's bytes", got.Providers, peers[0])
		}
	}

	// The destination exists: refused (exit 1, already exists), then
	// replaced with --force.
	if r = run(t, bin, "get", "--data", p2, put.CID, "-o", dest); r.code == 0 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("get into an existing path: exit %d %s", r.code, r.stderr)
	}
	testnet.WriteFile(t, dest, []byte("old"), 0o644)
	if r = run(t, bin, "get", "--force", "--data", p2, put.CID, "-o", dest); r.code != 0 {
		t.Fatalf("get --force: exit %d %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(dest); !bytes.Equal(b, data) {
		t.Fatal("get --force did not replace the file")
	}

	// A range, past the end, and the whole file to standard output.
	off, n := 5<<20+7, 70000
	if r = run(t, bin, "cat", "--data", p1, "--offset", "5242887", "--length", "70000", put.CID); r.code != 0 || r.stdout != string(data[off:off+n]) {
		t.Fatalf("cat a range: exit %d, %d bytes %s", r.code, len(r.stdout), r.stderr)
	}
	if r = run(t, bin, "cat", "--data", p1, "--offset", "99999999", put.CID); r.code != 0 || r.stdout != "" {
		t.Fatalf("cat past the end: exit %d, %d bytes %s", r.code, len(r.stdout), r.stderr)
	}
	if r = run(t, bin, "get", "--data", p2, put.CID, "-o", "-"); r.code != 0 || r.stdout != string(data) {
		t.Fatalf("get -o -: exit %d, %d bytes %s", r.code, len(r.stdout), r.stderr)
	}

	// A directory.
	tree := filepath.Join(t.TempDir(), "logs")
	testnet.WriteFile(t, filepath.Join(tree, "a.txt"), []byte("alpha\n"), 0o644)
	testnet.WriteFile(t, filepath.Join(tree, "sub", "b.txt"), []byte("beta\n"), 0o600)
	if r = run(t, bin, "put", "--data", p1, tree); r.code != 0 {
		t.Fatalf("put a directory: exit %d %s", r.code, r.stderr)
	}
	treeCID := strings.TrimSpace(r.stdout)
	if r = run(t, bin, "get", "--data", p2, treeCID, "-o", filepath.Join(out, "logs")); r.code != 0 {
		t.Fatalf("get a directory: exit %d %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "logs", "sub", "b.txt")); string(b) != "beta\n" {
		t.Fatalf("the tree got: %q", b)
	}

	// Bad input.
	if r = run(t, bin, "put", "--data", p1, filepath.Join(src, "nope")); r.code == 0 {
		t.Fatal("put of a missing path succeeded")
	}
	if r = run(t, bin, "cat", "--data", p1, "not-a-cid"); r.code == 0 {
		t.Fatal("cat of a bad CID succeeded")
	}
	if r = run(t, bin, "cat", "--data", p1, treeCID); r.code == 0 || !strings.Contains(r.stderr, "not a file") {
		t.Fatalf("cat of a directory: exit %d %s", r.code, r.stderr)
	}
	sum, _ := mh.Sum([]byte("held by nobody"), mh.SHA2_256, -1)
	nobody := cid.NewCidV1(cid.Raw, sum).String()
	if r = run(t, bin, "get", "--data", p2, "--stall-timeout", "2s", nobody, "-o", filepath.Join(out, "nobody")); r.code == 0 || !strings.Contains(r.stderr, "no connected peer has") || !strings.Contains(r.stderr, "asked 1") {
		t.Fatalf("get of a CID nobody has: exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Lstat(filepath.Join(out, "nobody")); err == nil {
		t.Fatal("a failed get left its destination")
	}
	if r = run(t, bin, "ws", "verify", "--data", p1, put.CID); r.code != 0 || !strings.Contains(r.stdout, "0 missing, 0 corrupt") {
		t.Fatalf("ws verify: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, bin, "ws", "verify", "--data", p1); r.code != 0 {
		t.Fatalf("ws verify of the whole store: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, bin, "unpin", "--data", p1, put.CID); r.code != 0 || !strings.Contains(r.stderr, "unpinned") {
		t.Fatalf("unpin: exit %d %s", r.code, r.stderr)
	}
	if r = run(t, bin, "unpin", "--data", p1, put.CID); r.code == 0 || !strings.Contains(r.stderr, "not put on this peer") {
		t.Fatalf("a second unpin: exit %d %s", r.code, r.stderr)
	}
}
