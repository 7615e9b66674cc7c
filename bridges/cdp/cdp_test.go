package cdp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cdpproto "github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// newTestBrowser is a bridge on the real Chromium, closed with the test;
// the test fails, not skips, without it.
func newTestBrowser(t *testing.T, tune ...func(*Config)) *Browser {
	t.Helper()
	// Chromium runs as an unprivileged uid: its dir must be reachable.
	parent, err := os.MkdirTemp("", "cdp-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o711); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(filepath.Join(parent, "browser"))
	if _, err := os.Stat(cfg.ExecPath); err != nil {
		t.Fatalf("Chromium is missing (%v): run `make deps`, which installs Debian's chromium", err)
	}
	cfg.NavigateTimeout = 20 * time.Second
	for _, f := range tune {
		f(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		// Every process of this Chromium is gone, crash handlers too.
		deadline := time.Now().Add(10 * time.Second)
		for len(b.Processes()) > 0 {
			if time.Now().After(deadline) {
				t.Errorf("Chromium processes left after Close: %v", b.Processes())
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	return b
}

// mustOpen opens a session, failing the test if it cannot.
func mustOpen(ctx context.Context, t *testing.T, b *Browser) *Session {
	t.Helper()
	s, err := b.Open(ctx, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// site is a login form and a page that says who is logged in, by cookie.
func site(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if u := r.URL.Query().Get("user"); u != "" {
			http.SetCookie(w, &http.Cookie{Name: "user", Value: u, Path: "/"})
			http.Redirect(w, r, "/whoami", http.StatusSeeOther)
			return
		}
		fmt.Fprint(w, `<!doctype html><title>Log in</title><h1>Shop</h1>
<form action="/login"><label>User <input name="user"></label><button type="submit">Log in</button></form>`)
	})
	mux.HandleFunc("/login2", func(w http.ResponseWriter, r *http.Request) {
		u := r.URL.Query().Get("user")
		http.SetCookie(w, &http.Cookie{Name: "user", Value: u, Path: "/"})
		fmt.Fprintf(w, `<!doctype html><title>In</title><script>localStorage.setItem("token", "tok-" + %q)</script>`, u)
	})
	mux.HandleFunc("/files", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>Files</title><a id="dl" href="/report.bin">report</a><input type="file" id="f">`)
	})
	mux.HandleFunc("/report.bin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Disposition", `attachment; filename="report.bin"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(reportBytes)))
		w.Write(reportBytes)
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		who := "nobody"
		if c, err := r.Cookie("user"); err == nil {
			who = c.Value
		}
		fmt.Fprintf(w, `<!doctype html><title>Who</title><p id="who">logged in as %s</p><a href="/login">again</a>`, who)
	})
	mux.HandleFunc("/many", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		b.WriteString(`<!doctype html><title>Many</title><table>`)
		for i := range 3000 {
			fmt.Fprintf(&b, `<tr><td>row %d</td><td><button>buy %d</button></td></tr>`, i, i)
		}
		b.WriteString(`</table>`)
		fmt.Fprint(w, b.String())
	})
	mux.HandleFunc("/console", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>Console</title><p>hi</p>
<script>console.log("hello", 42); console.error("bad thing"); fetch("/missing").then(() => document.title = "fetched");</script>`)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>Slow</title><p>first part</p><img src="/never">`)
	})
	stop := make(chan struct{})
	mux.HandleFunc("/never", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // first: Close waits for the handlers
	return srv
}

// reportBytes is what /report.bin downloads: 5 MiB, not all alike.
var reportBytes = func() []byte {
	b := make([]byte, 5<<20)
	for i := range b {
		b[i] = byte(i * 7 % 251)
	}
	return b
}()

var refOf = func(snap, role, name string) string {
	m := regexp.MustCompile(regexp.QuoteMeta(role+` "`+name+`"`) + `.*\[ref=(e\d+)\]`).FindStringSubmatch(snap)
	if m == nil {
		return ""
	}
	return m[1]
}

