package p2p

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/cortex-peer/cortex-peer/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The go-log/zap and opencensus-style workers below are started by
		// libp2p's dependencies once per process and never stopped.
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/transport/tcpreuse.(*ConnMgr).close"),
	)
}

// logBuffer collects log records for assertions; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

type testPeer struct {
	host *Host
	book *Book
	hb   *Heartbeater
	logs *logBuffer
	// stopHeartbeat stops the heartbeat service only: the host stays up and
	// connected, but publishes no more heartbeats.
	stopHeartbeat func()
	stop          func()
}

func testConfig(t testing.TB, meshKey []byte) Config {
	t.Helper()
	sk, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	psk, err := DecodeMeshKey(meshKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Identity = sk
	cfg.MeshKey = psk
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.MDNS = false
	cfg.DHT = false
	cfg.Heartbeat = HeartbeatConfig{Interval: 100 * time.Millisecond, Expiry: 600 * time.Millisecond}
	cfg.BootstrapBackoffMin = 50 * time.Millisecond
	cfg.BootstrapBackoffMax = 400 * time.Millisecond
	cfg.DialTimeout = 2 * time.Second
	return cfg
}

func startPeer(t testing.TB, cfg Config) *testPeer {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	book := NewBook(cfg.Heartbeat.Expiry, h.IsConnected)
	hb, err := NewHeartbeater(h, book, func() Announcement {
		return Announcement{Version: "test", Labels: map[string]string{"name": "x"}, Capacity: protocol.Capacity{CPUs: 2}}
	}, log)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hb.Serve(ctx); err != nil {
			t.Errorf("heartbeat: %v", err)
		}
	}()
	var once sync.Once
	p := &testPeer{host: h, book: book, hb: hb, logs: logs}
	p.stopHeartbeat = func() {
		cancel()
		<-done
	}
	p.stop = func() {
		once.Do(func() {
			p.stopHeartbeat()
			hb.Close()
			if err := h.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			if err := h.Close(); err != nil {
				t.Errorf("second close: %v", err)
			}
		})
	}
	t.Cleanup(p.stop)
	return p
}

// testWriter sends logs to t.Log only when -v is on, to keep failures readable.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// patience bounds a wait for something that takes moments on an idle
// machine: generous, because a starved machine (make test under load, the
// race detector) is slower by far, and a wait ends as soon as its
// condition holds.
const patience = time.Minute

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sees(p *testPeer, ids ...peer.ID) bool {
	got := map[peer.ID]bool{}
	for _, e := range p.book.List(time.Now(), false) {
		got[e.ID] = true
	}
	for _, id := range ids {
		if !got[id] {
			return false
		}
	}
	return true
}

