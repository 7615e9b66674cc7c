package cdp

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	cdpproto "github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// ErrStaleRef is a ref from a snapshot older than the page: it is never
// used, lest it click the wrong element.
var ErrStaleRef = fmt.Errorf("stale_ref: %w", errdefs.ErrStale)

// Session is one browser context with its tab. Its calls are serialised:
// a model drives one page step by step.
type Session struct {
	ID string

	b       *Browser
	inst    *instance // the Chromium the session runs in
	profile string    // the persistent profile's name; "": a fresh browser context
	dir     string    // downloads/ and uploads/, reachable by Chromium's uid
	tab     context.Context
	cancel  context.CancelFunc
	// life ends when Close starts, and ends the call in flight with it.
	life     context.Context
	endCalls context.CancelFunc
	ctxID    cdpproto.BrowserContextID // the tab's browser context; "": the default one

	mu        sync.Mutex
	closed    bool
	crashed   atomic.Bool          // the tab's renderer crashed (set from the event loop)
	restoring atomic.Bool          // a state restore answers the tab's requests itself
	lastURL   string               // where the page was, to reopen it there
	recovered bool                 // the last call found the tab gone and reopened it
	used      atomic.Int64         // unix nanos of the last call: the lease
	gen       uint64               // the current snapshot's generation
	firstRef  uint64               // the first ref number of the current generation
	nextRef   uint64               // the next ref number to give out
	refs      map[string]refTarget // refs of the current generation
	events    pageEvents
	state     State // the last state seen, restored into a reopened tab
	downloads downloadList
	deadline  atomic.Int64 // unix nanos; non-zero: every call ends by then (the session is expiring)

	originsMu sync.Mutex
	origins   map[string]bool // origins the session's pages loaded
}

// refTarget is what a ref of a snapshot points at.
type refTarget struct {
	node cdpproto.BackendNodeID
	role string
	name string
}

// Close closes the session's browser context, and removes its dir. A
// persistent profile's Chromium is stopped and the profile saved first.
// Safe to call twice.
func (s *Session) Close() error {
	s.endCalls()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeLocked()
}

func (s *Session) closeLocked() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.profile != "" {
		err = s.saveProfile()
	} else {
		s.cancel()
		s.inst.forget(s)
	}
	s.b.forget(s)
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = fmt.Errorf("browser session %s: remove its dir: %w", s.ID, rerr)
	}
	s.b.log.Info("browser session closed", "session", s.ID, "profile", s.profile)
	return err
}

// Dir is the session's own dir: downloads land in Dir()/downloads, and
// files to upload go into Dir()/uploads. Chromium's uid can read and
// write both; the dir is removed when the session closes.
func (s *Session) Dir() string { return s.dir }

// Recovered says whether the last call found the session's tab gone (its
// renderer crashed, or Chromium died) and reopened it at its last URL,
// with the cookies and localStorage it last saw.
func (s *Session) Recovered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recovered
}

// lastUsed is when the session was last called (or opened).
func (s *Session) lastUsed() time.Time { return time.Unix(0, s.used.Load()) }

