package dag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func packPaths(t *testing.T, s *Store) []string {
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

// gcPacks runs a GC on s and returns the packs left. The packs written so
// far are first made older than the GC, which spares those written since it
// began.
func gcPacks(t *testing.T, s *Store) []string {
	t.Helper()
	time.Sleep(10 * time.Millisecond)
	if _, err := s.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	return packPaths(t, s)
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
	packs := packPaths(t, s)
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
	if n := len(packPaths(t, s)); n != 1 {
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
	if n := len(gcPacks(t, s)); n != 0 {
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
	if n := len(packPaths(t, b)); n != 1 {
		t.Fatalf("%d packs after the fetch, want 1", n)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := b.Export(ctx, r.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))
	must(t, b.Pin("keep", r.Root))
	if n := len(gcPacks(t, b)); n != 1 {
		t.Fatalf("%d packs after a GC that keeps the tree, want 1", n)
	}
	if _, err := b.Export(ctx, r.Root, filepath.Join(t.TempDir(), "again"), ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	must(t, b.Unpin("keep"))
	if n := len(gcPacks(t, b)); n != 0 {
		t.Fatalf("%d packs after the last pin went, want 0", n)
	}
}

// A shared pack most of whose bytes belong to no block any more is
// rewritten by GC: its live blocks move to a new pack, the old one goes,
// and the tree still exports whole. A damaged byte in a shared pack makes
// its block read as missing (its checksum), never as wrong bytes.
func TestPacksAreCompacted(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	gone, kept := t.TempDir(), t.TempDir()
	writeTree(t, gone, map[string]string{"big.bin": string(randomBytes(11, compactDeadMin+4<<20))})
	writeTree(t, kept, map[string]string{"a.bin": string(randomBytes(12, 3<<20)), "b.txt": string(randomBytes(13, 20<<10))})
	var roots []ImportResult
	for _, dir := range []string{gone, kept} {
		r, err := a.Import(ctx, dir, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Fetch(ctx, r.Root, &storeFetcher{from: a}, nil); err != nil {
			t.Fatal(err)
		}
		roots = append(roots, r)
	}
	if n := len(packPaths(t, b)); n != 1 {
		t.Fatalf("%d packs after the fetches, want 1", n)
	}
	must(t, b.Pin("keep", roots[1].Root))
	packs := gcPacks(t, b)
	if len(packs) != 1 {
		t.Fatalf("%d packs after GC, want 1", len(packs))
	}
	if st, _ := os.Stat(packs[0]); st.Size() > 4<<20 {
		t.Fatalf("the pack after GC holds %d bytes; the live blocks are about 3 MiB", st.Size())
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := b.Export(ctx, roots[1].Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, kept), treeSnapshot(t, dest))

	f, err := os.OpenFile(packs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0x00, 0xff}, 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = b.Export(ctx, roots[1].Root, filepath.Join(t.TempDir(), "damaged"), ExportOptions{})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("export from a damaged pack: %v, want not found", err)
	}
}

// copyDirect writes exactly the source's bytes, whatever the size's
// alignment, wherever the source lives and whether the page cache holds it
// or not; a source shorter than it was said to be is an error, not a fault
// of the process.
func TestCopyDirect(t *testing.T) {
	dirs := []string{t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "copydirect-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(shm) })
		dirs = append(dirs, shm) // tmpfs: always cached, no O_DIRECT reads
	}
	packs := t.TempDir()
	for _, dir := range dirs {
		for _, size := range []int{1, 4095, 4096, 4097, directChunk + 1, 3*directChunk - 512, 2*mapWindow + 5000} {
			for _, evicted := range []bool{false, true} {
				data := randomBytes(uint64(size), size)
				src := filepath.Join(dir, "src")
				if err := os.WriteFile(src, data, 0o600); err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(src)
				if err != nil {
					t.Fatal(err)
				}
				if evicted {
					evictFromCache(t, f)
				}
				dst := filepath.Join(packs, "pack")
				if err := os.WriteFile(dst, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				err = copyDirect(context.Background(), f, dst, int64(size))
				if errors.Is(err, errNoDirect) {
					t.Skipf("%s takes no O_DIRECT writes", packs) // not a failure: copyIntoPack is used there
				}
				if err != nil {
					t.Fatalf("%s, %d bytes, evicted %v: %v", dir, size, evicted, err)
				}
				if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
					t.Fatalf("%s, %d bytes, evicted %v: the pack holds %d bytes that differ", dir, size, evicted, len(got))
				}
				// Said to be longer than it is: the pages past the end are
				// not there.
				if evicted {
					evictFromCache(t, f)
				}
				if err := copyDirect(context.Background(), f, dst, int64(size)+2*directChunk); err == nil {
					t.Errorf("%s, %d bytes copied as %d: no error", dir, size, size+2*directChunk)
				}
				f.Close()
			}
		}
	}
}

// evictFromCache drops f's pages from the page cache (a tmpfs keeps them).
func evictFromCache(t *testing.T, f *os.File) {
	t.Helper()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// A pack read whether or not the page cache holds it (here: evicted, then
// partly cached) gives the same bytes, at any offset and length, up to its
// end.
func TestPackReadsPastTheCache(t *testing.T) {
	dir := t.TempDir()
	size := 3<<20 + 123
	data := randomBytes(11, size)
	if err := os.WriteFile(filepath.Join(dir, "p"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	evict := func() {
		f, err := os.Open(filepath.Join(dir, "p"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		evictFromCache(t, f)
	}
	var files packFiles
	pf, err := files.get(dir, "p")
	if err != nil {
		t.Fatal(err)
	}
	defer files.put(pf)
	ranges := [][2]int{{0, 1}, {1, 4095}, {4095, 2}, {5000, 300000}, {1 << 20, 1 << 20}, {size - 7, 7}, {size - (2 << 20), 2 << 20}, {12345, 2<<20 - 1}}
	for round, prepare := range []func(){evict, func() {
		evict()
		// Part of the file cached again: reads start in the cache and go on
		// past it.
		b := make([]byte, 8192)
		if _, err := pf.f.ReadAt(b, 1<<20); err != nil {
			t.Fatal(err)
		}
	}} {
		prepare()
		for _, r := range ranges {
			got := make([]byte, r[1])
			if _, err := pf.ReadAt(got, int64(r[0])); err != nil {
				t.Fatalf("round %d, %d bytes at %d: %v", round, r[1], r[0], err)
			}
			if !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
				t.Fatalf("round %d, %d bytes at %d differ", round, r[1], r[0])
			}
		}
	}
	if _, err := pf.ReadAt(make([]byte, 10), int64(size-5)); err == nil {
		t.Error("a read past the end: no error")
	}
}

// A large file the page cache does not hold imports to the same root, with
// the same bytes in its pack.
func TestLargeUncachedFileImport(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	data := randomBytes(5, splitChunkMin+5<<20+77) // large enough to be chunked from two places
	writeTree(t, src, map[string]string{"big.bin": string(data)})
	f, err := os.Open(filepath.Join(src, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	evictFromCache(t, f)
	f.Close()
	r, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(t, s, src); !r.Root.Equals(want.Root) {
		t.Fatalf("import of an uncached file: root %s, from scratch %s", r.Root, want.Root)
	}
	packs := packPaths(t, s)
	if len(packs) != 1 {
		t.Fatalf("%d packs, want 1", len(packs))
	}
	if got, _ := os.ReadFile(packs[0]); !bytes.Equal(got, data) {
		t.Fatal("the pack's bytes differ from the file's")
	}
}

// Reading a file once for the pack and the chunker stops with an error,
// and without leaving a goroutine behind, when the file is shorter than
// said or the import is cancelled.
func TestReadOnceFailures(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(3, 3*readOncePiece+100)
	if err := os.WriteFile(filepath.Join(dir, "src"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pack"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	open := func(name string, flags int) int {
		fd, err := unix.Open(filepath.Join(dir, name), flags|unix.O_DIRECT|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Skipf("%s takes no O_DIRECT: %v", dir, err) // the import then goes through the page cache
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	src, pack := open("src", unix.O_RDONLY), open("pack", unix.O_WRONLY)
	s := openStore(t)
	im := &importer{s: s, batch: &blockBatch{s: s, dryRun: true}}
	leaves, err := im.readOnce(context.Background(), src, pack, int64(len(data)))
	if err != nil || len(leaves) == 0 {
		t.Fatalf("whole file: %d leaves, %v", len(leaves), err)
	}
	if _, err := im.readOnce(context.Background(), src, pack, int64(len(data))+2*readOncePiece); err == nil {
		t.Error("a file shorter than said: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := im.readOnce(ctx, src, pack, int64(len(data))); err == nil {
		t.Error("cancelled: no error")
	}
}

// A CAR of large files, whose chunks are read ahead while they are written
// (a packed file read past the page cache, one whose chunks repeat, and a
// directory of one-block files), holds every block once and rebuilds the
// tree.
func TestExportCARReadsAhead(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	big := randomBytes(21, packMinSize+2<<20)
	files := map[string]string{
		"big.bin":   string(big),
		"zeros.bin": string(make([]byte, 6<<20)), // the same chunk, again and again
		"mid.bin":   string(randomBytes(22, 3<<20)),
	}
	for i := range 20 {
		files[fmt.Sprintf("small/%02d.txt", i)] = strings.Repeat(fmt.Sprintf("line %d\n", i), 1000)
	}
	writeTree(t, src, files)
	res, err := a.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packPaths(t, a) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		evictFromCache(t, f)
		f.Close()
	}
	var car bytes.Buffer
	n, err := a.ExportCAR(ctx, res.Root, &car)
	if err != nil {
		t.Fatal(err)
	}
	roots, got, err := b.ImportCAR(ctx, &car)
	if err != nil || len(roots) != 1 || !roots[0].Equals(res.Root) || got != n {
		t.Fatalf("CAR of %d blocks imported as %d, roots %v: %v", n, got, roots, err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := b.Export(ctx, res.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, dest))
}
