package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	// callTimeout bounds one tool call, a cold start's included.
	callTimeout = 3 * time.Minute
	// shutdownGrace is how long a server gets to end politely.
	shutdownGrace = 5 * time.Second
)

// server is an MCP server process driven over stdio with the go-sdk
// client.
type server struct {
	cmd *exec.Cmd
	cs  *mcp.ClientSession
}

// startServer starts cmd and connects to it as an MCP client. It gets
// SIGTERM if lspbench dies first.
func startServer(ctx context.Context, cmd *exec.Cmd) (*server, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	client := mcp.NewClient(&mcp.Implementation{Name: "lspbench", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cmd.Path, err)
	}
	return &server{cmd: cmd, cs: cs}, nil
}

// close ends the session; the transport closes the server's stdin and
// waits for it to exit.
func (s *server) close() error { return s.cs.Close() }

// call calls a tool and returns its result and the text of its text
// contents; a result marked as an error is an error.
func (s *server) call(ctx context.Context, name string, args map[string]any) (*mcp.CallToolResult, string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := s.cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	text := resultText(res)
	if res.IsError {
		return res, text, fmt.Errorf("%s: %s", name, clip(text, 500))
	}
	return res, text, nil
}

// tools lists the server's tools as "name {schema}" lines.
func (s *server) tools(ctx context.Context) ([]string, error) {
	var out []string
	for t, err := range s.cs.Tools(ctx, nil) {
		if err != nil {
			return nil, err
		}
		schema, _ := json.Marshal(t.InputSchema)
		out = append(out, t.Name+" "+string(schema))
	}
	return out, nil
}

func resultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

// structured decodes a result's structured content into v.
func structured(res *mcp.CallToolResult, v any) error {
	if res.StructuredContent == nil {
		return errors.New("no structured content")
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
