// Package cdp keeps one headless Chromium alive on a peer and gives out
// sessions on it, each its own browser context (cookies, storage and cache
// never shared), driven over the Chrome DevTools Protocol with chromedp. A
// session opened on a persistent profile gets a Chromium of its own on a
// copy of the profile, saved back when it closes.
//
// A session keeps the last state it saw (cookies and localStorage), so
// that a tab reopened after a renderer crash or a dead Chromium is still
// logged in, and State/OpenOptions.State move a login to another peer.
// Downloads land in the session's own dir, uploads come from it; both are
// reachable by Chromium's uid.
//
// Chromium never runs as root: when the peer is root it is started as an
// unprivileged uid (Config.UID) with Chromium's own sandbox on, which here
// is the user-namespace sandbox. It talks over a pipe, not a port, so that
// it dies with its connection, and it gets Pdeathsig so that it dies with
// the peer. The package knows nothing of libp2p, the API or the node: the
// mesh glue lives in node.
package cdp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cortex-peer/cortex-peer/bridges/procs"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Config says how the bridge runs Chromium.
type Config struct {
	// ExecPath is Chromium's binary: the real one, not Debian's wrapper
	// script, which adds flags from /etc/chromium.d.
	ExecPath string
	// Dir holds the Chromiums' homes and profiles (shared/, profiles/)
	// and each session's dir (sessions/ID); it is removed and made again
	// at start, so it must be the bridge's own. When the peer is
	// root, Chromium runs as UID and must be able to reach it: every
	// directory above it must be searchable by others (a peer's data dir
	// is not, so the peer puts it under the system's temp dir).
	Dir string
	// UID and GID run Chromium when the peer is root; a bare uid with no
	// passwd entry is enough, and one no other process uses is best.
	UID, GID uint32
	// MaxSessions bounds the sessions open at once.
	MaxSessions int
	// NavigateTimeout bounds a navigation: at its end the call returns
	// with what loaded.
	NavigateTimeout time.Duration
	// StartTimeout bounds Chromium's start.
	StartTimeout time.Duration
	// SnapshotBudget is the default size of a snapshot's text, in bytes.
	SnapshotBudget int
	// IdleTTL is a session's lease: each call renews it, and a session
	// idle for longer is closed by Serve.
	IdleTTL time.Duration
	// MaxTabs bounds the tabs of a session: a page that opens more has
	// them closed.
	MaxTabs int
	// MaxMemoryBytes: Open refuses new sessions while Chromium uses more
	// (MemoryBytes); 0: no cap.
	MaxMemoryBytes int64
	// ProfilesDir keeps persistent profiles, one dir each (NAME/user-data
	// and NAME/state.json); "": none. It may be private to the peer: a
	// profile is copied under Dir while its session runs.
	ProfilesDir string
	// AllowRequest, when set, checks every request of a session's pages
	// (navigations the page makes itself, redirects, subresources): one it
	// refuses fails with ERR_BLOCKED_BY_CLIENT. Unset, nothing is
	// intercepted, which costs nothing.
	AllowRequest func(url string) error
	// OnExpire, if set, is called by Serve before it closes a session
	// whose lease ran out (to save its state or downloads, say). Serve
	// waits for it: every call it makes on the session ends within
	// ExpireTimeout, and it must not block on anything else for long.
	OnExpire func(s *Session)
	// ExpireTimeout bounds the calls of OnExpire, and the save of a
	// profile's state when its session closes.
	ExpireTimeout time.Duration
	Logger        *slog.Logger
}

// DefaultConfig is the bridge's configuration under dir.
func DefaultConfig(dir string) Config {
	return Config{
		ExecPath: "/usr/lib/chromium/chromium", Dir: dir, UID: 64123, GID: 64123,
		MaxSessions: 20, NavigateTimeout: 30 * time.Second, StartTimeout: 30 * time.Second,
		SnapshotBudget: 32 << 10, IdleTTL: 30 * time.Minute, MaxTabs: 10, ExpireTimeout: 30 * time.Second,
	}
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("browser: dir %q: want an absolute path", c.Dir))
	}
	if c.ExecPath == "" {
		errs = append(errs, errors.New("browser: no Chromium binary (exec_path)"))
	}
	if c.MaxSessions <= 0 || c.MaxTabs <= 0 || c.NavigateTimeout <= 0 || c.StartTimeout <= 0 || c.ExpireTimeout <= 0 || c.SnapshotBudget <= 0 || c.IdleTTL <= 0 {
		errs = append(errs, errors.New("browser: max_sessions, max_tabs, the timeouts, the idle TTL and the snapshot budget must be positive"))
	}
	if c.MaxMemoryBytes < 0 {
		errs = append(errs, errors.New("browser: max_memory must not be negative (0: no cap)"))
	}
	if c.ProfilesDir != "" && !filepath.IsAbs(c.ProfilesDir) {
		errs = append(errs, fmt.Errorf("browser: profiles_dir %q: want an absolute path", c.ProfilesDir))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
	}
	return nil
}

