package dag

import (
	"context"
	"errors"
	"fmt"

	ft "github.com/ipfs/boxo/ipld/unixfs"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// A file fetched from several peers at once is fetched by its leaves: the
// inner nodes come first (a few KiB for a GiB), and their links say which
// leaf holds which bytes, so the leaves can be split among providers and
// written at their offsets as they arrive, in any order.

// FileLeaf is one leaf of a UnixFS file's DAG: the block that holds the
// file's bytes [Offset, Offset+Size).
type FileLeaf struct {
	Cid    cid.Cid
	Offset int64
	Size   int64
}

// MaxFileLeaves bounds the leaves of a file fetched by its leaves (4 Mi
// leaves: a TiB of 256 KiB chunks), so that a hostile DAG of tiny leaves
// cannot make the list itself exhaust memory.
const MaxFileLeaves = 1 << 22

// ErrNotFile is returned by FileLeaves for a root that is not a UnixFS
// file (a directory, a symlink).
var ErrNotFile = errors.New("not a file")

// FileLeaves makes local, through f, the inner nodes of the UnixFS file
// root, a level at a time, and lists the file's leaves in order, with their
// offsets. Raw leaves are not fetched; a dag-pb leaf (a node with data and
// no links) is, as it cannot be told from an inner node until it is here.
// A DAG whose sizes do not add up, or an inner node that holds data of its
// own besides links, is refused (ErrHostile): its leaves would not tile the
// file.
func (s *Store) FileLeaves(ctx context.Context, root cid.Cid, f Fetcher) ([]FileLeaf, int64, error) {
	type span struct {
		c      cid.Cid
		off    int64
		size   int64 // claimed by the parent; -1 for the root
		depth  int
		isRoot bool
	}
	var leaves []FileLeaf
	var total int64 = -1
	level := []span{{c: root, size: -1, isRoot: true}}
	for len(level) > 0 {
		var nodes []cid.Cid
		for _, sp := range level {
			if sp.c.Prefix().Codec != cid.Raw || sp.isRoot {
				nodes = append(nodes, sp.c) // a raw leaf is not needed to know the layout
			}
		}
		if err := s.fetchMissing(ctx, nodes, f); err != nil {
			return nil, 0, fmt.Errorf("inner nodes of %s: %w", root, err)
		}
		var next []span
		for _, sp := range level {
			if sp.depth > MaxDepth {
				return nil, 0, fmt.Errorf("file tree deeper than %d: %w", MaxDepth, ErrHostile)
			}
			if sp.c.Prefix().Codec == cid.Raw {
				size := sp.size
				if sp.isRoot {
					n, err := s.FileSize(ctx, sp.c)
					if err != nil {
						return nil, 0, err
					}
					size, total = n, n
				}
				leaves = append(leaves, FileLeaf{Cid: sp.c, Offset: sp.off, Size: size})
				continue
			}
			_, kind, fsn, err := s.loadNode(ctx, sp.c)
			if err != nil {
				return nil, 0, err
			}
			if kind != nodeFile || fsn == nil {
				if sp.isRoot {
					return nil, 0, fmt.Errorf("%s: %w", root, ErrNotFile)
				}
				return nil, 0, fmt.Errorf("node %s is not file data: %w", sp.c, ErrHostile)
			}
			if sp.isRoot {
				total = int64(fsn.FileSize())
				sp.size = total
			}
			if int64(fsn.FileSize()) != sp.size {
				return nil, 0, fmt.Errorf("node %s holds %d bytes, its parent says %d: %w", sp.c, fsn.FileSize(), sp.size, ErrHostile)
			}
			links, fsn, err := s.fileNode(ctx, sp.c)
			if err != nil {
				return nil, 0, err
			}
			if len(links) == 0 {
				leaves = append(leaves, FileLeaf{Cid: sp.c, Offset: sp.off, Size: sp.size})
				continue
			}
			if len(fsn.Data()) > 0 {
				return nil, 0, fmt.Errorf("inner node %s holds data besides its links: %w", sp.c, ErrHostile)
			}
			pos := sp.off
			for i, l := range links {
				size := int64(fsn.BlockSize(i))
				next = append(next, span{c: l.Cid, off: pos, size: size, depth: sp.depth + 1})
				pos += size
			}
			if pos != sp.off+sp.size {
				return nil, 0, fmt.Errorf("node %s: its links hold %d bytes, it says %d: %w", sp.c, pos-sp.off, sp.size, ErrHostile)
			}
		}
		if len(leaves)+len(next) > MaxFileLeaves {
			return nil, 0, fmt.Errorf("file %s has more than %d leaves: %w", root, MaxFileLeaves, errdefs.ErrResourceExhausted)
		}
		level = next
	}
	// A level lists its spans in file order, and leaves come out of
	// different levels when the tree is unbalanced: put them in order.
	sortLeaves(leaves)
	return leaves, total, nil
}

// sortLeaves orders leaves by offset (insertion sort over runs that are
// already in order, as each level's are).
func sortLeaves(ls []FileLeaf) {
	for i := 1; i < len(ls); i++ {
		if ls[i-1].Offset <= ls[i].Offset {
			continue
		}
		j := i
		for j > 0 && ls[j-1].Offset > ls[j].Offset {
			ls[j-1], ls[j] = ls[j], ls[j-1]
			j--
		}
	}
}

// LeafData is the file bytes that the verified block v of leaf l holds:
// a raw block is its bytes; a dag-pb leaf's are its UnixFS data. A block
// that does not hold l.Size bytes is refused (ErrHostile).
func LeafData(l FileLeaf, v VerifiedBlock) ([]byte, error) {
	return leafData(l, v.b)
}

func leafData(l FileLeaf, b blocks.Block) ([]byte, error) {
	data := b.RawData()
	if l.Cid.Prefix().Codec != cid.Raw {
		nd, err := decodeNode(l.Cid, data)
		if err != nil {
			return nil, err
		}
		fsn, err := ft.FSNodeFromBytes(nd.Data())
		if err != nil || len(nd.Links()) > 0 {
			return nil, fmt.Errorf("leaf %s is not a UnixFS leaf: %w", l.Cid, ErrHostile)
		}
		data = fsn.Data()
	}
	if int64(len(data)) != l.Size {
		return nil, fmt.Errorf("leaf %s holds %d bytes, its parent says %d: %w", l.Cid, len(data), l.Size, ErrHostile)
	}
	return data, nil
}

// LocalLeaf is the data of leaf l when this store holds it (or it is
// inline), with ok false when it does not.
func (s *Store) LocalLeaf(ctx context.Context, l FileLeaf) (data []byte, ok bool, err error) {
	if d, in := inline(l.Cid); in {
		if int64(len(d)) != l.Size {
			return nil, false, fmt.Errorf("leaf %s holds %d bytes, its parent says %d: %w", l.Cid, len(d), l.Size, ErrHostile)
		}
		return d, true, nil
	}
	b, err := s.blocks.Get(ctx, l.Cid)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, false, nil
		}
		return nil, false, err
	}
	data, err = leafData(l, b)
	return data, err == nil, err
}
