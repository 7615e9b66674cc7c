package apiserver

import (
	"context"

	"connectrpc.com/connect"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// Browser is the browser capability (browser.Service): sessions on any
// peer, routed by their id. It takes and returns the API's messages, which
// are also what the mesh carries to the hosting peer.
type Browser interface {
	Open(ctx context.Context, client string, req *apiv1.BrowserOpenRequest) (*apiv1.BrowserSession, error)
	Navigate(ctx context.Context, req *apiv1.BrowserNavigateRequest) (*apiv1.BrowserPage, error)
	Snapshot(ctx context.Context, req *apiv1.BrowserSnapshotRequest) (*apiv1.BrowserSnapshotResponse, error)
	Click(ctx context.Context, req *apiv1.BrowserActRequest) (*apiv1.BrowserPage, error)
	Type(ctx context.Context, req *apiv1.BrowserActRequest) (*apiv1.BrowserPage, error)
	Evaluate(ctx context.Context, req *apiv1.BrowserEvaluateRequest) (*apiv1.BrowserEvaluateResponse, error)
	Screenshot(ctx context.Context, req *apiv1.BrowserScreenshotRequest) (*apiv1.BrowserArtifact, error)
	PDF(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserArtifact, error)
	Upload(ctx context.Context, req *apiv1.BrowserUploadRequest) (*apiv1.BrowserPage, error)
	Tabs(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserTabsResponse, error)
	Downloads(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserDownloadsResponse, error)
	Console(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserConsoleResponse, error)
	Network(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserNetworkResponse, error)
	SaveState(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserArtifact, error)
	List(ctx context.Context, req *apiv1.BrowserListRequest) (*apiv1.BrowserListResponse, error)
	CloseSession(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserCloseResponse, error)
}

// browserService implements the BrowserService of the local API.
type browserService struct {
	b     Browser
	roots Roots
}

var _ apiv1connect.BrowserServiceHandler = (*browserService)(nil)

// respond wraps a capability's answer for connect.
func respond[T any](m *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(m), nil
}

// apiClient names the local API as a session's owner.
const apiClient = "api"

func (s *browserService) Open(ctx context.Context, r *connect.Request[apiv1.BrowserOpenRequest]) (*connect.Response[apiv1.BrowserSession], error) {
	return respond(s.b.Open(ctx, apiClient, r.Msg))
}

func (s *browserService) Navigate(ctx context.Context, r *connect.Request[apiv1.BrowserNavigateRequest]) (*connect.Response[apiv1.BrowserPage], error) {
	return respond(s.b.Navigate(ctx, r.Msg))
}

func (s *browserService) Snapshot(ctx context.Context, r *connect.Request[apiv1.BrowserSnapshotRequest]) (*connect.Response[apiv1.BrowserSnapshotResponse], error) {
	return respond(s.b.Snapshot(ctx, r.Msg))
}

func (s *browserService) Click(ctx context.Context, r *connect.Request[apiv1.BrowserActRequest]) (*connect.Response[apiv1.BrowserPage], error) {
	return respond(s.b.Click(ctx, r.Msg))
}

func (s *browserService) Type(ctx context.Context, r *connect.Request[apiv1.BrowserActRequest]) (*connect.Response[apiv1.BrowserPage], error) {
	return respond(s.b.Type(ctx, r.Msg))
}

func (s *browserService) Evaluate(ctx context.Context, r *connect.Request[apiv1.BrowserEvaluateRequest]) (*connect.Response[apiv1.BrowserEvaluateResponse], error) {
	return respond(s.b.Evaluate(ctx, r.Msg))
}

func (s *browserService) Screenshot(ctx context.Context, r *connect.Request[apiv1.BrowserScreenshotRequest]) (*connect.Response[apiv1.BrowserArtifact], error) {
	return respond(s.b.Screenshot(ctx, r.Msg))
}

func (s *browserService) PDF(ctx context.Context, r *connect.Request[apiv1.BrowserSessionRequest]) (*connect.Response[apiv1.BrowserArtifact], error) {
	return respond(s.b.PDF(ctx, r.Msg))
}

// Upload reads a path only within the allowed roots, as every path the
// API is given.
func (s *browserService) Upload(ctx context.Context, r *connect.Request[apiv1.BrowserUploadRequest]) (*connect.Response[apiv1.BrowserPage], error) {
	if p := r.Msg.GetPath(); p != "" {
		abs, err := s.roots.Resolve("path", p)
		if err != nil {
			return nil, err
		}
		r.Msg.Path = abs
	}
	return respond(s.b.Upload(ctx, r.Msg))
}

func (s *browserService) Tabs(ctx context.Context, r *connect.Request[apiv1.BrowserSessionRequest]) (*connect.Response[apiv1.BrowserTabsResponse], error) {
	return respond(s.b.Tabs(ctx, r.Msg))
}

func (s *browserService) Downloads(ctx context.Context, r *connect.Request[apiv1.BrowserSessionRequest]) (*connect.Response[apiv1.BrowserDownloadsResponse], error) {
	return respond(s.b.Downloads(ctx, r.Msg))
}

func (s *browserService) Console(ctx context.Context, r *connect.Request[apiv1.BrowserSessionRequest]) (*connect.Response[apiv1.BrowserConsoleResponse], error) {
	return respond(s.b.Console(ctx, r.Msg))
}

func (s *browserService) Network(ctx context.Context, r *connect.Request[apiv1.BrowserSessionRequest]) (*connect.Response[apiv1.BrowserNetworkResponse], error) {
	return respond(s.b.Network(ctx, r.Msg))
}

func (s *browserService) SaveState(ctx context.Context, r *connect.Request[apiv1.BrowserSessionRequest]) (*connect.Response[apiv1.BrowserArtifact], error) {
	return respond(s.b.SaveState(ctx, r.Msg))
}

func (s *browserService) List(ctx context.Context, r *connect.Request[apiv1.BrowserListRequest]) (*connect.Response[apiv1.BrowserListResponse], error) {
	return respond(s.b.List(ctx, r.Msg))
}

func (s *browserService) Close(ctx context.Context, r *connect.Request[apiv1.BrowserSessionRequest]) (*connect.Response[apiv1.BrowserCloseResponse], error) {
	return respond(s.b.CloseSession(ctx, r.Msg))
}
