package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// callTimeout bounds one tool call, the cold start and navigation included.
const callTimeout = 2 * time.Minute

// server is an MCP server process driven over stdio.
type server struct {
	cmd *exec.Cmd
	cs  *mcp.ClientSession
}

// startServer starts cmd and connects to it as an MCP client.
// It gets SIGTERM if browserbench dies first.
func startServer(ctx context.Context, cmd *exec.Cmd) (*server, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	client := mcp.NewClient(&mcp.Implementation{Name: "browserbench", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cmd.Path, err)
	}
	return &server{cmd: cmd, cs: cs}, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// close ends the session; the transport closes the server's stdin and
// waits for it to exit (signalling it after a grace period).
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

// tools lists the server's tools.
func (s *server) tools(ctx context.Context) ([]*mcp.Tool, error) {
	var out []*mcp.Tool
	for t, err := range s.cs.Tools(ctx, nil) {
		if err != nil {
			return nil, err
		}
		out = append(out, t)
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

// refLine matches an element with a ref in either tool's snapshot text:
// `- button "Log in" [ref=e7]` (playwright-mcp, YAML) or
// `button "Log in" [ref=e7]` (cortex-peer), attributes between the name
// and the ref allowed.
var refLine = regexp.MustCompile(`(?m)^[\s-]*([a-z]+) "((?:[^"\\]|\\.)*)"[^\n]*?\[ref=([A-Za-z0-9_-]+)\]`)

// element is one element of a snapshot, or, when the snapshot gave it no
// ref, a CSS selector for it.
type element struct{ role, name, ref, selector string }

// refs lists the elements with a ref of a snapshot's text, by role and
// name ("button/Log in").
func refs(text string) map[string]element {
	m := map[string]element{}
	for _, g := range refLine.FindAllStringSubmatch(text, -1) {
		e := element{role: g[1], name: strings.ReplaceAll(g[2], `\"`, `"`), ref: g[3]}
		key := e.role + "/" + e.name
		if _, ok := m[key]; !ok {
			m[key] = e
		}
	}
	return m
}
