package dag

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func packFiles(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.blocks.packDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(s.blocks.packDir(), e.Name()))
	}
	return out
}

// A large file is copied into a pack and its leaves refer into it: the
// root is the one an import from scratch gives, the file exports whole,
// the same bytes imported again leave no second pack, GC removes the pack
// with its last block, and a damaged pack reads as missing blocks.
func TestLargeFilesArePacked(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	data := randomBytes(7, packMinSize+3<<20)
	writeTree(t, src, map[string]string{"big.bin": string(data), "small.txt": "small\n"})
	r, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(t, s, src); !r.Root.Equals(want.Root) {
		t.Fatalf("packed import root %s, from scratch %s", r.Root, want.Root)
	}
	packs := packFiles(t, s)
	if len(packs) != 1 {
		t.Fatalf("%d packs, want 1", len(packs))
	}
	if st, _ := os.Stat(packs[0]); st.Size() != int64(len(data)) {
		t.Fatalf("pack of %d bytes, want %d", st.Size(), len(data))
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := s.Export(ctx, r.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))

	// The same bytes elsewhere: every leaf is here, the new pack goes.
	other := t.TempDir()
	writeTree(t, other, map[string]string{"copy.bin": string(data)})
	if _, err := s.Import(ctx, other, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, s)); n != 1 {
		t.Fatalf("%d packs after importing the same bytes again, want 1", n)
	}

	// A damaged pack: its blocks read as missing, never as wrong bytes.
	f, err := os.OpenFile(packs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damage"), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = s.Export(ctx, r.Root, filepath.Join(t.TempDir(), "damaged"), ExportOptions{})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("export from a damaged pack: %v, want not found", err)
	}

	// Nothing pinned: GC removes the blocks and then the pack.
	time.Sleep(10 * time.Millisecond) // the pack must be older than the GC
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, s)); n != 0 {
		t.Fatalf("%d packs after GC, want 0", n)
	}
}

// Large blocks from outside are appended to a pack, smaller ones stay in
// badger; either way the tree comes out whole, and GC keeps the pack while
// a pin needs it.
func TestFetchedBlocksArePacked(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	writeTree(t, src, map[string]string{"mid.bin": string(randomBytes(9, 6<<20)), "small.txt": "small\n"})
	r, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Fetch(ctx, r.Root, &storeFetcher{from: a}, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, b)); n != 1 {
		t.Fatalf("%d packs after the fetch, want 1", n)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := b.Export(ctx, r.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))
	must(t, b.Pin("keep", r.Root))
	time.Sleep(10 * time.Millisecond)
	if _, err := b.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, b)); n != 1 {
		t.Fatalf("%d packs after a GC that keeps the tree, want 1", n)
	}
	if _, err := b.Export(ctx, r.Root, filepath.Join(t.TempDir(), "again"), ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	must(t, b.Unpin("keep"))
	time.Sleep(10 * time.Millisecond)
	if _, err := b.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, b)); n != 0 {
		t.Fatalf("%d packs after the last pin went, want 0", n)
	}
}
