package dag

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// Chunking a large file from two places must give exactly the chunks of one
// pass of boxo's chunker, whether the halves meet at once (random data, runs
// of maximal chunks) or never within the overlap (a run of zeros that puts
// the first half's chunks out of step with the second's).
func TestChunkSplitMatchesOnePass(t *testing.T) {
	const size = 80 << 20
	mid := size / 2 / buzMaxChunk * buzMaxChunk
	random := randomBytes(7, size)
	outOfStep := randomBytes(8, size)
	clear(outOfStep[mid-(1<<20)+12345 : mid+splitOverlap+(4<<20)])
	odd := randomBytes(9, size+777) // a size that is no multiple of anything
	cases := map[string][]byte{
		"random":      random,
		"zeros":       make([]byte, size),
		"out of step": outOfStep,
		"odd size":    odd,
	}
	ctx := context.Background()
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			s := openStore(t)
			im := &importer{s: s, batch: &blockBatch{s: s, dryRun: true}, opts: ImportOptions{Workers: 2}}
			want, err := im.chunkParallel(ctx, io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))), im.hashLeaf)
			if err != nil {
				t.Fatal(err)
			}
			im.bytesRead.Store(0)
			got, err := im.chunkSplit(ctx, bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d chunks, one pass gives %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("chunk %d: %+v, one pass gives %+v", i, got[i], want[i])
				}
			}
			if n := im.bytesRead.Load(); n != int64(len(data)) {
				t.Errorf("bytes read %d, want %d", n, len(data))
			}
		})
	}
}

// BenchmarkChunkLarge chunks and hashes 256 MiB held in memory in one pass
// of the chunker and from two places (chunkSplit):
// go test -run '^$' -bench ChunkLarge -benchtime 5x ./dag
func BenchmarkChunkLarge(b *testing.B) {
	data := randomBytes(3, 256<<20)
	s := openStore(b)
	im := &importer{s: s, batch: &blockBatch{s: s, dryRun: true}}
	ctx := context.Background()
	b.Run("one-pass", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := im.chunkParallel(ctx, io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))), im.hashLeaf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("split", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := im.chunkSplit(ctx, bytes.NewReader(data), int64(len(data))); err != nil {
				b.Fatal(err)
			}
		}
	})
}