// Browser is the peer's Chromium and its sessions. It starts Chromium on
// first use and again after it died; a session with a persistent profile
// has a Chromium of its own.
type Browser struct {
	cfg    Config
	log    *slog.Logger
	shared *instance

	mu       sync.Mutex
	closed   bool
	sessions map[string]*Session
	profiles map[string]*Session // open persistent profiles by name
}

// New returns a bridge that starts Chromium when first asked. It kills
// what a previous run of the peer left in cfg.Dir.
func New(cfg Config) (*Browser, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Browser{cfg: cfg, log: log, sessions: map[string]*Session{}, profiles: map[string]*Session{}}
	b.shared = newInstance(b, filepath.Join(cfg.Dir, "shared"))
	if n := killLeftovers(cfg.Dir); n > 0 {
		log.Info("killed Chromium processes a previous run left", "count", n)
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		return nil, fmt.Errorf("browser: clear %s: %w", cfg.Dir, err)
	}
	return b, nil
}

// Ready starts the shared Chromium if it is not running.
func (b *Browser) Ready(ctx context.Context) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return fmt.Errorf("browser: closed: %w", errdefs.ErrUnavailable)
	}
	_, err := b.shared.ensure(ctx)
	return err
}

// makeDirs makes the bridge's dir and its sessions/ and profiles/, which
// Chromium's uid may pass through but not list.
func (b *Browser) makeDirs() error {
	for _, d := range []string{b.cfg.Dir, filepath.Join(b.cfg.Dir, "sessions"), filepath.Join(b.cfg.Dir, "profiles")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("browser: %w", err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return fmt.Errorf("browser: %w", err)
		}
	}
	return nil
}

// mkdirOwned makes dir, private to Chromium's uid when the peer is root.
func (b *Browser) mkdirOwned(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("browser: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, int(b.cfg.UID), int(b.cfg.GID)); err != nil {
			return fmt.Errorf("browser: %w", err)
		}
	}
	return nil
}

// Serve closes the sessions whose lease ran out (idle for IdleTTL) until
// ctx ends.
func (b *Browser) Serve(ctx context.Context) error {
	t := time.NewTicker(min(b.cfg.IdleTTL/4, 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			b.expire(now)
		}
	}
}

// expire closes the sessions idle for longer than their lease, after
// Config.OnExpire had a look at each: every call it makes on the session
// ends within ExpireTimeout.
func (b *Browser) expire(now time.Time) {
	b.mu.Lock()
	var idle []*Session
	for _, s := range b.sessions {
		if now.Sub(s.lastUsed()) > b.cfg.IdleTTL {
			idle = append(idle, s)
		}
	}
	b.mu.Unlock()
	for _, s := range idle {
		b.log.Info("browser session closing: its lease ran out", "session", s.ID, "idle_ttl", b.cfg.IdleTTL)
		if b.cfg.OnExpire != nil {
			s.deadline.Store(time.Now().Add(b.cfg.ExpireTimeout).UnixNano())
			b.cfg.OnExpire(s)
		}
		if err := s.Close(); err != nil {
			b.log.Warn("browser session closed with an error", "session", s.ID, "err", err)
		}
	}
}

// Close closes every session (saving persistent profiles) and stops
// Chromium, leaving no process of it. Safe to call twice.
func (b *Browser) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	sessions := slices.Collect(maps.Values(b.sessions))
	b.mu.Unlock()
	var errs []error
	for _, s := range sessions {
		errs = append(errs, s.Close())
	}
	b.shared.shutdown(false)
	errs = append(errs, os.RemoveAll(b.cfg.Dir))
	return errors.Join(errs...)
}

// OpenOptions say what a new session starts with.
type OpenOptions struct {
	// State is restored into the new session before its first use; with
	// a profile it takes the place of the state saved with the profile.
	State *State
	// Profile names a persistent profile (with Config.ProfilesDir set):
	// the session runs in a Chromium of its own on that profile, saved
	// back when the session closes. "": a fresh browser context in the
	// shared Chromium.
	Profile string
}

