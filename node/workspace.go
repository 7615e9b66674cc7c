package node

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// Workspace timing.
const (
	// DefaultStallTimeout ends a fetch when no block arrived for this long.
	DefaultStallTimeout = 60 * time.Second
	progressInterval    = 100 * time.Millisecond
	carChunkSize        = 256 << 10

	bitswapRebroadcast      = time.Second
	bitswapOutstandingBytes = 32 << 20
	bitswapMessageSize      = 1 << 20
	bitswapWorkers          = 16
	bitswapMaxWants         = 1 << 16
)

// exchange serves this peer's blocks to the mesh and fetches missing ones,
// with bitswap on the peer's libp2p host.
type exchange struct {
	bs     *bitswap.Bitswap
	guard  *peerGuard // between bs and the network: per-fetch bad peers
	cancel context.CancelFunc
	once   sync.Once
}

func newExchange(n *Node) *exchange {
	ctx, cancel := context.WithCancel(context.Background())
	guard := newPeerGuard(bsnet.NewFromIpfsHost(n.host.Libp2p()), n.dags.Blocks(), n.host.Connected, n.log)
	// No content routing: wants go to the connected peers of the mesh. A
	// mesh is small, so a want nobody answered is re-sent after a second,
	// not boxo's minute; larger messages and queues keep a bulk fetch of
	// many small blocks from crawling.
	bs := bitswap.New(ctx, guard, nil, n.dags.Blocks(),
		bitswap.RebroadcastDelay(bitswapRebroadcast),
		bitswap.ProviderSearchDelay(bitswapRebroadcast),
		bitswap.MaxOutstandingBytesPerPeer(bitswapOutstandingBytes),
		bitswap.WithTargetMessageSize(bitswapMessageSize),
		bitswap.EngineBlockstoreWorkerCount(bitswapWorkers),
		bitswap.TaskWorkerCount(bitswapWorkers),
		// boxo drops wants beyond 1024 per peer by default, and a dropped
		// want waits for a rebroadcast: a pipelined fetch keeps more
		// outstanding than that.
		bitswap.MaxQueuedWantlistEntriesPerPeer(bitswapMaxWants),
	)
	return &exchange{bs: bs, guard: guard, cancel: cancel}
}

func (e *exchange) Close() error {
	var err error
	e.once.Do(func() {
		err = e.bs.Close()
		e.cancel()
	})
	return err
}

// fetch makes root local through a bitswap session, failing when no block
// arrives for stall. A peer that serves a block failing verification (on
// either path) is not asked again in this fetch; when no other connected
// peer is left, the fetch fails with ErrUntrustedPeers naming it.
func (n *Node) fetch(ctx context.Context, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error) {
	return n.fetchAgainst(ctx, cid.Undef, root, stall, progress)
}

// fetchAgainst is fetch of a root that shares most of its tree with base,
// complete here (see dag.Store.FetchAgainst): only the changed part is
// walked and asked for. An undefined base is a plain fetch.
func (n *Node) fetchAgainst(ctx context.Context, base, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error) {
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	scope := n.exchange.guard.begin(root, cancel)
	defer scope.end()
	var mu sync.Mutex
	last := time.Now()
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(stall / 10)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				mu.Lock()
				idle := time.Since(last)
				mu.Unlock()
				if idle > stall {
					if err := scope.err(); err != nil {
						cancel(err)
						return
					}
					cancel(fmt.Errorf("no block of %s arrived for %s: is a peer that holds it connected? %w", root, stall, errdefs.ErrUnavailable))
					return
				}
			}
		}
	}()
	touch := func() {
		mu.Lock()
		last = time.Now()
		mu.Unlock()
	}
	sess := scope.fetcher(n.exchange.bs.NewSession(ctx))
	// A tree this peer lacks entirely comes faster as one stream from a
	// peer that has it; bitswap then fetches whatever is still missing.
	var bulk dag.FetchProgress
	stream := func(base cid.Cid) {
		var th throttle
		blocks, err := n.fetchBulk(ctx, base, root, scope, func(b int) {
			touch()
			bulk.FetchedBytes += int64(b)
			if progress != nil && th.ok() {
				progress(bulk)
			}
		})
		bulk.Fetched += blocks
		if err != nil && ctx.Err() == nil {
			n.log.Debug("bulk fetch unavailable; using bitswap", "root", root, "base", base, "err", err)
		}
	}
	has, _ := n.dags.Blocks().Has(ctx, root)
	switch {
	case has:
	case base.Defined() && n.dags.Complete(base):
		// What changed since base, in one round trip rather than one a
		// level of the tree.
		stream(base)
	default:
		if err := n.dags.FetchOne(ctx, root, sess); err == nil {
			bulk.Fetched++
			if size, err := n.dags.Blocks().GetSize(ctx, root); err == nil {
				bulk.FetchedBytes += int64(size)
			}
			touch()
		}
		if n.lacksMostOf(ctx, root) {
			// The stream carries the root again: count it there, once.
			bulk = dag.FetchProgress{}
			stream(cid.Undef)
		}
	}
	p, err := n.dags.FetchAgainst(ctx, base, root, sess, func(p dag.FetchProgress) {
		touch()
		p.Fetched += bulk.Fetched
		p.FetchedBytes += bulk.FetchedBytes
		if progress != nil {
			progress(p)
		}
	})
	p.Fetched += bulk.Fetched
	p.FetchedBytes += bulk.FetchedBytes
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return p, cause
		}
		if berr := scope.err(); berr != nil {
			return p, fmt.Errorf("%w (then: %v)", berr, err)
		}
		return p, err
	}
	return p, nil
}