// alive says whether the tab can still be driven.
func (s *Session) alive() bool {
	if s.tab.Err() != nil || s.crashed.Load() {
		return false
	}
	ch, err := chromedp.Detached(s.tab)
	if err != nil {
		return false
	}
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// reopen gives the session a new tab in a new browser context, starting
// Chromium again if it died, at the page it was on.
func (s *Session) reopen(ctx context.Context) error {
	s.cancel()
	s.inst.forget(s)
	if err := s.attach(ctx); err != nil {
		return err
	}
	s.crashed.Store(false)
	s.invalidate()
	if err := s.restoreWithin(ctx, s.state); err != nil {
		s.b.log.Warn("browser session recovered without its state", "session", s.ID, "err", err)
	}
	s.b.log.Warn("browser session recovered: its tab was gone", "session", s.ID, "url", s.lastURL, "cookies", len(s.state.Cookies))
	if s.lastURL != "" {
		nav, cancelNav := within(ctx, s.tab, s.b.cfg.NavigateTimeout)
		defer cancelNav()
		_ = chromedp.Do(nav, chromedp.Navigate(s.lastURL)) // what loads by the timeout will do
	}
	return nil
}

// attach gives the session a new tab (and browser context) and watches
// it. s.mu is held, or the session is not handed out yet.
func (s *Session) attach(ctx context.Context) error {
	tab, cancel, err := s.inst.newTab(ctx, s)
	if err != nil {
		return err
	}
	s.tab, s.cancel = tab, cancel
	s.ctxID = chromedp.FromContext(tab).BrowserContextID
	if err := s.watch(ctx); err != nil {
		return err
	}
	return nil
}

// restoreWithin restores st into the session's tab, within the start
// timeout or until ctx ends.
func (s *Session) restoreWithin(ctx context.Context, st State) error {
	rctx, cancel := within(ctx, s.tab, s.b.cfg.StartTimeout)
	defer cancel()
	return s.restore(rctx, st)
}

// NavigateResult says where a navigation ended.
type NavigateResult struct {
	URL    string `json:"url"`
	Title  string `json:"title"`
	Loaded bool   `json:"loaded"` // false: the page was still loading at the timeout
}

// Navigate loads url and waits for its load event, at most the bridge's
// navigate timeout; a page that never finishes is returned as it is then.
func (s *Session) Navigate(ctx context.Context, url string) (NavigateResult, error) {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return NavigateResult{}, err
	}
	defer leave()
	nctx, cancel := context.WithTimeout(ctx, s.b.cfg.NavigateTimeout)
	defer cancel()
	err = chromedp.Do(nctx, chromedp.Navigate(url))
	res := NavigateResult{Loaded: err == nil}
	if err != nil && ctx.Err() != nil {
		return res, err
	}
	if err != nil && nctx.Err() == nil {
		return res, fmt.Errorf("navigate to %s: %w", url, err)
	}
	s.invalidate()
	res.URL, res.Title, err = s.pageInfo(ctx)
	s.capture(ctx)
	return res, err
}

// enter starts one call of the session: it holds the session (calls are
// serialised) and binds ctx to its tab, reopening a tab that is gone;
// leave ends the call.
func (s *Session) enter(ctx context.Context) (context.Context, func(), error) {
	s.mu.Lock()
	tab, done, err := s.bind(ctx)
	if err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	return tab, func() { done(); s.mu.Unlock() }, nil
}

// bind makes a context for actions on the session's tab that also ends
// with ctx (the caller's deadline or cancel); done releases it. A tab that
// is gone is reopened first. s.mu is held.
func (s *Session) bind(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if s.closed || s.life.Err() != nil {
		return nil, nil, fmt.Errorf("browser session %s: closed: %w", s.ID, errdefs.ErrNotFound)
	}
	s.used.Store(time.Now().UnixNano())
	s.recovered = false
	// The call ends with ctx, with Close, and at the deadline of a
	// session that is expiring.
	deadline := time.Unix(0, s.deadline.Load())
	call, endCall := context.WithCancel(ctx)
	stopLife := context.AfterFunc(s.life, endCall)
	release := func() { stopLife(); endCall() }
	if !s.alive() {
		rctx, cancel := call, context.CancelFunc(func() {})
		if s.deadline.Load() != 0 {
			rctx, cancel = context.WithDeadline(call, deadline)
		}
		err := s.reopen(rctx)
		cancel()
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("browser session %s: its tab is gone and could not be reopened: %w", s.ID, err)
		}
		s.recovered = true
	}
	var tab context.Context
	var cancel context.CancelFunc
	if s.deadline.Load() != 0 {
		tab, cancel = context.WithDeadline(s.tab, deadline) // says deadline exceeded, not canceled
	} else {
		tab, cancel = context.WithCancel(s.tab)
	}
	stop := context.AfterFunc(call, cancel)
	return tab, func() { stop(); cancel(); release() }, nil
}

// Evaluate runs a JavaScript expression in the page (awaiting a promise)
// and returns its value as JSON.
func (s *Session) Evaluate(ctx context.Context, expression string) (json.RawMessage, error) {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	v, err := s.evalLocked(ctx, expression)
	s.capture(ctx)
	return v, err
}

