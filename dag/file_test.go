package dag

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// A file added as a DAG reads back at any offset, across leaves and inner
// nodes, small (one raw block, inline) and large (packed).
func TestAddFileReadAt(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 10, 300 << 10, 40 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		root, err := s.AddFile(ctx, f)
		f.Close()
		if err != nil {
			t.Fatalf("add %d bytes: %v", size, err)
		}
		for _, r := range [][2]int{{0, size}, {size / 3, 1000}, {size - 5, 5}, {size / 2, 3 << 20}, {size, 1}} {
			off, n := max(r[0], 0), r[1]
			buf := make([]byte, n)
			got, err := s.ReadFileAt(ctx, root, buf, int64(off))
			want := data[min(off, size):min(off+n, size)]
			if !bytes.Equal(buf[:got], want) {
				t.Fatalf("size %d: read %d at %d: %d bytes, not the file's", size, n, off, got)
			}
			if off+n > size && !errors.Is(err, io.EOF) || off+n <= size && err != nil {
				t.Fatalf("size %d: read %d at %d: %v", size, n, off, err)
			}
		}
	}
}

// A range of a file from another store brings only the blocks that hold
// it, and then reads back from the local store.
func TestFetchRangeOnlyItsBlocks(t *testing.T) {
	a, b := openStore(t), openStore(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 40<<20) // many leaves, two levels of nodes
	for i := range data {
		data[i] = byte(rng.IntN(256))
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	root, err := a.AddFile(ctx, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	from := &storeFetcher{from: a}
	off, n := int64(17<<20+123), int64(3<<20)
	if err := b.FetchRange(ctx, root, off, n, from); err != nil {
		t.Fatal(err)
	}
	if size, err := b.FileSize(ctx, root); err != nil || size != int64(len(data)) {
		t.Fatalf("size %d %v, want %d", size, err, len(data))
	}
	buf := make([]byte, n)
	if got, err := b.ReadFileAt(ctx, root, buf, off); err != nil || int64(got) != n || !bytes.Equal(buf, data[off:off+n]) {
		t.Fatalf("read the range: %d %v", got, err)
	}
	_, total, _ := a.Coverage(ctx, root)
	if from.asked > 40 { // 3 MiB: a handful of leaves and the nodes above them
		t.Errorf("asked for %d blocks for a 3 MiB range of a file of %d links at the top", from.asked, total)
	}
	// Past the end: nothing to fetch, nothing read.
	if err := b.FetchRange(ctx, root, int64(len(data))+10, 100, from); err != nil {
		t.Fatal(err)
	}
	// A range not fetched is not here.
	if _, err := b.ReadFileAt(ctx, root, buf[:10], 0); err == nil {
		t.Error("read a part never fetched")
	}
}
