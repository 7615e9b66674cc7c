// Package meshcall carries one call of a capability's local API to the
// peer that serves it, and its reply: a libp2p stream per call, a
// length-delimited ServiceCall out and a ServiceReply back, errors as
// connect codes so that errors.Is with errdefs works on either side.
//
// A capability (the browser, the language servers) keeps its own protocol
// id, bounds and policy; this package is the wire they share. A caller
// that gives up resets its stream, and the serving peer cancels the call.
package meshcall

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
)

// ioTimeout bounds reading a call and writing a reply on a stream; the
// call itself runs within Config.Timeout.
const ioTimeout = 30 * time.Second

// Config is one capability's protocol.
type Config struct {
	Protocol string        // the libp2p protocol id, e.g. protocol.LSPProtocol
	Name     string        // the capability in errors: "browser", "lsp"
	MaxCall  int           // bytes of an encoded ServiceCall
	MaxReply int           // bytes of an encoded ServiceReply
	Timeout  time.Duration // of a call, on both sides
}

// Validate checks that every field is set.
func (c Config) Validate() error {
	if c.Protocol == "" || c.Name == "" || c.MaxCall <= 0 || c.MaxReply <= 0 || c.Timeout <= 0 {
		return fmt.Errorf("meshcall: incomplete config %+v: %w", c, errdefs.ErrInvalid)
	}
	return nil
}

// Streams opens streams to peers (a libp2p host).
type Streams interface {
	NewStream(ctx context.Context, p peer.ID, pids ...libp2pproto.ID) (network.Stream, error)
}

// Call sends one call of method to peer at and decodes the reply into
// resp. A peer that cannot be reached or breaks off is ErrUnavailable; an
// error the other peer answered keeps its kind.
func Call(ctx context.Context, streams Streams, cfg Config, at peer.ID, method string, headers map[string]string, req, resp proto.Message) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s %s: encode: %w", cfg.Name, method, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	st, err := streams.NewStream(ctx, at, libp2pproto.ID(cfg.Protocol))
	if err != nil {
		return fmt.Errorf("%s %s: reach peer %s: %v: %w", cfg.Name, method, at, err, errdefs.ErrUnavailable)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Reset() }) // a caller that leaves frees the stream
	defer stop()
	if err := protocol.WriteDelimited(st, &meshv1.ServiceCall{Method: method, Request: b, Headers: headers}, cfg.MaxCall); err != nil {
		st.Reset()
		return fmt.Errorf("%s %s: send to peer %s: %w", cfg.Name, method, at, err)
	}
	// The write side stays open: the serving peer reads on past the call,
	// and a reset (this caller gone) is what it hears there and cancels
	// on. After a CloseWrite it would read EOF and hear nothing more.
	var reply meshv1.ServiceReply
	if err := protocol.ReadDelimited(bufio.NewReader(st), &reply, cfg.MaxReply); err != nil {
		st.Reset()
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s on peer %s: %w", cfg.Name, method, at, context.Cause(ctx))
		}
		return fmt.Errorf("%s %s: reply from peer %s: %v: %w", cfg.Name, method, at, err, errdefs.ErrUnavailable)
	}
	if reply.GetCode() != 0 {
		return protocol.FromConnectError(connect.NewError(connect.Code(reply.GetCode()), errors.New(reply.GetMessage())))
	}
	if err := proto.Unmarshal(reply.GetReply(), resp); err != nil {
		return fmt.Errorf("%s %s: reply from peer %s: %v: %w", cfg.Name, method, at, err, errdefs.ErrInvalid)
	}
	return nil
}

// Handler runs a call of peer from; ctx ends when the caller gives up or
// Config.Timeout passes.
type Handler func(ctx context.Context, from peer.ID, call *meshv1.ServiceCall) (proto.Message, error)

// Serve answers the one call on st: authorize says whether this peer
// serves from at all (an error is the reply), then handle runs it.
// Nothing a peer sends can make it panic or outlive the call's timeout.
func Serve(st network.Stream, cfg Config, log *slog.Logger, authorize func(from peer.ID) error, handle Handler) {
	defer st.Close()
	from := st.Conn().RemotePeer()
	_ = st.SetReadDeadline(time.Now().Add(ioTimeout))
	var c meshv1.ServiceCall
	var resp proto.Message
	err := protocol.ReadDelimited(bufio.NewReader(st), &c, cfg.MaxCall)
	if err == nil {
		err = authorize(from)
	}
	if err == nil {
		_ = st.SetReadDeadline(time.Time{})
		// The call lives as long as the caller keeps its stream: a caller
		// that resets it cancels the call (never what the call serves,
		// such as a browser session).
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
		go func() {
			var one [1]byte
			if _, err := st.Read(one[:]); err != nil && !errors.Is(err, io.EOF) {
				cancel()
			}
		}()
		resp, err = safely(ctx, from, &c, handle)
		cancel()
	}
	reply := &meshv1.ServiceReply{}
	if err != nil {
		ce := protocol.ToConnectError(err).(*connect.Error)
		reply.Code, reply.Message = uint32(ce.Code()), ce.Message()
		log.Debug("call from another peer refused or failed", "from", from, "method", c.GetMethod(), "err", err)
	} else if reply.Reply, err = proto.Marshal(resp); err != nil {
		reply = &meshv1.ServiceReply{Code: uint32(connect.CodeInternal), Message: err.Error()}
	}
	_ = st.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := protocol.WriteDelimited(st, reply, cfg.MaxReply); err != nil {
		// Too large to send (a huge console, a burst of diagnostics): say
		// so rather than nothing.
		_ = protocol.WriteDelimited(st, &meshv1.ServiceReply{Code: uint32(connect.CodeResourceExhausted), Message: err.Error()}, cfg.MaxReply)
	}
}

// safely runs handle; a panic on a call from the wire becomes an internal
// error of that call, not the peer's end.
func safely(ctx context.Context, from peer.ID, c *meshv1.ServiceCall, handle Handler) (resp proto.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s call from %s: internal error: %v", c.GetMethod(), from, r)
		}
	}()
	return handle(ctx, from, c)
}

// Decode decodes a call's request into a new Req, a clear ErrInvalid for
// bytes that are not one.
func Decode[Req any, P interface {
	*Req
	proto.Message
}](call *meshv1.ServiceCall) (P, error) {
	req := P(new(Req))
	if err := proto.Unmarshal(call.GetRequest(), req); err != nil {
		return nil, fmt.Errorf("%s call: decode %T: %v: %w", call.GetMethod(), req, err, errdefs.ErrInvalid)
	}
	return req, nil
}
