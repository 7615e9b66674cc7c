package mcpserver_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cortex-peer/cortex-peer/node/mcpserver"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestBrowserTools drives a session on another peer through the MCP tools,
// over stdio and HTTP, as the Main AI would.
func TestBrowserTools(t *testing.T) {
	if _, err := os.Stat("/usr/lib/chromium/chromium"); err != nil {
		t.Fatalf("Chromium is missing (%v): run `make deps`, which installs it", err)
	}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html><head><title>Counter</title></head><body><p id="n">0</p>
<input id="name" aria-label="Name"><button onclick="document.getElementById('n').textContent++">Add one</button></body></html>`)
	}))
	defer web.Close()
	e := newEnv(t)
	t.Cleanup(func() {
		e.tn.Close()
		for _, p := range e.tn.Peers {
			if pids := p.Node.BrowserProcesses(); len(pids) > 0 {
				t.Errorf("%s left Chromium processes %v", p.Name, pids)
			}
		}
	})
	host := e.tn.Peers[1].Node.ID().String()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			cs := e.connect(t, tr, nil)
			opened := decode[mcpserver.BrowserSession](t, cs, "browser_open", map[string]any{"peer": host})
			if opened.Peer != host || !strings.HasSuffix(opened.Session, "@"+host) {
				t.Fatalf("browser_open: %+v, want a session on %s", opened, host)
			}
			s := opened.Session
			page := decode[mcpserver.BrowserPage](t, cs, "browser_navigate", map[string]any{"session": s, "url": web.URL})
			if page.Title != "Counter" || !page.Loaded {
				t.Fatalf("browser_navigate: %+v", page)
			}
			ctx := testnet.Context(t, time.Minute)
			res, err := call(t, ctx, cs, "browser_snapshot", map[string]any{"session": s}, nil)
			if err != nil || res.IsError {
				t.Fatalf("browser_snapshot: %v %s", err, textOf(res))
			}
			m := regexp.MustCompile(`button "Add one" \[ref=(e\d+)\]`).FindStringSubmatch(textOf(res))
			if m == nil {
				t.Fatalf("no ref for the button in the snapshot:\n%s", textOf(res))
			}
			for range 3 {
				decode[mcpserver.BrowserPage](t, cs, "browser_click", map[string]any{"session": s, "ref": m[1]})
			}
			decode[mcpserver.BrowserPage](t, cs, "browser_type", map[string]any{"session": s, "selector": "#name", "text": "bob"})
			res, err = call(t, ctx, cs, "browser_evaluate", map[string]any{"session": s, "expression": `document.getElementById("n").textContent + document.getElementById("name").value`}, nil)
			if err != nil || res.IsError || textOf(res) != `"3bob"` {
				t.Fatalf("browser_evaluate: %v %q, want \"3bob\"", err, textOf(res))
			}
			res, err = call(t, ctx, cs, "browser_screenshot", map[string]any{"session": s}, nil)
			if err != nil || res.IsError {
				t.Fatalf("browser_screenshot: %v %s", err, textOf(res))
			}
			var img *mcp.ImageContent
			for _, c := range res.Content {
				if ic, ok := c.(*mcp.ImageContent); ok {
					img = ic
				}
			}
			if img == nil || img.MIMEType != "image/png" || !bytes.HasPrefix(img.Data, []byte("\x89PNG")) {
				t.Fatalf("browser_screenshot: no PNG image in %v", res.Content)
			}
			if !strings.Contains(textOf(res), "screenshot baf") {
				t.Fatalf("browser_screenshot: no CID in %q", textOf(res))
			}
			// A stale ref and an unknown session have their codes.
			decode[mcpserver.BrowserPage](t, cs, "browser_navigate", map[string]any{"session": s, "url": web.URL})
			decode[mcpserver.BrowserSnapshot](t, cs, "browser_snapshot", map[string]any{"session": s})
			res, _ = call(t, ctx, cs, "browser_click", map[string]any{"session": s, "ref": m[1]}, nil)
			if !res.IsError || !strings.HasPrefix(textOf(res), "stale_ref:") {
				t.Fatalf("click of a stale ref: %s, want stale_ref", textOf(res))
			}
			list := decode[mcpserver.BrowserList](t, cs, "browser_list", map[string]any{})
			if len(list.Sessions) != 1 || list.Sessions[0].Session != s {
				t.Fatalf("browser_list: %+v, want the one session", list)
			}
			decode[mcpserver.ClosedOutput](t, cs, "browser_close", map[string]any{"session": s})
			res, _ = call(t, ctx, cs, "browser_evaluate", map[string]any{"session": s, "expression": "1"}, nil)
			if !res.IsError || !strings.HasPrefix(textOf(res), "not_found:") {
				t.Fatalf("call on a closed session: %s, want not_found", textOf(res))
			}
		})
	}
}