func (s *Session) evalLocked(ctx context.Context, expression string) (json.RawMessage, error) {
	yes := true
	res, err := chromedp.Call(ctx, runtime.Evaluate, runtime.EvaluateParams{
		Expression: expression, ReturnByValue: &yes, AwaitPromise: &yes, UserGesture: &yes,
	})
	if err != nil {
		return nil, fmt.Errorf("evaluate: %w", err)
	}
	if ex := res.ExceptionDetails; ex != nil {
		return nil, fmt.Errorf("evaluate: %s: %w", exceptionText(ex), errdefs.ErrInvalid)
	}
	if res.Result == nil || len(res.Result.Value) == 0 {
		return json.RawMessage("null"), nil
	}
	return json.RawMessage(res.Result.Value), nil
}

// pageInfo reads where the page is, and remembers it to reopen the page
// there after a crash.
func (s *Session) pageInfo(ctx context.Context) (url, title string, err error) {
	info, err := s.evalLocked(ctx, `({url: location.href, title: document.title})`)
	if err != nil {
		return "", "", err
	}
	var v struct{ URL, Title string }
	if err := json.Unmarshal(info, &v); err != nil {
		return "", "", fmt.Errorf("page info %s: %w", info, err)
	}
	s.lastURL = v.URL
	return v.URL, v.Title, nil
}

func exceptionText(ex *runtime.ExceptionDetails) string {
	if ex.Exception != nil && ex.Exception.Description != "" {
		return ex.Exception.Description
	}
	return ex.Text
}

// Screenshot returns a PNG of the viewport, or of the whole page.
func (s *Session) Screenshot(ctx context.Context, fullPage bool) ([]byte, error) {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	shot := chromedp.CaptureScreenshot()
	if fullPage {
		shot = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(ctx, shot)
	if err != nil {
		return nil, fmt.Errorf("screenshot: %w", err)
	}
	return png, nil
}

// Snapshot is a page's accessibility tree as text for a model: one line a
// node, interactive ones with a ref to act on.
type Snapshot struct {
	URL        string `json:"url"`
	Title      string `json:"title"`
	Generation uint64 `json:"generation"`
	Text       string `json:"text"`
	Refs       int    `json:"refs"`
	Nodes      int    `json:"nodes"`     // lines in the whole tree
	Truncated  bool   `json:"truncated"` // the text stops at the budget
}

// Snapshot reads the page's accessibility tree and renders it within
// budget bytes (0: the bridge's default). Refs of earlier snapshots go
// stale.
func (s *Session) Snapshot(ctx context.Context, budget int) (Snapshot, error) {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	defer leave()
	if budget <= 0 {
		budget = s.b.cfg.SnapshotBudget
	}
	tree, err := chromedp.Call(ctx, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: %w", err)
	}
	s.invalidate()
	s.gen++
	r := render(tree.Nodes, budget, func(t refTarget) string {
		ref := fmt.Sprintf("e%d", s.nextRef)
		s.nextRef++
		s.refs[ref] = t
		return ref
	})
	snap := Snapshot{Generation: s.gen, Text: r.text, Refs: len(s.refs), Nodes: r.lines, Truncated: r.truncated}
	snap.URL, snap.Title, _ = s.pageInfo(ctx) // the tree is the answer; a page that moves on leaves these empty
	return snap, nil
}

// invalidate makes every ref given out so far stale.
func (s *Session) invalidate() {
	s.firstRef = s.nextRef
	clear(s.refs)
}

// target finds the element a ref or a CSS selector names, as a JavaScript
// object.
func (s *Session) target(ctx context.Context, ref, selector string) (runtime.RemoteObjectID, error) {
	switch {
	case ref != "" && selector != "":
		return "", fmt.Errorf("give a ref or a selector, not both: %w", errdefs.ErrInvalid)
	case ref != "":
		t, ok := s.refs[ref]
		if !ok {
			var n uint64
			if _, err := fmt.Sscanf(ref, "e%d", &n); err == nil && n < s.firstRef {
				return "", fmt.Errorf("ref %s is from an older snapshot of the page; take a new snapshot: %w", ref, ErrStaleRef)
			}
			return "", fmt.Errorf("ref %s: no such element in the last snapshot: %w", ref, errdefs.ErrNotFound)
		}
		obj, err := chromedp.Call(ctx, dom.ResolveNode, dom.ResolveNodeParams{BackendNodeID: t.node})
		if err != nil || obj.Object == nil {
			// The element left the page since the snapshot.
			return "", fmt.Errorf("ref %s (%s %q) is no longer on the page; take a new snapshot: %w", ref, t.role, t.name, ErrStaleRef)
		}
		return obj.Object.ObjectID, nil
	case selector != "":
		sel, _ := json.Marshal(selector)
		res, err := chromedp.Call(ctx, runtime.Evaluate, runtime.EvaluateParams{Expression: "document.querySelector(" + string(sel) + ")"})
		if err != nil {
			return "", fmt.Errorf("selector %s: %w", selector, err)
		}
		if res.ExceptionDetails != nil {
			return "", fmt.Errorf("selector %s: %s: %w", selector, exceptionText(res.ExceptionDetails), errdefs.ErrInvalid)
		}
		if res.Result == nil || res.Result.ObjectID == "" {
			return "", fmt.Errorf("selector %s: no element: %w", selector, errdefs.ErrNotFound)
		}
		return res.Result.ObjectID, nil
	}
	return "", fmt.Errorf("give a ref (from a snapshot) or a CSS selector: %w", errdefs.ErrInvalid)
}

// call runs a function on the element a ref or selector names.
func (s *Session) call(ctx context.Context, ref, selector, fn string, args ...any) error {
	obj, err := s.target(ctx, ref, selector)
	if err != nil {
		return err
	}
	var cargs []*runtime.CallArgument
	for _, a := range args {
		b, _ := json.Marshal(a)
		cargs = append(cargs, &runtime.CallArgument{Value: b})
	}
	yes := true
	res, err := chromedp.Call(ctx, runtime.CallFunctionOn, runtime.CallFunctionOnParams{
		FunctionDeclaration: fn, ObjectID: obj, Arguments: cargs, AwaitPromise: &yes, UserGesture: &yes,
	})
	if err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return fmt.Errorf("%s: %w", exceptionText(res.ExceptionDetails), errdefs.ErrInvalid)
	}
	return nil
}

