// Package lsp is the peer's language-server capability: one warm server
// per workspace (bridges/lsp), shared by every client of the peer, which
// sees the workspace as the peer holds it. Each call imports the caller's
// directory (incrementally: usually nothing changed) and, when its root
// moved, brings the server's view of it to the new root by the DAG's diff,
// telling the server exactly which files changed; no mtime walks. Edits
// (rename, format) are proposals: a new root, merged three-way into the
// directory only when asked. Verify loads a result root into the warm
// server of its base and reports the diagnostics it adds and fixes.
//
// It must not import node.
package lsp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"

	bridge "github.com/cortex-peer/cortex-peer/bridges/lsp"
	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Config configures the capability.
type Config struct {
	// ViewsDir holds the servers' views of the workspaces. The servers run
	// as the bridge's uid, so it must be reachable by it (under the
	// system's temp dir, as the browser's files are).
	ViewsDir string
	// TempDir holds the trees of proposals on their way into the store.
	TempDir string
	// CallTimeout bounds a call that waits for a warming server.
	CallTimeout time.Duration
	// AcceptRemote lets other peers ask this peer's servers; AcceptFrom,
	// when set, names the only peers that may.
	AcceptRemote bool
	AcceptFrom   []peer.ID
	Bridge       bridge.Config
}

// DefaultConfig is the capability's configuration with its files under
// viewsDir (reachable by the servers' uid) and tempDir (the peer's own).
func DefaultConfig(viewsDir, tempDir, cacheDir string) Config {
	return Config{ViewsDir: viewsDir, TempDir: tempDir, CallTimeout: 30 * time.Second, AcceptRemote: true, Bridge: bridge.DefaultConfig(cacheDir)}
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	if !filepath.IsAbs(c.ViewsDir) || !filepath.IsAbs(c.TempDir) || c.CallTimeout <= 0 {
		return fmt.Errorf("lsp: views dir and temp dir must be absolute, the call timeout positive: %w", errdefs.ErrInvalid)
	}
	return c.Bridge.Validate()
}

// Importer imports a directory into the block store, incrementally, and
// returns its root (workspace.Service).
type Importer interface {
	Import(ctx context.Context, dir string) (cid.Cid, error)
}

// Blocks fetches a DAG from the mesh (exchange.Exchange): the roots a
// verify names may come from another peer.
type Blocks interface {
	Fetch(ctx context.Context, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error)
}

// Host is what the capability uses of the peer's libp2p host.
type Host interface {
	ID() peer.ID
	Libp2p() host.Host
}

// Mesh lists the live peers, to place a call by labels.
type Mesh interface {
	Peers() []p2p.PeerEntry
}

// Deps are what the capability uses of the peer.
type Deps struct {
	Host     Host
	Mesh     Mesh
	DAGs     *dag.Store
	Blocks   Blocks
	Importer Importer
	// GC is held for reading while a proposal is added.
	GC *sync.RWMutex
}

// Service answers code questions for the peer's clients.
type Service struct {
	cfg     Config
	log     *slog.Logger
	dags    *dag.Store
	imports Importer
	blocks  Blocks
	gc      *sync.RWMutex
	servers *bridge.Manager
	self    peer.ID
	host    host.Host
	mesh    Mesh

	mu    sync.Mutex
	views map[string]*view // by workspace directory
}

// view is a server's copy of one workspace, at one root.
type view struct {
	mu        sync.Mutex // held for a whole call: the tree holds still under it
	workspace string
	dir       string
	root      cid.Cid // cid.Undef: not exported yet
	// symbols are the positions of the symbols resolved at root: a root
	// names the tree's content, so a name found once stays where it is
	// until the view moves (a workspace/symbol search costs gopls more
	// than the query it serves).
	symbols map[string]bridge.Position
	lastUse time.Time // the end of the last call
	dropped bool      // removed as idle: ask viewOf for the workspace again
}

// maxSymbols bounds a view's resolved symbols; past it they are forgotten.
const maxSymbols = 4096

// New builds the capability; servers start on first use.
func New(cfg Config, deps Deps, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.ViewsDir, cfg.TempDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("lsp: %w", err)
		}
	}
	// Views of a previous run are stale: their servers are gone, and so
	// are the pins that kept their roots.
	entries, _ := os.ReadDir(cfg.ViewsDir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(cfg.ViewsDir, e.Name()))
	}
	if pins, err := deps.DAGs.Pins(); err == nil {
		for name := range pins {
			if strings.HasPrefix(name, viewPinPrefix) {
				_ = deps.DAGs.Unpin(name)
			}
		}
	}
	bc := cfg.Bridge
	bc.Logger = log
	m, err := bridge.New(bc)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, dags: deps.DAGs, imports: deps.Importer, blocks: deps.Blocks, gc: deps.GC, servers: m,
		self: deps.Host.ID(), host: deps.Host.Libp2p(), mesh: deps.Mesh, views: map[string]*view{}}
	s.host.SetStreamHandler(libp2pproto.ID(protocol.LSPProtocol), s.serveStream)
	return s, nil
}

