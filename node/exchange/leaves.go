package exchange

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// The leaves path: a peer that knows a file's layout (its inner nodes)
// asks one provider for a run of leaves by CID, and the provider streams
// their bytes back in the order asked, each prefixed by its length. The
// requester knows which CID comes next, so verifying a block is one hash
// and one compare, and it can ask several providers for different runs at
// once (FetchLeaves).
//
// Request: a uvarint count (1..MaxLeavesRequest), then count uvarint-
// prefixed CIDs, then the end of the requester's side. Reply, for each CID
// in order: uvarint 0 when the provider lacks it, else uvarint length+1
// and the block's bytes.

// serveLeaves answers a leaves request.
func (e *Exchange) serveLeaves(s network.Stream) {
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(bulkRequestTimeout))
	keys, err := readLeavesRequest(bufio.NewReaderSize(s, 4096))
	if err != nil {
		e.log.Debug("leaves: bad request", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	// The exchange closing ends the reply; so does the requester going
	// away, as writes to its stream fail.
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	w := serveWriters.Get().(*bufio.Writer)
	w.Reset(throttled{ctx: ctx, w: s, limit: e.serveLimit})
	defer func() { w.Reset(nil); serveWriters.Put(w) }()
	bp := blockBuffers.Get().(*[]byte)
	defer blockBuffers.Put(bp)
	var hdr [binary.MaxVarintLen64]byte
	for _, c := range keys {
		data, err := e.dags.Blocks().ReadInto(c, *bp)
		if err != nil {
			if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], 0)]); err != nil {
				s.Reset()
				return
			}
			continue
		}
		if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(data))+1)]); err != nil {
			s.Reset()
			return
		}
		if _, err := w.Write(data); err != nil {
			s.Reset()
			return
		}
	}
	if err := w.Flush(); err != nil {
		s.Reset()
	}
}

// readLeavesRequest reads the CIDs of a leaves request.
func readLeavesRequest(br *bufio.Reader) ([]cid.Cid, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, err
	}
	if n == 0 || n > protocol.MaxLeavesRequest {
		return nil, fmt.Errorf("leaves request of %d CIDs: %w", n, errdefs.ErrInvalid)
	}
	keys := make([]cid.Cid, 0, n)
	for range n {
		c, err := readRequestCID(br)
		if err != nil {
			return nil, err
		}
		keys = append(keys, c)
	}
	return keys, nil
}

// errLacks is returned by fetchLeavesFrom when the provider lacks a block.
var errLacks = fmt.Errorf("provider lacks a block: %w", errdefs.ErrNotFound)

// fetchLeavesFrom asks p for keys and hands each block, verified, to got
// in order; the block's bytes are reused once got returns, so got copies
// what it keeps. seen reports bytes as they arrive. It returns how many blocks
// it handed over: fewer than asked with errLacks when p lacks the next
// one, with an error wrapping ErrInvalid when p sent a block that is not
// the one asked (a lying provider), or when the stream failed. Nothing
// arriving for idle fails it too. stop, checked after each block, ends it
// early without error.
func (e *Exchange) fetchLeavesFrom(ctx context.Context, p peer.ID, keys []cid.Cid, idle time.Duration, got func(i int, b dag.VerifiedBlock) error, seen func(n int), stop func() bool) (int, error) {
	s, err := e.host.Libp2p().NewStream(ctx, p, libp2pproto.ID(protocol.LeavesProtocol))
	if err != nil {
		return 0, fmt.Errorf("open leaves stream to %s: %w", p, err)
	}
	defer s.Close()
	afterStop := context.AfterFunc(ctx, func() { s.Reset() })
	defer afterStop()
	req := binary.AppendUvarint(nil, uint64(len(keys)))
	for _, k := range keys {
		req = binary.AppendUvarint(req, uint64(k.ByteLen()))
		req = append(req, k.Bytes()...)
	}
	_ = s.SetWriteDeadline(time.Now().Add(idle))
	if _, err := s.Write(req); err != nil {
		return 0, fmt.Errorf("leaves request to %s: %w", p, err)
	}
	if err := s.CloseWrite(); err != nil {
		return 0, fmt.Errorf("leaves request to %s: %w", p, err)
	}
	br := bufio.NewReaderSize(countingReader{r: deadlineReader{s: s, idle: idle}, seen: seen}, 256<<10)
	bp := blockBuffers.Get().(*[]byte)
	defer blockBuffers.Put(bp)
	for i, k := range keys {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return i, fmt.Errorf("leaves from %s: %w", p, unexpected(err))
		}
		if n == 0 {
			s.Reset()
			return i, errLacks
		}
		if n-1 > dag.MaxBlockSize {
			s.Reset()
			return i, fmt.Errorf("leaves from %s: a block of %d bytes: %w", p, n-1, errdefs.ErrInvalid)
		}
		data := (*bp)[:n-1]
		if _, err := io.ReadFull(br, data); err != nil {
			return i, fmt.Errorf("leaves from %s: %w", p, unexpected(err))
		}
		b, err := blocks.NewBlockWithCid(data, k)
		if err != nil {
			return i, err
		}
		v, err := dag.Verify(b)
		if err != nil {
			s.Reset()
			return i, fmt.Errorf("leaves from %s: %w", p, err)
		}
		if err := got(i, v); err != nil {
			s.Reset()
			return i, err
		}
		if stop != nil && stop() {
			s.Reset()
			return i + 1, nil
		}
	}
	return len(keys), nil
}

// serveWriters buffer the replies served, a MiB each.
var serveWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 1<<20) }}

// blockBuffers hold one block each while it is read, verified and handed
// over: a GiB fetched allocates nothing per block, and the collector,
// which otherwise ran every few dozen MiB, stays quiet.
var blockBuffers = sync.Pool{New: func() any { b := make([]byte, dag.MaxBlockSize); return &b }}

// unexpected turns the end of a stream in the middle of a reply into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// deadlineReader fails a read that waits longer than idle for a byte.
type deadlineReader struct {
	s    network.Stream
	idle time.Duration
}

func (d deadlineReader) Read(p []byte) (int, error) {
	_ = d.s.SetReadDeadline(time.Now().Add(d.idle))
	return d.s.Read(p)
}
