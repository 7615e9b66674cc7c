// Package cdp keeps one headless Chromium alive on a peer and gives out
// sessions on it, each its own browser context (cookies, storage and cache
// never shared), driven over the Chrome DevTools Protocol with chromedp.
//
// Chromium never runs as root: when the peer is root it is started as an
// unprivileged uid (Config.UID) with Chromium's own sandbox on, which here
// is the user-namespace sandbox. It talks over a pipe, not a port, so that
// it dies with its connection, and it gets Pdeathsig so that it dies with
// the peer. The package knows nothing of libp2p: the mesh glue lives in
// node.
package cdp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Config says how the bridge runs Chromium.
type Config struct {
	// ExecPath is Chromium's binary: the real one, not Debian's wrapper
	// script, which adds flags from /etc/chromium.d.
	ExecPath string
	// Dir holds the browser's home and profiles; it is removed and made
	// again at start, so it must be the bridge's own. When the peer is
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
	Logger  *slog.Logger
}

// DefaultConfig is the bridge's configuration under dir.
func DefaultConfig(dir string) Config {
	return Config{
		ExecPath: "/usr/lib/chromium/chromium", Dir: dir, UID: 64123, GID: 64123,
		MaxSessions: 20, NavigateTimeout: 30 * time.Second, StartTimeout: 30 * time.Second,
		SnapshotBudget: 32 << 10, IdleTTL: 30 * time.Minute,
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
	if c.MaxSessions <= 0 || c.NavigateTimeout <= 0 || c.StartTimeout <= 0 || c.SnapshotBudget <= 0 || c.IdleTTL <= 0 {
		errs = append(errs, errors.New("browser: max_sessions, the timeouts, the idle TTL and the snapshot budget must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
	}
	return nil
}

// Browser is the peer's Chromium and its sessions. It starts Chromium on
// first use and again after it died.
type Browser struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	closed   bool
	alloc    context.Context // the running Chromium's allocator; nil: not running
	stop     context.CancelFunc
	root     context.Context // the browser connection
	pid      int
	sessions map[string]*Session
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
	b := &Browser{cfg: cfg, log: log, sessions: map[string]*Session{}}
	if n := killLeftovers(cfg.Dir); n > 0 {
		log.Info("killed Chromium processes a previous run left", "count", n)
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		return nil, fmt.Errorf("browser: clear %s: %w", cfg.Dir, err)
	}
	return b, nil
}

// Ready starts Chromium if it is not running.
func (b *Browser) Ready(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := b.ensure(ctx)
	return err
}

// ensure returns the browser connection, starting Chromium if need be;
// b.mu is held.
func (b *Browser) ensure(ctx context.Context) (context.Context, error) {
	if b.closed {
		return nil, fmt.Errorf("browser: closed: %w", errdefs.ErrUnavailable)
	}
	if b.root != nil && b.root.Err() == nil {
		return b.root, nil
	}
	if b.root != nil {
		b.log.Warn("Chromium is gone; starting it again", "pid", b.pid)
	}
	b.shutdown(false) // its sessions reopen their tabs on their next call
	home := filepath.Join(b.cfg.Dir, "home")
	profile := filepath.Join(b.cfg.Dir, "profile")
	if err := os.RemoveAll(b.cfg.Dir); err != nil {
		return nil, fmt.Errorf("browser: clear %s: %w", b.cfg.Dir, err)
	}
	asRoot := os.Geteuid() == 0
	if asRoot {
		if err := reachable(filepath.Dir(b.cfg.Dir)); err != nil {
			return nil, fmt.Errorf("browser: Chromium runs as uid %d and cannot reach %s: %w: %w", b.cfg.UID, b.cfg.Dir, err, errdefs.ErrInvalid)
		}
	}
	for _, d := range []string{b.cfg.Dir, home, filepath.Join(home, ".config"), filepath.Join(home, ".cache"), filepath.Join(home, "tmp"), profile} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("browser: %w", err)
		}
		if asRoot {
			if err := os.Chown(d, int(b.cfg.UID), int(b.cfg.GID)); err != nil {
				return nil, fmt.Errorf("browser: %w", err)
			}
		}
	}
	stderr, err := os.Create(filepath.Join(b.cfg.Dir, "chromium.log"))
	if err != nil {
		return nil, fmt.Errorf("browser: %w", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(b.cfg.ExecPath),
		chromedp.Headless, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		// chromedp turns the sandbox off for a root parent unless told
		// not to; Chromium runs as the unprivileged uid, sandboxed.
		chromedp.Flag("no-sandbox", false),
		chromedp.UserDataDir(profile),
		chromedp.NoInheritEnv,
		chromedp.Env("HOME="+home, "PATH=/usr/bin:/bin", "XDG_CONFIG_HOME="+home+"/.config",
			"XDG_CACHE_HOME="+home+"/.cache", "TMPDIR="+home+"/tmp"),
		chromedp.CombinedOutput(stderr),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// chromedp starts Chromium from a thread it keeps while the
			// browser runs, so Pdeathsig fires when the peer dies.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			if asRoot {
				cmd.SysProcAttr.Credential = &syscall.Credential{Uid: b.cfg.UID, Gid: b.cfg.GID, Groups: []uint32{}}
			}
			cmd.Dir = home
		}),
	}
	alloc, stopAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	root, stopRoot := chromedp.NewContext(alloc)
	stop := func() { stopRoot(); stopAlloc(); stderr.Close() }
	start, cancelStart := context.WithTimeout(ctx, b.cfg.StartTimeout)
	defer cancelStart()
	errc := make(chan error, 1)
	go func() { errc <- chromedp.Do(root) }()
	select {
	case err = <-errc:
	case <-start.Done():
		err = context.Cause(start)
	}
	if err != nil {
		stop()
		killLeftovers(b.cfg.Dir)
		log, _ := os.ReadFile(filepath.Join(b.cfg.Dir, "chromium.log"))
		return nil, fmt.Errorf("browser: start Chromium (%s): %w; its output: %s: %w", b.cfg.ExecPath, err, lastLines(log, 5), errdefs.ErrUnavailable)
	}
	b.alloc, b.root, b.stop = alloc, root, stop
	if p := chromedp.FromContext(root).Browser.Process(); p != nil {
		b.pid = p.Pid
	}
	b.log.Info("Chromium started", "pid", b.pid, "uid", b.cfg.UID, "sandbox", true)
	return root, nil
}

