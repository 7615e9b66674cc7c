package mcpserver_test

import (
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// BenchmarkToolCall is what a tool call costs on the way in: MCP over
// stdio (in-process pipes) beside a ping, and a tool that makes one cheap
// API call (list_tasks, none to list).
//
//	go test -run '^$' -bench ToolCall -benchtime 300x ./node/mcpserver/
func BenchmarkToolCall(b *testing.B) {
	e := newEnv(b)
	cs := e.connect(b, "stdio", nil)
	ctx := testnet.Context(b, time.Minute)
	b.Run("ping", func(b *testing.B) {
		for b.Loop() {
			if err := cs.Ping(ctx, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("list_tasks", func(b *testing.B) {
		for b.Loop() {
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_tasks", Arguments: map[string]any{}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("status_api", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.api.Status(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
