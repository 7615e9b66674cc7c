package cdp

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/chromedp/cdproto/browser"
	cdpproto "github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/cortex-peer/cortex-peer/bridges/procs"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// closeTabTimeout bounds the close of a tab past a session's cap.
const closeTabTimeout = 5 * time.Second

// instance is one Chromium process: the peer's shared one, whose sessions
// are browser contexts, or the one of a persistent profile, whose single
// session uses its default context. Its files live under dir: home/,
// profile/ (the user-data dir) and chromium.log.
type instance struct {
	b   *Browser
	dir string
	// owner is the session of a profile's Chromium; nil for the shared one.
	owner *Session
	// keepProfile leaves profile/ in place when Chromium starts again (a
	// persistent profile's data); the shared one starts empty each time.
	keepProfile bool

	run        sync.Mutex // held while Chromium starts or stops
	alloc      context.Context
	stop       context.CancelFunc
	root       context.Context // the browser connection; nil: not running
	pid        int
	rootTarget target.ID // the tab Chromium starts with, which no session uses

	// mu guards what the browser's event listener records; it is never
	// held across a CDP call, since the listener runs on the goroutine
	// that reads Chromium's answers.
	mu        sync.Mutex
	closing   bool
	conn      context.Context // the browser connection, for the listener's goroutines
	firstTab  target.ID       // rootTarget, for the listener
	contexts  map[cdpproto.BrowserContextID]*Session
	targets   map[target.ID]*target.Info
	downloads map[string]*Session // download guid -> its session; nil: not known yet
	pending   map[string]Download // downloads not known to belong to a session yet
	closers   sync.WaitGroup      // goroutines closing tabs past a session's cap
}

func newInstance(b *Browser, dir string) *instance {
	return &instance{b: b, dir: dir}
}

func (in *instance) profileDir() string { return filepath.Join(in.dir, "profile") }

// ensure returns the browser connection, starting Chromium if need be.
func (in *instance) ensure(ctx context.Context) (context.Context, error) {
	in.run.Lock()
	defer in.run.Unlock()
	if in.root != nil && in.root.Err() == nil {
		return in.root, nil
	}
	if in.root != nil {
		in.b.log.Warn("Chromium is gone; starting it again", "pid", in.pid, "dir", in.dir)
	}
	in.shutdownLocked(false) // its sessions reopen their tabs on their next call
	cfg := in.b.cfg
	home := filepath.Join(in.dir, "home")
	profile := in.profileDir()
	for _, p := range []string{home, filepath.Join(in.dir, "chromium.log")} {
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("browser: clear %s: %w", p, err)
		}
	}
	stale := []string{profile}
	if in.keepProfile {
		// A Chromium that died leaves its locks; the profile stays.
		stale = []string{filepath.Join(profile, "SingletonLock"), filepath.Join(profile, "SingletonSocket"), filepath.Join(profile, "SingletonCookie")}
	}
	for _, p := range stale {
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("browser: clear %s: %w", p, err)
		}
	}
	asRoot := os.Geteuid() == 0
	if asRoot {
		if err := procs.Reachable(filepath.Dir(cfg.Dir)); err != nil {
			return nil, fmt.Errorf("browser: Chromium runs as uid %d and cannot reach %s: %w: %w", cfg.UID, cfg.Dir, err, errdefs.ErrInvalid)
		}
	}
	if err := in.b.makeDirs(); err != nil {
		return nil, err
	}
	for _, d := range []string{in.dir, home, filepath.Join(home, ".config"), filepath.Join(home, ".cache"), filepath.Join(home, "tmp"), profile} {
		if err := in.b.mkdirOwned(d); err != nil {
			return nil, err
		}
	}
	stderr, err := os.Create(filepath.Join(in.dir, "chromium.log"))
	if err != nil {
		return nil, fmt.Errorf("browser: %w", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(cfg.ExecPath),
		chromedp.Headless, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		// Headless Chromium 156 preloads the omnibox popups' WebUI for
		// each window, so each session, in a renderer of its own: ~40
		// MiB and ~300 ms per open, for a popup no one sees.
		chromedp.Flag("disable-features", "PreloadTopChromeWebUI,WebUIOmniboxPopup,WebUIOmniboxAimPopup"),
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
				cmd.SysProcAttr.Credential = &syscall.Credential{Uid: cfg.UID, Gid: cfg.GID, Groups: []uint32{}}
			}
			cmd.Dir = home
		}),
	}
	alloc, stopAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	root, stopRoot := chromedp.NewContext(alloc)
	stop := func() { stopRoot(); stopAlloc(); stderr.Close() }
	in.mu.Lock()
	in.closing = false
	in.targets = map[target.ID]*target.Info{}
	in.contexts = map[cdpproto.BrowserContextID]*Session{}
	in.mu.Unlock()
	start, cancelStart := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancelStart()
	errc := make(chan error, 1)
	go func() {
		// The listener is in place before the first target is made, so
		// that it sees every target of this Chromium.
		if err := chromedp.ListenBrowser(root, in.onEvent); err != nil {
			errc <- err
			return
		}
		errc <- chromedp.Do(root)
	}()
	select {
	case err = <-errc:
	case <-start.Done():
		err = context.Cause(start)
	}
	if err != nil {
		stop()
		killLeftovers(in.dir)
		log, _ := os.ReadFile(filepath.Join(in.dir, "chromium.log"))
		return nil, fmt.Errorf("browser: start Chromium (%s): %w; its output: %s: %w", cfg.ExecPath, err, lastLines(log, 5), errdefs.ErrUnavailable)
	}
	in.alloc, in.root, in.stop = alloc, root, stop
	c := chromedp.FromContext(root)
	if p := c.Browser.Process(); p != nil {
		in.pid = p.Pid
	}
	if c.Target != nil {
		in.rootTarget = c.Target.TargetID
	}
	in.mu.Lock()
	in.conn, in.firstTab = root, in.rootTarget
	in.mu.Unlock()
	in.b.log.Info("Chromium started", "pid", in.pid, "uid", cfg.UID, "sandbox", true, "dir", in.dir)
	return root, nil
}

