package mcpserver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node/mcpserver"
	"github.com/cortex-peer/cortex-peer/testnet"
)

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// The HTTP endpoint refuses requests without the token, with a wrong one,
// from a foreign Origin or for a foreign Host, never sends CORS headers, and
// answers a malformed message with a protocol error while serving on.
func TestHTTPGuards(t *testing.T) {
	e := newEnv(t)
	u, _ := url.Parse(e.url)
	port := u.Port()
	cases := []struct {
		name   string
		header map[string]string
		host   string
		want   int
	}{
		{"no token", nil, "", http.StatusUnauthorized},
		{"wrong token", map[string]string{"Authorization": "Bearer wrong"}, "", http.StatusUnauthorized},
		{"not bearer", map[string]string{"Authorization": "Basic " + e.token}, "", http.StatusUnauthorized},
		{"foreign origin", map[string]string{"Authorization": "Bearer " + e.token, "Origin": "http://evil.example"}, "", http.StatusForbidden},
		{"loopback origin, other port", map[string]string{"Authorization": "Bearer " + e.token, "Origin": "http://127.0.0.1:1"}, "", http.StatusForbidden},
		{"foreign host (DNS rebinding)", map[string]string{"Authorization": "Bearer " + e.token}, "evil.example:" + port, http.StatusForbidden},
		{"foreign origin, no token", map[string]string{"Origin": "http://evil.example"}, "", http.StatusForbidden},
		{"loopback origin", map[string]string{"Authorization": "Bearer " + e.token, "Origin": "http://localhost:" + port}, "localhost:" + port, http.StatusOK},
		{"no origin", map[string]string{"Authorization": "Bearer " + e.token}, "", http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(testnet.Context(t, 10*time.Second), http.MethodPost, e.url, strings.NewReader(initializeBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			if c.host != "" {
				req.Host = c.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, c.want)
			}
			for k := range resp.Header {
				if strings.HasPrefix(strings.ToLower(k), "access-control-") {
					t.Fatalf("CORS header %s sent", k)
				}
			}
		})
	}
	t.Run("preflight", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(testnet.Context(t, 10*time.Second), http.MethodOptions, e.url, nil)
		req.Header.Set("Origin", "http://evil.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		for _, body := range []string{`{"jsonrpc":"2.0","id":1,"method":`, `not json at all`, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":"nope"}`,
			`[{"jsonrpc":"2.0","id":10,"method":"tools/list"}]`} {
			req, _ := http.NewRequestWithContext(testnet.Context(t, 10*time.Second), http.MethodPost, e.url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+e.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// Every malformed body gets a JSON-RPC error object, never
			// plain text: a client parses what it gets as JSON-RPC.
			var m struct {
				JSONRPC string `json:"jsonrpc"`
				Error   *struct {
					Code    int64  `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(sseData(b), &m); err != nil || m.JSONRPC != "2.0" || m.Error == nil {
				t.Fatalf("%q: status %d %q, want a JSON-RPC error object", body, resp.StatusCode, b)
			}
			t.Logf("%q -> %d %s", body, resp.StatusCode, strings.TrimSpace(string(b)))
		}
		// The endpoint still serves a real client.
		cs := e.connect(t, "http", nil)
		if _, err := cs.ListTools(testnet.Context(t, 10*time.Second), nil); err != nil {
			t.Fatal(err)
		}
	})
}

// Over stdio, a malformed line gets a JSON-RPC parse error and the server
// reads on.
func TestStdioMalformed(t *testing.T) {
	srv := mcpserver.New(nil, mcpserver.Options{Version: "test"})
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, &mcpserver.StdioTransport{In: sr, Out: sw}) }()
	defer func() {
		cancel()
		cw.Close()
		<-done
	}()
	in := bufio.NewReader(cr)
	roundTrip := func(line string) map[string]any {
		t.Helper()
		if _, err := io.WriteString(cw, line+"\n"); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			l, _ := in.ReadString('\n')
			got <- l
		}()
		select {
		case l := <-got:
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("reply %q: %v", l, err)
			}
			return m
		case <-time.After(10 * time.Second):
			t.Fatalf("no reply to %q", line)
		}
		return nil
	}
	if m := roundTrip(initializeBody); m["result"] == nil {
		t.Fatalf("initialize: %v", m)
	}
	if _, err := io.WriteString(cw, `{"jsonrpc":"2.0","method":"notifications/initialized"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	m := roundTrip(`{"jsonrpc":"2.0","id":7,"method":`)
	e, _ := m["error"].(map[string]any)
	if e == nil || e["code"] != float64(-32700) {
		t.Fatalf("malformed line: %v, want a parse error (-32700)", m)
	}
	m = roundTrip(`{"jsonrpc":"1.0","id":9,"params":3}`)
	if e, _ := m["error"].(map[string]any); e == nil || e["code"] != float64(-32600) || m["id"] != float64(9) {
		t.Fatalf("invalid request: %v, want -32600 for id 9", m)
	}
	// A batch, which MCP since 2025-06-18 does not carry, is refused; it
	// used to end the session.
	m = roundTrip(`[{"jsonrpc":"2.0","id":10,"method":"tools/list"}]`)
	if e, _ := m["error"].(map[string]any); e == nil || e["code"] != float64(-32600) || !strings.Contains(fmt.Sprint(e["message"]), "batch") {
		t.Fatalf("batch: %v, want -32600 saying batches are not supported", m)
	}
	m = roundTrip(`{"jsonrpc":"2.0","id":8,"method":"tools/list"}`)
	if r, _ := m["result"].(map[string]any); r == nil || len(r["tools"].([]any)) != len(wantTools) {
		t.Fatalf("tools/list after a malformed line: %v", m)
	}
}

// sseData is the JSON of a reply, whether sent as a JSON body or as one
// server-sent event.
func sseData(b []byte) []byte {
	for _, line := range strings.Split(string(b), "\n") {
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			return []byte(d)
		}
	}
	return bytes.TrimSpace(b)
}

func TestCheckListenAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:7777": true, "localhost:7777": true, "[::1]:7777": true, "127.0.0.1:0": true,
		"0.0.0.0:7777": false, ":7777": false, "192.168.1.2:7777": false, "example.com:7777": false, "127.0.0.1": false,
	} {
		if err := mcpserver.CheckListenAddr(addr); (err == nil) != ok {
			t.Errorf("CheckListenAddr(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}
