package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// mdnsServiceName is what peers of a cortex mesh announce on the LAN. Peers
// of other meshes found this way fail the PSK handshake and are left alone.
const mdnsServiceName = "_cortex-peer._udp"

// dhtDiscoveryInterval is how often the DHT rendezvous is queried for peers.
const dhtDiscoveryInterval = time.Minute

// Host is one peer's libp2p host with its pubsub, discovery and DHT.
type Host struct {
	cfg  Config
	log  *slog.Logger
	host host.Host
	ps   *pubsub.PubSub
	dht  *dht.IpfsDHT
	mdns mdns.Service
	// gater also holds the peers blocked at run time.
	gater *gater
	bw    *traffic

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New builds and starts the host: it listens, joins gossipsub, starts
// discovery and keeps dialing the bootstrap addresses until Close.
func New(cfg Config, log *slog.Logger) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	listen, dropped := listenAddrs(cfg)
	if len(dropped) > 0 {
		log.Warn("QUIC cannot carry a mesh key in go-libp2p; not listening on these addresses", "skipped", dropped)
	}
	if len(listen) == 0 {
		return nil, fmt.Errorf("p2p: no usable listen address (QUIC is off with a mesh key; add a /tcp address): %w", errdefs.ErrInvalid)
	}

	if err := checkPortsFree(listen); err != nil {
		return nil, err
	}
	rm, err := rcmgr.NewResourceManager(resourceLimiter(cfg.Limits))
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cfg.Connection.Low, cfg.Connection.High, connmgr.WithGracePeriod(cfg.Connection.Grace))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("p2p: peerstore: %w", err)
	}
	bw := newTraffic()
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		libp2p.ListenAddrs(listen...),
		libp2p.NoTransports,
		// Without SO_REUSEPORT a second peer on a taken port fails clearly
		// instead of silently sharing the port with the first.
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.Peerstore(ps),
		libp2p.UserAgent("cortex-peer/" + cfg.userAgentVersion()),
		libp2p.DisableMetrics(),
		// Byte counts per peer and protocol (no Prometheus): what status and
		// the benchmarks report as traffic.
		libp2p.BandwidthReporter(bw),
		libp2p.DisableRelay(),
		libp2p.WithDialTimeout(cfg.DialTimeout),
	}
	if cfg.MeshKey != nil {
		opts = append(opts, libp2p.PrivateNetwork(cfg.MeshKey))
	} else {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	g := newGater(cfg.Allowlist, log)
	opts = append(opts, libp2p.ConnectionGater(g))
	h, err := libp2p.New(opts...)
	if err != nil {
		// libp2p closes what it was given on a failed construction only in
		// part; closing twice is safe for all three.
		rm.Close()
		cm.Close()
		ps.Close()
		return nil, fmt.Errorf("p2p: start host on %v: %w", listen, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	n := &Host{cfg: cfg, log: log, host: h, gater: g, bw: bw, cancel: cancel}
	// The gater refuses a blocked peer's connections, but one that passed it
	// just before Block and is added to the swarm just after Block closed the
	// peer's connections would survive. Closing it here, once it is
	// registered, makes a blocked peer not connected for certain, which the
	// peer book relies on to expire it.
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if g.isBlocked(c.RemotePeer()) {
			_ = c.Close()
		}
	}})
	if err := n.start(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Host) start(ctx context.Context) error {
	bootstrap := make([]peer.AddrInfo, 0, len(n.cfg.Bootstrap))
	for _, s := range n.cfg.Bootstrap {
		ai, _ := peer.AddrInfoFromString(s) // checked by Validate
		if ai.ID == n.host.ID() {
			continue
		}
		bootstrap = append(bootstrap, *ai)
	}

	var disc *drouting.RoutingDiscovery
	if n.cfg.DHT {
		d, err := dht.New(n.host,
			dht.Mode(dht.ModeServer),
			dht.ProtocolPrefix(libp2pproto.ID(protocol.DHTPrefix)),
			dht.BootstrapPeers(bootstrap...),
		)
		if err != nil {
			return fmt.Errorf("p2p: start DHT: %w", err)
		}
		n.dht = d
		disc = drouting.NewRoutingDiscovery(d)
	}

	queue := n.cfg.PubsubQueueSize
	if queue <= 0 {
		queue = 128
	}
	psOpts := []pubsub.Option{
		pubsub.WithMaxMessageSize(protocol.MaxPubsubMessage),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithPeerExchange(true),
		// A peer's own messages go to every connected subscriber, not only
		// its mesh peers: a mesh that lost a member (a dead bootstrap peer)
		// would otherwise stay silent until the next graft.
		pubsub.WithFloodPublish(true),
		// A task's output is a burst of large messages: with the default
		// queues of 32 a peer busy for a moment drops them, and each hole
		// costs a read of the executor's log. 128 bounds a congested
		// peer's queue near 40 MiB.
		pubsub.WithPeerOutboundQueueSize(queue),
		pubsub.WithValidateQueueSize(queue),
	}
	guard := newGossipGuard(n.log)
	psOpts = append(psOpts, guard.pubsubOptions()...)
	ps, err := pubsub.NewGossipSub(ctx, n.host, psOpts...)
	if err != nil {
		return fmt.Errorf("p2p: start gossipsub: %w", err)
	}
	n.ps = ps

	if n.cfg.MDNS {
		n.mdns = mdns.NewMdnsService(n.host, mdnsServiceName, &mdnsNotifee{n: n, ctx: ctx})
		if err := n.mdns.Start(); err != nil {
			return fmt.Errorf("p2p: start mDNS: %w", err)
		}
	}
	for _, ai := range bootstrap {
		n.wg.Go(func() { n.keepConnected(ctx, ai) })
	}
	if disc != nil {
		n.wg.Go(func() { n.discoverDHT(ctx, disc) })
	}
	return nil
}