// Logging in through a snapshot's refs keeps the cookie in that session
// across calls, and a second session does not see it.
func TestLoginKeepsCookieAndSessionsAreIsolated(t *testing.T) {
	b := newTestBrowser(t)
	srv := site(t)
	ctx := testContext(t)
	a := mustOpen(ctx, t, b)
	other := mustOpen(ctx, t, b)
	if _, err := a.Navigate(ctx, srv.URL+"/login"); err != nil {
		t.Fatal(err)
	}
	snap, err := a.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	field, button := refOf(snap.Text, "textbox", "User"), refOf(snap.Text, "button", "Log in")
	if field == "" || button == "" {
		t.Fatalf("no refs for the form in:\n%s", snap.Text)
	}
	if err := a.Type(ctx, field, "", "alice", false); err != nil {
		t.Fatal(err)
	}
	if err := a.Click(ctx, button, ""); err != nil {
		t.Fatal(err)
	}
	waitText := func(s *Session, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			v, err := s.Evaluate(ctx, `document.querySelector("#who") ? document.querySelector("#who").textContent : ""`)
			if err == nil && strings.Contains(string(v), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("page says %s (%v), want %q", v, err, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitText(a, "logged in as alice")
	// A later call in the same session still has the cookie.
	if _, err := a.Navigate(ctx, srv.URL+"/whoami"); err != nil {
		t.Fatal(err)
	}
	waitText(a, "logged in as alice")
	if _, err := other.Navigate(ctx, srv.URL+"/whoami"); err != nil {
		t.Fatal(err)
	}
	waitText(other, "logged in as nobody")
	// A ref from before the navigation is stale, never a wrong click.
	if err := a.Click(ctx, button, ""); !errors.Is(err, ErrStaleRef) {
		t.Fatalf("click of a ref from an older page: %v, want stale_ref", err)
	}
	if err := a.Click(ctx, "", "#nosuch"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("click of a missing selector: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Session(a.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("closed session: %v", err)
	}
}

// Evaluate returns JSON, a thrown error is an error; a screenshot is a PNG.
func TestEvaluateAndScreenshot(t *testing.T) {
	b := newTestBrowser(t)
	srv := site(t)
	ctx := testContext(t)
	s := mustOpen(ctx, t, b)
	nav, err := s.Navigate(ctx, srv.URL+"/whoami")
	if err != nil || !nav.Loaded || nav.Title != "Who" {
		t.Fatalf("navigate: %+v %v", nav, err)
	}
	v, err := s.Evaluate(ctx, `({title: document.title, n: 1 + 1})`)
	if err != nil || string(v) != `{"title":"Who","n":2}` {
		t.Fatalf("evaluate: %s %v", v, err)
	}
	if _, err := s.Evaluate(ctx, `(() => { throw new Error("boom") })()`); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("a throwing expression: %v", err)
	}
	// Chromium runs sandboxed, and not as root when the peer is.
	pid := b.shared.mainPID()
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if bytes.Contains(cmdline, []byte("--no-sandbox")) || len(cmdline) == 0 {
		t.Fatalf("Chromium (pid %d) runs without its sandbox: %q", pid, cmdline)
	}
	if os.Geteuid() == 0 && !regexp.MustCompile(`(?m)^Uid:\t64123\b`).Match(status) {
		t.Fatalf("Chromium runs as another uid than 64123:\n%s", status)
	}
	png, err := s.Screenshot(ctx, false)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot: %d bytes, %v", len(png), err)
	}
}

// A big page's snapshot stays under its budget and says what it left out;
// a page that never finishes loading returns at the timeout with what
// loaded.
func TestSnapshotBudgetAndSlowPage(t *testing.T) {
	b := newTestBrowser(t)
	srv := site(t)
	ctx := testContext(t)
	s := mustOpen(ctx, t, b)
	if _, err := s.Navigate(ctx, srv.URL+"/many"); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx, 8<<10)
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Truncated || len(snap.Text) > 8<<10+200 || snap.Nodes < 6000 || !strings.Contains(snap.Text, `button "buy 0" [ref=`) {
		t.Fatalf("snapshot of 3000 rows: %d bytes, %d lines, truncated %v:\n%.400s", len(snap.Text), snap.Nodes, snap.Truncated, snap.Text)
	}
	b.cfg.NavigateTimeout = 5 * time.Second
	start := time.Now()
	nav, err := s.Navigate(ctx, srv.URL+"/slow")
	if err != nil || nav.Loaded || time.Since(start) > 30*time.Second {
		t.Fatalf("slow page: %+v %v after %v", nav, err, time.Since(start))
	}
	v, err := s.Evaluate(ctx, `document.body.innerText`)
	if err != nil || !strings.Contains(string(v), "first part") {
		t.Fatalf("what loaded: %s %v", v, err)
	}
}

// A renderer crash and a Chromium killed with SIGKILL: the next call
// reopens the session's tab at its last URL and says it recovered; no
// process of the dead Chromium is left.
func TestRecoversFromCrashes(t *testing.T) {
	b := newTestBrowser(t)
	srv := site(t)
	ctx := testContext(t)
	s := mustOpen(ctx, t, b)
	if _, err := s.Navigate(ctx, srv.URL+"/login2?user=dave"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Navigate(ctx, srv.URL+"/whoami"); err != nil {
		t.Fatal(err)
	}
	loggedIn(ctx, t, s, "dave")
	title := func() string {
		t.Helper()
		v, err := s.Evaluate(ctx, `document.title`)
		if err != nil {
			t.Fatalf("evaluate after a crash: %v", err)
		}
		return string(v)
	}
	// The renderer crashes (CDP Page.crash); the call that crashes it
	// may fail, the next one recovers.
	crashCtx, cancel := context.WithTimeout(s.tab, 5*time.Second)
	_, _ = chromedp.Call(crashCtx, page.Crash, cdpproto.Empty{})
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for !s.crashed.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := title(); got != `"Who"` || !s.Recovered() {
		t.Fatalf("after a renderer crash: title %s, recovered %v", got, s.Recovered())
	}
	loggedIn(ctx, t, s, "dave")
	if title(); s.Recovered() {
		t.Fatal("a call on a healthy tab says recovered")
	}
	// Chromium itself dies.
	old := b.shared.mainPID()
	if err := syscall.Kill(-old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for s.alive() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := title(); got != `"Who"` || !s.Recovered() {
		t.Fatalf("after Chromium was killed: title %s, recovered %v", got, s.Recovered())
	}
	loggedIn(ctx, t, s, "dave") // the cookie and localStorage came back
	now := b.shared.mainPID()
	if now == old || now == 0 {
		t.Fatalf("Chromium pid %d, was %d: not restarted", now, old)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", old)); err == nil {
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", old)); !bytes.Contains(st, []byte(") Z ")) {
			t.Fatalf("the killed Chromium %d is still there", old)
		}
	}
}

// A session idle for longer than its lease is closed; a call renews it.
func TestLeaseExpiry(t *testing.T) {
	var expired []string
	var hung error
	b := newTestBrowser(t, func(c *Config) {
		c.IdleTTL = time.Minute
		c.ExpireTimeout = 2 * time.Second
		c.OnExpire = func(s *Session) {
			// Called from Serve, before the close: the node saves the
			// state here. A call that would never end ends at the
			// expiry timeout.
			st, err := s.State(context.Background())
			if err != nil {
				t.Errorf("state of an expiring session: %v", err)
			}
			_, hung = s.Evaluate(context.Background(), `new Promise(() => {})`)
			expired = append(expired, fmt.Sprintf("%s %d", s.ID, len(st.Cookies)))
		}
	})
	ctx := testContext(t)
	idle := mustOpen(ctx, t, b)
	busy := mustOpen(ctx, t, b)
	if _, err := busy.Evaluate(ctx, `1`); err != nil { // renews busy's lease now
		t.Fatal(err)
	}
	b.expire(time.Now().Add(50 * time.Second)) // both within the minute
	if len(b.Sessions()) != 2 {
		t.Fatalf("sessions %v before their leases ran out", b.Sessions())
	}
	idle.used.Store(time.Now().Add(-2 * time.Minute).UnixNano())
	start := time.Now()
	b.expire(time.Now())
	if _, err := b.Session(idle.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("idle session after its lease: %v", err)
	}
	if len(expired) != 1 || !strings.HasPrefix(expired[0], idle.ID) || !errors.Is(hung, context.DeadlineExceeded) || time.Since(start) > time.Minute {
		t.Fatalf("OnExpire saw %v; a call that hangs in it: %v, after %v", expired, hung, time.Since(start))
	}
	if _, err := idle.Evaluate(ctx, `1`); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a call on an expired session: %v", err)
	}
	if _, err := b.Session(busy.ID); err != nil {
		t.Fatalf("busy session: %v", err)
	}
}

