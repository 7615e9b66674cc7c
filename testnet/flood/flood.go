// Package flood is a hostile member of a mesh, for tests and benchmarks: it
// holds the mesh key and attacks one peer on every surface a member can
// reach at once. Streams held open with 1 GiB length prefixes on every
// cortex protocol, garbage requests, bitswap want lists of blocks that do not
// exist, gossip at line rate (bad signatures, valid signatures over invalid
// content, valid heartbeats, subscription spam), task submissions as fast as
// they are answered, and results and cancels for tasks it does not run.
//
// It is a plain libp2p host, not a cortex peer: nothing it sends goes
// through the checks a peer applies to its own output.
package flood

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/protocol"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
)

// Config says whom to attack and how hard.
type Config struct {
	// Victim is the peer attacked; Addrs are its addresses.
	Victim peer.AddrInfo
	// MeshKey is the mesh's pre-shared key (nil: an allowlist-only mesh
	// that lists this flooder's key).
	MeshKey pnet.PSK
	// Identity is the flooder's key (nil: a new one).
	Identity crypto.PrivKey
	// HeldStreams is how many streams are kept open at once, each with a
	// 1 GiB length prefix and nothing after it (default 2000).
	HeldStreams int
	// Workers is the number of goroutines per attack that loop as fast as
	// the victim answers (default 4).
	Workers int
	// TaskCommand is what the submitted tasks run (default sleep 30: each
	// accepted one holds a slot).
	TaskCommand []string
	// Attacks names the attacks to run (default: all of Attacks).
	Attacks []string
}

// Attacks are the names of the flooder's attacks.
var Attacks = []string{"streams", "garbage", "wants", "gossip", "tasks", "claims"}

// Report counts what the flooder did and how the victim answered.
type Report struct {
	Duration time.Duration

	StreamsOpened, StreamsRefused, StreamsReset int64 // held streams
	GarbageRequests, GarbageAnswered            int64 // malformed requests and the replies they got
	WantLists, Wants                            int64 // bitswap
	GossipRPCs, GossipMessages                  int64 // raw pubsub RPCs written and the messages in them
	GossipStreamResets                          int64
	TaskSubmits, TasksAccepted, TasksRefused    int64
	Claims, ClaimsRefused                       int64 // results and cancels for others' tasks
	Disconnects                                 int64 // times the victim closed the connection
}

// Rows are the report as name/value pairs, in a stable order.
func (r Report) Rows() [][2]string {
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	return [][2]string{
		{"duration", r.Duration.Round(100 * time.Millisecond).String()},
		{"held streams opened / refused / reset", i(r.StreamsOpened) + " / " + i(r.StreamsRefused) + " / " + i(r.StreamsReset)},
		{"garbage requests / answered", i(r.GarbageRequests) + " / " + i(r.GarbageAnswered)},
		{"bitswap want lists / wants", i(r.WantLists) + " / " + i(r.Wants)},
		{"gossip RPCs / messages / stream resets", i(r.GossipRPCs) + " / " + i(r.GossipMessages) + " / " + i(r.GossipStreamResets)},
		{"task submits / accepted / refused", i(r.TaskSubmits) + " / " + i(r.TasksAccepted) + " / " + i(r.TasksRefused)},
		{"claims on others' tasks / refused", i(r.Claims) + " / " + i(r.ClaimsRefused)},
		{"disconnected by the victim", i(r.Disconnects)},
	}
}

// Flooder is a hostile member connected to its victim.
type Flooder struct {
	cfg  Config
	h    host.Host
	key  crypto.PrivKey
	rep  counters
	seq  atomic.Uint64
	once sync.Once
}

type counters struct {
	streamsOpened, streamsRefused, streamsReset atomic.Int64
	garbage, garbageAnswered                    atomic.Int64
	wantLists, wants                            atomic.Int64
	gossipRPCs, gossipMessages, gossipResets    atomic.Int64
	submits, accepted, refused                  atomic.Int64
	claims, claimsRefused                       atomic.Int64
	disconnects                                 atomic.Int64
}

// wireProtocols are the cortex stream protocols a member may open.
var wireProtocols = []string{protocol.TaskProtocol, protocol.LogsProtocol, protocol.BlocksProtocol,
	protocol.LeavesProtocol, protocol.BrowserProtocol, protocol.LSPProtocol}

// gossipProtocols are what the flooder speaks to the victim's pubsub.
var gossipProtocols = []libp2pproto.ID{"/meshsub/1.2.0", "/meshsub/1.1.0"}

