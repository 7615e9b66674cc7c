package dag

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	pb "github.com/ipfs/boxo/ipld/unixfs/pb"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Bounds on what a DAG from outside may make us do.
const (
	// MaxDepth bounds directory nesting and file-tree depth.
	MaxDepth = 256
	// MaxDirEntries bounds one directory.
	MaxDirEntries = 1 << 20
	// maxLinksPerNode bounds one dag-pb node of a file.
	maxLinksPerNode = 1 << 16
)

// ErrHostile classifies a DAG that breaks a rule of safe export (a bad
// name, an escaping symlink, a bound exceeded). It wraps errdefs.ErrInvalid.
var ErrHostile = fmt.Errorf("unsafe DAG: %w", errdefs.ErrInvalid)

// nodeKind is what a UnixFS node is, seen from its parent's link.
type nodeKind int

const (
	nodeFile nodeKind = iota
	nodeDir
	nodeSymlink
)

// dirEntry is one validated entry of a directory.
type dirEntry struct {
	Name string
	Cid  cid.Cid
	Size uint64 // link Tsize
}

// checkName refuses names that could step outside a directory.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("entry name %q: %w", name, ErrHostile)
	}
	return nil
}

// loadNode reads a node from the local store and classifies it.
func (s *Store) loadNode(ctx context.Context, c cid.Cid) (ipld.Node, nodeKind, *ft.FSNode, error) {
	nd, err := s.dags.Get(ctx, c)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("read %s: %w", c, err)
	}
	switch c.Prefix().Codec {
	case cid.Raw:
		return nd, nodeFile, nil, nil
	case cid.DagProtobuf:
	default:
		return nil, 0, nil, fmt.Errorf("node %s: codec %#x is not UnixFS: %w", c, c.Prefix().Codec, ErrHostile)
	}
	pn, ok := nd.(*merkledag.ProtoNode)
	if !ok {
		return nil, 0, nil, fmt.Errorf("node %s: not a dag-pb node: %w", c, ErrHostile)
	}
	fsn, err := ft.FSNodeFromBytes(pn.Data())
	if err != nil {
		return nil, 0, nil, fmt.Errorf("node %s: %v: %w", c, err, ErrHostile)
	}
	switch fsn.Type() {
	case pb.Data_File, pb.Data_Raw:
		return pn, nodeFile, fsn, nil
	case pb.Data_Directory, pb.Data_HAMTShard:
		return pn, nodeDir, fsn, nil
	case pb.Data_Symlink:
		return pn, nodeSymlink, fsn, nil
	}
	return nil, 0, nil, fmt.Errorf("node %s: UnixFS type %v not supported: %w", c, fsn.Type(), ErrHostile)
}

