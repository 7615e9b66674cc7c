package apiserver

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
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

// errNoUpdates answers every call of a peer built without an updater.
var errNoUpdates = errors.New("self-update is not available on this peer: it runs without an updater")

// updateService implements the UpdateService of the local API. u is nil on
// a peer without an updater: every call is then Unimplemented.
type updateService struct {
	u Updates
}

var _ apiv1connect.UpdateServiceHandler = (*updateService)(nil)

func (s *updateService) unavailable() error {
	if s.u == nil {
		return connect.NewError(connect.CodeUnimplemented, errNoUpdates)
	}
	return nil
}

func (s *updateService) Publish(ctx context.Context, req *connect.Request[apiv1.UpdatePublishRequest]) (*connect.Response[apiv1.UpdatePublishResponse], error) {
	if err := s.unavailable(); err != nil {
		return nil, err
	}
	if len(req.Msg.GetEnvelope()) == 0 {
		return nil, fmt.Errorf("envelope: missing (build it with `cortex-peer release publish`): %w", errdefs.ErrInvalid)
	}
	res, err := s.u.Publish(ctx, req.Msg.GetEnvelope())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

func (s *updateService) Status(ctx context.Context, _ *connect.Request[apiv1.UpdateStatusRequest]) (*connect.Response[apiv1.UpdateStatus], error) {
	if err := s.unavailable(); err != nil {
		return nil, err
	}
	st := s.u.Status(ctx)
	if st == nil {
		st = &apiv1.UpdateStatus{}
	}
	return connect.NewResponse(st), nil
}

func (s *updateService) Rollback(ctx context.Context, _ *connect.Request[apiv1.UpdateRollbackRequest]) (*connect.Response[apiv1.UpdateRollbackResponse], error) {
	if err := s.unavailable(); err != nil {
		return nil, err
	}
	res, err := s.u.Rollback(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}
