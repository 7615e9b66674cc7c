package dag

import (
	"context"
	"fmt"
	"io"
	"os"

	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
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
	links, fsn, err := s.fileNode(ctx, c)
	if err != nil {
		return 0, err
	}
	n := 0
	if data := fsn.Data(); off < uint64(len(data)) {
		n = copy(p, data[off:])
		off = 0
	} else {
		off -= uint64(len(data))
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

// FileSize is the size in bytes of the UnixFS file root, read from its
// root node alone (which must be local).
func (s *Store) FileSize(ctx context.Context, root cid.Cid) (int64, error) {
	if root.Prefix().Codec == cid.Raw {
		if data, ok := inline(root); ok {
			return int64(len(data)), nil
		}
		n, err := s.blocks.GetSize(ctx, root)
		if err != nil {
			return 0, fmt.Errorf("size of %s: %w", root, err)
		}
		return int64(n), nil
	}
	_, kind, fsn, err := s.loadNode(ctx, root)
	if err != nil {
		return 0, err
	}
	if kind != nodeFile || fsn == nil {
		return 0, fmt.Errorf("%s is not a file: %w", root, errdefs.ErrInvalid)
	}
	return int64(fsn.FileSize()), nil
}

// FetchRange makes local, through f, the blocks of the UnixFS file root
// that hold its bytes [off, off+n): the nodes on the way down, a level at
// a time, and the leaves of the range in batches. Blocks already here are
// not asked for; every block is verified.
func (s *Store) FetchRange(ctx context.Context, root cid.Cid, off, n int64, f Fetcher) error {
	if off < 0 || n < 0 {
		return fmt.Errorf("range %d+%d of %s: %w", off, n, root, errdefs.ErrInvalid)
	}
	type span struct {
		c      cid.Cid
		off, n uint64 // relative to c's own bytes
		depth  int
	}
	level := []span{{root, uint64(off), uint64(n), 0}}
	for len(level) > 0 {
		// Make this level's blocks local, then step into the internal ones.
		cs := make([]cid.Cid, len(level))
		for i, sp := range level {
			cs[i] = sp.c
		}
		if err := s.fetchMissing(ctx, cs, f); err != nil {
			return fmt.Errorf("fetch range of %s: %w", root, err)
		}
		var next []span
		for _, sp := range level {
			if sp.c.Prefix().Codec == cid.Raw || sp.n == 0 {
				continue
			}
			if sp.depth > MaxDepth {
				return fmt.Errorf("file tree deeper than %d: %w", MaxDepth, ErrHostile)
			}
			links, fsn, err := s.fileNode(ctx, sp.c)
			if err != nil {
				return err
			}
			start, end := sp.off, sp.off+sp.n // of this node's bytes
			pos := uint64(len(fsn.Data()))
			for i, l := range links {
				size := fsn.BlockSize(i)
				if pos < end && pos+size > start { // the child holds part of the range
					cOff := max(start, pos) - pos
					cEnd := min(end, pos+size) - pos
					next = append(next, span{l.Cid, cOff, cEnd - cOff, sp.depth + 1})
				}
				pos += size
				if pos >= end {
					break
				}
			}
		}
		level = next
	}
	return nil
}

// fetchMissing makes the blocks cs local through f, asking only for those
// the store lacks, in batches.
func (s *Store) fetchMissing(ctx context.Context, cs []cid.Cid, f Fetcher) error {
	var missing []cid.Cid
	for _, c := range cs {
		if _, ok := inline(c); ok {
			continue
		}
		if has, err := s.blocks.Has(ctx, c); err != nil {
			return err
		} else if !has {
			missing = append(missing, c)
		}
	}
	for len(missing) > 0 {
		batch := missing[:min(len(missing), fetchBatchSize)]
		missing = missing[len(batch):]
		if err := s.fetchBatch(ctx, batch, f, func([]cid.Cid, int) {}); err != nil {
			return err
		}
	}
	return nil
}

// fileNode loads the inner node c of a UnixFS file: its links, and its
// node, whose block sizes say how many bytes each link holds (one size a
// link, or the DAG is hostile).
func (s *Store) fileNode(ctx context.Context, c cid.Cid) ([]*ipld.Link, *ft.FSNode, error) {
	nd, kind, fsn, err := s.loadNode(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	if kind != nodeFile || fsn == nil {
		return nil, nil, fmt.Errorf("node %s is not file data: %w", c, ErrHostile)
	}
	links := nd.Links()
	if len(links) != fsn.NumChildren() {
		return nil, nil, fmt.Errorf("file node %s: %d links, %d block sizes: %w", c, len(links), fsn.NumChildren(), ErrHostile)
	}
	return links, fsn, nil
}
