package apiclient

import (
	"context"

	"connectrpc.com/connect"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// UpdatePublish announces a signed release envelope (as `release publish`
// builds it with releasekey) to the mesh; its binary must already be on the
// peer (ArtifactPut).
func (c *Client) UpdatePublish(ctx context.Context, envelope []byte) (*apiv1.UpdatePublishResponse, error) {
	resp, err := c.upd.Publish(ctx, connect.NewRequest(&apiv1.UpdatePublishRequest{Envelope: envelope}))
	if err != nil {
		return nil, c.wrap("release publish", err)
	}
	return resp.Msg, nil
}

// UpdateStatus returns what the peer's updater knows.
func (c *Client) UpdateStatus(ctx context.Context) (*apiv1.UpdateStatus, error) {
	resp, err := c.upd.Status(ctx, connect.NewRequest(&apiv1.UpdateStatusRequest{}))
	if err != nil {
		return nil, c.wrap("update status", err)
	}
	return resp.Msg, nil
}

// UpdateRollback makes the peer switch back to its previous version: it
// drains and restarts into it.
func (c *Client) UpdateRollback(ctx context.Context) (*apiv1.UpdateRollbackResponse, error) {
	resp, err := c.upd.Rollback(ctx, connect.NewRequest(&apiv1.UpdateRollbackRequest{}))
	if err != nil {
		return nil, c.wrap("update rollback", err)
	}
	return resp.Msg, nil
}