// Serve shuts idle servers down and drops idle views until ctx ends.
func (s *Service) Serve(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(min(s.cfg.Bridge.IdleTimeout/4, viewSweepEvery))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				s.dropIdleViews(now.Add(-s.cfg.Bridge.IdleTimeout))
			}
		}
	}()
	err := s.servers.Serve(ctx)
	<-done
	return err
}

// viewSweepEvery is how often, at most, views are checked for idleness.
const viewSweepEvery = time.Minute

// dropIdleViews removes the views no call used since before: their copy of
// the tree and the pin of their root (another peer's workspace would stay
// on this peer's disk otherwise until it restarts). A view in use is kept;
// one asked for again is exported anew.
func (s *Service) dropIdleViews(before time.Time) {
	s.mu.Lock()
	var idle []*view
	for _, v := range s.views {
		if v.mu.TryLock() {
			if v.lastUse.Before(before) {
				delete(s.views, v.workspace)
				idle = append(idle, v)
			} else {
				v.mu.Unlock()
			}
		}
	}
	s.mu.Unlock()
	for _, v := range idle { // still locked: a call that holds a stale *view waits, then finds it dropped
		s.servers.Forget(v.dir)
		_ = os.RemoveAll(filepath.Dir(v.dir))
		if v.root.Defined() {
			_ = s.dags.Unpin(viewPin(v))
		}
		v.root, v.symbols, v.dropped = cid.Undef, nil, true
		s.log.Info("language server view dropped: idle", "workspace", v.workspace, "idle_for", time.Since(v.lastUse).Round(time.Second))
		v.mu.Unlock()
	}
}

// Close stops every server. Safe to call twice.
func (s *Service) Close() error {
	s.host.RemoveStreamHandler(libp2pproto.ID(protocol.LSPProtocol))
	return s.servers.Close()
}

// Processes are the pids of the servers, for tests that check none
// outlives the peer.
func (s *Service) Processes() []int { return s.servers.Processes() }

// viewPin keeps the root a view is at: the next call diffs from it, even
// after the workspace moved on and a GC ran.
func viewPin(v *view) string { return viewPinPrefix + filepath.Base(filepath.Dir(v.dir)) }

// viewPinPrefix starts the pins of views' roots.
const viewPinPrefix = "lsp:view:"

// viewOf returns the view of a workspace directory.
func (s *Service) viewOf(workspace string) *view {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.views[workspace]
	if !ok {
		sum := sha256.Sum256([]byte(workspace))
		v = &view{workspace: workspace, dir: filepath.Join(s.cfg.ViewsDir, hex.EncodeToString(sum[:8]), filepath.Base(workspace)), root: cid.Undef}
		s.views[workspace] = v
	}
	return v
}

// session is one call on a workspace's server, with its view held still.
type session struct {
	s      *Service
	v      *view
	server *bridge.Server
}

// target is the workspace a call is about: a directory of this peer
// (imported first), or a workspace of another peer at a root it sent
// (fetched first), named by that peer and its directory.
type target struct {
	key  string
	root cid.Cid
}

// open imports (or fetches) the workspace, brings its view to the root and
// returns its server, holding the view until done.
func (s *Service) open(ctx context.Context, t target) (*session, error) {
	root := t.root
	if !root.Defined() {
		if t.key == "" || !filepath.IsAbs(t.key) {
			return nil, fmt.Errorf("workspace %q: want an absolute directory: %w", t.key, errdefs.ErrInvalid)
		}
		var err error
		if root, err = s.imports.Import(ctx, t.key); err != nil {
			return nil, fmt.Errorf("import %s: %w", t.key, err)
		}
	} else if _, err := s.blocks.Fetch(ctx, root, verifyStall, nil); err != nil {
		return nil, fmt.Errorf("workspace %s: fetch %s: %w", t.key, root, err)
	}
	v := s.viewOf(t.key)
	v.mu.Lock()
	for v.dropped { // dropped as idle while this call waited for it
		v.mu.Unlock()
		v = s.viewOf(t.key)
		v.mu.Lock()
	}
	ses := &session{s: s, v: v}
	if err := ses.moveTo(ctx, root); err != nil {
		v.mu.Unlock()
		return nil, err
	}
	return ses, nil
}

