package lsp

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/node/meshcall"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
)

// Bounds of the mesh's language-server protocol.
const (
	maxLSPCall  = 64 << 10
	maxLSPReply = 8 << 20
)

// rootHeader carries the workspace's root as the caller imported it: the
// serving peer fetches it from the mesh. The request's workspace names the
// caller's directory (the key of the view there), not a path on the peer
// that serves.
const rootHeader = "root"

// wire is the language servers' protocol between peers. A call may wait
// for a warming server for the whole call timeout, and then for its reply.
func (s *Service) wire() meshcall.Config {
	return meshcall.Config{Protocol: protocol.LSPProtocol, Name: "lsp",
		MaxCall: maxLSPCall, MaxReply: maxLSPReply, Timeout: s.cfg.CallTimeout + 30*time.Second}
}

// Definition returns where the symbol at a position is defined.
func (s *Service) Definition(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPLocations, error) {
	return routeQuery(ctx, s, "Definition", q, new(apiv1.LSPLocations), s.definition)
}

// References returns every use of the symbol at a position.
func (s *Service) References(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPLocations, error) {
	return routeQuery(ctx, s, "References", q, new(apiv1.LSPLocations), s.references)
}

// Hover returns the documentation and type of the symbol at a position.
func (s *Service) Hover(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPHover, error) {
	return routeQuery(ctx, s, "Hover", q, new(apiv1.LSPHover), s.hover)
}

// Symbols finds symbols by name in the workspace, or lists a file's.
func (s *Service) Symbols(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPSymbols, error) {
	return routeQuery(ctx, s, "Symbols", q, new(apiv1.LSPSymbols), s.symbols)
}

// Diagnostics returns the errors and warnings of files (none: every file
// the server reported on).
func (s *Service) Diagnostics(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPDiagnostics, error) {
	return routeQuery(ctx, s, "Diagnostics", q, new(apiv1.LSPDiagnostics), s.diagnostics)
}

// Rename proposes the rename of the symbol at a position as a new root;
// with apply it is merged into the workspace here.
func (s *Service) Rename(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPEdit, error) {
	return s.edit(ctx, "Rename", q, s.rename)
}

// Format proposes a file formatted as a new root; with apply it is merged
// into the workspace here.
func (s *Service) Format(ctx context.Context, q *apiv1.LSPQuery) (*apiv1.LSPEdit, error) {
	return s.edit(ctx, "Format", q, s.format)
}

func (s *Service) edit(ctx context.Context, method string, q *apiv1.LSPQuery, local func(context.Context, target, *apiv1.LSPQuery) (*apiv1.LSPEdit, error)) (*apiv1.LSPEdit, error) {
	apply := q.GetApply()
	q.Apply = false // the proposal is made wherever the server is; it merges here
	e, err := routeQuery(ctx, s, method, q, new(apiv1.LSPEdit), local)
	if err != nil || !apply {
		return e, err
	}
	return e, s.apply(ctx, q.GetWorkspace(), e)
}

// Verify loads result into the warm server of its base's workspace and
// returns the diagnostics it adds and those of base it fixes.
func (s *Service) Verify(ctx context.Context, r *apiv1.LSPVerifyRequest) (*apiv1.LSPVerifyReport, error) {
	return route(ctx, s, "Verify", r.GetWorkspace(), r.GetPeer(), r.GetLabels(), r, new(apiv1.LSPVerifyReport),
		func(ctx context.Context, t target) (*apiv1.LSPVerifyReport, error) { return s.verify(ctx, t, r) })
}

func routeQuery[Resp proto.Message](ctx context.Context, s *Service, method string, q *apiv1.LSPQuery, resp Resp,
	local func(context.Context, target, *apiv1.LSPQuery) (Resp, error)) (Resp, error) {
	return route(ctx, s, method, q.GetWorkspace(), q.GetPeer(), q.GetLabels(), q, resp,
		func(ctx context.Context, t target) (Resp, error) { return local(ctx, t, q) })
}

// route runs a call on this peer's server of the workspace, or imports
// the workspace here and sends the call with its root to the peer placed.
func route[Resp proto.Message](ctx context.Context, s *Service, method, workspace, name string, labels map[string]string, req proto.Message, resp Resp,
	local func(context.Context, target) (Resp, error)) (Resp, error) {
	at, err := s.place(name, labels)
	if err != nil {
		return resp, err
	}
	if at == s.self {
		return local(ctx, target{key: workspace})
	}
	if !strings.HasPrefix(workspace, "/") {
		return resp, fmt.Errorf("workspace %q: want an absolute directory: %w", workspace, errdefs.ErrInvalid)
	}
	root, err := s.imports.Import(ctx, workspace)
	if err != nil {
		return resp, fmt.Errorf("import %s: %w", workspace, err)
	}
	return resp, s.callPeer(ctx, at, method, root, req, resp)
}

