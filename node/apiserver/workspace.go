package apiserver

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/node/workspace"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// Workspaces is the workspace capability (workspace.Service).
type Workspaces interface {
	Add(ctx context.Context, dir string, noIndex bool, progress func(dag.ImportProgress)) (dag.ImportResult, error)
	Get(ctx context.Context, root cid.Cid, dest string, stall time.Duration, allowEscapingLinks bool, progress func(phase string, done, bytes uint64)) (workspace.GetResult, error)
	Diff(ctx context.Context, from, to cid.Cid, stall time.Duration) ([]dag.Change, error)
	Merge(ctx context.Context, base, theirs cid.Cid, dir string) (workspace.MergeResult, error)
	GC(ctx context.Context) (dag.GCResult, error)
	ExportCAR(ctx context.Context, root cid.Cid, stall time.Duration, w io.Writer) error
	ImportCAR(ctx context.Context, r io.Reader) ([]cid.Cid, int, error)
	Verify(ctx context.Context, root cid.Cid, progress func(dag.VerifyReport)) (dag.VerifyReport, error)
}

// Streaming progress timing, and the size of the messages a CAR is cut into.
const (
	progressInterval = 100 * time.Millisecond
	carChunkSize     = 256 << 10
)

// workspaceService implements the WorkspaceService of the local API.
type workspaceService struct {
	ws    Workspaces
	roots Roots
}

var _ apiv1connect.WorkspaceServiceHandler = (*workspaceService)(nil)

func parseCID(field, s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%s %q is not a CID: %v: %w", field, s, err, errdefs.ErrInvalid)
	}
	return c, nil
}

// throttledSender sends progress events at most every progressInterval,
// from any goroutine; final results go through send, unthrottled.
type throttledSender struct {
	mu   sync.Mutex
	next time.Time
}

// maybe calls send unless the last call was less than progressInterval ago.
func (t *throttledSender) maybe(send func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); !now.Before(t.next) {
		t.next = now.Add(progressInterval)
		send()
	}
}

// send calls send, after any progress event in flight.
func (t *throttledSender) send(send func() error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return send()
}

func (w *workspaceService) Add(ctx context.Context, req *connect.Request[apiv1.AddRequest], stream *connect.ServerStream[apiv1.AddEvent]) error {
	dir, err := w.roots.Resolve("path", req.Msg.GetPath())
	if err != nil {
		return err
	}
	start := time.Now()
	var th throttledSender
	res, err := w.ws.Add(ctx, dir, req.Msg.GetNoIndex(), func(p dag.ImportProgress) {
		th.maybe(func() {
			_ = stream.Send(&apiv1.AddEvent{Event: &apiv1.AddEvent_Progress{Progress: &apiv1.Progress{
				Phase: "hashing", Done: uint64(p.FilesRead), Total: uint64(p.Files), Bytes: uint64(p.BytesRead),
			}}})
		})
	})
	if err != nil {
		return err
	}
	return th.send(func() error {
		return stream.Send(&apiv1.AddEvent{Event: &apiv1.AddEvent_Result{Result: &apiv1.AddResult{
			Cid: res.Root.String(), Files: uint64(res.Files), Dirs: uint64(res.Dirs), Symlinks: uint64(res.Symlinks),
			Bytes: uint64(res.Bytes), FilesRead: uint64(res.FilesRead), BytesRead: uint64(res.BytesRead),
			NewBlocks: uint64(res.NewBlocks), NewBytes: uint64(res.NewBytes), Ignored: uint64(res.Ignored),
			Skipped: uint64(res.Skipped), Seconds: time.Since(start).Seconds(),
			Unchanged: res.Unchanged, DirsListed: uint64(res.DirsListed),
		}}})
	})
}

