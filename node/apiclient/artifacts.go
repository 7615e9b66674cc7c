package apiclient

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// ArtifactPut adds the file or directory at the absolute path p to the
// peer's store and pins it.
func (c *Client) ArtifactPut(ctx context.Context, p string, progress func(*apiv1.Progress)) (*apiv1.ArtifactPutResult, error) {
	stream, err := c.arts.Put(ctx, connect.NewRequest(&apiv1.ArtifactPutRequest{Path: p}))
	if err != nil {
		return nil, c.wrap("put", err)
	}
	return progressThenResult(c, "put", stream, progress, func(ev *apiv1.ArtifactPutEvent) (*apiv1.Progress, *apiv1.ArtifactPutResult) {
		return ev.GetProgress(), ev.GetResult()
	})
}

// ArtifactGet fetches root from the mesh into the absolute path dest,
// which must not exist unless force.
func (c *Client) ArtifactGet(ctx context.Context, root, dest string, force bool, stall time.Duration, progress func(*apiv1.Progress)) (*apiv1.ArtifactGetResult, error) {
	stream, err := c.arts.Get(ctx, connect.NewRequest(&apiv1.ArtifactGetRequest{Cid: root, Dest: dest, Force: force, StallSeconds: stallSeconds(stall)}))
	if err != nil {
		return nil, c.wrap("get", err)
	}
	return progressThenResult(c, "get", stream, progress, func(ev *apiv1.ArtifactGetEvent) (*apiv1.Progress, *apiv1.ArtifactGetResult) {
		return ev.GetProgress(), ev.GetResult()
	})
}

// ArtifactRead writes the bytes [off, off+n) of the file root to w (n 0:
// to the end) and returns the file's size; the peer fetches only the
// blocks that hold them.
func (c *Client) ArtifactRead(ctx context.Context, root string, off, n uint64, stall time.Duration, w io.Writer) (size uint64, err error) {
	stream, err := c.arts.Read(ctx, connect.NewRequest(&apiv1.ArtifactReadRequest{Cid: root, Offset: off, Length: n, StallSeconds: stallSeconds(stall)}))
	if err != nil {
		return 0, c.wrap("cat", err)
	}
	defer stream.Close()
	for stream.Receive() {
		if s := stream.Msg().GetSize(); s > 0 {
			size = s
		}
		if _, err := w.Write(stream.Msg().GetData()); err != nil {
			return size, fmt.Errorf("cat: %w", err)
		}
	}
	if err := stream.Err(); err != nil {
		return size, c.wrap("cat", err)
	}
	return size, nil
}

// ArtifactUnpin removes the pin a put of root made on the peer.
func (c *Client) ArtifactUnpin(ctx context.Context, root string) error {
	if _, err := c.arts.Unpin(ctx, connect.NewRequest(&apiv1.ArtifactUnpinRequest{Cid: root})); err != nil {
		return c.wrap("unpin", err)
	}
	return nil
}
