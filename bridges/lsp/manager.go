package lsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cortex-peer/cortex-peer/bridges/procs"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// markerEnv marks the environment of every process of the bridge (the
// servers and what they start) with its cache dir, so that Processes and
// New find them, a previous run's too.
const markerEnv = "CORTEX_LSP_BRIDGE"

// Manager runs the peer's language servers, one per (workspace root,
// server).
type Manager struct {
	cfg Config
	log *slog.Logger
	// life ends with Close: starts and the calls of a start use it.
	life context.Context
	end  context.CancelFunc
	wg   sync.WaitGroup // starts and reapers

	mu      sync.Mutex
	closed  bool
	servers map[string]*Server // by root + "\x00" + server name

	prepMu    sync.Mutex // module cache preparation, one at a time
	reserveMu sync.Mutex // room for a start is made one start at a time
}

// Info describes a server for status.
type Info struct {
	Root, Language, Name string
	PID                  int
	State                string // starting, warming, ready, stopped
	Clients              int
	MemoryBytes          int64
	Started              time.Time
}

// New returns a bridge that starts servers when first asked. It kills what
// a previous run of the peer left running from cfg.CacheDir.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, log: log, servers: map[string]*Server{}}
	m.life, m.end = context.WithCancel(context.Background())
	if n := killLeftovers(cfg.CacheDir); n > 0 {
		log.Info("killed language server processes a previous run left", "count", n)
	}
	return m, nil
}

// Server returns the server of the workspace at root (a directory),
// whose language is found from the names at its top (go.mod: gopls). It is
// started on first use and shared by every caller; Release says a caller
// is done with it.
func (m *Manager) Server(ctx context.Context, root string) (*Server, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("lsp: workspace %q: want an absolute path: %w", root, errdefs.ErrInvalid)
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("lsp: workspace %s: %w: %w", root, err, errdefs.ErrNotFound)
	}
	if info, err := os.Stat(real); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("lsp: workspace %s is not a directory: %w", root, errdefs.ErrInvalid)
	}
	name, err := m.detect(real)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := procs.Reachable(real); err != nil {
			return nil, fmt.Errorf("lsp: the language server runs as uid %d and cannot read the workspace: %w: %w", m.cfg.UID, err, errdefs.ErrInvalid)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("lsp: the bridge is closed: %w", errdefs.ErrUnavailable)
	}
	key := serverKey(real, name)
	if s, ok := m.servers[key]; ok {
		s.mu.Lock()
		retired := s.retired
		if !retired {
			s.clients++
		}
		s.mu.Unlock()
		if !retired {
			return s, nil
		}
	}
	sc := m.cfg.Servers[name]
	lang := ""
	if len(sc.Languages) > 0 {
		lang = sc.Languages[0]
	}
	s := &Server{m: m, Root: real, Language: lang, Name: name, cfg: sc, open: map[string]int{}, lastUse: time.Now(), clients: 1}
	m.servers[key] = s
	return s, nil
}

func serverKey(root, name string) string { return root + "\x00" + name }

func (s *Server) key() string { return serverKey(s.Root, s.Name) }