// New starts the flooder's host and connects it to the victim.
func New(ctx context.Context, cfg Config) (*Flooder, error) {
	if cfg.HeldStreams <= 0 {
		cfg.HeldStreams = 2000
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	for _, a := range cfg.Attacks {
		if !slices.Contains(Attacks, a) {
			return nil, fmt.Errorf("flood: no attack %q (have %s)", a, strings.Join(Attacks, ", "))
		}
	}
	if len(cfg.TaskCommand) == 0 {
		cfg.TaskCommand = []string{"sleep", "30"}
	}
	key := cfg.Identity
	if key == nil {
		var err error
		if key, _, err = crypto.GenerateEd25519Key(rand.Reader); err != nil {
			return nil, fmt.Errorf("flood: key: %w", err)
		}
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.NoListenAddrs,
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		// The flooder's own side must not be what limits it.
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableRelay(),
	}
	if cfg.MeshKey != nil {
		opts = append(opts, libp2p.PrivateNetwork(cfg.MeshKey))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("flood: host: %w", err)
	}
	f := &Flooder{cfg: cfg, h: h, key: key}
	// The victim's pubsub and bitswap open streams back; they are read
	// and dropped, so that the victim keeps the flooder as a pubsub peer.
	drain := func(s network.Stream) { _, _ = io.Copy(io.Discard, s); _ = s.Reset() }
	for _, p := range gossipProtocols {
		h.SetStreamHandler(p, drain)
	}
	h.SetStreamHandler("/ipfs/bitswap/1.2.0", drain)
	h.Network().Notify(&network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == cfg.Victim.ID {
			f.rep.disconnects.Add(1)
		}
	}})
	if err := f.connect(ctx); err != nil {
		_ = h.Close()
		return nil, err
	}
	return f, nil
}

// ID is the flooder's peer id.
func (f *Flooder) ID() peer.ID { return f.h.ID() }

// Close stops the flooder's host. Safe to call twice.
func (f *Flooder) Close() error {
	var err error
	f.once.Do(func() { err = f.h.Close() })
	return err
}

func (f *Flooder) connect(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := f.h.Connect(cctx, f.cfg.Victim); err != nil {
		return fmt.Errorf("flood: connect to %s: %w", f.cfg.Victim.ID, err)
	}
	return nil
}

// Run attacks until ctx ends, then reports.
func (f *Flooder) Run(ctx context.Context) Report {
	start := time.Now()
	var wg sync.WaitGroup
	byName := map[string]func(context.Context){"garbage": f.garbage, "wants": f.wantFlood, "gossip": f.gossip, "tasks": f.submitTasks, "claims": f.claim}
	names := f.cfg.Attacks
	if len(names) == 0 {
		names = Attacks
	}
	attacks := []func(context.Context){f.reconnect}
	for _, name := range names {
		if name == "streams" {
			attacks = append(attacks, f.holdStreams)
			continue
		}
		for range f.cfg.Workers {
			attacks = append(attacks, byName[name])
		}
	}
	for _, a := range attacks {
		wg.Go(func() { a(ctx) })
	}
	<-ctx.Done()
	// Held streams end with the context; reset them all so the victim's
	// handlers see the end at once.
	for _, c := range f.h.Network().ConnsToPeer(f.cfg.Victim.ID) {
		for _, s := range c.GetStreams() {
			_ = s.Reset()
		}
	}
	wg.Wait()
	c := &f.rep
	return Report{
		Duration:      time.Since(start),
		StreamsOpened: c.streamsOpened.Load(), StreamsRefused: c.streamsRefused.Load(), StreamsReset: c.streamsReset.Load(),
		GarbageRequests: c.garbage.Load(), GarbageAnswered: c.garbageAnswered.Load(),
		WantLists: c.wantLists.Load(), Wants: c.wants.Load(),
		GossipRPCs: c.gossipRPCs.Load(), GossipMessages: c.gossipMessages.Load(), GossipStreamResets: c.gossipResets.Load(),
		TaskSubmits: c.submits.Load(), TasksAccepted: c.accepted.Load(), TasksRefused: c.refused.Load(),
		Claims: c.claims.Load(), ClaimsRefused: c.claimsRefused.Load(),
		Disconnects: c.disconnects.Load(),
	}
}