// done releases the view and the server.
func (ses *session) done() {
	if ses.server != nil {
		ses.server.Release()
	}
	ses.v.lastUse = time.Now()
	ses.v.mu.Unlock()
}

// moveTo brings the view to root, exporting it whole the first time and
// writing only the diff after, and tells the server what changed.
func (ses *session) moveTo(ctx context.Context, root cid.Cid) error {
	s, v := ses.s, ses.v
	if v.root.Defined() && v.root.Equals(root) {
		return ses.ensureServer(ctx)
	}
	// GC stays away until the new root is pinned as the view's.
	s.gc.RLock()
	defer s.gc.RUnlock()
	if !v.root.Defined() {
		if err := os.RemoveAll(v.dir); err != nil {
			return fmt.Errorf("view of %s: %w", v.workspace, err)
		}
		if err := os.MkdirAll(filepath.Dir(v.dir), 0o711); err != nil {
			return fmt.Errorf("view of %s: %w", v.workspace, err)
		}
		if _, err := s.dags.Export(ctx, root, v.dir, dag.ExportOptions{}); err != nil {
			return fmt.Errorf("view of %s at %s: %w", v.workspace, root, err)
		}
		if err := s.hand(v.dir); err != nil {
			return err
		}
		if err := s.pin(v, root); err != nil {
			return err
		}
		return ses.ensureServer(ctx)
	}
	changes, err := s.dags.Diff(ctx, v.root, root)
	if err != nil {
		return fmt.Errorf("view of %s: diff %s -> %s: %w", v.workspace, v.root, root, err)
	}
	var told []bridge.Change
	for _, c := range changes {
		dest := filepath.Join(v.dir, filepath.FromSlash(c.Path))
		if !strings.HasPrefix(dest, v.dir+string(filepath.Separator)) {
			return fmt.Errorf("view of %s: change of %q leaves the tree: %w", v.workspace, c.Path, errdefs.ErrInvalid)
		}
		switch c.Kind {
		case dag.Removed:
			if err := os.RemoveAll(dest); err != nil {
				return fmt.Errorf("view of %s: %w", v.workspace, err)
			}
			told = append(told, bridge.Change{File: c.Path, Kind: bridge.Deleted})
		default:
			kind := bridge.Changed
			if c.Kind == dag.Added {
				kind = bridge.Created
			}
			if err := s.replace(ctx, c.After, dest); err != nil {
				return fmt.Errorf("view of %s: %s: %w", v.workspace, c.Path, err)
			}
			if c.IsDir {
				files, err := filesUnder(v.dir, dest)
				if err != nil {
					return err
				}
				for _, f := range files {
					told = append(told, bridge.Change{File: f, Kind: bridge.Created})
				}
				continue
			}
			told = append(told, bridge.Change{File: c.Path, Kind: kind})
		}
	}
	if err := s.pin(v, root); err != nil {
		return err
	}
	if err := ses.ensureServer(ctx); err != nil {
		return err
	}
	if len(told) > 0 {
		return ses.server.Changed(ctx, told)
	}
	return nil
}

// pin records that the view is at root, and keeps root in the store.
func (s *Service) pin(v *view, root cid.Cid) error {
	if err := s.dags.Pin(viewPin(v), root); err != nil {
		return fmt.Errorf("view of %s: %w", v.workspace, err)
	}
	if !v.root.Equals(root) {
		v.symbols = nil
	}
	v.root = root
	return nil
}

// replace writes the node c of the store at dest, whatever was there.
func (s *Service) replace(ctx context.Context, c cid.Cid, dest string) error {
	tmp := filepath.Join(filepath.Dir(dest), ".cortex-view-"+filepath.Base(dest))
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	if _, err := s.dags.Export(ctx, c, tmp, dag.ExportOptions{}); err != nil {
		return err
	}
	if err := s.hand(tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	return os.Rename(tmp, dest)
}

// hand gives a tree of the view to the servers' uid: they read it, and
// the view is the only place they may write.
func (s *Service) hand(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid := int(s.cfg.Bridge.UID), int(s.cfg.Bridge.GID)
	return filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// filesUnder lists the regular files under dir, relative to root.
func filesUnder(root, dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	return out, err
}

// ensureServer starts (or finds) the view's server.
func (ses *session) ensureServer(ctx context.Context) error {
	if ses.server != nil {
		return nil
	}
	srv, err := ses.s.servers.Server(ctx, ses.v.dir)
	if err != nil {
		return err
	}
	ses.server = srv
	return nil
}

// workspaceOf names the workspace a server's root is the view of.
func (s *Service) workspaceOf(dir string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ws, v := range s.views {
		if v.dir == dir {
			return ws
		}
	}
	return ""
}
