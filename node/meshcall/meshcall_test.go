package meshcall_test

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/node/meshcall"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) { testnet.VerifyNoLeaks(m) }

var cfg = meshcall.Config{Protocol: "/cortex/test/1.0.0", Name: "test", MaxCall: 1 << 10, MaxReply: 4 << 10, Timeout: 10 * time.Second}

// pair is two real hosts on loopback, b serving handle.
func pair(t *testing.T, authorize func(peer.ID) error, handle meshcall.Handler) (a, b host.Host) {
	t.Helper()
	newHost := func() host.Host {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	a, b = newHost(), newHost()
	b.SetStreamHandler(libp2pproto.ID(cfg.Protocol), func(st network.Stream) {
		meshcall.Serve(st, cfg, slog.New(slog.DiscardHandler), authorize, handle)
	})
	if err := a.Connect(testnet.Context(t, 10*time.Second), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func anyone(peer.ID) error { return nil }

// A call carries its method, request and headers; the reply decodes; an
// error keeps its kind across the wire.
func TestCallAndErrors(t *testing.T) {
	a, b := pair(t, anyone, func(ctx context.Context, from peer.ID, c *meshv1.ServiceCall) (proto.Message, error) {
		q, err := meshcall.Decode[apiv1.LSPQuery](c)
		if err != nil {
			return nil, err
		}
		switch c.GetMethod() {
		case "Echo":
			return &apiv1.LSPHover{Text: q.GetWorkspace() + " " + c.GetHeaders()["root"] + " " + from.String()}, nil
		case "Missing":
			return nil, errdefs.ErrNotFound
		case "Huge":
			return &apiv1.LSPHover{Text: string(make([]byte, cfg.MaxReply))}, nil
		case "Panic":
			panic("a handler's bug")
		}
		return nil, errdefs.ErrInvalid
	})
	ctx := testnet.Context(t, 30*time.Second)
	var h apiv1.LSPHover
	if err := meshcall.Call(ctx, a, cfg, b.ID(), "Echo", map[string]string{"root": "R"}, &apiv1.LSPQuery{Workspace: "/w"}, &h); err != nil {
		t.Fatal(err)
	}
	if want := "/w R " + a.ID().String(); h.GetText() != want {
		t.Fatalf("echo: %q, want %q", h.GetText(), want)
	}
	for method, kind := range map[string]error{"Missing": errdefs.ErrNotFound, "Nope": errdefs.ErrInvalid, "Huge": errdefs.ErrResourceExhausted} {
		if err := meshcall.Call(ctx, a, cfg, b.ID(), method, nil, &apiv1.LSPQuery{}, &h); !errors.Is(err, kind) {
			t.Errorf("%s: %v, want %v", method, err, kind)
		}
	}
	// A handler's panic is the call's internal error, not the peer's end.
	if err := meshcall.Call(ctx, a, cfg, b.ID(), "Panic", nil, &apiv1.LSPQuery{}, &h); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("panic: %v", err)
	}
	if err := meshcall.Call(ctx, a, cfg, b.ID(), "Echo", nil, &apiv1.LSPQuery{}, &h); err != nil {
		t.Errorf("after the panic: %v", err)
	}
}

// A peer the policy refuses gets the refusal; hostile bytes get an error
// code; the server goes on serving.
func TestRefusedAndHostile(t *testing.T) {
	a, b := pair(t, func(peer.ID) error { return errdefs.ErrPermissionDenied }, func(context.Context, peer.ID, *meshv1.ServiceCall) (proto.Message, error) {
		return &apiv1.LSPHover{}, nil
	})
	ctx := testnet.Context(t, 30*time.Second)
	if err := meshcall.Call(ctx, a, cfg, b.ID(), "Echo", nil, &apiv1.LSPQuery{}, &apiv1.LSPHover{}); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("refused: %v", err)
	}
	for name, raw := range map[string][]byte{
		"garbage":      {0x05, 0xff, 0xff, 0xff, 0xff, 0xff},
		"over the cap": {0x81, 0x10}, // 2049 bytes announced
		"nothing":      {},
	} {
		st, err := a.NewStream(ctx, b.ID(), libp2pproto.ID(cfg.Protocol))
		if err != nil {
			t.Fatal(err)
		}
		_ = st.SetDeadline(time.Now().Add(15 * time.Second))
		_, _ = st.Write(raw)
		_ = st.CloseWrite()
		var r meshv1.ServiceReply
		if err := protocol.ReadDelimited(bufio.NewReader(st), &r, cfg.MaxReply); err == nil && r.GetCode() == 0 {
			t.Errorf("%s: answered OK", name)
		}
		st.Close()
	}
}

// A caller that gives up cancels the call on the serving peer.
func TestCallerGivesUp(t *testing.T) {
	cancelled := make(chan struct{})
	a, b := pair(t, anyone, func(ctx context.Context, _ peer.ID, _ *meshv1.ServiceCall) (proto.Message, error) {
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := meshcall.Call(ctx, a, cfg, b.ID(), "Wait", nil, &apiv1.LSPQuery{}, &apiv1.LSPHover{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past its deadline: %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the serving peer's call was not cancelled")
	}
}
