package apiclient

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// WorkspaceAdd imports the directory at the absolute path dir.
func (c *Client) WorkspaceAdd(ctx context.Context, dir string, noIndex bool, progress func(*apiv1.Progress)) (*apiv1.AddResult, error) {
	stream, err := c.ws.Add(ctx, connect.NewRequest(&apiv1.AddRequest{Path: dir, NoIndex: noIndex}))
	if err != nil {
		return nil, c.wrap("ws add", err)
	}
	return progressThenResult(c, "ws add", stream, progress, func(ev *apiv1.AddEvent) (*apiv1.Progress, *apiv1.AddResult) {
		return ev.GetProgress(), ev.GetResult()
	})
}

// WorkspaceGet fetches root and exports it into the absolute path dest.
// Symlinks that point out of the tree are created only with
// allowEscapingLinks; otherwise the result lists them as skipped.
func (c *Client) WorkspaceGet(ctx context.Context, root, dest string, stall time.Duration, allowEscapingLinks bool, progress func(*apiv1.Progress)) (*apiv1.GetResult, error) {
	stream, err := c.ws.Get(ctx, connect.NewRequest(&apiv1.GetRequest{Cid: root, Path: dest, StallTimeoutSeconds: stallSeconds(stall), AllowEscapingLinks: allowEscapingLinks}))
	if err != nil {
		return nil, c.wrap("ws get", err)
	}
	return progressThenResult(c, "ws get", stream, progress, func(ev *apiv1.GetEvent) (*apiv1.Progress, *apiv1.GetResult) {
		return ev.GetProgress(), ev.GetResult()
	})
}

// progressThenResult reads a stream of progress events that ends with a
// result, as Add, Get and Put stream them; pick says which an event is.
func progressThenResult[Ev, Res any](c *Client, call string, stream *connect.ServerStreamForClient[Ev], progress func(*apiv1.Progress), pick func(*Ev) (*apiv1.Progress, *Res)) (*Res, error) {
	defer stream.Close()
	for stream.Receive() {
		p, res := pick(stream.Msg())
		if res != nil {
			return res, nil
		}
		if p != nil && progress != nil {
			progress(p)
		}
	}
	return nil, c.streamEnd(call, stream.Err())
}

func (c *Client) streamEnd(call string, err error) error {
	if err == nil {
		return fmt.Errorf("%s: the peer ended the stream without a result", call)
	}
	return c.wrap(call, err)
}

// WorkspaceDiff lists the changes from one root to another, giving up when
// no block of a root the peer lacks arrives for stall (0: the peer's
// default).
func (c *Client) WorkspaceDiff(ctx context.Context, from, to string, stall time.Duration) ([]*apiv1.Change, error) {
	resp, err := c.ws.Diff(ctx, connect.NewRequest(&apiv1.DiffRequest{From: from, To: to, StallTimeoutSeconds: stallSeconds(stall)}))
	if err != nil {
		return nil, c.wrap("ws diff", err)
	}
	return resp.Msg.GetChanges(), nil
}

// WorkspaceMerge applies base -> theirs to the directory at the absolute path dir.
func (c *Client) WorkspaceMerge(ctx context.Context, base, theirs, dir string) (*apiv1.MergeResponse, error) {
	resp, err := c.ws.Merge(ctx, connect.NewRequest(&apiv1.MergeRequest{Base: base, Theirs: theirs, Path: dir}))
	if err != nil {
		return nil, c.wrap("ws merge", err)
	}
	return resp.Msg, nil
}

// WorkspaceGC removes unpinned blocks.
func (c *Client) WorkspaceGC(ctx context.Context) (*apiv1.GCResponse, error) {
	resp, err := c.ws.GC(ctx, connect.NewRequest(&apiv1.GCRequest{}))
	if err != nil {
		return nil, c.wrap("ws gc", err)
	}
	return resp.Msg, nil
}

// ExportCAR writes the CAR of root to w, giving up when no block of it
// arrives for stall (0: the peer's default) while the peer fetches it.
func (c *Client) ExportCAR(ctx context.Context, root string, stall time.Duration, w io.Writer) error {
	stream, err := c.ws.ExportCAR(ctx, connect.NewRequest(&apiv1.ExportCARRequest{Cid: root, StallTimeoutSeconds: stallSeconds(stall)}))
	if err != nil {
		return c.wrap("dag export", err)
	}
	defer stream.Close()
	for stream.Receive() {
		if _, err := w.Write(stream.Msg().GetData()); err != nil {
			return fmt.Errorf("dag export: %w", err)
		}
	}
	if err := stream.Err(); err != nil {
		return c.wrap("dag export", err)
	}
	return nil
}

// ImportCAR imports the CAR file at the absolute path p.
func (c *Client) ImportCAR(ctx context.Context, p string) (*apiv1.ImportCARResponse, error) {
	resp, err := c.ws.ImportCAR(ctx, connect.NewRequest(&apiv1.ImportCARRequest{Path: p}))
	if err != nil {
		return nil, c.wrap("dag import", err)
	}
	return resp.Msg, nil
}

// stallSeconds is a stall timeout on the wire: whole seconds, rounded up,
// so that a timeout under a second is not taken for "the default".
func stallSeconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32((d + time.Second - 1) / time.Second)
}

// WorkspaceVerify checks the blocks root needs ("" : the whole store),
// reporting progress as it goes.
func (c *Client) WorkspaceVerify(ctx context.Context, root string, progress func(*apiv1.Progress)) (*apiv1.VerifyResult, error) {
	stream, err := c.ws.Verify(ctx, connect.NewRequest(&apiv1.VerifyRequest{Cid: root}))
	if err != nil {
		return nil, c.wrap("ws verify", err)
	}
	return progressThenResult(c, "ws verify", stream, progress, func(ev *apiv1.VerifyEvent) (*apiv1.Progress, *apiv1.VerifyResult) {
		return ev.GetProgress(), ev.GetResult()
	})
}
