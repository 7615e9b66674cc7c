package node_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/protocol"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// wireProtocols are the stream protocols a mesh member can open to a peer.
var wireProtocols = []string{protocol.TaskProtocol, protocol.LogsProtocol, protocol.BlocksProtocol,
	protocol.LeavesProtocol, protocol.BrowserProtocol, protocol.LSPProtocol}

// FuzzWire sends arbitrary bytes as a request on each stream protocol of a
// real peer (task, logs, bulk blocks, leaves, browser, language server),
// from another member of the mesh, which holds the mesh key; after each,
// the peer must still answer a task query. Bad input from the wire never
// crashes a peer nor wedges a protocol. The victim runs nothing for others
// (a mutated request must not start containers or Chromium): what is
// fuzzed is every decoder and check in front of that refusal.
//
//	go test -run '^$' -fuzz FuzzWire -fuzztime 60s ./node/
func FuzzWire(f *testing.F) {
	tn := testnet.New(f, 2, testnet.WithConfig(func(i int, cfg *node.Config) {
		cfg.Delegation.AcceptRemote, cfg.Browser.AcceptRemote, cfg.LSP.AcceptRemote = false, false, false
	}))
	ctx := testnet.Context(f, 5*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		f.Fatal(err)
	}
	victim, attacker := tn.Peers[0].Node.ID(), tn.Peers[1].Node.Host().Libp2p()
	delimited := func(m proto.Message) []byte {
		b, _ := proto.Marshal(m)
		return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
	}
	h, _ := mh.Sum([]byte("a block"), mh.SHA2_256, -1)
	c := cid.NewCidV1(cid.Raw, h).Bytes()
	withLen := func(b []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }
	for i, seeds := range [][][]byte{
		{ // task
			delimited(&meshv1.TaskRequest{Request: &meshv1.TaskRequest_Query{Query: &meshv1.QueryTask{TaskId: "t-1"}}}),
			delimited(&meshv1.TaskRequest{Request: &meshv1.TaskRequest_Submit{Submit: &meshv1.SubmitTask{TaskId: "t-2"}}}),
			delimited(&meshv1.TaskRequest{Request: &meshv1.TaskRequest_Probe{Probe: &meshv1.ProbeBlocks{Cids: [][]byte{c, {1, 2, 3}}}}}),
			binary.AppendUvarint(nil, 1<<30),
		},
		{delimited(&meshv1.LogRangeRequest{TaskId: "t-1", FromSeq: 1, ToSeq: 9}), {0xff, 0xff, 0xff}},         // logs
		{withLen(c), append(withLen(c), withLen(c)...), {0}, binary.AppendUvarint(nil, 1<<40)},                // blocks
		{append([]byte{1}, withLen(c)...), append([]byte{2}, withLen(c)...), binary.AppendUvarint(nil, 5000)}, // leaves
		{delimited(&meshv1.TaskRequest{}), []byte("not a call")},                                              // browser
		{delimited(&meshv1.TaskRequest{}), binary.AppendUvarint(nil, 1<<31)},                                  // lsp
	} {
		for _, s := range seeds {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		p := wireProtocols[int(which)%len(wireProtocols)]
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		s, err := attacker.NewStream(sctx, victim, libp2pproto.ID(p))
		if err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = s.Write(payload)
		_ = s.CloseWrite()
		_, _ = io.Copy(io.Discard, io.LimitReader(s, 4<<20))
		_ = s.Reset()
		alive(t, sctx, attacker, victim)
	})
}

