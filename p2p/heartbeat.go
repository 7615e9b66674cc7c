package p2p

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// minKickInterval bounds the extra heartbeats sent when peers join the
// topic, so a burst of joins costs one heartbeat, not one each.
const minKickInterval = 50 * time.Millisecond

// maxAnnouncedAddrs keeps heartbeats small on hosts with many interfaces.
const maxAnnouncedAddrs = 16

// Announcement is what the node tells the mesh about itself; the heartbeat
// service adds identity, addresses, protocols and sequence numbers.
type Announcement struct {
	Version      string
	Labels       map[string]string
	Capabilities protocol.Capabilities
	Capacity     protocol.Capacity
	// Images the peer holds; beyond protocol.MaxImages the rest is left out.
	Images []string
	// Draining: the peer takes no new tasks.
	Draining bool
}

// Heartbeater publishes this peer's capability heartbeat every interval,
// and right away when a peer joins the topic, and fills the peer book from
// the heartbeats of others.
type Heartbeater struct {
	host     *Host
	book     *Book
	topic    *Topic
	announce func() Announcement
	cfg      HeartbeatConfig
	log      *slog.Logger
	started  time.Time
	seq      atomic.Uint64
	kick     chan struct{}

	dialMu  sync.Mutex
	dialing map[peer.ID]struct{}
}

// NewHeartbeater joins the heartbeat topic. announce is called before each
// heartbeat and must be cheap. Call Serve to run it and Close to leave.
func NewHeartbeater(h *Host, book *Book, announce func() Announcement, log *slog.Logger) (*Heartbeater, error) {
	hb := &Heartbeater{
		host:     h,
		book:     book,
		announce: announce,
		cfg:      h.cfg.Heartbeat,
		log:      log,
		started:  time.Now(),
		kick:     make(chan struct{}, 1),
		dialing:  map[peer.ID]struct{}{},
	}
	t, err := h.Join(protocol.HeartbeatTopic, protocol.MaxHeartbeatSize, validateHeartbeat)
	if err != nil {
		return nil, err
	}
	hb.topic = t
	return hb, nil
}

// validateHeartbeat refuses a heartbeat that does not decode or that claims
// another peer's id than its signed author.
func validateHeartbeat(from peer.ID, data []byte) error {
	h, err := protocol.DecodeHeartbeat(data)
	if err != nil {
		return err
	}
	if peer.ID(h.PeerID) != from {
		return fmt.Errorf("heartbeat claims peer %s but was signed by %s: %w", peer.ID(h.PeerID), from, errdefs.ErrInvalid)
	}
	return nil
}

// Serve runs until ctx ends: it publishes, receives and dials. It returns nil
// on cancellation and an error when a part of it fails.
func (hb *Heartbeater) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() { errc <- hb.topic.Subscribe(ctx, func(m Message) { hb.receive(ctx, &wg, m) }) })
	wg.Go(func() {
		errc <- hb.topic.OnPeerJoin(ctx, func(peer.ID) { hb.kickSoon() })
	})
	err := hb.publishLoop(ctx, errc)
	cancel()
	wg.Wait()
	return err
}

func (hb *Heartbeater) publishLoop(ctx context.Context, errc <-chan error) error {
	ticker := time.NewTicker(hb.cfg.Interval)
	defer ticker.Stop()
	var last time.Time
	publish := func() {
		last = time.Now()
		if err := hb.publish(ctx); err != nil && ctx.Err() == nil {
			hb.log.Warn("publish heartbeat", "err", err)
		}
	}
	publish()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("heartbeat: a loop ended early: %w", errdefs.ErrUnavailable)
			}
			return err
		case <-ticker.C:
			publish()
		case <-hb.kick:
			if wait := minKickInterval - time.Since(last); wait > 0 && !sleepCtx(ctx, wait) {
				return nil
			}
			publish()
		}
	}
}

func (hb *Heartbeater) publish(ctx context.Context) error {
	a := hb.announce()
	h := protocol.Heartbeat{
		PeerID:       []byte(hb.host.ID()),
		Seq:          hb.seq.Add(1),
		SentAt:       time.Now(),
		StartedAt:    hb.started,
		Version:      a.Version,
		Protocols:    protocol.Protocols(),
		Labels:       a.Labels,
		Capabilities: a.Capabilities,
		Capacity:     a.Capacity,
		Images:       a.Images[:min(len(a.Images), protocol.MaxImages)],
		Draining:     a.Draining,
	}
	for _, addr := range hb.host.DialableAddrs() {
		if len(h.Addrs) == maxAnnouncedAddrs {
			break
		}
		h.Addrs = append(h.Addrs, addr.Bytes())
	}
	b, err := protocol.EncodeHeartbeat(h)
	if err != nil {
		return err
	}
	if err := hb.topic.Publish(ctx, b); err != nil {
		return err
	}
	hb.log.Debug("published heartbeat", "seq", h.Seq)
	return nil
}

func (hb *Heartbeater) receive(ctx context.Context, wg *sync.WaitGroup, m Message) {
	if m.From == hb.host.ID() {
		return
	}
	h, err := protocol.DecodeHeartbeat(m.Data) // validated already; cannot fail
	if err != nil {
		return
	}
	now := time.Now()
	if hb.book.Observe(m.From, h, now) {
		hb.log.Info("peer joined the mesh", "peer", m.From, "version", h.Version)
		// Announce ourselves at once to the newcomer: it may have joined
		// through a relay whose gossip mesh does not include us yet, and
		// would otherwise wait a whole interval to hear of us.
		hb.kickSoon()
	}
	e, ok := hb.book.Get(m.From, now)
	if !ok || len(e.Addrs) == 0 {
		return
	}
	// Remember where the peer can be dialed, so streams to it (tasks, blocks)
	// work even without a direct connection today.
	hb.host.host.Peerstore().AddAddrs(m.From, e.Addrs, hb.cfg.Expiry)
	if hb.host.IsConnected(m.From) || len(hb.host.Connected()) >= hb.host.cfg.Connection.Low {
		return
	}
	// Connect directly, so the mesh does not hang on the peer that relayed
	// this heartbeat (a bootstrap peer that may die).
	hb.dialMu.Lock()
	_, busy := hb.dialing[m.From]
	if !busy {
		hb.dialing[m.From] = struct{}{}
	}
	hb.dialMu.Unlock()
	if busy {
		return
	}
	wg.Go(func() {
		hb.host.Connect(ctx, peer.AddrInfo{ID: m.From, Addrs: e.Addrs})
		hb.dialMu.Lock()
		delete(hb.dialing, m.From)
		hb.dialMu.Unlock()
	})
}

// kickSoon asks the publish loop for an extra heartbeat.
// Announce publishes a heartbeat soon, out of turn: the peer's
// announcement changed in a way the mesh should learn at once (a drain).
func (hb *Heartbeater) Announce() { hb.kickSoon() }

func (hb *Heartbeater) kickSoon() {
	select {
	case hb.kick <- struct{}{}:
	default:
	}
}

// Close leaves the heartbeat topic; Serve must have returned. Safe to call
// more than once.
func (hb *Heartbeater) Close() error { return hb.topic.Close() }
