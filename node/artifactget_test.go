package node_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestArtifactGetProviders: a file is got from every peer that holds it at
// once; a provider that serves a wrong leaf is dropped and the get
// completes from the others, storing nothing wrong; a partial copy left
// beside the destination is completed, its good leaves kept; a CID nobody
// has is not_found, naming the peers asked.
func TestArtifactGetProviders(t *testing.T) {
	logs := &syncBuffer{}
	tn := testnet.New(t, 4, testnet.WithLogs(logs, slog.LevelInfo), testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.API.AllowedRoots = append(cfg.API.AllowedRoots, os.TempDir())
	}))
	ctx := testnet.Context(t, 2*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	data, put := putRandom(t, 24<<20+12345, cs[0])
	root, _ := cid.Decode(put.GetCid())
	dir := t.TempDir()
	get := func(i int, name string) map[string]uint64 {
		t.Helper()
		dest := filepath.Join(dir, name)
		res, err := cs[i].ArtifactGet(ctx, put.GetCid(), dest, false, 20*time.Second, nil)
		if err != nil {
			t.Fatalf("get on peer %d: %v", i, err)
		}
		if b, err := os.ReadFile(dest); err != nil || !bytes.Equal(b, data) {
			t.Fatalf("get on peer %d: the file differs (%v)", i, err)
		}
		t.Logf("get on peer %d: fetched %d bytes from %v", i, res.GetFetchedBytes(), res.GetProviders())
		return res.GetProviders()
	}
	if p := get(1, "one"); len(p) != 1 || p[tn.Peers[0].Node.ID().String()] == 0 {
		t.Fatalf("one provider: %v", p)
	}
	if p := get(2, "two"); len(p) != 2 {
		t.Fatalf("two providers held it; the get used %v", p)
	}

	// Peer 2 lies about every leaf: peer 3 completes from 0 and 1.
	leaves, err := tn.Peers[0].Node.FileLeavesForTest(ctx, root)
	if err != nil || len(leaves) < 8 {
		t.Fatalf("leaves: %d, %v", len(leaves), err)
	}
	for _, l := range leaves {
		if err := tn.Peers[2].Node.CorruptBlockForTest(l.Cid, []byte("not the leaf")); err != nil {
			t.Fatal(err)
		}
	}
	p := get(3, "three")
	if p[tn.Peers[2].Node.ID().String()] != 0 || len(p) == 0 {
		t.Fatalf("providers: %v", p)
	}
	verifyStore(t, tn.Peers[3].Node)
	if n := strings.Count(logs.String(), "peer served a bad block"); n != 1 {
		t.Fatalf("the lying provider was logged %d times in one get, want once", n)
	}

	// A partial copy holding the first half, a damaged leaf in it, and
	// garbage past it: only the damaged leaf and the second half come.
	dest := filepath.Join(dir, "partial")
	c := root.String()
	partial := filepath.Join(dir, ".partial.cortex-partial-"+c[len(c)-16:])
	half := append([]byte(nil), data[:len(data)/2]...)
	copy(half[leaves[2].Offset:], "damaged")
	testnet.WriteFile(t, partial, append(half, bytes.Repeat([]byte{0}, 1000)...), 0o644)
	res, err := cs[1].ArtifactGet(ctx, put.GetCid(), dest, false, 20*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dest); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("resumed get: the file differs (%v)", err)
	}
	if _, err := os.Stat(partial); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the partial copy is still there: %v", err)
	}
	// Peer 1 holds every leaf itself: nothing came over the mesh. Peer 3's
	// store lacks them, so ask it the same.
	if res.GetFetchedBytes() != 0 {
		t.Fatalf("peer 1 holds the file's blocks, yet fetched %d bytes", res.GetFetchedBytes())
	}
	dest3 := filepath.Join(dir, "partial3")
	partial3 := filepath.Join(dir, ".partial3.cortex-partial-"+c[len(c)-16:])
	testnet.WriteFile(t, partial3, half, 0o644)
	if err := tn.Peers[3].Node.DropBlocksForTest(ctx, root); err != nil {
		t.Fatal(err)
	}
	res, err = cs[3].ArtifactGet(ctx, put.GetCid(), dest3, false, 20*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dest3); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("resumed get: the file differs (%v)", err)
	}
	if got, most := res.GetFetchedBytes(), uint64(len(data)/2)+uint64(leaves[2].Size)+2<<20; got == 0 || got > most {
		t.Fatalf("resumed from half the file, fetched %d bytes (at most %d)", got, most)
	}
	t.Logf("resumed from half: fetched %d of %d bytes", res.GetFetchedBytes(), len(data))

	// A CID nobody has.
	h, _ := mh.Sum([]byte("nobody has this"), mh.SHA2_256, -1)
	start := time.Now()
	_, err = cs[1].ArtifactGet(ctx, cid.NewCidV1(cid.Raw, h).String(), filepath.Join(dir, "none"), false, 2*time.Second, nil)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "asked 3") {
		t.Fatalf("a CID nobody has: %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("a CID nobody has took %s", d)
	}
}