func (w *workspaceService) Get(ctx context.Context, req *connect.Request[apiv1.GetRequest], stream *connect.ServerStream[apiv1.GetEvent]) error {
	root, err := parseCID("cid", req.Msg.GetCid())
	if err != nil {
		return err
	}
	dest, err := w.roots.Resolve("path", req.Msg.GetPath())
	if err != nil {
		return err
	}
	start := time.Now()
	var th throttledSender
	res, err := w.ws.Get(ctx, root, dest, time.Duration(req.Msg.GetStallTimeoutSeconds())*time.Second, req.Msg.GetAllowEscapingLinks(), func(phase string, done, bytes uint64) {
		th.maybe(func() {
			_ = stream.Send(&apiv1.GetEvent{Event: &apiv1.GetEvent_Progress{Progress: &apiv1.Progress{Phase: phase, Done: done, Bytes: bytes}}})
		})
	})
	if err != nil {
		return err
	}
	p, ex := res.Fetch, res.Export
	skipped := make([]*apiv1.SkippedLink, len(ex.SkippedLinks))
	for i, l := range ex.SkippedLinks {
		skipped[i] = &apiv1.SkippedLink{Path: l.Path, Target: l.Target}
	}
	return th.send(func() error {
		return stream.Send(&apiv1.GetEvent{Event: &apiv1.GetEvent_Result{Result: &apiv1.GetResult{
			Cid: root.String(), Path: dest, Blocks: uint64(p.Blocks), FetchedBlocks: uint64(p.Fetched),
			FetchedBytes: uint64(p.FetchedBytes), Files: uint64(ex.Files), Bytes: uint64(ex.Bytes),
			Seconds: time.Since(start).Seconds(), SkippedLinks: skipped,
		}}})
	})
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
	changes, err := w.ws.Diff(ctx, from, to, time.Duration(req.Msg.GetStallTimeoutSeconds())*time.Second)
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
	dir, err := w.roots.Resolve("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	res, err := w.ws.Merge(ctx, base, theirs, dir)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&apiv1.MergeResponse{
		FetchedBlocks: uint64(res.Fetched.Fetched), FetchedBytes: uint64(res.Fetched.FetchedBytes),
		Report: mergeReportToAPI(res.Report),
	}), nil
}

func mergeReportToAPI(r dag.MergeReport) *apiv1.MergeReport {
	out := &apiv1.MergeReport{Applied: r.Applied, Merged: r.Merged, Unchanged: uint64(r.Unchanged)}
	for _, c := range r.Conflicts {
		out.Conflicts = append(out.Conflicts, &apiv1.Conflict{Path: c.Path, Reason: c.Reason, TheirsPath: c.TheirsPath, LinkTarget: c.LinkTarget})
	}
	return out
}

func (w *workspaceService) GC(ctx context.Context, _ *connect.Request[apiv1.GCRequest]) (*connect.Response[apiv1.GCResponse], error) {
	res, err := w.ws.GC(ctx)
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
	cw := &chunkWriter{send: func(b []byte) error { return stream.Send(&apiv1.CARChunk{Data: b}) }}
	if err := w.ws.ExportCAR(ctx, root, time.Duration(req.Msg.GetStallTimeoutSeconds())*time.Second, cw); err != nil {
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
	p, err := w.roots.Resolve("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	f, err := openRegular(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	roots, n, err := w.ws.ImportCAR(ctx, f)
	if err != nil {
		return nil, err
	}
	out := &apiv1.ImportCARResponse{Blocks: uint64(n)}
	for _, r := range roots {
		out.Roots = append(out.Roots, r.String())
	}
	return connect.NewResponse(out), nil
}

// openRegular opens a file named by a caller, refusing anything but a
// regular file.
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

func (w *workspaceService) Verify(ctx context.Context, req *connect.Request[apiv1.VerifyRequest], stream *connect.ServerStream[apiv1.VerifyEvent]) error {
	root := cid.Undef
	if req.Msg.GetCid() != "" {
		var err error
		if root, err = parseCID("cid", req.Msg.GetCid()); err != nil {
			return err
		}
	}
	var th throttledSender
	rep, err := w.ws.Verify(ctx, root, func(r dag.VerifyReport) {
		th.maybe(func() {
			_ = stream.Send(&apiv1.VerifyEvent{Event: &apiv1.VerifyEvent_Progress{Progress: &apiv1.Progress{Phase: "verifying", Done: uint64(r.Blocks), Bytes: uint64(r.Bytes)}}})
		})
	})
	if err != nil {
		return err
	}
	strs := func(cs []cid.Cid) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.String()
		}
		return out
	}
	return th.send(func() error {
		return stream.Send(&apiv1.VerifyEvent{Event: &apiv1.VerifyEvent_Result{Result: &apiv1.VerifyResult{
			Blocks: uint64(rep.Blocks), Bytes: uint64(rep.Bytes), Missing: strs(rep.Missing), Corrupt: strs(rep.Corrupt),
			MissingCount: uint64(rep.MissingN), CorruptCount: uint64(rep.CorruptN)}}})
	})
}
