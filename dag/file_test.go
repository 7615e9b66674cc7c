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
