package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/dag/fswatch"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/node/store"
	"github.com/cortex-peer/cortex-peer/node/tasklog"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
)

// Node is one running peer.
type Node struct {
	cfg     Config
	log     *slog.Logger
	started time.Time

	lock     *datadir.Lock
	store    *store.Store
	dags     *dag.Store
	watch    *fswatch.Watcher // of imported workspaces; nil without inotify
	exchange *exchange
	host     *p2p.Host
	book     *p2p.Book
	hb       *p2p.Heartbeater
	prober   *prober
	api      *apiServer
	mcp      *mcpHTTP // nil unless configured
	sup      *supervisor
	tasks    *taskRunner
	deleg    *delegation
	taskLogs *tasklog.Store
	images   *imageStore

	// gcMu excludes GC from imports, fetches, merges and tasks, which add
	// blocks that no pin reaches yet.
	gcMu sync.RWMutex

	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

// New builds every subsystem of the peer, in order, and starts it. On any
// failure what was built is closed again.
func New(cfg Config, log *slog.Logger) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, started: time.Now(), prober: newProber(), done: make(chan struct{})}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	// One peer per data dir.
	if n.lock, err = cfg.Dir.Lock(); err != nil {
		return nil, err
	}
	if n.store, err = store.Open(cfg.Store, log.With("component", "store")); err != nil {
		return nil, err
	}
	n.dags = dag.NewStore(n.store.DB())
	// Workspaces the user imports are watched, so that importing one again
	// with nothing changed costs no stat (see dag.ImportOptions.Watch). A
	// peer without inotify scans every time.
	if n.watch, err = dag.NewWatcher(); err != nil {
		log.Info("workspaces are not watched; every import scans its tree", "err", err)
		n.watch, err = nil, nil
	}
	known := n.loadKnownPeers()
	if n.host, err = p2p.New(cfg.P2P, log.With("component", "p2p")); err != nil {
		return nil, err
	}
	n.exchange = newExchange(n)
	n.host.Libp2p().SetStreamHandler(libp2pproto.ID(protocol.BlocksProtocol), n.serveBlocks)
	n.taskLogs = tasklog.New(n.store.DB())
	n.tasks = newTaskRunner(n, cfg.Tasks, cfg.Dir.Path("tasks"), cfg.Dir.Path("layers"), log.With("component", "tasks"))
	n.deleg = newDelegation(n, log.With("component", "delegation"))
	n.images = &imageStore{socket: cfg.Tasks.ContainerdSocket, namespace: cfg.Tasks.Namespace, log: log.With("component", "images")}
	n.book = p2p.NewBook(cfg.P2P.Heartbeat.Expiry, n.host.IsConnected)
	if n.hb, err = p2p.NewHeartbeater(n.host, n.book, n.announcement, log.With("component", "heartbeat")); err != nil {
		return nil, err
	}
	if n.api, err = newAPIServer(n, cfg.APISocket, cfg.APITokenFile); err != nil {
		return nil, err
	}

	if cfg.MCPListen != "" {
		if n.mcp, err = newMCPHTTP(n); err != nil {
			return nil, err
		}
	}

	n.deleg.start()

	n.sup = newSupervisor(log.With("component", "supervisor"))
	n.sup.Go("heartbeat", n.hb.Serve)
	n.sup.Go("api", n.api.Serve)
	if n.mcp != nil {
		n.sup.Go("mcp", n.mcp.Serve)
		log.Info("MCP endpoint listening", "url", n.mcp.URL())
	}
	n.sup.Go("known-peers", func(ctx context.Context) error { return n.saveKnownPeersLoop(ctx, known) })
	log.Info("peer started", "id", n.host.ID(), "addrs", n.host.FullAddrs(), "api", cfg.APISocket, "version", cfg.Version)
	return n, nil
}

// ID is the peer's id.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Addrs are the full multiaddrs other peers can bootstrap from.
func (n *Node) Addrs() []string { return n.host.FullAddrs() }

// Peers lists the live peers of the mesh as the peer book sees them.
func (n *Node) Peers() []p2p.PeerEntry { return n.book.List(time.Now(), false) }

// Logger is the peer's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// Done is closed when the node has been closed.
func (n *Node) Done() <-chan struct{} { return n.done }