// detect names the server whose patterns match a name at root's top.
func (m *Manager) detect(root string) (string, error) {
	var ents []os.DirEntry // listed once, when a pattern needs it
	listed := false
	for _, name := range slices.Sorted(maps.Keys(m.cfg.Servers)) {
		for _, pat := range m.cfg.Servers[name].Patterns {
			if !strings.ContainsAny(pat, `*?[\`) {
				// A plain name (go.mod): one stat, not a listing of a
				// large root on every call.
				if _, err := os.Lstat(filepath.Join(root, pat)); err == nil {
					return name, nil
				}
				continue
			}
			if !listed {
				var err error
				if ents, err = os.ReadDir(root); err != nil {
					return "", fmt.Errorf("lsp: workspace %s: %w: %w", root, err, errdefs.ErrInvalid)
				}
				listed = true
			}
			for _, e := range ents {
				if ok, _ := filepath.Match(pat, e.Name()); ok {
					return name, nil
				}
			}
		}
	}
	return "", fmt.Errorf("lsp: workspace %s is in no language this peer has a server for (none of %v match its files): %w", root, slices.Sorted(maps.Keys(m.cfg.Servers)), errdefs.ErrInvalid)
}

// reserve makes room for s to start within Config.MaxServers, shutting
// down the server used least recently that has no call in flight.
func (m *Manager) reserve(s *Server) error {
	m.reserveMu.Lock()
	defer m.reserveMu.Unlock()
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return fmt.Errorf("lsp: the bridge is closed: %w", errdefs.ErrUnavailable)
		}
		running := 0
		var victim *Server
		var victimUse time.Time
		for _, o := range m.servers {
			o.mu.Lock()
			if o != s && (o.proc != nil || o.reserved) {
				running++
				if o.proc != nil && o.inflight == 0 && (victim == nil || o.lastUse.Before(victimUse)) {
					victim, victimUse = o, o.lastUse
				}
			}
			o.mu.Unlock()
		}
		m.mu.Unlock()
		if running < m.cfg.MaxServers {
			s.mu.Lock()
			s.reserved = true // until its start ends
			s.mu.Unlock()
			return nil
		}
		if victim == nil {
			return fmt.Errorf("lsp: %d language servers run, the most this peer allows (lsp.max_servers), all busy: %w", running, errdefs.ErrResourceExhausted)
		}
		m.log.Info("language server shut down to make room for another", "root", victim.Root, "for", s.Root)
		victim.shutdown(errors.New("lsp: shut down to make room for another server"))
	}
}

// shutdown stops the server's process, if it runs; it starts again on the
// next call.
func (s *Server) shutdown(reason error) {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		p.stop(fmt.Errorf("%w: %w", reason, errdefs.ErrUnavailable))
	}
}

// Serve shuts down servers idle for Config.IdleTimeout and restarts those
// over Config.MaxMemoryBytes, until ctx ends.
func (m *Manager) Serve(ctx context.Context) error {
	t := time.NewTicker(min(m.cfg.IdleTimeout/4, 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.life.Done():
			return nil
		case now := <-t.C:
			m.sweep(now)
		}
	}
}

// sweep shuts down idle servers and those over the memory cap.
func (m *Manager) sweep(now time.Time) {
	m.mu.Lock()
	servers := slices.Collect(maps.Values(m.servers))
	m.mu.Unlock()
	for _, s := range servers {
		s.mu.Lock()
		p, idle := s.proc, s.inflight == 0 && now.Sub(s.lastUse) > m.cfg.IdleTimeout
		if p == nil && idle && s.clients == 0 && s.starting == nil {
			// Stopped, unused and no caller holds it: forget it, so that
			// the servers known stay those in use.
			s.retired = true
			s.mu.Unlock()
			m.mu.Lock()
			if m.servers[s.key()] == s {
				delete(m.servers, s.key())
			}
			m.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		if p == nil {
			continue
		}
		if idle {
			m.log.Info("language server shut down: idle", "root", s.Root, "idle_timeout", m.cfg.IdleTimeout)
			s.shutdown(errors.New("lsp: shut down idle"))
			continue
		}
		if max := m.cfg.MaxMemoryBytes; max > 0 {
			if used := groupMemory(p.pid); used > max {
				m.log.Warn("language server restarted: over its memory cap", "root", s.Root, "used_mib", used>>20, "cap_mib", max>>20)
				s.shutdown(fmt.Errorf("lsp: restarted: it used %d MiB, over the cap of %d MiB (lsp.max_memory)", used>>20, max>>20))
			}
		}
	}
}

// Forget shuts down the servers of root, whose tree is about to go away,
// and forgets them; the next Server of root starts anew. A caller that
// still holds one gets ErrUnavailable from it.
func (m *Manager) Forget(root string) {
	if real, err := filepath.EvalSymlinks(root); err == nil {
		root = real
	}
	m.mu.Lock()
	var gone []*Server
	for k, s := range m.servers {
		if s.Root == root {
			gone = append(gone, s)
			delete(m.servers, k)
		}
	}
	m.mu.Unlock()
	for _, s := range gone {
		s.mu.Lock()
		s.retired = true
		s.mu.Unlock()
		s.shutdown(errors.New("lsp: shut down: its workspace was dropped"))
	}
}

// Close stops every server and waits until each is reaped. Safe to call
// twice.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	servers := slices.Collect(maps.Values(m.servers))
	m.mu.Unlock()
	for _, s := range servers {
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
	}
	m.end() // starts in progress end
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.shutdown(errors.New("lsp: the bridge closed"))
		}()
	}
	wg.Wait()
	m.wg.Wait()
	// A start that raced with Close may have left a process.
	for _, s := range servers {
		s.shutdown(errors.New("lsp: the bridge closed"))
	}
	killLeftovers(m.cfg.CacheDir)
	return nil
}

// Servers describes the servers known to the bridge.
func (m *Manager) Servers() []Info {
	m.mu.Lock()
	servers := slices.Collect(maps.Values(m.servers))
	m.mu.Unlock()
	out := make([]Info, 0, len(servers))
	for _, s := range servers {
		s.mu.Lock()
		p, clients, starting := s.proc, s.clients, s.starting != nil
		s.mu.Unlock()
		in := Info{Root: s.Root, Language: s.Language, Name: s.Name, Clients: clients, State: "stopped"}
		if starting {
			in.State = "starting"
		}
		if p != nil {
			in.PID, in.Started, in.State = p.pid, p.started, p.state()
			in.MemoryBytes = groupMemory(p.pid)
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Info) int {
		if a.Root != b.Root {
			if a.Root < b.Root {
				return -1
			}
			return 1
		}
		return 0
	})
	return out
}

// Processes lists the live processes of the bridge's servers and what they
// started, for tests and status.
func (m *Manager) Processes() []int { return processesOf(m.cfg.CacheDir) }

// uid is the uid servers run as.
func (m *Manager) uid() int {
	if os.Geteuid() == 0 {
		return int(m.cfg.UID)
	}
	return os.Geteuid()
}

// processesOf lists the live processes whose environment carries the
// marker of the bridge whose cache is dir.
func processesOf(dir string) []int {
	return procs.Live(procs.EnvironContains(markerEnv, filepath.Clean(dir)))
}

// killLeftovers kills the live processes of the bridge whose cache is dir
// and says how many.
func killLeftovers(dir string) int { return procs.Kill(processesOf(dir), 5*time.Second) }