// fetchAll makes every root local with the default stall timeout and sums
// what came over the mesh.
func (n *Node) fetchAll(ctx context.Context, roots ...cid.Cid) (dag.FetchProgress, error) {
	var sum dag.FetchProgress
	for _, root := range roots {
		p, err := n.fetch(ctx, root, 0, nil)
		if err != nil {
			return sum, err
		}
		sum.Blocks += p.Blocks
		sum.Fetched += p.Fetched
		sum.FetchedBytes += p.FetchedBytes
	}
	return sum, nil
}

// lacksMostOf reports whether this peer holds less than half of the tree
// at root (which must be local), judged by the root's direct children. A
// delta (a few changed paths) goes to bitswap instead.
func (n *Node) lacksMostOf(ctx context.Context, root cid.Cid) bool {
	present, total, err := n.dags.Coverage(ctx, root)
	return err == nil && total > 0 && 2*present < total
}

// workspaceService implements the WorkspaceService of the local API.
type workspaceService struct {
	n *Node
}

var _ apiv1connect.WorkspaceServiceHandler = (*workspaceService)(nil)

func parseCID(field, s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%s %q is not a CID: %v: %w", field, s, err, errdefs.ErrInvalid)
	}
	return c, nil
}

func absPath(field, p string) (string, error) {
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s %q must be an absolute path on the peer's machine: %w", field, p, errdefs.ErrInvalid)
	}
	return filepath.Clean(p), nil
}

// throttle calls fn at most every progressInterval, and always for last.
type throttle struct {
	mu   sync.Mutex
	next time.Time
}

func (t *throttle) ok() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if now.Before(t.next) {
		return false
	}
	t.next = now.Add(progressInterval)
	return true
}

func (w *workspaceService) Add(ctx context.Context, req *connect.Request[apiv1.AddRequest], stream *connect.ServerStream[apiv1.AddEvent]) error {
	dir, err := absPath("path", req.Msg.GetPath())
	if err != nil {
		return err
	}
	w.n.gcMu.RLock()
	defer w.n.gcMu.RUnlock()
	start := time.Now()
	var th throttle
	var sendMu sync.Mutex
	res, err := w.n.dags.Import(ctx, dir, dag.ImportOptions{
		NoIndex: req.Msg.GetNoIndex(),
		Watch:   w.n.watch,
		Progress: func(p dag.ImportProgress) {
			if !th.ok() {
				return
			}
			sendMu.Lock()
			defer sendMu.Unlock()
			_ = stream.Send(&apiv1.AddEvent{Event: &apiv1.AddEvent_Progress{Progress: &apiv1.Progress{
				Phase: "hashing", Done: uint64(p.FilesRead), Total: uint64(p.Files), Bytes: uint64(p.BytesRead),
			}}})
		},
	})
	if err != nil {
		return err
	}
	if err := w.n.dags.Pin("ws:"+dir, res.Root); err != nil {
		return err
	}
	sendMu.Lock()
	defer sendMu.Unlock()
	return stream.Send(&apiv1.AddEvent{Event: &apiv1.AddEvent_Result{Result: &apiv1.AddResult{
		Cid: res.Root.String(), Files: uint64(res.Files), Dirs: uint64(res.Dirs), Symlinks: uint64(res.Symlinks),
		Bytes: uint64(res.Bytes), FilesRead: uint64(res.FilesRead), BytesRead: uint64(res.BytesRead),
		NewBlocks: uint64(res.NewBlocks), NewBytes: uint64(res.NewBytes), Ignored: uint64(res.Ignored),
		Skipped: uint64(res.Skipped), Seconds: time.Since(start).Seconds(),
		Unchanged: res.Unchanged, DirsListed: uint64(res.DirsListed),
	}}})
}