// reconnect dials the victim again whenever it hangs up.
func (f *Flooder) reconnect(ctx context.Context) {
	for ctx.Err() == nil {
		if f.h.Network().Connectedness(f.cfg.Victim.ID) != network.Connected {
			_ = f.connect(ctx)
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// open opens a stream to the victim; a failure waits a moment (the
// connection may be gone) and reports false.
func (f *Flooder) open(ctx context.Context, protos ...libp2pproto.ID) (network.Stream, bool) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := f.h.NewStream(network.WithAllowLimitedConn(sctx, "flood"), f.cfg.Victim.ID, protos...)
	if err != nil {
		sleep(ctx, 20*time.Millisecond)
		return nil, false
	}
	return s, true
}

// holdStreams keeps HeldStreams streams open, each having announced a
// 1 GiB message and sent nothing more.
func (f *Flooder) holdStreams(ctx context.Context) {
	slots := make(chan struct{}, f.cfg.HeldStreams)
	var wg sync.WaitGroup
	defer wg.Wait()
	prefix := binary.AppendUvarint(nil, 1<<30)
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		p := wireProtocols[i%len(wireProtocols)]
		s, ok := f.open(ctx, libp2pproto.ID(p))
		if !ok {
			f.rep.streamsRefused.Add(1)
			<-slots
			continue
		}
		if _, err := s.Write(prefix); err != nil {
			f.rep.streamsRefused.Add(1)
			_ = s.Reset()
			<-slots
			continue
		}
		f.rep.streamsOpened.Add(1)
		wg.Go(func() {
			defer func() { <-slots }()
			// A read ends when the victim resets the stream (or when Run
			// resets it at the end).
			_, err := s.Read(make([]byte, 1))
			if ctx.Err() == nil && err != nil {
				f.rep.streamsReset.Add(1)
			}
			_ = s.Reset()
		})
	}
}

// garbage sends malformed requests on every protocol and reads what comes
// back.
func (f *Flooder) garbage(ctx context.Context) {
	buf := make([]byte, 64<<10)
	for i := 0; ctx.Err() == nil; i++ {
		p := wireProtocols[mathrand.IntN(len(wireProtocols))]
		s, ok := f.open(ctx, libp2pproto.ID(p))
		if !ok {
			continue
		}
		var payload []byte
		switch i % 4 {
		case 0: // random bytes
			payload = buf[:mathrand.IntN(len(buf))]
			_, _ = rand.Read(payload)
		case 1: // a huge length prefix, then a little
			payload = append(binary.AppendUvarint(nil, 1<<40), 1, 2, 3)
		case 2: // a plausible length and a truncated body
			payload = append(binary.AppendUvarint(nil, 200), make([]byte, 100)...)
		default: // a varint that never ends
			payload = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		}
		f.rep.garbage.Add(1)
		_ = s.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := s.Write(payload); err == nil {
			_ = s.CloseWrite()
			if n, _ := io.ReadFull(s, buf[:1]); n > 0 {
				f.rep.garbageAnswered.Add(1)
			}
		}
		_ = s.Reset()
	}
}

// randomCID is the CID of 32 random bytes: a block nobody has.
func randomCID() cid.Cid {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	h, _ := mh.Sum(b, mh.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}

// wantFlood sends bitswap want lists of 5,000 blocks nobody has, as fast
// as the stream takes them.
func (f *Flooder) wantFlood(ctx context.Context) {
	for ctx.Err() == nil {
		s, ok := f.open(ctx, "/ipfs/bitswap/1.2.0")
		if !ok {
			continue
		}
		for ctx.Err() == nil {
			m := bsmsg.New(true)
			for range 5000 {
				m.AddEntry(randomCID(), 1, bspb.Message_Wantlist_Have, true)
			}
			_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := m.ToNetV1(s); err != nil {
				break
			}
			f.rep.wantLists.Add(1)
			f.rep.wants.Add(5000)
		}
		_ = s.Reset()
	}
}

// gossip writes raw pubsub RPCs: each carries messages with bad signatures,
// messages signed right over content the validators refuse, valid
// heartbeats, and subscriptions to topics the mesh does not use.
func (f *Flooder) gossip(ctx context.Context) {
	for ctx.Err() == nil {
		s, ok := f.open(ctx, gossipProtocols...)
		if !ok {
			continue
		}
		w := bufio.NewWriterSize(s, 64<<10)
		for i := 0; ctx.Err() == nil; i++ {
			rpc := &pubsubpb.RPC{Subscriptions: []*pubsubpb.RPC_SubOpts{{Subscribe: proto.Bool(true), Topicid: proto.String(protocol.HeartbeatTopic)}}}
			for j := range 8 {
				rpc.Subscriptions = append(rpc.Subscriptions, &pubsubpb.RPC_SubOpts{Subscribe: proto.Bool(true), Topicid: proto.String("/spam/" + strconv.Itoa(i) + "/" + strconv.Itoa(j))})
			}
			rpc.Publish = append(rpc.Publish,
				f.message(protocol.HeartbeatTopic, []byte("not a heartbeat"), false),
				f.message(protocol.HeartbeatTopic, []byte("not a heartbeat either"), true),
				f.message(protocol.HeartbeatTopic, f.heartbeat(), true),
				f.message(protocol.LogTopicPrefix+"t-"+strconv.Itoa(i%64), []byte("claimed output"), true),
			)
			b, err := proto.Marshal(rpc)
			if err != nil {
				return
			}
			_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err = w.Write(binary.AppendUvarint(nil, uint64(len(b))))
			if err == nil {
				_, err = w.Write(b)
			}
			if err == nil && i%16 == 15 {
				err = w.Flush()
			}
			if err != nil {
				f.rep.gossipResets.Add(1)
				break
			}
			f.rep.gossipRPCs.Add(1)
			f.rep.gossipMessages.Add(int64(len(rpc.Publish)))
		}
		_ = s.Reset()
	}
}

// message is a pubsub message from the flooder, signed right or not.
func (f *Flooder) message(topic string, data []byte, signed bool) *pubsubpb.Message {
	seq := make([]byte, 8)
	binary.BigEndian.PutUint64(seq, f.seq.Add(1))
	m := &pubsubpb.Message{From: []byte(f.h.ID()), Data: data, Seqno: seq, Topic: proto.String(topic)}
	if !signed {
		m.Signature = make([]byte, 64)
		_, _ = rand.Read(m.Signature)
		return m
	}
	b, _ := proto.Marshal(m)
	m.Signature, _ = f.key.Sign(append([]byte("libp2p-pubsub:"), b...))
	return m
}

// heartbeat is a valid heartbeat of the flooder's, announcing nothing it
// could be given work for.
func (f *Flooder) heartbeat() []byte {
	b, _ := protocol.EncodeHeartbeat(protocol.Heartbeat{
		PeerID: []byte(f.h.ID()), Seq: f.seq.Add(1), SentAt: time.Now(), StartedAt: time.Now(), Version: "flood",
	})
	return b
}

// taskRequest sends one request on the task protocol and reads its reply.
func (f *Flooder) taskRequest(ctx context.Context, req *meshv1.TaskRequest) (*meshv1.TaskReply, error) {
	s, ok := f.open(ctx, libp2pproto.ID(protocol.TaskProtocol))
	if !ok {
		return nil, errors.New("no stream")
	}
	defer s.Reset()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := protocol.WriteDelimited(s, req, protocol.MaxTaskMessage); err != nil {
		return nil, err
	}
	_ = s.CloseWrite()
	var reply meshv1.TaskReply
	if err := protocol.ReadDelimited(bufio.NewReader(s), &reply, protocol.MaxTaskMessage); err != nil {
		return nil, err
	}
	return &reply, nil
}

// submitTasks submits tasks as fast as the victim answers.
func (f *Flooder) submitTasks(ctx context.Context) {
	for ctx.Err() == nil {
		id := "flood-" + randomSuffix()
		f.rep.submits.Add(1)
		reply, err := f.taskRequest(ctx, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Submit{Submit: &meshv1.SubmitTask{
			TaskId: id, Spec: &meshv1.TaskSpec{Command: f.cfg.TaskCommand, TimeoutMs: 60_000},
		}}})
		switch {
		case err != nil:
		case reply.GetCode() == meshv1.ReplyCode_REPLY_CODE_OK:
			f.rep.accepted.Add(1)
		default:
			f.rep.refused.Add(1)
		}
	}
}

// claim delivers results for, and cancels, tasks the flooder neither runs
// nor coordinates.
func (f *Flooder) claim(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		id := "t-" + randomSuffix()
		req := &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Deliver{Deliver: &meshv1.DeliverResult{Result: &meshv1.TaskResult{TaskId: id}}}}
		if i%2 == 1 {
			req = &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Cancel{Cancel: &meshv1.CancelTask{TaskId: id}}}
		}
		f.rep.claims.Add(1)
		if reply, err := f.taskRequest(ctx, req); err == nil && reply.GetCode() != meshv1.ReplyCode_REPLY_CODE_OK {
			f.rep.claimsRefused.Add(1)
		}
	}
}

func randomSuffix() string {
	return strconv.FormatUint(mathrand.Uint64(), 36)
}
