package dag

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A large file the page cache does not hold is read once, with O_DIRECT,
// and each piece read is both written into the pack (O_DIRECT) and chunked.
// Through the page cache, its first reader (the copy or the chunkers) paid
// the cold read, 2.9 s of CPU per GiB on these machines (direct.go), and a
// 1 GiB import from disk took 2.7-3.1 s against 1.7 s from a tmpfs.
// Reading it past the cache separately for the copy and the chunkers was
// slower still (3.2-4.0 s): their reads were synchronous, one at a time.
// Here one reader keeps readOnceBufs pieces in flight. The chunking is one
// pass (chunkSplit would need a second reader).
const (
	readOncePiece = 8 << 20
	readOnceBufs  = 4
)

// piece is readOncePiece bytes of the file at off, shared by the pack
// writer and the chunker; the last of them to be done gives it back.
type piece struct {
	buf   []byte
	n     int
	off   int64
	users atomic.Int32
}

// chunkUncached imports src through one O_DIRECT read when the page cache
// holds less than half of it and both src and the pack take O_DIRECT. It
// returns nil leaves and no error when that does not apply.
func (im *importer) chunkUncached(ctx context.Context, src *os.File, packPath string, size int64) ([]leaf, error) {
	if cached, total, ok := cachedPages(src, 0, size); !ok || cached*2 >= total {
		return nil, nil
	}
	srcFD, err := reopenDirect(src) // not by name: the stat checked after is src's
	if err != nil {
		return nil, nil
	}
	defer unix.Close(srcFD)
	packFD, err := unix.Open(packPath, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil
	}
	defer unix.Close(packFD)
	leaves, err := im.readOnce(ctx, srcFD, packFD, size)
	if err != nil {
		return nil, err
	}
	if err := unix.Ftruncate(packFD, size); err != nil {
		return nil, err
	}
	return leaves, nil
}

// readOnce reads size bytes from srcFD, writes them to packFD at the same
// offsets and chunks them into leaves.
func (im *importer) readOnce(ctx context.Context, srcFD, packFD int, size int64) ([]leaf, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	free := make(chan []byte, readOnceBufs)
	for range readOnceBufs {
		free <- alignedBuf(readOncePiece)
	}
	release := func(p *piece) {
		if p.users.Add(-1) == 0 {
			free <- p.buf
		}
	}
	// At most readOnceBufs pieces exist, so sends to these never block.
	toWrite := make(chan *piece, readOnceBufs)
	toChunk := make(chan *piece, readOnceBufs)
	var wg sync.WaitGroup
	wg.Go(func() { // the reader
		defer close(toChunk)
		defer close(toWrite)
		for off := int64(0); off < size; off += readOncePiece {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return
			}
			n := int(min(readOncePiece, size-off))
			if err := readDirect(srcFD, buf[:n], off); err != nil {
				cancel(fmt.Errorf("read at %d: %w", off, err))
				free <- buf
				return
			}
			// The last write is padded to a block; the pack is cut to size after.
			clear(buf[n:alignUp(n)])
			p := &piece{buf: buf, n: n, off: off}
			p.users.Store(2)
			toWrite <- p
			toChunk <- p
		}
	})
	wg.Go(func() { // the pack writer
		for p := range toWrite {
			if ctx.Err() == nil {
				if err := writeDirectFrom(ctx, packFD, p.buf[:alignUp(p.n)], p.off); err != nil {
					cancel(fmt.Errorf("write into the pack at %d: %w", p.off, err))
				}
			}
			release(p)
		}
	})
	r := &pieceReader{ch: toChunk, release: release}
	leaves, err := im.chunkParallel(ctx, r, im.hashLeaf)
	if err != nil {
		cancel(err)
	}
	r.drain()
	wg.Wait() // the writer finishes the pack unless something failed
	// A failed read or write ends the chunks short: its cause is the error.
	if cause := context.Cause(ctx); cause != nil {
		return nil, cause
	}
	return leaves, nil
}

// pieceReader reads the pieces in order, giving each back once read.
type pieceReader struct {
	ch      <-chan *piece
	release func(*piece)
	cur     *piece
	pos     int
}

func (r *pieceReader) Read(b []byte) (int, error) {
	for r.cur == nil || r.pos == r.cur.n {
		if r.cur != nil {
			r.release(r.cur)
			r.cur = nil
		}
		p, ok := <-r.ch
		if !ok {
			return 0, io.EOF
		}
		r.cur, r.pos = p, 0
	}
	n := copy(b, r.cur.buf[r.pos:r.cur.n])
	r.pos += n
	return n, nil
}

// drain gives back what was not read, up to the reader's end.
func (r *pieceReader) drain() {
	if r.cur != nil {
		r.release(r.cur)
		r.cur = nil
	}
	for p := range r.ch {
		r.release(p)
	}
}