// listenAddrs returns the configured listen addresses the transports can
// serve, and the QUIC ones dropped because a mesh key is set.
func listenAddrs(cfg Config) (use []ma.Multiaddr, dropped []string) {
	for _, s := range cfg.ListenAddrs {
		a, _ := ma.NewMultiaddr(s) // checked by Validate
		if hasProtocol(a, ma.P_QUIC_V1) && cfg.MeshKey != nil {
			dropped = append(dropped, s)
			continue
		}
		use = append(use, a)
	}
	return use, dropped
}

// checkPortsFree tries the fixed TCP ports before libp2p does, because
// libp2p reports a taken port only as text. The window between this check
// and libp2p's listen is harmless: libp2p then fails with its own message.
func checkPortsFree(listen []ma.Multiaddr) error {
	for _, a := range listen {
		if !hasProtocol(a, ma.P_TCP) {
			continue
		}
		if port, err := a.ValueForProtocol(ma.P_TCP); err != nil || port == "0" {
			continue
		}
		na, err := manet.ToNetAddr(a)
		if err != nil {
			continue
		}
		ln, err := net.Listen(na.Network(), na.String())
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("p2p: listen on %s: port taken (another peer on this machine? give this one other ports with --listen or in config.toml): %w", a, errdefs.ErrUnavailable)
		}
		if err == nil {
			ln.Close()
		}
	}
	return nil
}

func hasProtocol(a ma.Multiaddr, code int) bool {
	for _, p := range a.Protocols() {
		if p.Code == code {
			return true
		}
	}
	return false
}

// streamsPerPeer bounds the streams one peer may have open at once on each
// stream protocol of the mesh: far above what an honest peer opens (a
// fetch opens two leaves streams a provider; a coordinator a task stream a
// call), far below what would cost the peer its memory.
var streamsPerPeer = map[string]rcmgr.LimitVal{
	protocol.TaskProtocol:    64,
	protocol.LogsProtocol:    64,
	protocol.BlocksProtocol:  32,
	protocol.LeavesProtocol:  32,
	protocol.BrowserProtocol: 64,
	protocol.LSPProtocol:     64,
}

