// Package benchkit is what the side-by-side benchmarks (browserbench,
// lspbench) share: an MCP server process driven over stdio with the go-sdk
// client, and the /proc readings their figures come with.
package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// MCPServer is an MCP server process driven over stdio.
type MCPServer struct {
	cmd         *exec.Cmd
	cs          *mcp.ClientSession
	callTimeout time.Duration
}

// StartMCP starts cmd and connects to it as the MCP client named client;
// each tool call is bounded by callTimeout. The server gets SIGTERM if the
// benchmark dies first.
func StartMCP(ctx context.Context, client string, callTimeout time.Duration, cmd *exec.Cmd) (*MCPServer, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	c := mcp.NewClient(&mcp.Implementation{Name: client, Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cmd.Path, err)
	}
	return &MCPServer{cmd: cmd, cs: cs, callTimeout: callTimeout}, nil
}

// PID is the server process's pid.
func (s *MCPServer) PID() int { return s.cmd.Process.Pid }

// Close ends the session; the transport closes the server's stdin and
// waits for it to exit (signalling it after a grace period).
func (s *MCPServer) Close() error { return s.cs.Close() }

// Call calls a tool and returns its result and the text of its text
// contents; a result marked as an error is an error.
func (s *MCPServer) Call(ctx context.Context, name string, args map[string]any) (*mcp.CallToolResult, string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout)
	defer cancel()
	res, err := s.cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	text := ResultText(res)
	if res.IsError {
		return res, text, fmt.Errorf("%s: %s", name, Clip(text, 500))
	}
	return res, text, nil
}

// Ping asks the server for an answer that does no work: the cost of the
// way in.
func (s *MCPServer) Ping(ctx context.Context) error { return s.cs.Ping(ctx, nil) }

// Tools lists the server's tools.
func (s *MCPServer) Tools(ctx context.Context) ([]*mcp.Tool, error) {
	var out []*mcp.Tool
	for t, err := range s.cs.Tools(ctx, nil) {
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// ResultText is the text of a result's text contents.
func ResultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

// Structured decodes a result's structured content into v.
func Structured(res *mcp.CallToolResult, v any) error {
	if res.StructuredContent == nil {
		return errors.New("no structured content")
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Clip cuts s to n bytes, marking the cut.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Descendants lists the live processes below pid (not pid itself).
func Descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:])) // state ppid ...
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// LoadAvg is the machine's load over 1, 5 and 15 minutes, and its CPUs:
// the figures of a loaded machine are read with it.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ") + " on " + strconv.Itoa(runtime.NumCPU()) + " CPUs"
}
