package browser

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/node/meshcall"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
)

// route runs a call on the session's peer: here, or over the mesh.
func route[Resp proto.Message](ctx context.Context, s *Service, method, session string, req proto.Message, resp Resp,
	local func(context.Context, string) (Resp, error)) (Resp, error) {
	id, at, err := parseSession(session)
	if err != nil {
		return resp, err
	}
	if at == s.self {
		return local(ctx, id)
	}
	return resp, s.call(ctx, at, method, "", req, resp)
}

// wire is the browser's protocol between peers.
func (s *Service) wire() meshcall.Config {
	return meshcall.Config{Protocol: protocol.BrowserProtocol, Name: "browser",
		MaxCall: protocol.MaxBrowserCall, MaxReply: protocol.MaxBrowserReply, Timeout: s.cfg.CallTimeout}
}

// clientHeader names the API client on the calling peer, for the session's
// owner.
const clientHeader = "client"

// call sends one call to peer at and decodes its reply into resp.
func (s *Service) call(ctx context.Context, at peer.ID, method, client string, req, resp proto.Message) error {
	var headers map[string]string
	if client != "" {
		headers = map[string]string{clientHeader: client}
	}
	return meshcall.Call(ctx, s.host, s.wire(), at, method, headers, req, resp)
}

// serveStream answers one call from another peer.
func (s *Service) serveStream(st network.Stream) {
	meshcall.Serve(st, s.wire(), s.log, s.mayServe, s.dispatch)
}

// dispatch decodes a call from another peer and runs it on a session
// hosted here.
func (s *Service) dispatch(ctx context.Context, from peer.ID, c *meshv1.ServiceCall) (proto.Message, error) {
	owner := from.String()
	if cl := c.GetHeaders()[clientHeader]; cl != "" && len(cl) <= 64 {
		owner += "/" + cl
	}
	b := c
	switch c.GetMethod() {
	case "Open":
		return served(s, b, func(r *apiv1.BrowserOpenRequest) (proto.Message, error) { return s.openHere(ctx, owner, r) })
	case "Navigate":
		return served(s, b, func(r *apiv1.BrowserNavigateRequest) (proto.Message, error) { return s.Navigate(ctx, r) })
	case "Snapshot":
		return served(s, b, func(r *apiv1.BrowserSnapshotRequest) (proto.Message, error) { return s.Snapshot(ctx, r) })
	case "Click":
		return served(s, b, func(r *apiv1.BrowserActRequest) (proto.Message, error) { return s.Click(ctx, r) })
	case "Type":
		return served(s, b, func(r *apiv1.BrowserActRequest) (proto.Message, error) { return s.Type(ctx, r) })
	case "Evaluate":
		return served(s, b, func(r *apiv1.BrowserEvaluateRequest) (proto.Message, error) { return s.Evaluate(ctx, r) })
	case "Screenshot":
		return served(s, b, func(r *apiv1.BrowserScreenshotRequest) (proto.Message, error) { return s.Screenshot(ctx, r) })
	case "PDF":
		return served(s, b, func(r *apiv1.BrowserSessionRequest) (proto.Message, error) { return s.PDF(ctx, r) })
	case "Upload":
		return served(s, b, func(r *apiv1.BrowserUploadRequest) (proto.Message, error) {
			if r.GetPath() != "" {
				return nil, fmt.Errorf("upload: a path names a file on the caller's peer; send its CID: %w", errdefs.ErrInvalid)
			}
			return s.Upload(ctx, r)
		})
	case "Tabs":
		return served(s, b, func(r *apiv1.BrowserSessionRequest) (proto.Message, error) { return s.Tabs(ctx, r) })
	case "Downloads":
		return served(s, b, func(r *apiv1.BrowserSessionRequest) (proto.Message, error) { return s.Downloads(ctx, r) })
	case "Console":
		return served(s, b, func(r *apiv1.BrowserSessionRequest) (proto.Message, error) { return s.Console(ctx, r) })
	case "Network":
		return served(s, b, func(r *apiv1.BrowserSessionRequest) (proto.Message, error) { return s.Network(ctx, r) })
	case "SaveState":
		return served(s, b, func(r *apiv1.BrowserSessionRequest) (proto.Message, error) { return s.SaveState(ctx, r) })
	case "List":
		// Another peer sees only the sessions it opened here.
		return s.listHere(from.String()), nil
	case "Close":
		return served(s, b, func(r *apiv1.BrowserSessionRequest) (proto.Message, error) { return s.CloseSession(ctx, r) })
	}
	return nil, fmt.Errorf("browser call %q: unknown method: %w", c.GetMethod(), errdefs.ErrInvalid)
}

// served decodes a request and runs fn on it.
func served[Req any, P interface {
	*Req
	proto.Message
}](s *Service, c *meshv1.ServiceCall, fn func(P) (proto.Message, error)) (proto.Message, error) {
	req, err := meshcall.Decode[Req, P](c)
	if err != nil {
		return nil, err
	}
	// A call names a session of this peer: a peer never relays one.
	if r, ok := any(req).(interface{ GetSession() string }); ok {
		if _, at, err := parseSession(r.GetSession()); err != nil {
			return nil, err
		} else if at != s.self {
			return nil, fmt.Errorf("browser session %s: not hosted by peer %s: %w", r.GetSession(), s.self, errdefs.ErrNotFound)
		}
	}
	return fn(req)
}
