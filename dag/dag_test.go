package dag

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	carv2 "github.com/ipld/go-car/v2"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func openStore(t testing.TB) *Store {
	t.Helper()
	opts := badger.DefaultOptions(t.TempDir()).WithLogger(nil).WithMemTableSize(8 << 20).WithValueLogFileSize(64 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return NewStore(db)
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// writeTree creates files from a map of relative path -> content; a value
// starting with "->" makes a symlink, "/" at the end of a key a directory.
func writeTree(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if strings.HasSuffix(rel, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// treeSnapshot describes a directory: path -> kind:mode:content.
func treeSnapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			out[rel] = "dir"
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "link:" + target
		default:
			b, _ := os.ReadFile(p)
			exec := "-"
			if info.Mode()&0o111 != 0 {
				exec = "x"
			}
			out[rel] = "file:" + exec + ":" + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t testing.TB, a, b map[string]string) {
	t.Helper()
	for k, v := range a {
		if b[k] != v {
			if len(v) > 80 {
				v = v[:80] + "…"
			}
			w := b[k]
			if len(w) > 80 {
				w = w[:80] + "…"
			}
			t.Errorf("%s: %q vs %q", k, v, w)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("%s only in second tree", k)
		}
	}
}

func sampleTree(t testing.TB) string {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"README.md":         "hello\n",
		"empty.txt":         "",
		"bin/run.sh":        "#!/bin/sh\necho hi\n",
		"src/a/b/c/deep.go": "package c\n",
		"src/main.go":       "package main\n",
		"emptydir/":         "",
		"link-to-readme":    "->README.md",
		"src/up":            "->../README.md",
		"big.bin":           string(randomBytes(1, 3<<20+17)),
	})
	return dir
}

func TestImportExportRoundTrip(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := sampleTree(t)
	res, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 6 || res.Symlinks != 2 || res.Dirs != 7 || res.Root.Version() != 1 {
		t.Fatalf("import result %+v", res)
	}
	dest := filepath.Join(t.TempDir(), "copy")
	if _, err := s.Export(ctx, res.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))

	// Same content imports to the same root.
	res2, err := s.Import(ctx, dest, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Root.Equals(res.Root) {
		t.Fatalf("re-import of the export: %s, want %s", res2.Root, res.Root)
	}
	if _, err := s.Export(ctx, res.Root, dest, ExportOptions{}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("export over an existing path: %v", err)
	}
}

func TestIncrementalImport(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := sampleTree(t)
	first, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first.FilesRead != 6 {
		t.Fatalf("first import read %d files, want 6", first.FilesRead)
	}
	again, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.FilesRead != 0 || again.NewBlocks != 0 || !again.Root.Equals(first.Root) {
		t.Fatalf("unchanged re-import: %+v", again)
	}
	if err := os.WriteFile(filepath.Join(src, "src/main.go"), []byte("package main // changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if changed.FilesRead != 1 || changed.Root.Equals(first.Root) {
		t.Fatalf("import after one change: %+v", changed)
	}
	changes, err := s.Diff(ctx, first.Root, changed.Root)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Path != "src/main.go" || changes[0].Kind != Modified {
		t.Fatalf("diff: %+v", changes)
	}
}

func TestIgnoreFile(t *testing.T) {
	s := openStore(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{
		".cortexignore": "*.log\nbuild/\n",
		"keep.txt":      "k",
		"debug.log":     "x",
		"build/out.o":   "o",
		"sub/trace.log": "t",
		"sub/keep.go":   "g",
	})
	res, err := s.Import(context.Background(), src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ignored != 3 || res.Files != 3 {
		t.Fatalf("ignored %d files %d: %+v", res.Ignored, res.Files, res)
	}
}

func TestDiffKinds(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	a, b := t.TempDir(), t.TempDir()
	writeTree(t, a, map[string]string{"same": "s", "mod": "1", "gone": "g", "olddir/x": "x", "tool": "echo\n"})
	writeTree(t, b, map[string]string{"same": "s", "mod": "2", "new": "n", "newdir/y": "y", "tool": "echo\n"})
	if err := os.Chmod(filepath.Join(b, "tool"), 0o755); err != nil {
		t.Fatal(err)
	}
	ra, err := s.Import(ctx, a, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := s.Import(ctx, b, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	changes, err := s.Diff(ctx, ra.Root, rb.Root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, string(c.Kind)+" "+c.Path)
	}
	want := "removed gone|modified mod|added new|added newdir|removed olddir|mode-changed tool"
	if strings.Join(got, "|") != want {
		t.Fatalf("diff:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
}

func TestLargeDirectoryIsSharded(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	files := map[string]string{}
	for i := range 6000 {
		files["entry-with-a-long-name-"+strings.Repeat("x", 10)+"-"+strconv.Itoa(i)] = strconv.Itoa(i)
	}
	writeTree(t, src, files)
	res, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, fsn, err := s.loadNode(ctx, res.Root)
	if err != nil {
		t.Fatal(err)
	}
	if fsn.Type().String() != "HAMTShard" {
		t.Fatalf("root of 6000 entries is %v, want a HAMT shard", fsn.Type())
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := s.Export(ctx, res.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))
}

func TestCARRoundTrip(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	src := sampleTree(t)
	res, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var car bytes.Buffer
	if _, err := a.ExportCAR(ctx, res.Root, &car); err != nil {
		t.Fatal(err)
	}
	roots, n, err := b.ImportCAR(ctx, &car)
	if err != nil {
		t.Fatal(err)
	}
	if len(roots) != 1 || !roots[0].Equals(res.Root) || n == 0 {
		t.Fatalf("CAR roots %v, %d blocks", roots, n)
	}
	dest := filepath.Join(t.TempDir(), "fromcar")
	if _, err := b.Export(ctx, res.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))
	if _, _, err := b.ImportCAR(ctx, strings.NewReader("not a car")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("garbage CAR: %v", err)
	}
}

// storeFetcher serves blocks from another real store, standing in for the
// network (the bitswap path is tested between two real peers in node).
type storeFetcher struct {
	from   *Store
	asked  int
	forged bool // serve garbage for every block
}

func (f *storeFetcher) GetBlocks(ctx context.Context, keys []cid.Cid) (<-chan blocks.Block, error) {
	ch := make(chan blocks.Block, len(keys))
	for _, k := range keys {
		f.asked++
		b, err := f.from.blocks.Get(ctx, k)
		if err != nil {
			continue
		}
		if f.forged {
			b, _ = blocks.NewBlockWithCid([]byte("forged"), k)
		}
		ch <- b
	}
	close(ch)
	return ch, nil
}

func TestFetchOnlyMissingBlocks(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	src := sampleTree(t)
	ra, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &storeFetcher{from: a}
	p, err := b.Fetch(ctx, ra.Root, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Fetched == 0 || p.Fetched != f.asked {
		t.Fatalf("first fetch: %+v, asked %d", p, f.asked)
	}
	dest := filepath.Join(t.TempDir(), "copy")
	if _, err := b.Export(ctx, ra.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))

	// One file changes: only the new blocks travel.
	if err := os.WriteFile(filepath.Join(src, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ra2, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f2 := &storeFetcher{from: a}
	p2, err := b.Fetch(ctx, ra2.Root, f2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Fetched != 2 { // the new root directory and the new README leaf
		t.Fatalf("delta fetch moved %d blocks (%d bytes), want 2", p2.Fetched, p2.FetchedBytes)
	}

	// A peer serving forged bytes gets nothing stored.
	c := openStore(t)
	_, err = c.Fetch(ctx, ra.Root, &storeFetcher{from: a, forged: true}, nil)
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("forged blocks: %v, want ErrInvalid", err)
	}
	if has, _ := c.blocks.Has(ctx, ra.Root); has {
		t.Fatal("forged block stored")
	}
}

func TestGC(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	a, b := t.TempDir(), t.TempDir()
	writeTree(t, a, map[string]string{"x": string(randomBytes(2, 1<<20))})
	writeTree(t, b, map[string]string{"y": string(randomBytes(3, 1<<20))})
	ra, _ := s.Import(ctx, a, ImportOptions{})
	rb, _ := s.Import(ctx, b, ImportOptions{})
	if err := s.Pin("a", ra.Root); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed == 0 || res.Kept == 0 {
		t.Fatalf("gc: %+v", res)
	}
	if has, _ := s.blocks.Has(ctx, rb.Root); has {
		t.Fatal("unpinned root survived GC")
	}
	dest := filepath.Join(t.TempDir(), "a")
	if _, err := s.Export(ctx, ra.Root, dest, ExportOptions{}); err != nil {
		t.Fatalf("pinned tree lost: %v", err)
	}
	// After GC the index no longer vouches for b's file: it is read again.
	again, err := s.Import(ctx, b, ImportOptions{})
	if err != nil || again.FilesRead != 1 || !again.Root.Equals(rb.Root) {
		t.Fatalf("re-import after gc: %+v %v", again, err)
	}
}

func TestParallelHashingMatchesSerial(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"big.bin": string(randomBytes(9, 20<<20+3))})
	ctx := context.Background()
	par, err := openStore(t).Import(ctx, src, ImportOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ser, err := openStore(t).Import(ctx, src, ImportOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !par.Root.Equals(ser.Root) || par.BytesRead != 20<<20+3 {
		t.Fatalf("parallel %s (%d bytes) vs serial %s", par.Root, par.BytesRead, ser.Root)
	}
}

func TestImportDAGRefusesUnrelatedBlocks(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	src := sampleTree(t)
	res, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var car bytes.Buffer
	if _, err := a.ExportCAR(ctx, res.Root, &car); err != nil {
		t.Fatal(err)
	}
	good := car.Bytes()
	if n, err := b.ImportDAG(ctx, res.Root, bytes.NewReader(good)); err != nil || n == 0 {
		t.Fatalf("import of the DAG: %d %v", n, err)
	}
	if !b.isComplete(res.Root) {
		t.Fatal("a whole DAG streamed in is not marked complete")
	}
	// A stream cut short (its last block missing) stores what came and
	// leaves the root to be walked by the next fetch.
	br, err := carv2.NewBlockReader(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	var kept []byte
	kept = append(kept, carHeader(res.Root)...)
	var all [][]byte
	for {
		blk, err := br.Next()
		if err != nil {
			break
		}
		sec := binary.AppendUvarint(nil, uint64(blk.Cid().ByteLen()+len(blk.RawData())))
		all = append(all, append(append(sec, blk.Cid().Bytes()...), blk.RawData()...))
	}
	for _, sec := range all[:len(all)-1] {
		kept = append(kept, sec...)
	}
	d := openStore(t)
	if _, err := d.ImportDAG(ctx, res.Root, bytes.NewReader(kept)); err != nil {
		t.Fatal(err)
	}
	if d.isComplete(res.Root) {
		t.Fatal("a DAG missing a block was marked complete")
	}
	if p, err := d.Fetch(ctx, res.Root, &storeFetcher{from: a}, nil); err != nil || p.Fetched != 1 {
		t.Fatalf("fetch after a cut stream: %+v %v (want the one missing block)", p, err)
	}
	// The same stream with an unrelated block appended: refused, and the
	// unrelated block is not stored.
	extra := rawLeaf([]byte("not part of the tree"))
	section := binary.AppendUvarint(nil, uint64(extra.Cid().ByteLen()+len(extra.RawData())))
	section = append(append(section, extra.Cid().Bytes()...), extra.RawData()...)
	c := openStore(t)
	if _, err := c.ImportDAG(ctx, res.Root, bytes.NewReader(append(append([]byte{}, good...), section...))); !errors.Is(err, ErrHostile) {
		t.Fatalf("unrelated block: %v", err)
	}
	if has, _ := c.blocks.Has(ctx, extra.Cid()); has {
		t.Fatal("unrelated block stored")
	}
	// A stream for another root is refused before any block.
	other := rawLeaf([]byte("x")).Cid()
	if _, err := openStore(t).ImportDAG(ctx, other, bytes.NewReader(good)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("stream for another root: %v", err)
	}
}

// FetchAgainst brings a changed tree over from a base held here: the tree
// comes out whole, and only the blocks that changed are asked for.
func TestFetchAgainst(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	files := map[string]string{}
	for i := range 60 {
		files[fmt.Sprintf("d%d/e%d/f%d.txt", i%4, i%3, i)] = strings.Repeat(fmt.Sprintf("line %d\n", i), 50)
	}
	files["gone/x.txt"] = "x\n"
	writeTree(t, src, files)
	ra, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Fetch(ctx, ra.Root, &storeFetcher{from: a}, nil); err != nil {
		t.Fatal(err)
	}
	// Two edits deep down, a new directory, a removed one.
	must(t, os.WriteFile(filepath.Join(src, "d1/e1/f1.txt"), []byte("edited\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "d2/e0/f18.txt"), []byte("edited too\n"), 0o644))
	writeTree(t, src, map[string]string{"new/deep/n.txt": "new\n"})
	must(t, os.RemoveAll(filepath.Join(src, "gone")))
	ra2, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &storeFetcher{from: a}
	p, err := b.FetchAgainst(ctx, ra.Root, ra2.Root, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	// root, d1, d1/e1, f1, d2, d2/e0, f18, new, new/deep, n.txt
	if f.asked != 10 || p.Fetched != 10 {
		t.Fatalf("asked for %d blocks, fetched %d; want the 10 that changed", f.asked, p.Fetched)
	}
	dest := filepath.Join(t.TempDir(), "copy")
	if _, err := b.Export(ctx, ra2.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))
	if again, err := b.FetchAgainst(ctx, ra.Root, ra2.Root, &storeFetcher{from: a}, nil); err != nil || again.Fetched != 0 {
		t.Fatalf("a second fetch: %+v %v", again, err)
	}
	// Without the base here it is a plain fetch.
	c := openStore(t)
	if _, err := c.FetchAgainst(ctx, ra.Root, ra2.Root, &storeFetcher{from: a}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Export(ctx, ra2.Root, filepath.Join(t.TempDir(), "c"), ExportOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Blocks handed over while an export waits reach it without a look in the
// store: here they are never stored at all, and the export still comes out
// whole. Once it ends, nothing is kept in flight.
func TestExportTakesHandedOverBlocks(t *testing.T) {
	a, c := openStore(t), openStore(t)
	ctx := context.Background()
	src := sampleTree(t)
	r, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := a.blocks.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var all []blocks.Block
	for k := range keys {
		b, err := a.blocks.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b)
	}
	await := func(ctx context.Context, _ cid.Cid, arrived <-chan struct{}) error {
		select {
		case <-arrived:
			return nil
		case <-time.After(time.Minute): // generous: the hand-over below polls, and may be starved
			return fmt.Errorf("no block arrived: %w", errdefs.ErrNotFound)
		}
	}
	go func() {
		for {
			c.blocks.flight.mu.Lock()
			n := c.blocks.flight.readers
			c.blocks.flight.mu.Unlock()
			if n > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		c.blocks.handOver(all...)
	}()
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := c.Export(ctx, r.Root, dest, ExportOptions{Await: await}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))
	if has, _ := c.blocks.Has(ctx, r.Root); has {
		t.Fatal("a handed-over block was stored")
	}
	f := c.blocks.flight
	if f.readers != 0 || f.blocks != nil || f.bytes != 0 {
		t.Fatalf("after the export: %d readers, %d blocks, %d bytes kept", f.readers, len(f.blocks), f.bytes)
	}
	// With no export waiting, nothing is kept.
	c.blocks.handOver(all...)
	if f.blocks != nil {
		t.Fatalf("%d blocks kept with no export waiting", len(f.blocks))
	}
}

// An export with Await runs while the blocks arrive, and comes out whole;
// when Await says a block will not come, the export fails and leaves
// nothing at its destination.
func TestExportWhileFetching(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	src := sampleTree(t)
	r, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fetchDone := make(chan error, 1)
	waiting := make(chan struct{})
	var firstWait sync.Once
	await := func(ctx context.Context, c cid.Cid, arrived <-chan struct{}) error {
		firstWait.Do(func() { close(waiting) })
		select {
		case <-arrived:
			return nil
		case err := <-fetchDone:
			fetchDone <- err
			if has, _ := b.blocks.Has(ctx, c); has {
				return nil
			}
			return fmt.Errorf("fetch ended: %v: %w", err, errdefs.ErrNotFound)
		}
	}
	dest := filepath.Join(t.TempDir(), "out")
	exported := make(chan error, 1)
	go func() {
		_, err := b.Export(ctx, r.Root, dest, ExportOptions{Await: await})
		exported <- err
	}()
	// The fetch starts once the export waits for its first block (the
	// root), so that the two overlap however slow the machine.
	select {
	case <-waiting:
	case err := <-exported:
		t.Fatalf("the export ended before it waited for a block: %v", err)
	}
	_, err = b.Fetch(ctx, r.Root, &storeFetcher{from: a}, nil)
	fetchDone <- err
	if err := <-exported; err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))

	// Nothing will come: the export fails cleanly.
	c := openStore(t)
	never := func(context.Context, cid.Cid, <-chan struct{}) error {
		return fmt.Errorf("no peer has it: %w", errdefs.ErrNotFound)
	}
	dest2 := filepath.Join(t.TempDir(), "none")
	if _, err := c.Export(ctx, r.Root, dest2, ExportOptions{Await: never}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("export of blocks that never come: %v", err)
	}
	if _, err := os.Lstat(dest2); !os.IsNotExist(err) {
		t.Fatalf("a failed export left %s: %v", dest2, err)
	}
}

// A CAR written against a base the reader holds carries only what changed:
// the reader needs nothing more to have the new root whole, and the bytes
// are about those of the change (an append to a large file sends its new
// chunks, not the file).
func TestExportCARAgainstBase(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	src := sampleTree(t)
	writeTree(t, src, map[string]string{"lib/large.bin": string(randomBytes(21, 8<<20))})
	base, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Fetch(ctx, base.Root, &storeFetcher{from: a}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(src, "lib", "large.bin"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	added := randomBytes(22, 300<<10)
	if _, err := f.Write(added); err != nil {
		t.Fatal(err)
	}
	f.Close()
	writeTree(t, src, map[string]string{"src/a/b/c/new.go": "package c // new\n"})
	next, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var car bytes.Buffer
	if _, err := a.ExportCARAgainst(ctx, base.Root, next.Root, &car); err != nil {
		t.Fatal(err)
	}
	if limit := 2*len(added) + 64<<10; car.Len() > limit {
		t.Fatalf("the delta CAR is %d bytes for a change of %d (limit %d)", car.Len(), len(added), limit)
	}
	if _, err := b.ImportDAG(ctx, next.Root, &car); err != nil {
		t.Fatal(err)
	}
	asked := &storeFetcher{from: a}
	if _, err := b.FetchAgainst(ctx, base.Root, next.Root, asked, nil); err != nil || asked.asked != 0 {
		t.Fatalf("after the delta CAR, the fetch asked for %d blocks: %v", asked.asked, err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := b.Export(ctx, next.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))
	// Against a base the writer does not hold whole, the CAR is the whole DAG.
	var full, whole bytes.Buffer
	if _, err := a.ExportCAR(ctx, next.Root, &full); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ExportCARAgainst(ctx, cid.NewCidV1(cid.Raw, mustHash(t, "absent")), next.Root, &whole); err != nil || whole.Len() != full.Len() {
		t.Fatalf("against an absent base: %d bytes, the full CAR %d: %v", whole.Len(), full.Len(), err)
	}
}

func mustHash(t *testing.T, s string) mh.Multihash {
	t.Helper()
	h, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