// announcement is what the heartbeat tells the mesh about this peer.
func (n *Node) announcement() p2p.Announcement {
	a := p2p.Announcement{
		Version:      n.cfg.Version,
		Labels:       maps.Clone(n.cfg.Labels),
		Capabilities: n.prober.Capabilities(),
		Capacity:     capacity(n.runningTasks()),
	}
	if a.Capabilities.Containerd { // without it, asking would only wait
		a.Images = n.images.heldNames(context.Background())
	}
	return a
}

// Host is the peer's libp2p host, for tests that speak the wire directly.
func (n *Node) Host() *p2p.Host { return n.host }

// RunningTasks is the number of tasks running on this peer.
func (n *Node) RunningTasks() int { return n.runningTasks() }

// runningTasks is the number of tasks running here.
func (n *Node) runningTasks() int {
	if n.tasks == nil {
		return 0
	}
	return n.tasks.Running()
}

// Close stops the peer: services first, then the host, the store and the
// lock, in the reverse order of New. Safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.sup != nil {
			n.sup.Stop()
		}
		if n.api != nil {
			errs = append(errs, n.api.Close())
		}
		if n.mcp != nil {
			errs = append(errs, n.mcp.Close())
		}
		if n.hb != nil {
			errs = append(errs, n.hb.Close())
		}
		if n.deleg != nil {
			n.deleg.close()
		}
		if n.tasks != nil {
			errs = append(errs, n.tasks.Close())
		}
		if n.images != nil {
			errs = append(errs, n.images.Close())
		}
		if n.exchange != nil {
			errs = append(errs, n.exchange.Close())
		}
		if n.host != nil {
			errs = append(errs, n.host.Close())
		}
		if n.watch != nil {
			errs = append(errs, n.watch.Close())
		}
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
		if n.lock != nil {
			errs = append(errs, n.lock.Unlock())
		}
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("close peer: %w", err)
		}
		close(n.done)
		if n.host != nil {
			n.log.Info("peer stopped", "id", n.host.ID())
		}
	})
	return n.closeErr
}

// Known peers are kept in the store under this prefix, keyed by peer id,
// with their full multiaddrs, one a line, as value.
var knownPeersPrefix = []byte("p2p/known/")

// maxKnownPeersDialed bounds the peers redialed at start; the mesh's
// heartbeats introduce the rest.
const maxKnownPeersDialed = 64

var errEnough = errors.New("enough known peers")

func (n *Node) loadKnownPeers() []peer.AddrInfo {
	var out []peer.AddrInfo
	err := n.store.Scan(knownPeersPrefix, func(_, v []byte) error {
		var addrs []ma.Multiaddr
		for _, line := range strings.Split(string(v), "\n") {
			if a, err := ma.NewMultiaddr(line); err == nil {
				addrs = append(addrs, a)
			}
		}
		if infos, err := peer.AddrInfosFromP2pAddrs(addrs...); err == nil {
			out = append(out, infos...)
		}
		if len(out) >= maxKnownPeersDialed {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		n.log.Warn("read known peers", "err", err)
	}
	return out
}

// saveKnownPeersLoop redials the peers known from the last run, then records
// the live peers of the book whenever one appears or changes address, so a
// restarted peer (even one killed seconds after it met the mesh) finds its
// mesh again when its bootstrap peers are gone or have moved.
func (n *Node) saveKnownPeersLoop(ctx context.Context, known []peer.AddrInfo) error {
	if len(known) > 0 {
		n.log.Info("redialling the peers known from the last run", "peers", len(known))
	}
	for _, ai := range known {
		if ctx.Err() != nil {
			return nil
		}
		n.host.Connect(ctx, ai)
	}
	saved := map[peer.ID]string{}
	t := time.NewTicker(n.cfg.KnownPeersInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, e := range n.book.List(time.Now(), false) {
			if len(e.Addrs) == 0 {
				continue
			}
			full := make([]string, len(e.Addrs))
			for i, a := range e.Addrs {
				full[i] = a.String() + "/p2p/" + e.ID.String()
			}
			value := strings.Join(full, "\n")
			if saved[e.ID] == value {
				continue
			}
			key := append(append([]byte{}, knownPeersPrefix...), e.ID...)
			if err := n.store.Put(key, []byte(value)); err != nil {
				return fmt.Errorf("save known peer %s: %w", e.ID, err)
			}
			saved[e.ID] = value
		}
	}
}
