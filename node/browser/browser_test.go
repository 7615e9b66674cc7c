package browser_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) { testnet.VerifyNoLeaks(m) }

// requireChromium fails (never skips) a test on a machine without Chromium.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/lib/chromium/chromium"); err != nil {
		t.Fatalf("Chromium is missing (%v): run `make deps`, which installs it", err)
	}
}

// downloadBytes is the file the site serves for download.
var downloadBytes = func() []byte {
	b := make([]byte, 3<<20)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}()

// site is a web app with a login (an HttpOnly cookie and localStorage), a
// download and a file input.
func site(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		who := "nobody"
		if c, err := r.Cookie("sid"); err == nil {
			who = c.Value
		}
		if who == "nobody" {
			fmt.Fprint(w, `<html><head><title>Home</title></head><body><h1>Please log in</h1><a href="/login">Log in</a></body></html>`)
			return
		}
		fmt.Fprintf(w, `<html><head><title>Home</title></head><body><h1>Welcome %s</h1><p id="ls"></p>
<script>document.getElementById("ls").textContent = "ls=" + localStorage.getItem("who")</script></body></html>`, who)
	})
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			_ = r.ParseForm()
			if r.PostForm.Get("pass") != "secret" {
				http.Error(w, "wrong password", http.StatusForbidden)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: "sid", Value: r.PostForm.Get("user"), Path: "/", HttpOnly: true, Expires: time.Now().Add(time.Hour)})
			fmt.Fprintf(w, `<html><body><script>localStorage.setItem("who", %q); location = "/";</script></body></html>`, r.PostForm.Get("user"))
			return
		}
		fmt.Fprint(w, `<html><head><title>Log in</title></head><body><form method="post" action="/login">
<label>User <input id="user" name="user"></label>
<label>Password <input id="pass" name="pass" type="password"></label>
<button type="submit">Log in</button></form></body></html>`)
	})
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html><body><a id="get" href="/file">Get the report</a></body></html>`)
	})
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Disposition", `attachment; filename="report.bin"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(downloadBytes)
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html><head><title>none</title></head><body><input type="file" id="f">
<script>document.getElementById("f").addEventListener("change", async e => {
  const f = e.target.files[0]; const text = await f.text();
  document.title = f.name + ":" + f.size + ":" + text;
});</script></body></html>`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// refOf finds the ref of the line of a snapshot that matches re.
func refOf(t *testing.T, text, re string) string {
	t.Helper()
	m := regexp.MustCompile(re + `.*\[ref=(e\d+)\]`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no ref for %s in the snapshot:\n%s", re, text)
	}
	return m[1]
}

func eval(ctx context.Context, t *testing.T, b apiv1connect.BrowserServiceClient, session, expr string) string {
	t.Helper()
	resp, err := b.Evaluate(ctx, connect.NewRequest(&apiv1.BrowserEvaluateRequest{Session: session, Expression: expr}))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	var s string
	if err := json.Unmarshal([]byte(resp.Msg.GetValue()), &s); err != nil {
		t.Fatalf("evaluate %s: %s: %v", expr, resp.Msg.GetValue(), err)
	}
	return s
}

func open(ctx context.Context, t *testing.T, b apiv1connect.BrowserServiceClient, r *apiv1.BrowserOpenRequest) string {
	t.Helper()
	resp, err := b.Open(ctx, connect.NewRequest(r))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return resp.Msg.GetSession()
}

func navigate(ctx context.Context, t *testing.T, b apiv1connect.BrowserServiceClient, session, url string) {
	t.Helper()
	if _, err := b.Navigate(ctx, connect.NewRequest(&apiv1.BrowserNavigateRequest{Session: session, Url: url})); err != nil {
		t.Fatalf("navigate %s: %v", url, err)
	}
}

// noChromiumLeft checks, after the peers closed, that no Chromium process
// of theirs lives on.
func noChromiumLeft(t *testing.T, tn *testnet.Net) {
	t.Cleanup(func() {
		tn.Close()
		for _, p := range tn.Peers {
			if pids := p.Node.BrowserProcesses(); len(pids) > 0 {
				t.Errorf("%s left Chromium processes %v", p.Name, pids)
			}
		}
	})
}

func TestSessionsAcrossPeers(t *testing.T) {
	requireChromium(t)
	web := site(t)
	uploads := t.TempDir()
	tn := testnet.New(t, 2, testnet.WithConfig(func(i int, cfg *node.Config) {
		cfg.API.AllowedRoots = append(cfg.API.AllowedRoots, uploads)
		cfg.Browser.Origins.Blocked = []string{"blocked.example"}
	}))
	noChromiumLeft(t, tn)
	ctx := testnet.Context(t, 4*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	b1, b2 := cs[0].Browser(), cs[1].Browser()
	host := tn.Peers[1].Node.ID().String()

	// Peer 1 opens a session on peer 2 and logs in through a snapshot's refs.
	a := open(ctx, t, b1, &apiv1.BrowserOpenRequest{Peer: host, Name: "shop"})
	if !strings.HasSuffix(a, "@"+host) {
		t.Fatalf("session %s does not name its host %s", a, host)
	}
	navigate(ctx, t, b1, a, web.URL+"/login")
	snap, err := b1.Snapshot(ctx, connect.NewRequest(&apiv1.BrowserSnapshotRequest{Session: a}))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Msg.GetTruncated() || snap.Msg.GetRefs() < 3 {
		t.Fatalf("snapshot of the login page: %v", snap.Msg)
	}
	refOf(t, snap.Msg.GetText(), `button "Log in"`)
	full, err := b1.Snapshot(ctx, connect.NewRequest(&apiv1.BrowserSnapshotRequest{Session: a, Full: true, Budget: 100}))
	if err != nil {
		t.Fatal(err)
	}
	// Cut at 100 bytes, the rest by CID, fetched from the other peer.
	if f := full.Msg.GetFull(); !full.Msg.GetTruncated() || len(full.Msg.GetText()) > 300 || !strings.Contains(full.Msg.GetText(), f.GetCid()) ||
		string(fetchFile(ctx, t, cs[0], f.GetCid(), filepath.Join(uploads, "tree.txt"))) == "" {
		t.Fatalf("full snapshot: %v", full.Msg)
	}
	// The whole tree holds the refs past the cut: they are the current ones.
	text := string(fetchFile(ctx, t, cs[0], full.Msg.GetFull().GetCid(), filepath.Join(uploads, "tree2.txt")))
	for _, step := range []*apiv1.BrowserActRequest{
		{Ref: refOf(t, text, `textbox "User"`), Text: "alice"},
		{Ref: refOf(t, text, `textbox "Password"`), Text: "secret"},
	} {
		step.Session = a
		if _, err := b1.Type(ctx, connect.NewRequest(step)); err != nil {
			t.Fatal(err)
		}
	}
	login := refOf(t, text, `button "Log in"`)
	if _, err := b1.Click(ctx, connect.NewRequest(&apiv1.BrowserActRequest{Session: a, Ref: login})); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, "the login to land on the home page", 20*time.Second, func() bool {
		return strings.Contains(eval(ctx, t, b1, a, `document.body.innerText`), "Welcome alice")
	})

	// Peer 2 drives the same session: the cookie is there.
	navigate(ctx, t, b2, a, web.URL+"/")
	if got := eval(ctx, t, b2, a, `document.body.innerText`); !strings.Contains(got, "Welcome alice") || !strings.Contains(got, "ls=alice") {
		t.Fatalf("from peer 2 the session shows %q, want logged in as alice", got)
	}

	// The old snapshot's refs are stale now: refused, never clicked.
	_, err = b1.Click(ctx, connect.NewRequest(&apiv1.BrowserActRequest{Session: a, Ref: login}))
	if !errors.Is(err, errdefs.ErrStale) || !strings.Contains(err.Error(), "stale_ref") {
		t.Fatalf("click of a stale ref: %v, want stale_ref", err)
	}

	// A second session does not see the first one's cookies.
	other := open(ctx, t, b1, &apiv1.BrowserOpenRequest{Peer: host})
	navigate(ctx, t, b1, other, web.URL+"/")
	if got := eval(ctx, t, b1, other, `document.body.innerText`); !strings.Contains(got, "Please log in") {
		t.Fatalf("a second session shows %q: it sees the first one's cookie", got)
	}

	// A screenshot is a PNG, stored by CID and fetched from the other peer.
	shot, err := b2.Screenshot(ctx, connect.NewRequest(&apiv1.BrowserScreenshotRequest{Session: a}))
	if err != nil {
		t.Fatal(err)
	}
	png := shot.Msg.GetInline()
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || uint64(len(png)) != shot.Msg.GetSize() {
		t.Fatalf("screenshot: %d inline bytes of %d, not a PNG", len(png), shot.Msg.GetSize())
	}
	got := fetchFile(ctx, t, cs[0], shot.Msg.GetCid(), filepath.Join(uploads, "shot.png"))
	if !bytes.Equal(got, png) {
		t.Fatal("the screenshot fetched by CID on peer 1 differs from the inline one")
	}

	// The state moves: saved on peer 2, restored in a session on peer 1.
	st, err := b2.SaveState(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: a}))
	if err != nil {
		t.Fatal(err)
	}
	moved := open(ctx, t, b1, &apiv1.BrowserOpenRequest{State: st.Msg.GetCid()})
	if !strings.HasSuffix(moved, "@"+tn.Peers[0].Node.ID().String()) {
		t.Fatalf("session %s is not on peer 1", moved)
	}
	navigate(ctx, t, b1, moved, web.URL+"/")
	if got := eval(ctx, t, b1, moved, `document.body.innerText`); !strings.Contains(got, "Welcome alice") || !strings.Contains(got, "ls=alice") {
		t.Fatalf("the restored session on peer 1 shows %q, want logged in as alice with localStorage", got)
	}

	// A download comes back by CID, byte for byte, on the other peer.
	navigate(ctx, t, b1, a, web.URL+"/download")
	if _, err := b1.Click(ctx, connect.NewRequest(&apiv1.BrowserActRequest{Session: a, Selector: "#get"})); err != nil {
		t.Fatal(err)
	}
	var dl *apiv1.BrowserDownload
	testnet.Eventually(t, "the download to finish", 30*time.Second, func() bool {
		resp, err := b1.Downloads(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: a}))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range resp.Msg.GetDownloads() {
			if d.GetCid() != "" {
				dl = d
				return true
			}
		}
		return false
	})
	if dl.GetName() != "report.bin" || dl.GetBytes() != uint64(len(downloadBytes)) {
		t.Fatalf("download %s of %d bytes, want report.bin of %d", dl.GetName(), dl.GetBytes(), len(downloadBytes))
	}
	if got := fetchFile(ctx, t, cs[0], dl.GetCid(), filepath.Join(uploads, "report.bin")); sha256.Sum256(got) != sha256.Sum256(downloadBytes) {
		t.Fatal("the download fetched by CID differs from what the site served")
	}

	// An upload from peer 1's disk lands in the page on peer 2.
	up := filepath.Join(uploads, "note.txt")
	testnet.WriteFile(t, up, []byte("hello"), 0o644)
	navigate(ctx, t, b1, a, web.URL+"/upload")
	if _, err := b1.Upload(ctx, connect.NewRequest(&apiv1.BrowserUploadRequest{Session: a, Selector: "#f", Path: up})); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, "the page to read the uploaded file", 10*time.Second, func() bool {
		return eval(ctx, t, b1, a, `document.title`) == "note.txt:5:hello"
	})

	// Policy and bad input.
	for _, bad := range []struct {
		session, url string
		kind         error
	}{
		{a, "http://blocked.example/", errdefs.ErrPermissionDenied},
		{a, "file:///etc/passwd", errdefs.ErrPermissionDenied},
		{a, "not a url", errdefs.ErrInvalid},
		{"b0000000000000000@" + host, web.URL, errdefs.ErrNotFound},
		{"garbage", web.URL, errdefs.ErrInvalid},
	} {
		_, err := b1.Navigate(ctx, connect.NewRequest(&apiv1.BrowserNavigateRequest{Session: bad.session, Url: bad.url}))
		if !errors.Is(err, bad.kind) {
			t.Errorf("navigate %s in %s: %v, want %v", bad.url, bad.session, err, bad.kind)
		}
	}

	// Peer 1 lists the sessions it opened, here and on peer 2.
	list, err := b1.List(ctx, connect.NewRequest(&apiv1.BrowserListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.Msg.GetSessions()); n != 3 {
		t.Fatalf("peer 1 lists %d sessions, want 3: %v", n, list.Msg)
	}
	for _, s := range []string{a, other, moved} {
		if _, err := b2.Close(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: s})); err != nil {
			t.Fatalf("close %s: %v", s, err)
		}
	}
	if _, err := b1.Evaluate(ctx, connect.NewRequest(&apiv1.BrowserEvaluateRequest{Session: a, Expression: "1"})); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("call on a closed session: %v, want not found", err)
	}
	list, err = b1.List(ctx, connect.NewRequest(&apiv1.BrowserListRequest{}))
	if err != nil || len(list.Msg.GetSessions()) != 0 {
		t.Fatalf("after close peer 1 lists %v (%v), want none", list.Msg.GetSessions(), err)
	}
}

// fetchFile gets a browser output through a peer into path (cortex-peer
// get: screenshots, PDFs and downloads are artifacts) and reads it.
func fetchFile(ctx context.Context, t *testing.T, c *apiclient.Client, root, path string) []byte {
	t.Helper()
	if _, err := c.ArtifactGet(ctx, root, path, false, 0, nil); err != nil { // a browser output is an artifact
		t.Fatalf("get %s: %v", root, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