// A page's console messages and requests are kept with the session; a
// page prints to PDF.
func TestConsoleNetworkAndPDF(t *testing.T) {
	b := newTestBrowser(t)
	srv := site(t)
	ctx := testContext(t)
	s := mustOpen(ctx, t, b)
	if _, err := s.Navigate(ctx, srv.URL+"/console"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var sawLog, sawErr, saw404 bool
		for _, c := range s.Console() {
			sawLog = sawLog || c.Level == "log" && c.Text == "hello 42"
			sawErr = sawErr || c.Level == "error" && c.Text == "bad thing"
		}
		for _, n := range s.Network() {
			saw404 = saw404 || strings.HasSuffix(n.URL, "/missing") && n.Status == 404
		}
		if sawLog && sawErr && saw404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console %+v, network %+v", s.Console(), s.Network())
		}
		time.Sleep(50 * time.Millisecond)
	}
	pdf, err := s.PDF(ctx)
	if err != nil || !bytes.HasPrefix(pdf, []byte("%PDF")) {
		t.Fatalf("pdf: %d bytes, %v", len(pdf), err)
	}
}

// loggedIn checks that s's page says it is logged in as user (by cookie)
// and holds user's token in localStorage.
func loggedIn(ctx context.Context, t *testing.T, s *Session, user string) {
	t.Helper()
	v, err := s.Evaluate(ctx, `[document.querySelector("#who") ? document.querySelector("#who").textContent : location.href, localStorage.getItem("token")]`)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`["logged in as %s","tok-%s"]`, user, user); string(v) != want {
		t.Fatalf("page says %s, want %s", v, want)
	}
}

