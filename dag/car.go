package dag

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	pb "github.com/ipfs/boxo/ipld/unixfs/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// ExportCAR writes the DAG at root as a CARv1 stream (root first, then
// depth-first), so workspaces interoperate with IPFS tooling. Every block
// must be local. Identity CIDs carry their data and are not written.
func (s *Store) ExportCAR(ctx context.Context, root cid.Cid, w io.Writer) (blocksWritten int, err error) {
	return s.ExportCARAgainst(ctx, cid.Undef, root, w)
}

// ExportCARAgainst is ExportCAR for a reader that holds the whole DAG of
// base (an earlier root of the same tree): a subtree whose CID base has at
// the same path is not written, nor a chunk of a changed file that base's
// version of the file has. What is written is still in an order where each
// block follows one that links to it. Without base complete here, it is
// ExportCAR.
func (s *Store) ExportCARAgainst(ctx context.Context, base, root cid.Cid, w io.Writer) (blocksWritten int, err error) {
	if base.Defined() && !s.isComplete(base) {
		base = cid.Undef
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(carHeader(root)); err != nil {
		return 0, fmt.Errorf("export CAR %s: %w", root, err)
	}
	seen := map[string]struct{}{}
	// walk writes c and what it links to; was is base's node at the same
	// path (Undef if none), held the CIDs the reader has among c's
	// descendants, when c is a changed file.
	var walk func(c, was cid.Cid, held map[string]bool, depth int, ahead *readAhead) error
	walk = func(c, was cid.Cid, held map[string]bool, depth int, ahead *readAhead) error {
		if depth > 2*MaxDepth {
			return fmt.Errorf("deeper than %d: %w", 2*MaxDepth, ErrHostile)
		}
		if _, ok := seen[string(c.Bytes())]; ok {
			return nil
		}
		seen[string(c.Bytes())] = struct{}{}
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, ok := inline(c); ok && isIdentity(c) {
			return nil
		}
		var b blocks.Block
		var err error
		if ahead != nil && c.Prefix().Codec == cid.Raw {
			b, err = ahead.next(ctx, c)
		} else {
			b, err = s.blocks.Get(ctx, c)
		}
		if err != nil {
			return err
		}
		cb := c.Bytes()
		var lenbuf [binary.MaxVarintLen64]byte
		n := binary.PutUvarint(lenbuf[:], uint64(len(cb)+len(b.RawData())))
		for _, part := range [][]byte{lenbuf[:n], cb, b.RawData()} {
			if _, err := bw.Write(part); err != nil {
				return err
			}
		}
		blocksWritten++
		if c.Prefix().Codec != cid.DagProtobuf {
			return nil
		}
		nd, err := decodeNode(c, b.RawData()) // the block in hand: no second read
		if err != nil {
			return err
		}
		// What base has beside this node: by name for a directory, as a
		// set of chunks for a file.
		if was.Equals(c) {
			return nil // the reader has all of it
		}
		var wasByName map[string]cid.Cid
		if was.Defined() {
			switch kind, pair, err := s.counterpart(ctx, nd, was); {
			case err != nil:
				return err
			case kind == nodeDir:
				wasByName = pair.byName
			case kind == nodeFile:
				held = pair.chunks
			}
		}
		// visits reports whether the walk follows l, and base's node at
		// its path if it does.
		visits := func(l *ipld.Link) (cid.Cid, bool) {
			if held[l.Cid.KeyString()] {
				return cid.Undef, false
			}
			var next cid.Cid
			if wasByName != nil {
				prev, ok := wasByName[l.Name]
				if ok && prev.Equals(l.Cid) {
					return cid.Undef, false // the reader has this subtree
				}
				next = prev // Undef when the name is new
			}
			return next, true
		}
		children := s.readAheadChunks(ctx, nd, visits, seen)
		if children != nil {
			defer children.stop()
		}
		for _, l := range nd.Links() {
			next, ok := visits(l)
			if !ok {
				continue
			}
			if err := walk(l.Cid, next, held, depth+1, children); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, base, nil, 0, nil); err != nil {
		return blocksWritten, fmt.Errorf("export CAR %s: %w", root, err)
	}
	if err := bw.Flush(); err != nil {
		return blocksWritten, fmt.Errorf("export CAR %s: %w", root, err)
	}
	return blocksWritten, nil
}

// readAheadChunks starts reading ahead the chunks of nd that the walk will
// write (visits says which links it follows), in its order, when nd is the
// last level of a file: every link raw and unnamed. A large file's chunks
// come from a pack read past the page cache, and the walk otherwise waited
// on the disk for each in turn: the serving peer of a 1 GiB fetch was
// waiting on reads in about 40% of samples. Files do not nest, so one read
// ahead runs at a time and its memory is bounded. Not for a directory of
// small files: those are in the page cache, and a read ahead per directory
// made the Go tree's fetch 10% slower. It returns nil when there is nothing
// to read ahead.
func (s *Store) readAheadChunks(ctx context.Context, nd *merkledag.ProtoNode, visits func(*ipld.Link) (cid.Cid, bool), seen map[string]struct{}) *readAhead {
	var want []cid.Cid
	listed := map[string]bool{}
	for _, l := range nd.Links() {
		if l.Cid.Prefix().Codec != cid.Raw || l.Name != "" { // a directory's entries have names
			return nil
		}
		if _, ok := visits(l); !ok || isIdentity(l.Cid) {
			continue
		}
		if _, done := seen[string(l.Cid.Bytes())]; done || listed[l.Cid.KeyString()] {
			continue
		}
		listed[l.Cid.KeyString()] = true
		want = append(want, l.Cid)
	}
	if len(want) < 2 {
		return nil
	}
	return s.startReadAhead(ctx, want)
}

// readAheadBlocks bounds the blocks read ahead of the walk: at most 16
// chunks, 8 MiB for a large file's (its chunks are at most 512 KiB).
const readAheadBlocks = 16

// readAhead gets a list of blocks in order on its own goroutine, up to
// readAheadBlocks before they are asked for.
type readAhead struct {
	s      *Store
	want   []cid.Cid
	out    chan aheadBlock
	cancel context.CancelFunc
	done   chan struct{}
}

type aheadBlock struct {
	b   blocks.Block
	err error
}

func (s *Store) startReadAhead(ctx context.Context, want []cid.Cid) *readAhead {
	ctx, cancel := context.WithCancel(ctx)
	ra := &readAhead{s: s, want: want, out: make(chan aheadBlock, readAheadBlocks), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ra.done)
		defer close(ra.out)
		for _, c := range want {
			b, err := s.blocks.Get(ctx, c)
			select {
			case ra.out <- aheadBlock{b, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ra
}

// next returns c, read ahead. The walk asks in the listed order but may
// skip some (a chunk that an earlier subtree wrote already): those are
// passed over. A block not read ahead (not listed, or after the read
// ahead stopped at an error) is read here.
func (ra *readAhead) next(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	for i, w := range ra.want {
		if !w.Equals(c) {
			continue
		}
		ra.want = ra.want[i+1:]
		for range i {
			if _, ok := <-ra.out; !ok {
				break
			}
		}
		if r, ok := <-ra.out; ok {
			return r.b, r.err
		}
		break
	}
	return ra.s.blocks.Get(ctx, c)
}

// stop ends the read ahead and waits for its goroutine.
func (ra *readAhead) stop() {
	ra.cancel()
	for range ra.out { // let a pending send through
	}
	<-ra.done
}

// pairing is what base holds beside a node being written against it.
type pairing struct {
	byName map[string]cid.Cid // a directory's entries
	chunks map[string]bool    // every CID under a file
}

// counterpart pairs the node nd (being written) with was, base's node at
// the same path: two plain directories pair by entry name, two files by
// their chunks. Anything else (a kind change, a sharded directory, whose
// inner nodes do not pair by name) does not pair, and nd's subtree is
// written whole.
func (s *Store) counterpart(ctx context.Context, nd *merkledag.ProtoNode, was cid.Cid) (nodeKind, pairing, error) {
	fsn, err := ft.FSNodeFromBytes(nd.Data())
	if err != nil {
		return 0, pairing{}, nil
	}
	if was.Prefix().Codec != cid.DagProtobuf {
		return 0, pairing{}, nil
	}
	wn, wkind, wfsn, err := s.loadNode(ctx, was)
	if err != nil {
		return 0, pairing{}, err
	}
	switch {
	case fsn.Type() == pb.Data_Directory && wkind == nodeDir && wfsn.Type() == pb.Data_Directory:
		byName := make(map[string]cid.Cid, len(wn.Links()))
		for _, l := range wn.Links() {
			byName[l.Name] = l.Cid
		}
		return nodeDir, pairing{byName: byName}, nil
	case (fsn.Type() == pb.Data_File || fsn.Type() == pb.Data_Raw) && wkind == nodeFile:
		chunks := map[string]bool{}
		var collect func(n ipld.Node, depth int) error
		collect = func(n ipld.Node, depth int) error {
			if depth > MaxDepth {
				return fmt.Errorf("file tree deeper than %d: %w", MaxDepth, ErrHostile)
			}
			for _, l := range n.Links() {
				chunks[l.Cid.KeyString()] = true
				if l.Cid.Prefix().Codec != cid.DagProtobuf {
					continue
				}
				sub, err := s.dags.Get(ctx, l.Cid)
				if err != nil {
					return err
				}
				if err := collect(sub, depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		if err := collect(wn, 0); err != nil {
			return 0, pairing{}, err
		}
		return nodeFile, pairing{chunks: chunks}, nil
	}
	return 0, pairing{}, nil
}

func isIdentity(c cid.Cid) bool { return c.Prefix().MhType == 0x00 }

// carHeader encodes the CARv1 header {roots: [root], version: 1} in
// dag-cbor (keys in canonical order), prefixed by its varint length.
func carHeader(root cid.Cid) []byte {
	var h []byte
	h = append(h, 0xa2)       // map(2)
	h = append(h, 0x65)       // text(5)
	h = append(h, "roots"...) //
	h = append(h, 0x81)       // array(1)
	h = append(h, 0xd8, 0x2a) // tag(42): CID
	h = cborBytesHeader(h, 1+root.ByteLen())
	h = append(h, 0x00)            // multibase identity prefix
	h = append(h, root.Bytes()...) //
	h = append(h, 0x67)            // text(7)
	h = append(h, "version"...)    //
	h = append(h, 0x01)            // 1
	out := binary.AppendUvarint(nil, uint64(len(h)))
	return append(out, h...)
}

func cborBytesHeader(b []byte, n int) []byte {
	switch {
	case n < 24:
		return append(b, 0x40|byte(n))
	case n < 1<<8:
		return append(b, 0x58, byte(n))
	default:
		return append(b, 0x59, byte(n>>8), byte(n))
	}
}

// ImportCAR reads a CAR (v1 or v2) and stores its blocks, each verified
// against its CID and the size cap. It returns the CAR's roots.
func (s *Store) ImportCAR(ctx context.Context, r io.Reader) (roots []cid.Cid, blocksRead int, err error) {
	roots, blocksRead, err = s.readCAR(ctx, r, nil, nil)
	if err != nil {
		return nil, blocksRead, fmt.Errorf("import CAR: %w", err)
	}
	return roots, blocksRead, nil
}

// ImportDAG reads a CAR stream that must hold the DAG of root in an order
// where every block comes after a block that links to it (as ExportCAR
// writes it), and stores only such blocks: a block nobody asked for ends
// the import with an error. This is the receiving side of a bulk transfer
// from a peer, so a peer cannot push unrelated data.
func (s *Store) ImportDAG(ctx context.Context, root cid.Cid, r io.Reader) (blocksRead int, err error) {
	gen, err := s.gcGeneration() // before any block is written (see markCompleteAt)
	if err != nil {
		return 0, fmt.Errorf("import DAG %s: %w", root, err)
	}
	// expected: every block the DAG links to so far; a value of true once
	// it arrived.
	expected := map[string]bool{string(root.Hash()): false}
	checkRoots := func(roots []cid.Cid) error {
		if len(roots) != 1 || !roots[0].Equals(root) {
			return fmt.Errorf("the stream is for %v: %w", roots, errdefs.ErrInvalid)
		}
		return nil
	}
	var links []cid.Cid // of the blocks that arrived, to look for once
	accept := func(b blocks.Block) error {
		if _, ok := expected[string(b.Cid().Hash())]; !ok {
			return fmt.Errorf("block %s is not part of the DAG: %w", b.Cid(), ErrHostile)
		}
		expected[string(b.Cid().Hash())] = true
		if b.Cid().Prefix().Codec != cid.DagProtobuf {
			return nil
		}
		ls, err := linksOf(b.Cid(), b.RawData())
		if err != nil {
			return err
		}
		for _, l := range ls {
			if _, ok := expected[string(l.Hash())]; !ok {
				expected[string(l.Hash())] = false
				links = append(links, l)
			}
		}
		return nil
	}
	_, blocksRead, err = s.readCAR(ctx, r, checkRoots, accept)
	if err != nil {
		return blocksRead, fmt.Errorf("import DAG %s: %w", root, err)
	}
	// Every block the DAG links to came, or was here: the DAG is complete,
	// and a fetch after this one need not walk it again.
	for _, l := range links {
		if expected[string(l.Hash())] {
			continue
		}
		if has, err := s.blocks.Has(ctx, l); err != nil || !has {
			return blocksRead, nil // bitswap fetches the rest
		}
		if l.Prefix().Codec == cid.DagProtobuf && !s.isComplete(l) {
			return blocksRead, nil // a node here whose subtree may not be: walk
		}
	}
	if !expected[string(root.Hash())] {
		return blocksRead, nil
	}
	if err := s.markCompleteAt(root, gen); err != nil {
		return blocksRead, fmt.Errorf("import DAG %s: %w", root, err)
	}
	return blocksRead, nil
}

// readCAR reads a CAR stream, verifies every block against its CID and the
// size cap, lets accept (when set) refuse it after that, and stores the
// accepted blocks in batches: one badger transaction per block would cost
// more than the hashing. checkRoots (when set) vets the header's roots
// before any block is read. Blocks accepted before an error stay stored.
func (s *Store) readCAR(ctx context.Context, r io.Reader, checkRoots func([]cid.Cid) error, accept func(blocks.Block) error) (roots []cid.Cid, stored int, err error) {
	// The reader is told to trust the CAR only because VerifyBlock below
	// checks every block (hash and size cap): one hash per block, not two.
	br, err := carv2.NewBlockReader(r, carv2.MaxAllowedSectionSize(MaxBlockSize+256), carv2.MaxAllowedHeaderSize(1<<20), carv2.WithTrustedCAR(true))
	if err != nil {
		return nil, 0, fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	if checkRoots != nil {
		if err := checkRoots(br.Roots); err != nil {
			return nil, 0, err
		}
	}
	// Batches are stored by a writer goroutine, so reading and verifying
	// the stream goes on while badger writes; at most two batches wait.
	batches := make(chan []blocks.Block, 2)
	written := make(chan error, 1)
	go func() {
		var werr error
		for batch := range batches {
			if werr == nil {
				werr = s.blocks.putTrusted(batch)
			}
		}
		written <- werr
	}()
	var pending []blocks.Block
	pendingBytes, sent := 0, 0
	closed := false
	finish := func() error { // sends what is pending and waits for the writer
		if closed {
			return nil
		}
		closed = true
		if len(pending) > 0 {
			batches <- pending
			sent += len(pending)
			pending, pendingBytes = nil, 0
		}
		close(batches)
		err := <-written
		if err == nil {
			stored = sent
		}
		return err
	}
	defer finish()
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		select {
		case err := <-written: // the writer stopped on an error
			written <- err
			return err
		default:
		}
		batches <- pending
		sent += len(pending)
		pending, pendingBytes = nil, 0
		return nil
	}
	fail := func(err error) ([]cid.Cid, int, error) {
		if ferr := finish(); ferr != nil {
			return nil, stored, ferr
		}
		return nil, stored, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("block %d: %v: %w", sent+len(pending)+1, err, errdefs.ErrInvalid))
		}
		if err := VerifyBlock(b); err != nil {
			return fail(err)
		}
		if accept != nil {
			if err := accept(b); err != nil {
				return fail(err)
			}
		}
		s.blocks.handOver(b)
		pending = append(pending, b)
		pendingBytes += len(b.RawData())
		if pendingBytes >= batchBytes/2 {
			if err := flush(); err != nil {
				return nil, stored, err
			}
		}
	}
	if err := finish(); err != nil {
		return nil, stored, err
	}
	return br.Roots, stored, nil
}