// shutdown stops Chromium and kills what is left of it; with graceful it
// first asks Chromium to close, so that a profile's files are written.
func (in *instance) shutdown(graceful bool) {
	in.run.Lock()
	defer in.run.Unlock()
	in.shutdownLocked(graceful)
}

func (in *instance) shutdownLocked(graceful bool) {
	in.mu.Lock()
	in.closing, in.conn = true, nil
	in.mu.Unlock()
	defer in.closers.Wait() // their calls end with the connection
	if in.stop == nil {
		return
	}
	if graceful && in.root.Err() == nil {
		ctx, cancel := context.WithTimeout(in.root, in.b.cfg.StartTimeout)
		_ = chromedp.Cancel(ctx) // closes the browser and waits for it to exit
		cancel()
	}
	in.stop()
	if a, ok := chromedp.FromContext(in.root).Allocator.(*chromedp.ExecAllocator); ok {
		a.Wait()
	}
	if in.pid > 0 {
		_ = syscall.Kill(-in.pid, syscall.SIGKILL)
	}
	killLeftovers(in.dir)
	in.alloc, in.root, in.stop, in.pid, in.rootTarget = nil, nil, nil, 0, ""
}

// mainPID is the running Chromium's browser process, 0 when none runs.
func (in *instance) mainPID() int {
	in.run.Lock()
	defer in.run.Unlock()
	return in.pid
}

// newTab opens a tab for s, starting Chromium if it is not running: in a
// new browser context of the shared Chromium, or in the default context
// of a profile's. Downloads of the context go to s's downloads dir.
func (in *instance) newTab(ctx context.Context, s *Session) (context.Context, context.CancelFunc, error) {
	root, err := in.ensure(ctx)
	if err != nil {
		return nil, nil, err
	}
	var opts []chromedp.ContextOption
	if in.owner == nil {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	tab, cancel := chromedp.NewContext(root, opts...)
	// The context and its tab are made by the first action.
	if err := runWithin(ctx, tab, in.b.cfg.StartTimeout); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("browser: open a tab: %w", err)
	}
	id := chromedp.FromContext(tab).BrowserContextID
	in.mu.Lock()
	in.contexts[id] = s
	in.mu.Unlock()
	yes := true
	dctx, dcancel := within(ctx, tab, in.b.cfg.StartTimeout)
	defer dcancel()
	_, err = chromedp.CallBrowser(dctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, BrowserContextID: id,
		DownloadPath: filepath.Join(s.dir, "downloads"), EventsEnabled: &yes,
	})
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("browser: set the downloads of a tab: %w", err)
	}
	return tab, cancel, nil
}

// forget drops what the instance knows of s's browser context.
func (in *instance) forget(s *Session) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for id, o := range in.contexts {
		if o == s {
			delete(in.contexts, id)
		}
	}
	for g, o := range in.downloads {
		if o == s {
			delete(in.downloads, g)
		}
	}
}

// sessionOf is the session a browser context belongs to; in.mu is held.
func (in *instance) sessionOf(id cdpproto.BrowserContextID) *Session {
	if in.owner != nil {
		return in.owner
	}
	return in.contexts[id]
}

// onEvent records the browser's targets and downloads. It runs on the
// goroutine that reads Chromium's messages: it only records, and starts a
// goroutine for what needs a call.
func (in *instance) onEvent(ev any) {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch e := ev.(type) {
	case *target.EventTargetCreated:
		info := e.TargetInfo
		in.targets[info.TargetID] = info
		if isTab(info) && info.TargetID != in.firstTab {
			in.capTabs(info)
		}
	case *target.EventTargetInfoChanged:
		if _, ok := in.targets[e.TargetInfo.TargetID]; ok {
			in.targets[e.TargetInfo.TargetID] = e.TargetInfo
		}
	case *target.EventTargetDestroyed:
		delete(in.targets, e.TargetID)
	case *browser.EventDownloadWillBegin:
		in.downloadBegins(e)
	case *browser.EventDownloadProgress:
		in.downloadProgress(e)
	}
}

// isTab says whether a target is a tab: a page, not a prerender.
func isTab(t *target.Info) bool { return t.Type == "page" && t.Subtype == "" }

// capTabs closes a new tab of a session that has MaxTabs tabs already;
// in.mu is held.
func (in *instance) capTabs(info *target.Info) {
	s := in.sessionOf(info.BrowserContextID)
	max := in.b.cfg.MaxTabs
	if s == nil || max <= 0 || in.closing {
		return
	}
	n := 0
	for _, t := range in.targets {
		if isTab(t) && t.TargetID != in.firstTab && (in.owner != nil || t.BrowserContextID == info.BrowserContextID) {
			n++
		}
	}
	if n <= max {
		return
	}
	in.b.log.Info("browser tab closed: the session has as many tabs as it may", "session", s.ID, "max_tabs", max, "url", info.URL)
	root := in.conn
	if root == nil {
		return
	}
	in.closers.Add(1)
	go func() {
		defer in.closers.Done()
		ctx, cancel := context.WithTimeout(root, closeTabTimeout)
		defer cancel()
		_, _ = chromedp.CallBrowser(ctx, target.CloseTarget, target.CloseTargetParams{TargetID: info.TargetID})
	}()
}
