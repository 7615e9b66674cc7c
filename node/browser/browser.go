package browser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/cortex-peer/cortex-peer/bridges/cdp"
	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Config configures the browser capability.
type Config struct {
	// Warm starts Chromium when the peer starts rather than on first use.
	Warm bool
	// AcceptRemote lets other peers open and drive sessions here;
	// AcceptFrom, when set, names the only peers that may.
	AcceptRemote bool
	AcceptFrom   []peer.ID
	// Origins limits what sessions hosted here may load.
	Origins OriginPolicy
	// PersistentProfiles gives a session opened with a name a profile of
	// that name that outlives it (the bridge's ProfilesDir).
	PersistentProfiles bool
	// InlineBytes is the largest screenshot returned inline as well as by
	// CID.
	InlineBytes int
	// CallTimeout bounds one call routed to another peer.
	CallTimeout time.Duration
	// TempDir holds files on their way into or out of the block store.
	TempDir string
	// Bridge is the Chromium bridge's configuration.
	Bridge cdp.Config
}

// DefaultConfig is the capability's configuration with Chromium's files
// under bridgeDir and the peer's own under dataDir.
func DefaultConfig(bridgeDir, tempDir string) Config {
	return Config{
		AcceptRemote: true, InlineBytes: 256 << 10, CallTimeout: 2 * time.Minute,
		TempDir: tempDir, Bridge: cdp.DefaultConfig(bridgeDir),
	}
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.InlineBytes < 0 || c.CallTimeout <= 0 || c.TempDir == "" {
		errs = append(errs, fmt.Errorf("browser: inline bytes, call timeout and temp dir must be set: %w", errdefs.ErrInvalid))
	}
	for _, p := range slices.Concat(c.Origins.Allowed, c.Origins.Blocked) {
		if err := ValidatePattern(p); err != nil {
			errs = append(errs, fmt.Errorf("browser: %w", err))
		}
	}
	return errors.Join(append(errs, c.Bridge.Validate())...)
}

// Host is what the capability uses of the peer's libp2p host.
type Host interface {
	ID() peer.ID
	Libp2p() host.Host
}

// Blocks fetches a DAG from the mesh (exchange.Exchange).
type Blocks interface {
	Fetch(ctx context.Context, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error)
}

// Mesh lists the live peers, to place a session by labels.
type Mesh interface {
	Peers() []p2p.PeerEntry
}

// Deps are what the capability uses of the peer.
type Deps struct {
	Host   Host
	Blocks Blocks
	DAGs   *dag.Store
	// GC is held for reading while an artifact is added and pinned.
	GC   *sync.RWMutex
	Mesh Mesh
}

// Service hosts this peer's sessions and routes calls for the others.
type Service struct {
	cfg    Config
	log    *slog.Logger
	self   peer.ID
	host   host.Host
	blocks Blocks
	dags   *dag.Store
	gc     *sync.RWMutex
	mesh   Mesh
	bridge *cdp.Browser

	mu     sync.Mutex
	closed bool
	hosted map[string]*sessionInfo // by the bridge's session id
	remote map[string]peer.ID      // sessions this peer opened elsewhere, by session id
}

// sessionInfo is what the capability keeps of a session it hosts.
type sessionInfo struct {
	name, owner, state string
	profile            string
	opened             time.Time
	used               time.Time
	url, title         string
	downloads          map[string]string // guid -> CID of a finished download
}

// New builds the capability; Chromium starts on first use (or at Serve
// with Warm). Leftovers of a previous run are killed.
func New(cfg Config, deps Deps, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.TempDir, 0o700); err != nil {
		return nil, fmt.Errorf("browser: %w", err)
	}
	s := &Service{
		cfg: cfg, log: log, self: deps.Host.ID(), host: deps.Host.Libp2p(), blocks: deps.Blocks,
		dags: deps.DAGs, gc: deps.GC, mesh: deps.Mesh,
		hosted: map[string]*sessionInfo{}, remote: map[string]peer.ID{},
	}
	bc := cfg.Bridge
	bc.Logger = log
	bc.OnExpire = s.saveOnExpiry
	if !cfg.Origins.Empty() {
		// What a page loads by itself (links, redirects, images, fetches)
		// is held to the policy too, not only the URLs a caller asks for.
		bc.AllowRequest = cfg.Origins.CheckRequest
	}
	var err error
	if s.bridge, err = cdp.New(bc); err != nil {
		return nil, err
	}
	s.host.SetStreamHandler(libp2pproto.ID(protocol.BrowserProtocol), s.serveStream)
	return s, nil
}