// Open starts a session: a browser context of its own with one tab, or a
// persistent profile's Chromium.
func (b *Browser) Open(ctx context.Context, opts OpenOptions) (*Session, error) {
	if opts.Profile != "" {
		if b.cfg.ProfilesDir == "" {
			return nil, fmt.Errorf("browser: profile %q: persistent profiles are off on this peer (browser.profiles_dir): %w", opts.Profile, errdefs.ErrInvalid)
		}
		if !validProfile(opts.Profile) {
			return nil, fmt.Errorf("browser: profile %q: want 1-64 letters, digits, '.', '_' or '-': %w", opts.Profile, errdefs.ErrInvalid)
		}
	}
	if opts.State != nil {
		if err := opts.State.validate(); err != nil {
			return nil, err
		}
	}
	if max := b.cfg.MaxMemoryBytes; max > 0 {
		if used := b.MemoryBytes(); used > max {
			return nil, fmt.Errorf("browser: Chromium uses %d MiB, over this peer's cap of %d MiB (browser.max_memory); close a session first: %w", used>>20, max>>20, errdefs.ErrUnavailable)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("browser: closed: %w", errdefs.ErrUnavailable)
	}
	if len(b.sessions) >= b.cfg.MaxSessions {
		return nil, fmt.Errorf("browser: %d sessions open, the most this peer allows (browser.max_sessions): %w", len(b.sessions), errdefs.ErrUnavailable)
	}
	if o, ok := b.profiles[opts.Profile]; ok && opts.Profile != "" {
		return nil, fmt.Errorf("browser: profile %q is open in session %s; close that session first: %w", opts.Profile, o.ID, errdefs.ErrUnavailable)
	}
	s := &Session{ID: newSessionID(), b: b, inst: b.shared, profile: opts.Profile, refs: map[string]refTarget{}}
	s.life, s.endCalls = context.WithCancel(context.Background())
	s.dir = filepath.Join(b.cfg.Dir, "sessions", s.ID)
	s.used.Store(time.Now().UnixNano())
	fail := func(err error) (*Session, error) {
		s.endCalls()
		if s.cancel != nil {
			s.cancel()
		}
		if s.inst != b.shared { // a profile's own Chromium, not saved back
			s.inst.shutdown(false)
			_ = os.RemoveAll(s.inst.dir)
		} else {
			s.inst.forget(s)
		}
		_ = os.RemoveAll(s.dir)
		return nil, fmt.Errorf("browser: open a session: %w", err)
	}
	if err := b.makeDirs(); err != nil {
		return fail(err)
	}
	for _, d := range []string{s.dir, filepath.Join(s.dir, "downloads"), filepath.Join(s.dir, "uploads")} {
		if err := b.mkdirOwned(d); err != nil {
			return fail(err)
		}
	}
	st := opts.State
	if s.profile != "" {
		saved, err := b.loadProfile(s)
		if err != nil {
			return fail(err)
		}
		if st == nil {
			st = saved
		}
	}
	if err := s.attach(ctx); err != nil {
		return fail(err)
	}
	if st != nil {
		if err := s.restoreWithin(ctx, *st); err != nil {
			return fail(err)
		}
		s.state = st.clone()
	}
	b.sessions[s.ID] = s
	if s.profile != "" {
		b.profiles[s.profile] = s
	}
	b.log.Info("browser session opened", "session", s.ID, "profile", s.profile, "state", st != nil)
	return s, nil
}

// Session returns an open session.
func (b *Browser) Session(id string) (*Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.sessions[id]
	if !ok {
		return nil, fmt.Errorf("browser session %q: %w", id, errdefs.ErrNotFound)
	}
	return s, nil
}

// Sessions lists the open sessions' ids.
func (b *Browser) Sessions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]string, 0, len(b.sessions))
	for id := range b.sessions {
		ids = append(ids, id)
	}
	return ids
}

func (b *Browser) forget(s *Session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.sessions, s.ID)
	if b.profiles[s.profile] == s {
		delete(b.profiles, s.profile)
	}
}

// within is a context for actions on tab (a chromedp context) that ends
// after d, or when ctx ends.
func within(ctx, tab context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	tctx, cancel := context.WithTimeout(tab, d)
	stop := context.AfterFunc(ctx, cancel)
	return tctx, func() { stop(); cancel() }
}

// runWithin runs no action on tab (so that its target exists) within d,
// or until ctx ends.
func runWithin(ctx, tab context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- chromedp.Do(tab) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "b" + hex.EncodeToString(b[:])
}

// killLeftovers kills every live process of the Chromiums under dir
// (the crash handlers they detach too), and says how many.
func killLeftovers(dir string) int { return procs.Kill(processesOf(dir), 5*time.Second) }

// Processes lists the live processes of this bridge's Chromiums, for
// tests and status.
func (b *Browser) Processes() []int { return processesOf(b.cfg.Dir) }

// processesOf lists the live processes of a Chromium whose files are
// under dir: an argument names its profile (--user-data-dir) or its crash
// database (--database) there.
func processesOf(dir string) []int {
	under := filepath.Clean(dir) + "/"
	return procs.Live(procs.CmdlineContains("--user-data-dir="+under, "--database="+under))
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}