func mustMeshKey(t testing.TB) []byte {
	k, err := GenerateMeshKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPeersSeeEachOtherAndExpire(t *testing.T) {
	key := mustMeshKey(t)
	a := startPeer(t, testConfig(t, key))
	cfgB := testConfig(t, key)
	cfgB.Bootstrap = a.host.FullAddrs()
	b := startPeer(t, cfgB)
	cfgC := testConfig(t, key)
	cfgC.Bootstrap = a.host.FullAddrs()
	c := startPeer(t, cfgC)

	waitFor(t, "all peers to see each other", patience, func() bool {
		return sees(a, b.host.ID(), c.host.ID()) && sees(b, a.host.ID(), c.host.ID()) && sees(c, a.host.ID(), b.host.ID())
	})
	e, _ := b.book.Get(c.host.ID(), time.Now())
	if e.Heartbeat.Version != "test" || e.Heartbeat.Labels["name"] != "x" || e.Heartbeat.Capacity.CPUs != 2 || len(e.Addrs) == 0 {
		t.Fatalf("book entry lacks what was announced: %+v", e)
	}
	// b and c learn each other's addresses from heartbeats and connect
	// directly, so the mesh survives the loss of its bootstrap peer.
	waitFor(t, "b and c to connect directly", patience, func() bool { return b.host.IsConnected(c.host.ID()) })

	a.stop()
	waitFor(t, "the stopped peer to expire", patience, func() bool {
		return !sees(b, a.host.ID()) && !sees(c, a.host.ID())
	})
	if !sees(b, c.host.ID()) || !sees(c, b.host.ID()) {
		now := time.Now()
		for _, p := range []*testPeer{b, c} {
			for _, e := range p.book.List(now, true) {
				t.Logf("%s sees %s seq %d age %s", p.host.ID(), e.ID, e.Heartbeat.Seq, now.Sub(e.LastSeen))
			}
			t.Logf("%s topic peers %v connected %v", p.host.ID(), p.hb.topic.Peers(), p.host.Connected())
		}
		t.Fatal("b and c lost each other when a stopped")
	}
}

func TestQUICUsedWithoutMeshKey(t *testing.T) {
	cfgA := testConfig(t, mustMeshKey(t))
	cfgB := testConfig(t, mustMeshKey(t))
	idA, _ := peer.IDFromPrivateKey(cfgA.Identity)
	idB, _ := peer.IDFromPrivateKey(cfgB.Identity)
	cfgA.MeshKey, cfgB.MeshKey = nil, nil
	cfgA.Allowlist = []peer.ID{idA, idB}
	cfgB.Allowlist = []peer.ID{idA, idB}
	cfgA.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	cfgB.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	a := startPeer(t, cfgA)
	cfgB.Bootstrap = a.host.FullAddrs()
	if !strings.Contains(cfgB.Bootstrap[0], "quic-v1") {
		t.Fatalf("expected a QUIC address, got %v", cfgB.Bootstrap)
	}
	b := startPeer(t, cfgB)
	waitFor(t, "peers to meet over QUIC", patience, func() bool { return sees(a, b.host.ID()) && sees(b, a.host.ID()) })
}

func TestMeshKeyDropsQUIC(t *testing.T) {
	a := startPeer(t, testConfig(t, mustMeshKey(t)))
	for _, addr := range a.host.FullAddrs() {
		if strings.Contains(addr, "quic") {
			t.Fatalf("QUIC address %s with a mesh key", addr)
		}
	}
}

func TestOtherMeshKeyRefusedAndLoggedOnce(t *testing.T) {
	a := startPeer(t, testConfig(t, mustMeshKey(t)))
	cfgB := testConfig(t, mustMeshKey(t))
	cfgB.Bootstrap = a.host.FullAddrs()
	b := startPeer(t, cfgB)

	// Let b retry many times (backoff 50ms..400ms).
	waitFor(t, "several dial attempts", patience, func() bool {
		return b.logs.count("bootstrap peer still unreachable") >= 3
	})
	if n := b.logs.count("cannot reach bootstrap peer"); n != 1 {
		t.Fatalf("refusal logged %d times at warn level, want once", n)
	}
	if a.host.IsConnected(b.host.ID()) || sees(a, b.host.ID()) || sees(b, a.host.ID()) {
		t.Fatal("peers with different mesh keys connected")
	}
}

func TestAllowlistRefusesOthers(t *testing.T) {
	key := mustMeshKey(t)
	cfgA := testConfig(t, key)
	cfgB := testConfig(t, key)
	cfgC := testConfig(t, key)
	idA, _ := peer.IDFromPrivateKey(cfgA.Identity)
	idB, _ := peer.IDFromPrivateKey(cfgB.Identity)
	cfgA.Allowlist = []peer.ID{idA, idB}
	a := startPeer(t, cfgA)
	cfgB.Bootstrap = a.host.FullAddrs()
	cfgC.Bootstrap = a.host.FullAddrs()
	b := startPeer(t, cfgB)
	c := startPeer(t, cfgC)

	waitFor(t, "allowed peer to be seen", patience, func() bool { return sees(a, b.host.ID()) })
	waitFor(t, "refusal to be logged", patience, func() bool { return a.logs.count("refused peer not on the allowlist") >= 1 })
	if a.host.IsConnected(c.host.ID()) || sees(a, c.host.ID()) {
		t.Fatal("peer not on the allowlist got in")
	}
	if n := a.logs.count("refused peer not on the allowlist"); n != 1 {
		t.Fatalf("refusal logged %d times, want once", n)
	}
}

func TestHostileGossipRejected(t *testing.T) {
	key := mustMeshKey(t)
	a := startPeer(t, testConfig(t, key))
	cfgB := testConfig(t, key)
	cfgB.Bootstrap = a.host.FullAddrs()
	b := startPeer(t, cfgB)
	waitFor(t, "peers to meet", patience, func() bool { return sees(a, b.host.ID()) })

	// b publishes, bypassing its own checks, heartbeats that lie about the
	// author, garbage, and an oversized message.
	liar := protocol.Heartbeat{PeerID: []byte(a.host.ID()), Seq: 1 << 40, StartedAt: time.Now().Add(time.Hour), Version: "liar"}
	lie, err := protocol.EncodeHeartbeat(liar)
	if err != nil {
		t.Fatal(err)
	}
	fake, _ := GenerateIdentity()
	fakeID, _ := peer.IDFromPrivateKey(fake)
	impostor, _ := protocol.EncodeHeartbeat(protocol.Heartbeat{PeerID: []byte(fakeID), Version: "impostor"})
	for _, msg := range [][]byte{lie, impostor, []byte("garbage"), make([]byte, protocol.MaxHeartbeatSize+10)} {
		if err := b.hb.topic.topic.Publish(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "rejections to be logged", patience, func() bool { return a.logs.count("rejected") >= 1 })
	if sees(a, fakeID) {
		t.Fatal("impostor heartbeat accepted")
	}
	if e, _ := a.book.Get(a.host.ID(), time.Now()); e.Heartbeat.Version == "liar" {
		t.Fatal("lying heartbeat accepted")
	}
	// a still works: b's honest heartbeats keep arriving.
	before, _ := a.book.Get(b.host.ID(), time.Now())
	waitFor(t, "heartbeats to keep flowing", patience, func() bool {
		e, _ := a.book.Get(b.host.ID(), time.Now())
		return e.Heartbeat.Seq > before.Heartbeat.Seq
	})
}

func TestConfigValidate(t *testing.T) {
	good := testConfig(t, mustMeshKey(t))
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no identity", func(c *Config) { c.Identity = nil }},
		{"open mesh", func(c *Config) { c.MeshKey = nil }},
		{"bad listen", func(c *Config) { c.ListenAddrs = []string{"tcp:1234"} }},
		{"bootstrap without id", func(c *Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/1"} }},
		{"zero limits", func(c *Config) { c.Limits.MaxStreams = 0 }},
		{"expiry below interval", func(c *Config) { c.Heartbeat.Expiry = c.Heartbeat.Interval / 2 }},
		{"low above high", func(c *Config) { c.Connection.Low = c.Connection.High + 1 }},
	}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		c := good
		tc.edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestFirstSightIsBounded(t *testing.T) {
	var f firstSight
	ids := make([]peer.ID, maxRefusalsLogged+1)
	for i := range ids {
		sk, _ := GenerateIdentity()
		ids[i], _ = peer.IDFromPrivateKey(sk)
	}
	for _, id := range ids[:maxRefusalsLogged] {
		if !f.first(id) || f.first(id) {
			t.Fatal("a peer must be first exactly once")
		}
	}
	// Once full, nothing new is reported: a flood of peers cannot flood the log.
	if f.first(ids[maxRefusalsLogged]) {
		t.Fatal("a full set reported a new peer")
	}
}