func resourceLimiter(l Limits) rcmgr.Limiter {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	defaults := scaling.Scale(l.MaxMemoryBytes, l.MaxFileDescs)
	partial := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns:           rcmgr.LimitVal(l.MaxConnections),
			ConnsInbound:    rcmgr.LimitVal(l.MaxConnections),
			ConnsOutbound:   rcmgr.LimitVal(l.MaxConnections),
			Streams:         rcmgr.LimitVal(l.MaxStreams),
			StreamsInbound:  rcmgr.LimitVal(l.MaxStreams),
			StreamsOutbound: rcmgr.LimitVal(l.MaxStreams),
			FD:              rcmgr.LimitVal(l.MaxFileDescs),
			Memory:          rcmgr.LimitVal64(l.MaxMemoryBytes),
		},
		ProtocolPeer: map[libp2pproto.ID]rcmgr.ResourceLimits{},
	}
	// Each peer may hold only so many streams open on each of the mesh's
	// protocols at once: a member that floods one with streams (it holds
	// the mesh key) has the excess reset, and the others' streams are
	// not in its scope.
	for p, n := range streamsPerPeer {
		partial.ProtocolPeer[libp2pproto.ID(p)] = rcmgr.ResourceLimits{Streams: n, StreamsInbound: n, StreamsOutbound: n}
	}
	return rcmgr.NewFixedLimiter(partial.Build(defaults))
}

// keepConnected dials a bootstrap peer and redials it with exponential
// backoff whenever it is not connected. A failure is logged once per address
// until the peer is reached again, so a peer with another mesh key is not
// spun on in the logs.
func (n *Host) keepConnected(ctx context.Context, ai peer.AddrInfo) {
	backoff := n.cfg.BootstrapBackoffMin
	failing := false
	for {
		if n.host.Network().Connectedness(ai.ID) != network.Connected {
			dctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
			err := n.host.Connect(dctx, ai)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				if !failing {
					n.log.Warn("cannot reach bootstrap peer; retrying with backoff (a different mesh key also looks like this)",
						"peer", ai.ID, "addrs", ai.Addrs, "err", err)
					failing = true
				} else {
					n.log.Debug("bootstrap peer still unreachable", "peer", ai.ID, "err", err, "retry_in", backoff)
				}
				if !sleepCtx(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, n.cfg.BootstrapBackoffMax)
				continue
			default:
				if failing {
					n.log.Info("bootstrap peer reached", "peer", ai.ID)
				}
				failing = false
				backoff = n.cfg.BootstrapBackoffMin
				n.host.ConnManager().Protect(ai.ID, "bootstrap")
			}
		}
		if !sleepCtx(ctx, n.cfg.BootstrapBackoffMin) {
			return
		}
	}
}

// discoverDHT advertises this peer under the mesh rendezvous and connects to
// the peers found there, for meshes that span more than one LAN.
func (n *Host) discoverDHT(ctx context.Context, disc *drouting.RoutingDiscovery) {
	for {
		if _, err := disc.Advertise(ctx, protocol.Rendezvous); err != nil && ctx.Err() == nil {
			n.log.Debug("DHT advertise", "err", err)
		}
		found, err := disc.FindPeers(ctx, protocol.Rendezvous)
		if err == nil {
			for ai := range found {
				if ai.ID == n.host.ID() || len(ai.Addrs) == 0 || n.host.Network().Connectedness(ai.ID) == network.Connected {
					continue
				}
				n.Connect(ctx, ai)
			}
		} else if ctx.Err() == nil {
			n.log.Debug("DHT find peers", "err", err)
		}
		if !sleepCtx(ctx, dhtDiscoveryInterval) {
			return
		}
	}
}

