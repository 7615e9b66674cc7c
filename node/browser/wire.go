package browser

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

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

// call sends one call to peer at and decodes its reply into resp.
func (s *Service) call(ctx context.Context, at peer.ID, method, client string, req, resp proto.Message) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("browser %s: encode: %w", method, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	st, err := s.host.NewStream(ctx, at, libp2pproto.ID(protocol.BrowserProtocol))
	if err != nil {
		return fmt.Errorf("browser %s: reach peer %s: %v: %w", method, at, err, errdefs.ErrUnavailable)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Reset() }) // a caller that leaves frees the stream
	defer stop()
	if err := protocol.WriteDelimited(st, &meshv1.BrowserCall{Method: method, Request: b, Client: client}, protocol.MaxBrowserCall); err != nil {
		st.Reset()
		return fmt.Errorf("browser %s: send to peer %s: %w", method, at, err)
	}
	_ = st.CloseWrite()
	var reply meshv1.BrowserReply
	if err := protocol.ReadDelimited(bufio.NewReader(st), &reply, protocol.MaxBrowserReply); err != nil {
		st.Reset()
		if ctx.Err() != nil {
			return fmt.Errorf("browser %s on peer %s: %w", method, at, context.Cause(ctx))
		}
		return fmt.Errorf("browser %s: reply from peer %s: %v: %w", method, at, err, errdefs.ErrUnavailable)
	}
	if reply.GetCode() != 0 {
		return protocol.FromConnectError(connect.NewError(connect.Code(reply.GetCode()), errors.New(reply.GetMessage())))
	}
	if err := proto.Unmarshal(reply.GetReply(), resp); err != nil {
		return fmt.Errorf("browser %s: reply from peer %s: %v: %w", method, at, err, errdefs.ErrInvalid)
	}
	return nil
}

// serveStream answers one call from another peer.
func (s *Service) serveStream(st network.Stream) {
	defer st.Close()
	from := st.Conn().RemotePeer()
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	var c meshv1.BrowserCall
	resp, err := proto.Message(nil), error(nil)
	if err = protocol.ReadDelimited(bufio.NewReader(st), &c, protocol.MaxBrowserCall); err == nil {
		if err = s.mayServe(from); err == nil {
			_ = st.SetReadDeadline(time.Time{})
			// The call lives as long as the caller keeps its stream: a
			// caller that resets it cancels the call, never the session.
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
			go func() {
				var one [1]byte
				if _, err := st.Read(one[:]); err != nil && !errors.Is(err, io.EOF) {
					cancel()
				}
			}()
			resp, err = s.dispatch(ctx, from, &c)
			cancel()
		}
	}
	reply := &meshv1.BrowserReply{}
	if err != nil {
		ce := protocol.ToConnectError(err).(*connect.Error)
		reply.Code, reply.Message = uint32(ce.Code()), ce.Message()
		s.log.Debug("browser call refused or failed", "from", from, "method", c.GetMethod(), "err", err)
	} else if reply.Reply, err = proto.Marshal(resp); err != nil {
		reply = &meshv1.BrowserReply{Code: uint32(connect.CodeInternal), Message: err.Error()}
	}
	_ = st.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := protocol.WriteDelimited(st, reply, protocol.MaxBrowserReply); err != nil {
		// Too large to send (a huge console): say so rather than nothing.
		_ = protocol.WriteDelimited(st, &meshv1.BrowserReply{Code: uint32(connect.CodeResourceExhausted), Message: err.Error()}, protocol.MaxBrowserReply)
	}
}

// dispatch decodes a call from another peer and runs it on a session
// hosted here.
func (s *Service) dispatch(ctx context.Context, from peer.ID, c *meshv1.BrowserCall) (proto.Message, error) {
	owner := from.String()
	if cl := c.GetClient(); cl != "" && len(cl) <= 64 {
		owner += "/" + cl
	}
	b := c.GetRequest()
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
}](s *Service, b []byte, fn func(P) (proto.Message, error)) (proto.Message, error) {
	req := P(new(Req))
	if err := proto.Unmarshal(b, req); err != nil {
		return nil, fmt.Errorf("decode %T: %v: %w", req, err, errdefs.ErrInvalid)
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
