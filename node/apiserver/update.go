package apiserver

import (
	"context"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// Updates is the self-update capability (update.Service).
type Updates interface {
	// Publish announces a signed envelope whose binary this peer holds.
	Publish(ctx context.Context, envelope []byte) (*apiv1.UpdatePublishResponse, error)
	// Status is what the updater knows.
	Status(ctx context.Context) *apiv1.UpdateStatus
	// Rollback switches to the previous version and restarts into it.
	Rollback(ctx context.Context) (*apiv1.UpdateRollbackResponse, error)
}