func (w *workspaceService) Get(ctx context.Context, req *connect.Request[apiv1.GetRequest], stream *connect.ServerStream[apiv1.GetEvent]) error {
	root, err := parseCID("cid", req.Msg.GetCid())
	if err != nil {
		return err
	}
	dest, err := absPath("path", req.Msg.GetPath())
	if err != nil {
		return err
	}
	w.n.gcMu.RLock()
	defer w.n.gcMu.RUnlock()
	start := time.Now()
	var th throttle
	send := func(phase string, done, bytes uint64) {
		if th.ok() {
			_ = stream.Send(&apiv1.GetEvent{Event: &apiv1.GetEvent_Progress{Progress: &apiv1.Progress{Phase: phase, Done: done, Bytes: bytes}}})
		}
	}
	// The tree is written while its blocks arrive: the export waits for a
	// block not here yet until the fetch stores it, or fails with the fetch.
	var sendMu sync.Mutex
	progress := func(phase string, done, bytes uint64) {
		sendMu.Lock()
		defer sendMu.Unlock()
		send(phase, done, bytes)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type fetched struct {
		p   dag.FetchProgress
		err error
	}
	fetchDone := make(chan struct{})
	var f fetched
	go func() {
		defer close(fetchDone)
		f.p, f.err = w.n.fetch(ctx, root, time.Duration(req.Msg.GetStallTimeoutSeconds())*time.Second, func(p dag.FetchProgress) {
			progress("fetching", uint64(p.Fetched), uint64(p.FetchedBytes))
		})
	}()
	blocks := w.n.dags.Blocks()
	await := func(ctx context.Context, c cid.Cid, arrived <-chan struct{}) error {
		select {
		case <-arrived:
			return nil
		case <-fetchDone:
			if has, err := blocks.Has(ctx, c); err != nil || has {
				return err
			}
			if f.err != nil {
				return f.err
			}
			return fmt.Errorf("block %s: the fetch ended without it: %w", c, errdefs.ErrNotFound)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ex, err := w.n.dags.Export(ctx, root, dest, dag.ExportOptions{Await: await, Progress: func(r dag.ExportResult) {
		progress("writing", uint64(r.Files), uint64(r.Bytes))
	}})
	if err != nil {
		cancel()
		<-fetchDone
		if f.err != nil {
			return f.err // the cause, rather than the export that waited on it
		}
		return err
	}
	// The export read every block of the tree: it is whole here, whatever
	// the fetch's last steps say.
	<-fetchDone
	p := f.p
	if err := w.n.dags.Pin("get:"+dest, root); err != nil {
		return err
	}
	return stream.Send(&apiv1.GetEvent{Event: &apiv1.GetEvent_Result{Result: &apiv1.GetResult{
		Cid: root.String(), Path: dest, Blocks: uint64(p.Blocks), FetchedBlocks: uint64(p.Fetched),
		FetchedBytes: uint64(p.FetchedBytes), Files: uint64(ex.Files), Bytes: uint64(ex.Bytes),
		Seconds: time.Since(start).Seconds(),
	}}})
}

func (w *workspaceService) Diff(ctx context.Context, req *connect.Request[apiv1.DiffRequest]) (*connect.Response[apiv1.DiffResponse], error) {
	from, err := parseCID("from", req.Msg.GetFrom())
	if err != nil {
		return nil, err
	}
	to, err := parseCID("to", req.Msg.GetTo())
	if err != nil {
		return nil, err
	}
	w.n.gcMu.RLock()
	defer w.n.gcMu.RUnlock()
	if _, err := w.n.fetchAll(ctx, from, to); err != nil {
		return nil, err
	}
	changes, err := w.n.dags.Diff(ctx, from, to)
	if err != nil {
		return nil, err
	}
	out := &apiv1.DiffResponse{Changes: make([]*apiv1.Change, len(changes))}
	for i, c := range changes {
		out.Changes[i] = &apiv1.Change{Path: c.Path, Kind: string(c.Kind), IsDir: c.IsDir}
	}
	return connect.NewResponse(out), nil
}

func (w *workspaceService) Merge(ctx context.Context, req *connect.Request[apiv1.MergeRequest]) (*connect.Response[apiv1.MergeResponse], error) {
	base, err := parseCID("base", req.Msg.GetBase())
	if err != nil {
		return nil, err
	}
	theirs, err := parseCID("theirs", req.Msg.GetTheirs())
	if err != nil {
		return nil, err
	}
	dir, err := absPath("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	w.n.gcMu.RLock()
	defer w.n.gcMu.RUnlock()
	fetched, err := w.n.fetchAll(ctx, base)
	if err != nil {
		return nil, err
	}
	delta, err := w.n.fetchAgainst(ctx, base, theirs, 0, nil)
	if err != nil {
		return nil, err
	}
	fetched.Fetched += delta.Fetched
	fetched.FetchedBytes += delta.FetchedBytes
	out := &apiv1.MergeResponse{FetchedBlocks: uint64(fetched.Fetched), FetchedBytes: uint64(fetched.FetchedBytes)}
	rep, err := w.n.dags.Merge(ctx, base, theirs, dir)
	if err != nil {
		return nil, err
	}
	out.Report = mergeReportToAPI(rep)
	return connect.NewResponse(out), nil
}

func mergeReportToAPI(r dag.MergeReport) *apiv1.MergeReport {
	out := &apiv1.MergeReport{Applied: r.Applied, Merged: r.Merged, Unchanged: uint64(r.Unchanged)}
	for _, c := range r.Conflicts {
		out.Conflicts = append(out.Conflicts, &apiv1.Conflict{Path: c.Path, Reason: c.Reason, TheirsPath: c.TheirsPath})
	}
	return out
}

func (w *workspaceService) GC(ctx context.Context, _ *connect.Request[apiv1.GCRequest]) (*connect.Response[apiv1.GCResponse], error) {
	w.n.gcMu.Lock()
	defer w.n.gcMu.Unlock()
	res, err := w.n.dags.GC(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&apiv1.GCResponse{Kept: uint64(res.Kept), Removed: uint64(res.Removed), RemovedBytes: uint64(res.RemovedBytes)}), nil
}

func (w *workspaceService) ExportCAR(ctx context.Context, req *connect.Request[apiv1.ExportCARRequest], stream *connect.ServerStream[apiv1.CARChunk]) error {
	root, err := parseCID("cid", req.Msg.GetCid())
	if err != nil {
		return err
	}
	w.n.gcMu.RLock()
	defer w.n.gcMu.RUnlock()
	if _, err := w.n.fetchAll(ctx, root); err != nil {
		return err
	}
	cw := &chunkWriter{send: func(b []byte) error { return stream.Send(&apiv1.CARChunk{Data: b}) }}
	if _, err := w.n.dags.ExportCAR(ctx, root, cw); err != nil {
		return err
	}
	return cw.flush()
}

// chunkWriter cuts a byte stream into messages of carChunkSize.
type chunkWriter struct {
	buf  []byte
	send func([]byte) error
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(carChunkSize-len(c.buf), len(p))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == carChunkSize {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := c.send(c.buf)
	c.buf = make([]byte, 0, carChunkSize)
	return err
}

var _ io.Writer = (*chunkWriter)(nil)

func (w *workspaceService) ImportCAR(ctx context.Context, req *connect.Request[apiv1.ImportCARRequest]) (*connect.Response[apiv1.ImportCARResponse], error) {
	p, err := absPath("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	f, err := openRegular(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w.n.gcMu.RLock()
	defer w.n.gcMu.RUnlock()
	roots, n, err := w.n.dags.ImportCAR(ctx, f)
	if err != nil {
		return nil, err
	}
	out := &apiv1.ImportCARResponse{Blocks: uint64(n)}
	for _, r := range roots {
		if err := w.n.dags.Pin("car:"+r.String(), r); err != nil {
			return nil, err
		}
		out.Roots = append(out.Roots, r.String())
	}
	return connect.NewResponse(out), nil
}

func openRegular(p string) (*os.File, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file: %w", p, errdefs.ErrInvalid)
	}
	return f, nil
}