// place picks the peer whose server answers: the one named (an id, or its
// first or last characters), one with the labels and gopls, or this one.
func (s *Service) place(name string, labels map[string]string) (peer.ID, error) {
	if name == "" && len(labels) == 0 {
		return s.self, nil
	}
	if name != "" {
		if id, err := peer.Decode(name); err == nil {
			return id, nil
		}
		var found []peer.ID
		for _, id := range append(s.peerIDs(), s.self) {
			if strings.HasPrefix(id.String(), name) || strings.HasSuffix(id.String(), name) {
				found = append(found, id)
			}
		}
		switch len(found) {
		case 0:
			return "", fmt.Errorf("lsp: no live peer %q (see `cortex-peer peers`): %w", name, errdefs.ErrNotFound)
		case 1:
			return found[0], nil
		}
		return "", fmt.Errorf("lsp: %q names %d peers; give more of its id: %w", name, len(found), errdefs.ErrInvalid)
	}
	for _, e := range s.mesh.Peers() {
		ok := e.Heartbeat.Capabilities.Gopls
		for k, v := range labels {
			ok = ok && e.Heartbeat.Labels[k] == v
		}
		if ok {
			return e.ID, nil
		}
	}
	return "", fmt.Errorf("lsp: no live peer with gopls has the labels %v: %w", labels, errdefs.ErrUnavailable)
}

func (s *Service) peerIDs() []peer.ID {
	var ids []peer.ID
	for _, e := range s.mesh.Peers() {
		ids = append(ids, e.ID)
	}
	return ids
}

// callPeer sends one call to peer at and decodes its reply into resp.
func (s *Service) callPeer(ctx context.Context, at peer.ID, method string, root cid.Cid, req, resp proto.Message) error {
	return meshcall.Call(ctx, s.host, s.wire(), at, method, map[string]string{rootHeader: root.String()}, req, resp)
}

// mayServe refuses a peer this peer's policy does not answer.
func (s *Service) mayServe(from peer.ID) error {
	if !s.cfg.AcceptRemote {
		return fmt.Errorf("peer %s does not run language servers for other peers (lsp.accept_remote = false): %w", s.self, errdefs.ErrPermissionDenied)
	}
	if len(s.cfg.AcceptFrom) > 0 && !slices.Contains(s.cfg.AcceptFrom, from) {
		return fmt.Errorf("peer %s is not in lsp.accept_from of peer %s: %w", from, s.self, errdefs.ErrPermissionDenied)
	}
	return nil
}

// serveStream answers one call of another peer, on a view of its
// workspace named by that peer and its directory.
func (s *Service) serveStream(st network.Stream) {
	meshcall.Serve(st, s.wire(), s.log, s.mayServe, s.dispatch)
}

// dispatch runs a call of another peer on this peer's server.
func (s *Service) dispatch(ctx context.Context, from peer.ID, c *meshv1.ServiceCall) (proto.Message, error) {
	root, err := cid.Decode(c.GetHeaders()[rootHeader])
	if err != nil {
		return nil, fmt.Errorf("lsp call: root %q: %v: %w", c.GetHeaders()[rootHeader], err, errdefs.ErrInvalid)
	}
	at := func(workspace string) target { return target{key: from.String() + ":" + workspace, root: root} }
	query := func(local func(context.Context, target, *apiv1.LSPQuery) (proto.Message, error)) (proto.Message, error) {
		q, err := meshcall.Decode[apiv1.LSPQuery](c)
		if err != nil {
			return nil, err
		}
		q.Apply = false // a proposal is merged by the caller, never here
		return local(ctx, at(q.GetWorkspace()), q)
	}
	switch c.GetMethod() {
	case "Definition":
		return query(func(ctx context.Context, t target, q *apiv1.LSPQuery) (proto.Message, error) {
			return s.definition(ctx, t, q)
		})
	case "References":
		return query(func(ctx context.Context, t target, q *apiv1.LSPQuery) (proto.Message, error) {
			return s.references(ctx, t, q)
		})
	case "Hover":
		return query(func(ctx context.Context, t target, q *apiv1.LSPQuery) (proto.Message, error) {
			return s.hover(ctx, t, q)
		})
	case "Symbols":
		return query(func(ctx context.Context, t target, q *apiv1.LSPQuery) (proto.Message, error) {
			return s.symbols(ctx, t, q)
		})
	case "Diagnostics":
		return query(func(ctx context.Context, t target, q *apiv1.LSPQuery) (proto.Message, error) {
			return s.diagnostics(ctx, t, q)
		})
	case "Rename":
		return query(func(ctx context.Context, t target, q *apiv1.LSPQuery) (proto.Message, error) {
			return s.rename(ctx, t, q)
		})
	case "Format":
		return query(func(ctx context.Context, t target, q *apiv1.LSPQuery) (proto.Message, error) {
			return s.format(ctx, t, q)
		})
	case "Verify":
		r, err := meshcall.Decode[apiv1.LSPVerifyRequest](c)
		if err != nil {
			return nil, err
		}
		return s.verify(ctx, at(r.GetWorkspace()), r)
	}
	return nil, fmt.Errorf("lsp call %q: unknown method: %w", c.GetMethod(), errdefs.ErrInvalid)
}