// A session's state (cookies and localStorage, of an origin no longer
// loaded too) restored on another bridge, as on another peer, brings the
// login back.
func TestStateMovesToAnotherBrowser(t *testing.T) {
	b := newTestBrowser(t)
	srv := site(t)
	ctx := testContext(t)
	s := mustOpen(ctx, t, b)
	if _, err := s.Navigate(ctx, srv.URL+"/login2?user=carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Navigate(ctx, "about:blank"); err != nil {
		t.Fatal(err)
	}
	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"name":"user","value":"carol"`)) || !bytes.Contains(data, []byte(`{"origin":"`+srv.URL+`","local_storage":{"token":"tok-carol"}}`)) {
		t.Fatalf("state: %s", data)
	}
	var moved State
	if err := json.Unmarshal(data, &moved); err != nil {
		t.Fatal(err)
	}
	other := newTestBrowser(t)
	o, err := other.Open(ctx, OpenOptions{State: &moved})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Navigate(ctx, srv.URL+"/whoami"); err != nil {
		t.Fatal(err)
	}
	loggedIn(ctx, t, o, "carol")
	for _, n := range o.Network() {
		if !strings.HasSuffix(n.URL, "/whoami") && !strings.HasSuffix(n.URL, "/favicon.ico") {
			t.Errorf("the restore shows in the session's network log: %+v", n)
		}
	}
}

// A download lands in the session's dir byte for byte, with its progress
// reported; a file put in the session's uploads dir goes into a file
// input, and a file elsewhere is refused.
func TestDownloadsAndUploads(t *testing.T) {
	b := newTestBrowser(t)
	srv := site(t)
	ctx := testContext(t)
	s := mustOpen(ctx, t, b)
	if _, err := s.Navigate(ctx, srv.URL+"/files"); err != nil {
		t.Fatal(err)
	}
	if err := s.Click(ctx, "", "#dl"); err != nil {
		t.Fatal(err)
	}
	var d Download
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ds := s.Downloads(); len(ds) == 1 && ds[0].State != DownloadInProgress {
			d = ds[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("downloads: %+v", s.Downloads())
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := int64(len(reportBytes))
	if d.State != DownloadCompleted || d.Name != "report.bin" || d.Bytes != want || d.Total != want || d.URL != srv.URL+"/report.bin" ||
		filepath.Dir(d.Path) != filepath.Join(s.Dir(), "downloads") {
		t.Fatalf("download: %+v", d)
	}
	if got, err := os.ReadFile(d.Path); err != nil || !bytes.Equal(got, reportBytes) {
		t.Fatalf("downloaded file: %d bytes, %v", len(got), err)
	}

	up := filepath.Join(s.Dir(), "uploads", "hello.txt")
	if err := os.WriteFile(up, []byte("hello upload"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Upload(ctx, "", "#f", []string{up}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Evaluate(ctx, `document.querySelector("#f").files[0].text()`)
	if err != nil || string(v) != `"hello upload"` {
		t.Fatalf("uploaded file reads %s, %v", v, err)
	}
	outside := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(s.Dir(), "uploads", "link.txt")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{outside, link, filepath.Join(s.Dir(), "uploads", "..", "downloads", filepath.Base(d.Path)), "uploads/hello.txt"} {
		if err := s.Upload(ctx, "", "#f", []string{p}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("upload of %s: %v, want invalid", p, err)
		}
	}
	dir := s.Dir()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the session's dir after Close: %v", err)
	}
}

// Tabs lists the pages a session's page opened, never more than the cap
// (the ones past it are closed) and never another session's; Chromium's
// memory is reported while it runs, and a cap on it refuses new sessions.
func TestTabsCapAndMemory(t *testing.T) {
	b := newTestBrowser(t, func(c *Config) { c.MaxTabs = 2 })
	srv := site(t)
	ctx := testContext(t)
	s := mustOpen(ctx, t, b)
	other := mustOpen(ctx, t, b)
	if _, err := s.Navigate(ctx, srv.URL+"/whoami"); err != nil {
		t.Fatal(err)
	}
	waitTabs := func(s *Session, ok func([]Tab) bool) []Tab {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			tabs, err := s.Tabs(ctx)
			if err == nil && ok(tabs) {
				return tabs
			}
			if time.Now().After(deadline) {
				t.Fatalf("tabs: %+v %v", tabs, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	open := func(path string) {
		t.Helper()
		v, err := s.Evaluate(ctx, `window.open("`+path+`") !== null`)
		if err != nil || string(v) != "true" {
			t.Fatalf("window.open(%s): %s %v", path, v, err)
		}
	}
	open("/login")
	tabs := waitTabs(s, func(tabs []Tab) bool {
		return len(tabs) == 2 && tabs[0].Title != "" && tabs[1].Title != ""
	})
	var active []string
	for _, tab := range tabs {
		if tab.Active {
			active = append(active, tab.URL)
		}
	}
	if len(active) != 1 || active[0] != srv.URL+"/whoami" {
		t.Fatalf("tabs %+v: the session's own tab is not the one active", tabs)
	}
	open("/files") // a third tab: past the cap, closed
	waitTabs(s, func(tabs []Tab) bool {
		return len(tabs) == 2 && !slices.ContainsFunc(tabs, func(tab Tab) bool { return strings.HasSuffix(tab.URL, "/files") })
	})
	if tabs, err := other.Tabs(ctx); err != nil || len(tabs) != 1 || !tabs[0].Active {
		t.Fatalf("the other session's tabs: %+v %v", tabs, err)
	}

	if m := b.MemoryBytes(); m < 10<<20 {
		t.Fatalf("Chromium uses %d bytes, it says", m)
	}
	b.cfg.MaxMemoryBytes = 1 << 20
	if _, err := b.Open(ctx, OpenOptions{}); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "max_memory") {
		t.Fatalf("open over the memory cap: %v", err)
	}
	b.cfg.MaxMemoryBytes = 0
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if m := b.MemoryBytes(); m != 0 {
		t.Fatalf("memory after Close: %d", m)
	}
}

// A persistent profile runs in a Chromium of its own, one session at a
// time; closed, it is saved (caches left out) and the next session on it
// is still logged in, from the saved state and from Chromium's own files.
func TestPersistentProfile(t *testing.T) {
	profiles := t.TempDir() // private to the peer, as its data dir is
	b := newTestBrowser(t, func(c *Config) { c.ProfilesDir = profiles })
	srv := site(t)
	ctx := testContext(t)
	openShop := func() *Session {
		t.Helper()
		s, err := b.Open(ctx, OpenOptions{Profile: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Navigate(ctx, srv.URL+"/whoami"); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := openShop()
	if _, err := b.Open(ctx, OpenOptions{Profile: "shop"}); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), s.ID) {
		t.Fatalf("a second session on an open profile: %v", err)
	}
	if _, err := b.Open(ctx, OpenOptions{Profile: "../x"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a profile named ../x: %v", err)
	}
	if _, err := s.Navigate(ctx, srv.URL+"/login2?user=erin"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Evaluate(ctx, `document.cookie = "pref=dark; max-age=86400; path=/"`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Navigate(ctx, srv.URL+"/whoami"); err != nil {
		t.Fatal(err)
	}
	loggedIn(ctx, t, s, "erin")
	pid := s.inst.mainPID()
	if pid == 0 || pid == b.shared.mainPID() {
		t.Fatalf("the profile's Chromium is %d, the shared one %d", pid, b.shared.mainPID())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left := processesOf(s.inst.dir); len(left) > 0 {
		t.Fatalf("the profile's Chromium left %v", left)
	}
	saved := filepath.Join(profiles, "shop")
	for _, p := range []string{"state.json", "user-data/Default/Cookies", "user-data/Default/Local Storage"} {
		if _, err := os.Stat(filepath.Join(saved, p)); err != nil {
			t.Errorf("saved profile: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(saved, "user-data/Default/Cache")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cache was saved: %v", err)
	}

	s = openShop()
	loggedIn(ctx, t, s, "erin")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Without the saved state, Chromium's own files still hold the
	// persistent cookie and the localStorage.
	if err := os.Remove(filepath.Join(saved, "state.json")); err != nil {
		t.Fatal(err)
	}
	s = openShop()
	v, err := s.Evaluate(ctx, `[document.cookie.includes("pref=dark"), localStorage.getItem("token")]`)
	if err != nil || string(v) != `[true,"tok-erin"]` {
		t.Fatalf("from the profile's files: %s %v", v, err)
	}
	// Browser.Close saves an open profile too.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(saved, "state.json")); err != nil {
		t.Fatalf("Close did not save the open profile: %v", err)
	}
}
