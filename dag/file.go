package dag

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/ipfs/go-cid"
)

// AddFile stores the content of f as a UnixFS file (no mode) and returns
// its root. Nothing pins it: the caller pins it, holding off GC meanwhile.
func (s *Store) AddFile(ctx context.Context, f *os.File) (cid.Cid, error) {
	info, err := f.Stat()
	if err != nil {
		return cid.Undef, fmt.Errorf("add file: %w", err)
	}
	im := &importer{s: s, batch: &blockBatch{s: s}}
	c, _, err := im.hashReader(ctx, 0, info.Size(), f)
	if err == nil {
		err = im.batch.flush()
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("add file %s: %w", f.Name(), err)
	}
	return c, nil
}

// ReadFileAt reads len(p) bytes of the UnixFS file root from offset off,
// from the local store, reading only the blocks that hold them. It
// returns io.EOF, as io.ReaderAt does, when the file ends first.
func (s *Store) ReadFileAt(ctx context.Context, root cid.Cid, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s at %d: negative offset", root, off)
	}
	n, err := s.readAt(ctx, root, p, uint64(off), 0)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// readAt copies into p what node c holds from offset off on (off is
// relative to c's own bytes), and returns how many bytes it copied.
func (s *Store) readAt(ctx context.Context, c cid.Cid, p []byte, off uint64, depth int) (int, error) {
	if depth > MaxDepth {
		return 0, fmt.Errorf("file tree deeper than %d: %w", MaxDepth, ErrHostile)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if c.Prefix().Codec == cid.Raw {
		data, ok := inline(c)
		if !ok {
			blk, err := s.blocks.Get(ctx, c)
			if err != nil {
				return 0, fmt.Errorf("read %s: %w", c, err)
			}
			data = blk.RawData()
		}
		if off >= uint64(len(data)) {
			return 0, nil
		}
		return copy(p, data[off:]), nil
	}
	nd, kind, fsn, err := s.loadNode(ctx, c)
	if err != nil {
		return 0, err
	}
	if kind != nodeFile || fsn == nil {
		return 0, fmt.Errorf("node %s is not file data: %w", c, ErrHostile)
	}
	n := 0
	if data := fsn.Data(); off < uint64(len(data)) {
		n = copy(p, data[off:])
		off = 0
	} else {
		off -= uint64(len(data))
	}
	links := nd.Links()
	if len(links) != fsn.NumChildren() {
		return n, fmt.Errorf("file node %s: %d links, %d block sizes: %w", c, len(links), fsn.NumChildren(), ErrHostile)
	}
	for i, l := range links {
		if n == len(p) {
			break
		}
		size := fsn.BlockSize(i)
		if off >= size {
			off -= size // the range starts past this child
			continue
		}
		got, err := s.readAt(ctx, l.Cid, p[n:], off, depth+1)
		n += got
		if err != nil {
			return n, err
		}
		off = 0
	}
	return n, nil
}