// putRandom puts a file of size random bytes on each peer of cs.
func putRandom(t *testing.T, size int, cs ...*apiclient.Client) ([]byte, *apiv1.ArtifactPutResult) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	src := filepath.Join(t.TempDir(), "f.bin")
	testnet.WriteFile(t, src, data, 0o644)
	var put *apiv1.ArtifactPutResult
	for _, c := range cs {
		var err error
		if put, err = c.ArtifactPut(testnet.Context(t, time.Minute), src, nil); err != nil {
			t.Fatal(err)
		}
	}
	return data, put
}

// TestArtifactGetSlowProvider: of two providers, one serves at 32 KB/s. A
// get does not wait for it: the fast one takes the queue and, at the end,
// a copy of the segment the slow one holds.
func TestArtifactGetSlowProvider(t *testing.T) {
	tn := testnet.New(t, 3, testnet.WithConfig(func(i int, cfg *node.Config) {
		if i == 1 {
			cfg.Exchange.ServeBytesPerSecond = 32 << 10
		}
	}))
	ctx := testnet.Context(t, 2*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	data, put := putRandom(t, 10<<20, cs[0], cs[1])
	dest := filepath.Join(t.TempDir(), "got")
	start := time.Now()
	res, err := cs[2].ArtifactGet(ctx, put.GetCid(), dest, false, 20*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if b, err := os.ReadFile(dest); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the file differs (%v)", err)
	}
	t.Logf("%s from %v", took, res.GetProviders())
	// The slow provider alone would take over five minutes.
	if took > 60*time.Second {
		t.Fatalf("the get waited for the slow provider: %s", took)
	}
}

// TestArtifactGetDiskFull: a get into a file system too small fails at
// once with resource_exhausted, keeps its partial copy and touches nothing
// else there; once space is freed, the same get completes.
func TestArtifactGetDiskFull(t *testing.T) {
	small := testnet.SmallTmpfs(t, 12)
	tn := testnet.New(t, 2)
	ctx := testnet.Context(t, time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	data, put := putRandom(t, 8<<20, cs[0])
	ballast := filepath.Join(small, "ballast")
	testnet.WriteFile(t, ballast, make([]byte, 6<<20), 0o644)
	dest := filepath.Join(small, "got")
	_, err := cs[1].ArtifactGet(ctx, put.GetCid(), dest, false, 10*time.Second, nil)
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("a get onto a full disk: %v", err)
	}
	t.Logf("error: %v", err)
	if b, err := os.ReadFile(ballast); err != nil || len(b) != 6<<20 {
		t.Fatalf("the file beside the get was touched: %d bytes, %v", len(b), err)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the destination exists after a failed get: %v", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if _, err := cs[1].ArtifactGet(ctx, put.GetCid(), dest, false, 10*time.Second, nil); err != nil {
		t.Fatalf("the get once space is freed: %v", err)
	}
	if b, err := os.ReadFile(dest); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the file differs (%v)", err)
	}
	if entries, _ := os.ReadDir(small); len(entries) != 1 {
		t.Fatalf("the get left %d entries", len(entries))
	}
}

// TestWorkspaceVerify: ws verify finds a file whole, then a corrupt leaf
// and a missing one by CID, for the root and for the whole store.
func TestWorkspaceVerify(t *testing.T) {
	tn := testnet.New(t, 1)
	ctx := testnet.Context(t, time.Minute)
	cs := tn.Clients(t)
	_, put := putRandom(t, 5<<20, cs[0])
	root, _ := cid.Decode(put.GetCid())
	res, err := cs[0].WorkspaceVerify(ctx, put.GetCid(), nil)
	if err != nil || res.GetMissingCount() != 0 || res.GetCorruptCount() != 0 || res.GetBlocks() < 3 {
		t.Fatalf("a whole file: %v %v", res, err)
	}
	leaves, err := tn.Peers[0].Node.FileLeavesForTest(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.Peers[0].Node.CorruptBlockForTest(leaves[1].Cid, []byte("rot")); err != nil {
		t.Fatal(err)
	}
	if err := tn.Peers[0].Node.DropBlockForTest(ctx, leaves[2].Cid); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{put.GetCid(), ""} {
		res, err := cs[0].WorkspaceVerify(ctx, c, nil)
		if err != nil || res.GetCorruptCount() != 1 || res.GetMissingCount() != 1 {
			t.Fatalf("verify %q: %v %v", c, res, err)
		}
		if got, _ := cid.Decode(res.GetCorrupt()[0]); !bytes.Equal(got.Hash(), leaves[1].Cid.Hash()) {
			t.Fatalf("corrupt %v, want %s", res.GetCorrupt(), leaves[1].Cid)
		}
		if c != "" && res.GetMissing()[0] != leaves[2].Cid.String() {
			t.Fatalf("missing %v, want %s", res.GetMissing(), leaves[2].Cid)
		}
	}
}
