package browser_test

import (
	"bufio"
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/protocol"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestHostileCalls: a peer that holds the mesh key sends garbage, unknown
// methods, sessions of other peers and oversized calls; each gets an
// error code and the host goes on serving.
func TestHostileCalls(t *testing.T) {
	tn := testnet.New(t, 2)
	ctx := testnet.Context(t, time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	from, to := tn.Peers[0].Node.Host().Libp2p(), tn.Peers[1].Node.ID()
	send := func(raw []byte) (*meshv1.ServiceReply, error) {
		s, err := from.NewStream(ctx, to, libp2pproto.ID(protocol.BrowserProtocol))
		if err != nil {
			return nil, err
		}
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := s.Write(raw); err != nil {
			return nil, err
		}
		_ = s.CloseWrite()
		var r meshv1.ServiceReply
		return &r, protocol.ReadDelimited(bufio.NewReader(s), &r, protocol.MaxBrowserReply)
	}
	frame := func(c *meshv1.ServiceCall) []byte {
		b, _ := proto.Marshal(c)
		return append(protoVarint(len(b)), b...)
	}
	req := func(m proto.Message) []byte { b, _ := proto.Marshal(m); return b }
	third := tn.Peers[0].Node.ID().String()
	for name, raw := range map[string][]byte{
		"garbage":          {0x05, 0xff, 0xff, 0xff, 0xff, 0xff},
		"over the cap":     protoVarint(protocol.MaxBrowserCall + 1),
		"unknown method":   frame(&meshv1.ServiceCall{Method: "Format"}),
		"bad request":      frame(&meshv1.ServiceCall{Method: "Navigate", Request: []byte{0xff, 0x01}}),
		"no session":       frame(&meshv1.ServiceCall{Method: "Navigate", Request: req(&apiv1.BrowserNavigateRequest{Url: "http://x/"})}),
		"another's":        frame(&meshv1.ServiceCall{Method: "Evaluate", Request: req(&apiv1.BrowserEvaluateRequest{Session: "b00@" + third, Expression: "1"})}),
		"unknown session":  frame(&meshv1.ServiceCall{Method: "Close", Request: req(&apiv1.BrowserSessionRequest{Session: "b00@" + to.String()})}),
		"upload of a path": frame(&meshv1.ServiceCall{Method: "Upload", Request: req(&apiv1.BrowserUploadRequest{Session: "b00@" + to.String(), Path: "/etc/shadow"})}),
	} {
		r, err := send(raw)
		if err == nil && r.GetCode() == 0 {
			t.Errorf("%s: answered OK", name)
		}
	}
	// The host still serves.
	b := tn.Clients(t)[1].Browser()
	if _, err := b.List(context.Background(), connect.NewRequest(&apiv1.BrowserListRequest{})); err != nil {
		t.Fatalf("after the hostile calls: %v", err)
	}
}

func protoVarint(n int) []byte {
	var b []byte
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}
