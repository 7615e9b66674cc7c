package testnet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/datadir"
)

// Defaults of in-process testnets: fast heartbeats so tests do not wait.
const (
	DefaultHeartbeat = 200 * time.Millisecond
	DefaultExpiry    = time.Second
)

// Peer is one in-process peer.
type Peer struct {
	Name string
	Dir  string
	Node *node.Node
	cfg  node.Config
	log  *slog.Logger
}

// Net is an in-process testnet.
type Net struct {
	Peers []*Peer
}

type settings struct {
	heartbeat, expiry time.Duration
	dht               bool
	logs              io.Writer
	level             slog.Level
	edit              func(i int, cfg *node.Config)
	allowlistOnly     bool
}

// Option changes how New builds the peers.
type Option func(*settings)

// WithHeartbeat sets the heartbeat interval and expiry.
func WithHeartbeat(interval, expiry time.Duration) Option {
	return func(s *settings) { s.heartbeat, s.expiry = interval, expiry }
}

// WithDHT turns the DHT on (off by default: loopback meshes do not need it).
func WithDHT() Option { return func(s *settings) { s.dht = true } }

// WithLogs sends every peer's logs to w, each tagged with the peer's name.
func WithLogs(w io.Writer, level slog.Level) Option {
	return func(s *settings) { s.logs, s.level = w, level }
}

// TestNamespace is the containerd namespace of every test peer: tests never
// touch the user's tasks or images.
const TestNamespace = "cortex-test"

// WithAllowlistOnly runs the mesh without a mesh key: each peer admits
// the others by their ids alone (policy.allowlist), over TCP.
func WithAllowlistOnly() Option { return func(s *settings) { s.allowlistOnly = true } }

// WithConfig edits peer i's config before it starts.
func WithConfig(edit func(i int, cfg *node.Config)) Option {
	return func(s *settings) { s.edit = edit }
}

// New starts n peers in this process, each in a data dir under t.TempDir(),
// sharing a fresh mesh key, bootstrapped to the first. They are closed when
// the test ends. It does not wait for the mesh to form: see WaitMesh.
func New(t testing.TB, n int, opts ...Option) *Net {
	t.Helper()
	s := settings{heartbeat: DefaultHeartbeat, expiry: DefaultExpiry, level: slog.LevelInfo}
	for _, o := range opts {
		o(&s)
	}
	if s.logs == nil {
		s.logs = testLogWriter{t}
	}
	root := t.TempDir()
	net := &Net{}
	t.Cleanup(func() { net.Close() })
	// Every data dir first (the first makes the mesh key the others
	// share), so that an allowlist can name every peer.
	dirs := make([]datadir.Dir, n)
	var ids []peer.ID
	for i := range n {
		var meshKey []byte
		if i > 0 {
			var err error
			meshKey, err = readMeshKey(dirs[0].Root)
			if err != nil {
				t.Fatal(err)
			}
		}
		d, err := datadir.Init(filepath.Join(root, "peer"+strconv.Itoa(i+1)), datadir.InitOptions{MeshKey: meshKey, Listen: []string{loopbackListen}, DisableMDNS: true, Labels: map[string]string{"testnet": "peer" + strconv.Itoa(i+1)}})
		if err != nil {
			t.Fatal(err)
		}
		dirs[i] = d
		sk, err := d.Identity()
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPrivateKey(sk)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for i, d := range dirs {
		name := "peer" + strconv.Itoa(i+1)
		fc, err := d.LoadConfig()
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			fc.P2P.Bootstrap = net.Peers[0].Node.Addrs()
		}
		cfg, err := node.ConfigFromFile(d, fc)
		if err != nil {
			t.Fatal(err)
		}
		if s.allowlistOnly {
			cfg.P2P.MeshKey, cfg.P2P.Allowlist = nil, ids
		}
		cfg.P2P.DHT = s.dht
		cfg.Tasks.Namespace = TestNamespace
		cfg.P2P.Heartbeat.Interval, cfg.P2P.Heartbeat.Expiry = s.heartbeat, s.expiry
		cfg.P2P.BootstrapBackoffMin = 50 * time.Millisecond
		cfg.P2P.BootstrapBackoffMax = time.Second
		if s.edit != nil {
			s.edit(i, &cfg)
		}
		log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: s.level})).With("peer", name)
		nd, err := node.New(cfg, log)
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		net.Peers = append(net.Peers, &Peer{Name: name, Dir: d.Root, Node: nd, cfg: cfg, log: log})
	}
	return net
}

func readMeshKey(dir string) ([]byte, error) {
	d, fc, err := datadir.Load(dir)
	if err != nil {
		return nil, err
	}
	return d.ReadMeshKey(fc)
}

// WaitMesh waits until every peer sees every other one.
func (n *Net) WaitMesh(ctx context.Context) error {
	for {
		if n.Formed() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testnet: mesh of %d did not form: %w", len(n.Peers), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Formed reports whether every peer sees every other one.
func (n *Net) Formed() bool {
	for _, p := range n.Peers {
		seen := map[string]bool{}
		for _, e := range p.Node.Peers() {
			seen[e.ID.String()] = true
		}
		for _, q := range n.Peers {
			if q != p && !seen[q.Node.ID().String()] {
				return false
			}
		}
	}
	return true
}

// Config is the config the peer was started with.
func (p *Peer) Config() node.Config { return p.cfg }

// Restart closes the peer and starts it again on the same data dir and the
// same listen addresses (when it was still running), as a peer with a
// configured port comes back.
func (p *Peer) Restart() error {
	var listen []string
	for _, a := range p.Node.Host().ListenAddrs() {
		listen = append(listen, a.String())
	}
	if err := p.Node.Close(); err != nil {
		return err
	}
	if len(listen) > 0 { // none when the peer was closed already
		p.cfg.P2P.ListenAddrs = listen
	}
	nd, err := node.New(p.cfg, p.log)
	if err != nil {
		return err
	}
	p.Node = nd
	return nil
}

// Partition cuts the link between a and b both ways, as a broken network
// would: their connections drop and neither can reach the other until
// Heal. Each can still reach the other peers, so gossip may flow around.
func (n *Net) Partition(a, b *Peer) {
	a.Node.Host().Block(b.Node.ID())
	b.Node.Host().Block(a.Node.ID())
}

// Heal restores the link that Partition cut and connects a to b again.
func (n *Net) Heal(ctx context.Context, a, b *Peer) error {
	a.Node.Host().Unblock(b.Node.ID())
	b.Node.Host().Unblock(a.Node.ID())
	ai := peer.AddrInfo{ID: b.Node.ID(), Addrs: b.Node.Host().ListenAddrs()}
	if err := a.Node.Host().Libp2p().Connect(ctx, ai); err != nil {
		return fmt.Errorf("testnet: heal %s-%s: %w", a.Name, b.Name, err)
	}
	return nil
}

// Close stops every peer; safe to call more than once.
func (n *Net) Close() {
	for _, p := range n.Peers {
		_ = p.Node.Close()
	}
}

// testLogWriter writes logs through t.Log when -v is on.
type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(b []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}