// shutdown stops the running Chromium and kills what is left of it, and
// with drop forgets the sessions; b.mu is held.
func (b *Browser) shutdown(drop bool) {
	if drop {
		for id, s := range b.sessions {
			s.cancel()
			delete(b.sessions, id)
		}
	}
	if b.stop == nil {
		return
	}
	b.stop()
	if b.alloc != nil {
		if a, ok := chromedp.FromContext(b.root).Allocator.(*chromedp.ExecAllocator); ok {
			a.Wait()
		}
	}
	if b.pid > 0 {
		_ = syscall.Kill(-b.pid, syscall.SIGKILL)
	}
	killLeftovers(b.cfg.Dir)
	b.alloc, b.root, b.stop, b.pid = nil, nil, nil, 0
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

// expire closes the sessions idle for longer than their lease.
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
		b.log.Info("browser session closed: its lease ran out", "session", s.ID, "idle_ttl", b.cfg.IdleTTL)
		_ = s.Close()
	}
}

// Close closes every session and stops Chromium, leaving no process of
// it. Safe to call twice.
func (b *Browser) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.shutdown(true)
	return os.RemoveAll(b.cfg.Dir)
}

// Open starts a session: a browser context of its own with one tab.
func (b *Browser) Open(ctx context.Context) (*Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.sessions) >= b.cfg.MaxSessions {
		return nil, fmt.Errorf("browser: %d sessions open, the most this peer allows (browser.max_sessions): %w", len(b.sessions), errdefs.ErrUnavailable)
	}
	tab, cancel, err := b.newTabLocked(ctx)
	if err != nil {
		return nil, err
	}
	s := &Session{ID: newSessionID(), b: b, tab: tab, cancel: cancel, refs: map[string]refTarget{}}
	s.used.Store(time.Now().UnixNano())
	if err := s.watch(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("browser: open a session: %w", err)
	}
	b.sessions[s.ID] = s
	b.log.Info("browser session opened", "session", s.ID)
	return s, nil
}

// newTab opens a tab in a new browser context, starting Chromium if it
// is not running.
func (b *Browser) newTab(ctx context.Context) (context.Context, context.CancelFunc, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.newTabLocked(ctx)
}

func (b *Browser) newTabLocked(ctx context.Context) (context.Context, context.CancelFunc, error) {
	root, err := b.ensure(ctx)
	if err != nil {
		return nil, nil, err
	}
	tab, cancel := chromedp.NewContext(root, chromedp.WithNewBrowserContext())
	// The context and its tab are made by the first action.
	if err := runWithin(ctx, tab, b.cfg.StartTimeout); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("browser: open a tab: %w", err)
	}
	return tab, cancel, nil
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

func (b *Browser) forget(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.sessions, id)
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

// killLeftovers kills every live process of a Chromium whose profile is
// under dir (the crash handlers it detaches too), and says how many.
func killLeftovers(dir string) int {
	n := 0
	for _, pid := range processesOf(dir) {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// Processes lists the live processes of this bridge's Chromium, for
// tests and status.
func (b *Browser) Processes() []int { return processesOf(b.cfg.Dir) }

// processesOf lists the live (not zombie) processes whose command line
// names the profile dir under dir.
func processesOf(dir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	// The profile's path, not only --user-data-dir=: the crash handlers
	// name their database in it.
	needle := []byte(filepath.Join(dir, "profile"))
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cl, needle) {
			continue
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue // a zombie: dead, waiting for its parent
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// reachable says whether every directory from / down to dir lets others
// search it.
func reachable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by others (mode %v)", d, info.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}
