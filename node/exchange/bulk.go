package exchange

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// The bulk path: a peer that lacks a whole tree asks a peer that has it to
// stream every block of the DAG at once, as a CAR over one libp2p stream,
// instead of wanting blocks one round trip at a time. A peer that holds an
// earlier root of the tree (a workspace's base) names it, and gets only
// what changed since (dag.Store.ExportCARAgainst): one round trip instead
// of one a level. Every block is verified on receipt as with bitswap; what
// arrived before a failure stays, and bitswap fetches the rest, so the
// fetch stays resumable.
//
// The request is a uvarint-prefixed root CID, optionally followed by a
// uvarint-prefixed base CID, then the end of the requester's side of the
// stream (a peer that knows no base reads only the root).

// Bulk-protocol timing.
const (
	bulkRequestTimeout = 10 * time.Second
	bulkStatusHave     = 1
	bulkStatusNotHave  = 0
)

// serveBlocks answers a bulk request: one status byte, then the CAR of the
// root when this peer has it.
func (e *Exchange) serveBlocks(s network.Stream) {
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(bulkRequestTimeout))
	br := bufio.NewReader(s)
	root, err := readRequestCID(br)
	if err != nil {
		s.Reset()
		return
	}
	base, err := readRequestCID(br)
	if errors.Is(err, io.EOF) {
		base = cid.Undef // a requester with no base, or of an earlier version
	} else if err != nil {
		s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	if has, _ := e.dags.Blocks().Has(e.ctx, root); !has {
		_, _ = s.Write([]byte{bulkStatusNotHave})
		return
	}
	w := bufio.NewWriterSize(throttled{ctx: e.ctx, w: s, limit: e.serveLimit}, 1<<20)
	if err := w.WriteByte(bulkStatusHave); err != nil {
		s.Reset()
		return
	}
	// The exchange closing ends the walk; the requester going away ends it
	// too, as writes to its stream fail.
	if _, err := e.dags.ExportCARAgainst(e.ctx, base, root, w); err != nil {
		e.log.Debug("bulk blocks: export", "root", root, "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	if err := w.Flush(); err != nil {
		s.Reset()
	}
}

// readRequestCID reads one uvarint-prefixed CID of a bulk request; io.EOF
// means the request has no more.
func readRequestCID(br *bufio.Reader) (cid.Cid, error) {
	size, err := binary.ReadUvarint(br)
	if err != nil {
		return cid.Undef, err
	}
	if size == 0 || size > protocol.MaxBlocksRequest {
		return cid.Undef, fmt.Errorf("CID of %d bytes: %w", size, errdefs.ErrInvalid)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(br, buf); errors.Is(err, io.EOF) {
		return cid.Undef, io.ErrUnexpectedEOF // a length with nothing after it
	} else if err != nil {
		return cid.Undef, err
	}
	return cid.Cast(buf)
}

// fetchBulk tries to receive the whole DAG of root from one connected peer;
// received reports the bytes as they arrive. It returns the blocks stored,
// or an error when no peer could serve the DAG whole. A peer whose stream
// fails verification (ErrInvalid: a wrong hash, an oversized block, a block
// outside the DAG, a malformed CAR) is bad for the rest of the fetch: scope
// records it, so bitswap does not ask it either.
func (e *Exchange) fetchBulk(ctx context.Context, base, root cid.Cid, scope *fetchScope, received func(bytes int)) (int, error) {
	total := 0
	for _, p := range e.host.Connected() {
		if scope.isBad(p) {
			continue
		}
		blocks, err := e.fetchBulkFrom(ctx, p, base, root, received)
		total += blocks
		if err == nil {
			return total, nil
		} else if ctx.Err() != nil {
			return total, ctx.Err()
		} else if storeFull(err) {
			return total, err // no other peer can help with that
		} else if errors.Is(err, errdefs.ErrInvalid) {
			scope.markBad(ctx, p, err.Error())
		} else if !errors.Is(err, errdefs.ErrNotFound) {
			e.log.Debug("bulk blocks: peer failed", "peer", p, "root", root, "err", err)
		}
	}
	return total, fmt.Errorf("bulk fetch of %s: no connected peer has it: %w", root, errdefs.ErrNotFound)
}

// countingReader reports every read, so a long stream counts as progress.
type countingReader struct {
	r    io.Reader
	seen func(int)
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.seen(n)
	}
	return n, err
}

// fetchBulkFrom asks p for the DAG of root, less what base (if defined,
// and complete here) holds.
func (e *Exchange) fetchBulkFrom(ctx context.Context, p peer.ID, base, root cid.Cid, received func(int)) (int, error) {
	s, err := e.host.Libp2p().NewStream(ctx, p, libp2pproto.ID(protocol.BlocksProtocol))
	if err != nil {
		return 0, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	req := binary.AppendUvarint(nil, uint64(root.ByteLen()))
	req = append(req, root.Bytes()...)
	if base.Defined() {
		req = binary.AppendUvarint(req, uint64(base.ByteLen()))
		req = append(req, base.Bytes()...)
	}
	if _, err := s.Write(req); err != nil {
		return 0, err
	}
	if err := s.CloseWrite(); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(countingReader{r: s, seen: received}, 1<<20)
	status, err := br.ReadByte()
	if err != nil {
		return 0, err
	}
	if status != bulkStatusHave {
		return 0, fmt.Errorf("peer %s lacks %s: %w", p, root, errdefs.ErrNotFound)
	}
	// Only blocks of root's DAG are accepted: a peer cannot push other data.
	return e.dags.ImportDAG(ctx, root, br)
}

// storeFull reports whether err is this peer's store refusing writes (its
// reserve reached, or the disk itself full or read-only): a fetch stops
// there rather than asking other peers or bitswap.
func storeFull(err error) bool {
	return errors.Is(err, errdefs.ErrResourceExhausted) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS)
}
