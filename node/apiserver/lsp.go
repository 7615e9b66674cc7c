package apiserver

import (
	"context"

	"connectrpc.com/connect"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// LSP is the language-server capability (lsp.Service).
type LSP interface {
	Definition(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPLocations, error)
	References(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPLocations, error)
	Hover(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPHover, error)
	Symbols(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPSymbols, error)
	Diagnostics(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPDiagnostics, error)
	Rename(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPEdit, error)
	Format(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPEdit, error)
	Verify(ctx context.Context, r *apiv1.LSPVerifyRequest) (*apiv1.LSPVerifyReport, error)
	Servers(ctx context.Context, r *apiv1.LSPServersRequest) (*apiv1.LSPServersResponse, error)
}

// lspService implements the LSPService of the local API. A workspace is
// a path the API reads, so it must be within the allowed roots.
type lspService struct {
	l     LSP
	roots Roots
}

var _ apiv1connect.LSPServiceHandler = (*lspService)(nil)

// query checks the query's workspace against the allowed roots.
func (s *lspService) query(q *apiv1.LSPQuery) (*apiv1.LSPQuery, error) {
	abs, err := s.roots.Resolve("workspace", q.GetWorkspace())
	if err != nil {
		return nil, err
	}
	q.Workspace = abs
	return q, nil
}

// onQuery runs a call on a checked query.
func onQuery[T any](s *lspService, ctx context.Context, r *connect.Request[apiv1.LSPQuery], call func(context.Context, *apiv1.LSPQuery) (*T, error)) (*connect.Response[T], error) {
	q, err := s.query(r.Msg)
	if err != nil {
		return nil, err
	}
	return respond(call(ctx, q))
}

func (s *lspService) Definition(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPLocations], error) {
	return onQuery(s, ctx, r, s.l.Definition)
}

func (s *lspService) References(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPLocations], error) {
	return onQuery(s, ctx, r, s.l.References)
}

func (s *lspService) Hover(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPHover], error) {
	return onQuery(s, ctx, r, s.l.Hover)
}

func (s *lspService) Symbols(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPSymbols], error) {
	return onQuery(s, ctx, r, s.l.Symbols)
}

func (s *lspService) Diagnostics(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPDiagnostics], error) {
	return onQuery(s, ctx, r, s.l.Diagnostics)
}

func (s *lspService) Rename(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPEdit], error) {
	return onQuery(s, ctx, r, s.l.Rename)
}

func (s *lspService) Format(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPEdit], error) {
	return onQuery(s, ctx, r, s.l.Format)
}

func (s *lspService) Verify(ctx context.Context, r *connect.Request[apiv1.LSPVerifyRequest]) (*connect.Response[apiv1.LSPVerifyReport], error) {
	abs, err := s.roots.Resolve("workspace", r.Msg.GetWorkspace())
	if err != nil {
		return nil, err
	}
	r.Msg.Workspace = abs
	return respond(s.l.Verify(ctx, r.Msg))
}

func (s *lspService) Servers(ctx context.Context, r *connect.Request[apiv1.LSPServersRequest]) (*connect.Response[apiv1.LSPServersResponse], error) {
	return respond(s.l.Servers(ctx, r.Msg))
}