// Serve closes sessions whose lease ran out, until ctx ends; with Warm it
// starts Chromium first.
func (s *Service) Serve(ctx context.Context) error {
	if s.cfg.Warm {
		if err := s.bridge.Ready(ctx); err != nil {
			s.log.Warn("browser: Chromium did not start; sessions will try again", "err", err)
		}
	}
	return s.bridge.Serve(ctx)
}

// Close closes every session hosted here and stops Chromium. Safe to call
// twice.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.host.RemoveStreamHandler(libp2pproto.ID(protocol.BrowserProtocol))
	return s.bridge.Close()
}

// MemoryBytes is the resident memory of this peer's Chromium.
func (s *Service) MemoryBytes() int64 { return s.bridge.MemoryBytes() }

// Processes are the pids of this peer's Chromium, for tests that check
// nothing is left.
func (s *Service) Processes() []int { return s.bridge.Processes() }

// sessionID names a hosted session to the mesh: the bridge's id at this
// peer.
func (s *Service) sessionID(local string) string { return local + "@" + s.self.String() }

// parseSession splits a session id into the bridge's id and its peer.
func parseSession(id string) (string, peer.ID, error) {
	local, at, ok := strings.Cut(id, "@")
	if !ok || local == "" || len(local) > 64 {
		return "", "", fmt.Errorf("browser session %q: want ID@PEER as `browser open` printed it: %w", id, errdefs.ErrInvalid)
	}
	p, err := peer.Decode(at)
	if err != nil {
		return "", "", fmt.Errorf("browser session %q: its peer: %v: %w", id, err, errdefs.ErrInvalid)
	}
	return local, p, nil
}

// session returns a hosted session and what is kept of it, renewing its
// use.
func (s *Service) session(local string) (*cdp.Session, *sessionInfo, error) {
	sess, err := s.bridge.Session(local)
	if err != nil {
		return nil, nil, fmt.Errorf("browser session %s: not open on peer %s (closed, or its lease ran out): %w", s.sessionID(local), s.self, errdefs.ErrNotFound)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info := s.hosted[local]
	if info == nil {
		info = &sessionInfo{opened: time.Now(), downloads: map[string]string{}}
		s.hosted[local] = info
	}
	info.used = time.Now()
	return sess, info, nil
}

// forget drops what is kept of a hosted session.
func (s *Service) forget(local string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.hosted, local)
}

// place picks the peer to open a session on: the one named (an id or a
// unique suffix of one), one with the labels and Chromium, or this one.
func (s *Service) place(name string, labels map[string]string) (peer.ID, error) {
	if name == "" && len(labels) == 0 {
		return s.self, nil
	}
	if name != "" {
		if id, err := peer.Decode(name); err == nil {
			return id, nil
		}
		var found []peer.ID
		for _, e := range s.mesh.Peers() {
			if strings.HasSuffix(e.ID.String(), name) || strings.HasPrefix(e.ID.String(), name) {
				found = append(found, e.ID)
			}
		}
		if strings.HasSuffix(s.self.String(), name) || strings.HasPrefix(s.self.String(), name) {
			found = append(found, s.self)
		}
		switch len(found) {
		case 0:
			return "", fmt.Errorf("browser: no live peer %q (see `cortex-peer peers`): %w", name, errdefs.ErrNotFound)
		case 1:
			return found[0], nil
		}
		return "", fmt.Errorf("browser: %q names %d peers; give more of its id: %w", name, len(found), errdefs.ErrInvalid)
	}
	var cands []peer.ID
	for _, e := range s.mesh.Peers() {
		if e.Heartbeat.Capabilities.Chromium && hasLabels(e.Heartbeat.Labels, labels) {
			cands = append(cands, e.ID)
		}
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("browser: no live peer with Chromium has the labels %v: %w", labels, errdefs.ErrUnavailable)
	}
	// The fewest sessions this peer opened there first: spread, do not pile.
	s.mu.Lock()
	count := map[peer.ID]int{}
	for _, p := range s.remote {
		count[p]++
	}
	s.mu.Unlock()
	slices.SortStableFunc(cands, func(a, b peer.ID) int { return count[a] - count[b] })
	return cands[0], nil
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// mayServe refuses a peer this peer's policy does not host sessions for.
func (s *Service) mayServe(from peer.ID) error {
	if !s.cfg.AcceptRemote {
		return fmt.Errorf("peer %s does not host browser sessions for other peers (browser.accept_remote = false): %w", s.self, errdefs.ErrPermissionDenied)
	}
	if len(s.cfg.AcceptFrom) > 0 && !slices.Contains(s.cfg.AcceptFrom, from) {
		return fmt.Errorf("peer %s is not in browser.accept_from of peer %s: %w", from, s.self, errdefs.ErrPermissionDenied)
	}
	return nil
}

// remembered returns the sessions this peer opened on other peers.
func (s *Service) remembered() map[string]peer.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.remote)
}