// alive asks victim about a task it does not know and wants its answer.
func alive(t *testing.T, ctx context.Context, h interface {
	NewStream(context.Context, peer.ID, ...libp2pproto.ID) (network.Stream, error)
}, victim peer.ID) {
	t.Helper()
	s, err := h.NewStream(ctx, victim, libp2pproto.ID(protocol.TaskProtocol))
	if err != nil {
		t.Fatalf("the peer no longer takes task streams: %v", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	if err := protocol.WriteDelimited(s, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Query{Query: &meshv1.QueryTask{TaskId: "alive-check"}}}, protocol.MaxTaskMessage); err != nil {
		t.Fatalf("query: %v", err)
	}
	var reply meshv1.TaskReply
	if err := protocol.ReadDelimited(bufio.NewReader(s), &reply, protocol.MaxTaskMessage); err != nil {
		t.Fatalf("the peer no longer answers a task query: %v", err)
	}
}

// TestStreamFlood: a member of the mesh opens 600 streams on the task
// protocol and leaves them silent. The victim keeps at most its per-peer
// limit of them (the rest are reset at once), and answers an honest
// peer's query as it did before the flood.
func TestStreamFlood(t *testing.T) {
	tn := testnet.New(t, 3, testnet.WithConfig(func(i int, cfg *node.Config) {
		cfg.Delegation.AcceptRemote = false
	}))
	ctx := testnet.Context(t, 2*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	victim, attacker, honest := tn.Peers[0].Node.ID(), tn.Peers[1].Node.Host().Libp2p(), tn.Peers[2].Node.Host().Libp2p()
	quiet := time.Now()
	alive(t, ctx, honest, victim)
	quietTook := time.Since(quiet)

	var held []network.Stream
	refused := 0
	for range 600 {
		s, err := attacker.NewStream(ctx, victim, libp2pproto.ID(protocol.TaskProtocol))
		if err != nil {
			refused++
			continue
		}
		// The limit shows when the victim reads the protocol: a stream
		// past it is reset, and a write to it fails.
		if _, err := s.Write([]byte{0x05}); err != nil {
			refused++
			_ = s.Reset()
			continue
		}
		held = append(held, s)
	}
	defer func() {
		for _, s := range held {
			_ = s.Reset()
		}
	}()
	// Streams the victim reset show as failed reads soon after.
	time.Sleep(500 * time.Millisecond)
	open := 0
	for _, s := range held {
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := s.Read(make([]byte, 1)); err != nil && strings.Contains(err.Error(), "deadline") {
			open++
		}
	}
	t.Logf("600 streams: %d refused at open, %d still open on the victim after a moment", refused, open)
	if open > 64 {
		t.Fatalf("the victim holds %d silent streams of one peer on one protocol, want at most 64", open)
	}
	during := time.Now()
	alive(t, ctx, honest, victim)
	duringTook := time.Since(during)
	t.Logf("an honest query: %s quiet, %s during the flood", quietTook, duringTook)
	if duringTook > 5*time.Second {
		t.Fatalf("an honest query took %s during the flood", duringTook)
	}
}

// TestTaskRequestFlood: a member of the mesh sends task queries as fast as
// it can from four streams at a time. Past its pace the victim refuses
// them as unavailable, logs it once, and an honest peer's query is
// answered as usual meanwhile.
func TestTaskRequestFlood(t *testing.T) {
	logs := &syncBuffer{}
	tn := testnet.New(t, 3, testnet.WithLogs(logs, slog.LevelInfo))
	ctx := testnet.Context(t, 2*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	victim, attacker, honest := tn.Peers[0].Node.ID(), tn.Peers[1].Node.Host().Libp2p(), tn.Peers[2].Node.Host().Libp2p()
	query := func(h host.Host) (*meshv1.TaskReply, error) {
		s, err := h.NewStream(ctx, victim, libp2pproto.ID(protocol.TaskProtocol))
		if err != nil {
			return nil, err
		}
		defer s.Close()
		if err := protocol.WriteDelimited(s, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Query{Query: &meshv1.QueryTask{TaskId: "flood"}}}, protocol.MaxTaskMessage); err != nil {
			return nil, err
		}
		var reply meshv1.TaskReply
		return &reply, protocol.ReadDelimited(bufio.NewReader(s), &reply, protocol.MaxTaskMessage)
	}
	var refused atomic.Int64
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := query(attacker)
				sent.Add(1)
				if err == nil && r.GetCode() == meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE && strings.Contains(r.GetReason(), "too many requests") {
					refused.Add(1)
				}
			}
		})
	}
	for refused.Load() == 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	r, err := query(honest)
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil || r.GetCode() == meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE {
		t.Fatalf("an honest query during the flood: %v %v", r, err)
	}
	t.Logf("the flood sent %d queries, %d refused; an honest query took %s meanwhile", sent.Load(), refused.Load(), took)
	if n := strings.Count(logs.String(), "faster than allowed"); n != 1 {
		t.Fatalf("the flood was logged %d times, want once", n)
	}
}