// Connect dials a peer found by discovery; failures are logged at debug
// level only, as discovery routinely finds stale addresses.
func (n *Host) Connect(ctx context.Context, ai peer.AddrInfo) bool {
	if ai.ID == n.host.ID() {
		return false
	}
	dctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
	defer cancel()
	if err := n.host.Connect(dctx, ai); err != nil {
		n.log.Debug("connect to discovered peer", "peer", ai.ID, "err", err)
		return false
	}
	return true
}

type mdnsNotifee struct {
	n   *Host
	ctx context.Context
}

func (m *mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.host.ID() || m.ctx.Err() != nil {
		return
	}
	m.n.wg.Go(func() {
		if m.n.Connect(m.ctx, ai) {
			m.n.log.Info("found peer on the local network", "peer", ai.ID)
		}
	})
}

// ID is the peer's id.
func (n *Host) ID() peer.ID { return n.host.ID() }

// Libp2p exposes the underlying host for subsystems that speak their own
// protocols on it (bitswap, task streams).
func (n *Host) Libp2p() host.Host { return n.host }

// PrivateNetwork reports whether a mesh key guards the host.
func (n *Host) PrivateNetwork() bool { return n.cfg.MeshKey != nil }

// AllowlistSize is the number of peers on the allowlist (0: none set).
func (n *Host) AllowlistSize() int { return len(n.cfg.Allowlist) }

// ListenAddrs are the addresses the host actually listens on (port 0 resolved).
func (n *Host) ListenAddrs() []ma.Multiaddr { return n.host.Addrs() }

// DialableAddrs are the listen addresses others can dial: unspecified
// addresses are expanded to the interfaces' addresses.
func (n *Host) DialableAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range n.host.Addrs() {
		if manet.IsIPUnspecified(a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// FullAddrs are the dialable addresses with /p2p/ID appended, usable as
// bootstrap addresses by other peers.
func (n *Host) FullAddrs() []string {
	self := ma.StringCast("/p2p/" + n.host.ID().String())
	var out []string
	for _, a := range n.DialableAddrs() {
		out = append(out, a.Encapsulate(self).String())
	}
	return out
}

// Connected lists the peers with a live connection.
func (n *Host) Connected() []peer.ID { return n.host.Network().Peers() }

// IsConnected reports whether a live connection to p exists.
func (n *Host) IsConnected(p peer.ID) bool {
	return n.host.Network().Connectedness(p) == network.Connected
}

// Traffic is the bytes of stream payload received from and sent to p since
// the host started (framing of the transport, security and muxer aside).
func (n *Host) Traffic(p peer.ID) (in, out int64) {
	st := n.bw.GetBandwidthForPeer(p)
	return st.TotalIn, st.TotalOut
}

// TrafficTotals is the bytes of stream payload received and sent, all
// peers together, since the host started.
func (n *Host) TrafficTotals() (in, out int64) {
	st := n.bw.GetBandwidthTotals()
	return st.TotalIn, st.TotalOut
}

// Block cuts this peer off from p: its connections are closed (one being
// set up while Block runs is closed as soon as it is registered) and no new
// one is dialled or accepted until Unblock, so p stays not connected and
// the peer book expires it as a dead peer. Streams in flight fail as a
// broken link would, which is how tests partition two peers.
func (n *Host) Block(p peer.ID) {
	if n.gater.block(p) {
		n.log.Info("blocked peer", "peer", p)
	}
	_ = n.host.Network().ClosePeer(p)
}

// Unblock lets p connect again; discovery and bootstrap redial it.
func (n *Host) Unblock(p peer.ID) {
	n.gater.unblock(p)
	n.log.Info("unblocked peer", "peer", p)
}

// Close stops discovery, pubsub, the DHT and the host, and waits for every
// goroutine it started. Safe to call more than once.
func (n *Host) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		var errs []error
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		n.wg.Wait()
		if n.dht != nil {
			errs = append(errs, n.dht.Close())
		}
		errs = append(errs, n.host.Close())
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("p2p: close: %w", err)
		}
	})
	return n.closeErr
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