// readDir lists a directory node (plain or HAMT-sharded), validating every
// name and refusing duplicates, sorted by name.
func (s *Store) readDir(ctx context.Context, nd ipld.Node, fsn *ft.FSNode) ([]dirEntry, error) {
	var links []*ipld.Link
	if fsn.Type() == pb.Data_HAMTShard {
		if f := fsn.Fanout(); f == 0 || f > 1024 || f&(f-1) != 0 {
			return nil, fmt.Errorf("directory %s: HAMT fanout %d: %w", nd.Cid(), f, ErrHostile)
		}
		d, err := uio.NewDirectoryFromNode(s.dags, nd)
		if err != nil {
			return nil, fmt.Errorf("directory %s: %v: %w", nd.Cid(), err, ErrHostile)
		}
		err = d.ForEachLink(ctx, func(l *ipld.Link) error {
			if len(links) >= MaxDirEntries {
				return fmt.Errorf("directory %s: over %d entries: %w", nd.Cid(), MaxDirEntries, ErrHostile)
			}
			links = append(links, l)
			return nil
		})
		if err != nil {
			return nil, err
		}
	} else {
		links = nd.Links()
		if len(links) > MaxDirEntries {
			return nil, fmt.Errorf("directory %s: %d entries: %w", nd.Cid(), len(links), ErrHostile)
		}
	}
	out := make([]dirEntry, 0, len(links))
	seen := make(map[string]struct{}, len(links))
	for _, l := range links {
		if err := checkName(l.Name); err != nil {
			return nil, fmt.Errorf("directory %s: %w", nd.Cid(), err)
		}
		if _, dup := seen[l.Name]; dup {
			return nil, fmt.Errorf("directory %s: duplicate entry %q: %w", nd.Cid(), l.Name, ErrHostile)
		}
		seen[l.Name] = struct{}{}
		out = append(out, dirEntry{Name: l.Name, Cid: l.Cid, Size: l.Size})
	}
	// A HAMT lists its links in hash order, so a real sort is needed (an
	// insertion sort would be quadratic in a directory of a million entries).
	slices.SortFunc(out, func(a, b dirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// fileMode is the permission a file node asks for: its recorded bits, or
// 0644 when it records none. A DAG is untrusted: only the permission bits
// are taken (setuid, setgid and sticky never are), and the owner can always
// read what is written, so the tree can be read back (imported, merged,
// read by a task, which owns its workspace).
func fileMode(fsn *ft.FSNode) os.FileMode {
	m := defaultFileMode
	if fsn != nil {
		if p := fsn.Mode().Perm(); p != 0 {
			m = p
		}
	}
	return m | 0o400
}

// dirMode is the permission a directory node asks for: its recorded bits,
// or 0755 when it records none; masked as fileMode, and always with rwx for
// the owner, so a hostile 0000 (or a 0555) never leaves a tree that cannot
// be read, written by a merge, or removed.
func dirMode(fsn *ft.FSNode) os.FileMode {
	m := defaultDirMode
	if fsn != nil {
		if p := fsn.Mode().Perm(); p != 0 {
			m = p
		}
	}
	return m | 0o700
}

// writeFile streams the content of a file node to w, depth-first, from the
// local store. It never recurses deeper than MaxDepth. The file's inner
// nodes are read first, in order; its leaves are then read and checked by
// a few goroutines ahead of the writer (a packed leaf's hash is checked on
// every read), so a large file is written at the pace of the slower of the
// two, not of their sum.
func (s *Store) writeFile(ctx context.Context, c cid.Cid, w io.Writer) (int64, error) {
	return s.writeFileOf(ctx, loadedNode{c: c}, w)
}

// loadedNode is a node as loadNode returned it, or only its CID (nd nil)
// when it was not read yet.
type loadedNode struct {
	c   cid.Cid
	nd  ipld.Node
	fsn *ft.FSNode
}

// writeFileOf is writeFile of a file whose root node the caller may have
// read already (to learn that it is a file): it is not read again, which
// matters while blocks arrive (see inFlight).
func (s *Store) writeFileOf(ctx context.Context, top loadedNode, w io.Writer) (int64, error) {
	// The file as a sequence of parts: bytes held by inner nodes, and
	// leaves to read.
	type part struct {
		data []byte
		leaf cid.Cid
	}
	var parts []part
	leaves := 0
	var walk func(c cid.Cid, depth int) error
	walk = func(c cid.Cid, depth int) error {
		if depth > MaxDepth {
			return fmt.Errorf("file tree deeper than %d: %w", MaxDepth, ErrHostile)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if data, ok := inline(c); ok && c.Prefix().Codec == cid.Raw {
			parts = append(parts, part{data: data})
			return nil
		}
		if c.Prefix().Codec == cid.Raw {
			parts = append(parts, part{leaf: c})
			leaves++
			return nil
		}
		nd, kind, fsn := top.nd, nodeFile, top.fsn
		if depth > 0 || nd == nil {
			var err error
			if nd, kind, fsn, err = s.loadNode(ctx, c); err != nil {
				return err
			}
		}
		if kind != nodeFile {
			return fmt.Errorf("node %s inside a file is not file data: %w", c, ErrHostile)
		}
		if fsn == nil { // a raw leaf under another codec's CID cannot be: loadNode says file
			parts = append(parts, part{data: nd.RawData()})
			return nil
		}
		if len(fsn.Data()) > 0 {
			parts = append(parts, part{data: fsn.Data()})
		}
		links := nd.Links()
		if len(links) > maxLinksPerNode {
			return fmt.Errorf("file node %s has %d links: %w", c, len(links), ErrHostile)
		}
		for _, l := range links {
			if err := walk(l.Cid, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(top.c, 0); err != nil {
		return 0, err
	}
	// Leaves are read by readers, each into the slot of its part; the
	// writer takes the slots in order. At most readAhead leaves are held.
	const readAhead = 8
	ctx, cancel := context.WithCancel(ctx)
	type slot struct {
		data []byte
		err  error
		done chan struct{}
	}
	slots := make([]*slot, len(parts))
	for i, p := range parts {
		if p.leaf.Defined() {
			slots[i] = &slot{done: make(chan struct{})}
		}
	}
	// Tokens are taken in the order of the parts, by one dispatcher, so
	// the leaf the writer waits for always holds one: readers taking them
	// themselves could fill every token with later leaves.
	room := make(chan struct{}, readAhead) // a token per leaf dispatched, not yet written
	next := make(chan int)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // an early return stops the readers first
	wg.Go(func() {
		defer close(next)
		for i, p := range parts {
			if !p.leaf.Defined() {
				continue
			}
			select {
			case room <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	})
	for range min(leaves, max(2, runtime.GOMAXPROCS(0))) {
		wg.Go(func() {
			for i := range next {
				nd, kind, _, err := s.loadNode(ctx, parts[i].leaf)
				switch {
				case err != nil:
					slots[i].err = err
				case kind != nodeFile:
					slots[i].err = fmt.Errorf("node %s inside a file is not file data: %w", parts[i].leaf, ErrHostile)
				default:
					slots[i].data = nd.RawData()
				}
				close(slots[i].done)
			}
		})
	}
	var written int64
	for i, p := range parts {
		data := p.data
		if sl := slots[i]; sl != nil {
			select {
			case <-sl.done:
			case <-ctx.Done():
				return written, ctx.Err()
			}
			<-room
			if sl.err != nil {
				return written, sl.err
			}
			data, sl.data = sl.data, nil
		}
		n, err := w.Write(data)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}
