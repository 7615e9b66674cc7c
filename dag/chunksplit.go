package dag

import (
	"context"
	"io"
)

// A large file is chunked from two places at once. Boxo's buzhash chunker
// is one sequential loop (about 1 GB/s here), which made it the longest
// path of a large import: one core chunked while the other hashed. The
// chunker keeps no state from one chunk to the next, so chunking from any
// true boundary gives the same chunks as chunking from the start. The
// second half is therefore chunked as if a chunk began at its first byte,
// and the first half runs on into it for splitOverlap bytes: from the first
// boundary both found on, the second half's chunks are the file's. When
// they find none in common (data built to avoid it), the first half's last
// true boundary is where chunking goes on, alone. The chunks are the same
// as boxo's in every case; a test checks them against it.
const (
	splitChunkMin = 64 << 20
	splitOverlap  = 16 << 20
	// buzMaxChunk is the buzhash chunker's largest chunk. The halves meet at
	// a multiple of it, so that runs of maximal chunks (data with no
	// boundary, such as zeros) line up too.
	buzMaxChunk = 512 << 10
)

// chunkSplit chunks size bytes of r and hashes the chunks into leaves, in
// order; see above.
func (im *importer) chunkSplit(ctx context.Context, r io.ReaderAt, size int64) ([]leaf, error) {
	if size < splitChunkMin || im.workers() < 2 {
		return im.chunkParallel(ctx, io.NewSectionReader(r, 0, size), im.hashLeaf)
	}
	mid := size / 2 / buzMaxChunk * buzMaxChunk
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		leaves []leaf
		err    error
	}
	second := make(chan result, 1)
	go func() {
		l, err := im.chunkParallel(ctx, io.NewSectionReader(r, mid, size-mid), im.hashLeaf)
		second <- result{l, err}
	}()
	firstEnd := mid + splitOverlap
	first, err := im.chunkParallel(ctx, io.NewSectionReader(r, 0, firstEnd), im.hashLeaf)
	if err != nil {
		cancel()
		<-second
		return nil, err
	}
	sec := <-second
	if sec.err != nil {
		return nil, sec.err
	}
	// The first half's last chunk ends where its reader did, not at a
	// boundary: it is dropped.
	wasted := int64(first[len(first)-1].fileBytes)
	first = first[:len(first)-1]
	starts := make(map[int64]int, len(sec.leaves)) // second-half chunk start -> index
	off := mid
	for i, l := range sec.leaves {
		starts[off] = i
		off += int64(l.fileBytes)
	}
	var end int64
	for i, l := range first {
		end += int64(l.fileBytes)
		if end < mid {
			continue
		}
		if j, ok := starts[end]; ok {
			// What both halves hashed counts once in the bytes read.
			im.bytesRead.Add(-(wasted + leafBytes(first[i+1:]) + leafBytes(sec.leaves[:j])))
			return append(first[:i+1:i+1], sec.leaves[j:]...), nil
		}
	}
	// No boundary in common: go on alone from the first half's last one.
	im.bytesRead.Add(-(wasted + size - mid))
	rest, err := im.chunkParallel(ctx, io.NewSectionReader(r, end, size-end), im.hashLeaf)
	if err != nil {
		return nil, err
	}
	return append(first, rest...), nil
}

func leafBytes(ls []leaf) int64 {
	var n int64
	for _, l := range ls {
		n += int64(l.fileBytes)
	}
	return n
}
