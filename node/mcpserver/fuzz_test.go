package mcpserver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node/mcpserver"
)

// FuzzStdio feeds arbitrary input to the MCP server over stdio, as an
// agent's output would reach `cortex-peer mcp`, after a proper initialize,
// on a real peer; then the server must answer a tools/list. No input ends
// the session, wedges it or crashes the server.
//
//	go test -run '^$' -fuzz FuzzStdio -fuzztime 60s ./node/mcpserver/
func FuzzStdio(f *testing.F) {
	e := newEnv(f)
	srv := mcpserver.New(e.api, mcpserver.Options{Version: "test", WorkDir: f.TempDir()})
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, &mcpserver.StdioTransport{In: sr, Out: sw}) }()
	lines := make(chan []byte, 64)
	go func() {
		defer close(lines)
		r := bufio.NewReaderSize(cr, 1<<20)
		for {
			l, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			lines <- l
		}
	}()
	f.Cleanup(func() {
		cancel()
		cw.Close()
		cr.Close()
		<-done
	})
	send := func(tb testing.TB, b []byte) {
		if _, err := cw.Write(append(b, '\n')); err != nil {
			tb.Fatalf("write: %v", err)
		}
	}
	next := 1000
	// answered sends tools/list and waits for its answer, skipping the
	// answers to whatever came before.
	answered := func(tb testing.TB) {
		next++
		id := next
		send(tb, fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, id))
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					tb.Fatal("the server ended the session")
				}
				var m struct {
					ID json.RawMessage `json:"id"`
				}
				if json.Unmarshal(l, &m) == nil && bytes.Equal(m.ID, fmt.Appendf(nil, "%d", id)) {
					return
				}
			case <-deadline:
				tb.Fatalf("no answer to tools/list %d", id)
			}
		}
	}
	send(f, []byte(initializeBody))
	send(f, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
	answered(f)
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"peers","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"artifact_read","arguments":{"cid":"not-a-cid","length":99999999999}}}`,
		`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"no_such_tool"}}`,
		`{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}`,
		`{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}`,
		`[{"jsonrpc":"2.0","id":7,"method":"tools/list"}]`,
		`{"jsonrpc":"2.0","id":8,"method":`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}`,
		"\x00\xff\n\n{}",
		`{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}`,
		`{"jsonrpc":"2.0","id":99,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`,
		`{"jsonrpc":"2.0","id":98,"result":{}}`,
		`{"jsonrpc":"2.0","id":97,"method":"logging/setLevel","params":{"level":"debug"}}`,
		`{"jsonrpc":"2.0","id":96,"method":"tools/call","params":{"name":"list_tasks","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":95,"method":"tools/call","params":{"name":"task_logs","arguments":{"task":"x","follow":true}}}`,
		`{"jsonrpc":"2.0","id":94,"method":"tools/call","params":{"name":"list_peers","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":93,"method":"resources/list"}`,
		`{"jsonrpc":"2.0","id":92,"method":"prompts/list"}`,
		`{"jsonrpc":"2.0","id":91,"method":"completion/complete","params":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		send(t, in)
		answered(t)
	})
}