// Click clicks the element a ref (from the last snapshot) or a CSS
// selector names.
func (s *Session) Click(ctx context.Context, ref, selector string) error {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	if err := s.call(ctx, ref, selector, `function() { this.scrollIntoView({block: "center"}); this.click(); }`); err != nil {
		return fmt.Errorf("click: %w", err)
	}
	s.capture(ctx)
	return nil
}

// Type puts text into the field a ref or selector names, as typing would
// (input and change events), and with submit presses Enter after it.
func (s *Session) Type(ctx context.Context, ref, selector, text string, submit bool) error {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	const fill = `function(text) {
		this.scrollIntoView({block: "center"});
		this.focus();
		if ("value" in this) { this.value = text; } else { this.textContent = text; }
		this.dispatchEvent(new Event("input", {bubbles: true}));
		this.dispatchEvent(new Event("change", {bubbles: true}));
	}`
	if err := s.call(ctx, ref, selector, fill, text); err != nil {
		return fmt.Errorf("type: %w", err)
	}
	if submit {
		if err := chromedp.Do(ctx, chromedp.KeyEvent("\r")); err != nil {
			return fmt.Errorf("type: press Enter: %w", err)
		}
	}
	s.capture(ctx)
	return nil
}

// Reload reloads the page (used after a renderer crash).
func (s *Session) Reload(ctx context.Context) error {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	s.invalidate()
	if _, err = chromedp.Call(ctx, page.Reload, page.ReloadParams{}); err != nil {
		return err
	}
	s.capture(ctx)
	return nil
}

// role and name of an accessibility node, as text.
func valueText(v *accessibility.Value) string {
	if v == nil || len(v.Value) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(v.Value, &s) == nil {
		return s
	}
	return strings.Trim(string(v.Value), `"`)
}
