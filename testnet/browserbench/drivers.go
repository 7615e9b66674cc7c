package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
)

// driver runs the scenario's steps through one tool's MCP server. A run
// is start, navigate, snapshot, type, click, evaluate…, stop.
type driver interface {
	name() string
	// start starts the MCP server process, connects and (cortex-peer)
	// opens a session.
	start(ctx context.Context) error
	navigate(ctx context.Context, url string) error
	// snapshot returns the text the tool gives the model, and what it
	// says of truncation ("" if it does not say).
	snapshot(ctx context.Context) (text string, truncated string, err error)
	typeText(ctx context.Context, e element, text string) error
	// click returns the bytes of text the click's result carries.
	click(ctx context.Context, e element) (int, error)
	// evaluate returns the JSON value of expr, as the tool prints it.
	evaluate(ctx context.Context, expr string) (string, error)
	stop(ctx context.Context) error
}

// playwright drives @playwright/mcp: one server process, and with it one
// Chromium, per run.
type playwright struct {
	node, cli, chromium string
	extraArgs           []string
	// dir is the server's working directory, its workspace root, where it
	// writes the page snapshot of each action and the console logs.
	dir string
	srv *benchkit.MCPServer
	// fileSnapshots: an action's result links to the page's snapshot in a
	// file instead of carrying it.
	fileSnapshots bool
}

func (p *playwright) name() string { return "playwright-mcp" }

func (p *playwright) args() []string {
	return append([]string{p.cli, "--headless", "--isolated", "--executable-path", p.chromium}, p.extraArgs...)
}

func (p *playwright) start(ctx context.Context) error {
	cmd := exec.Command(p.node, p.args()...)
	cmd.Dir = p.dir
	srv, err := benchkit.StartMCP(ctx, "browserbench", callTimeout, cmd)
	if err != nil {
		return err
	}
	p.srv = srv
	return nil
}

// listTools prints the server's tools with their input schemas: what to
// check when the pinned version changes.
func (p *playwright) listTools(ctx context.Context) error {
	if err := p.start(ctx); err != nil {
		return err
	}
	defer p.stop(ctx)
	tools, err := p.srv.Tools(ctx)
	if err != nil {
		return err
	}
	for _, t := range tools {
		schema, _ := json.Marshal(t.InputSchema)
		fmt.Printf("%s %s\n", t.Name, schema)
	}
	return nil
}

func (p *playwright) navigate(ctx context.Context, url string) error {
	_, _, err := p.srv.Call(ctx, "browser_navigate", map[string]any{"url": url})
	return err
}

func (p *playwright) snapshot(ctx context.Context) (string, string, error) {
	_, text, err := p.srv.Call(ctx, "browser_snapshot", map[string]any{})
	return text, "", err
}

func (p *playwright) typeText(ctx context.Context, e element, text string) error {
	_, _, err := p.srv.Call(ctx, "browser_type", map[string]any{"element": e.role + " " + e.name, "target": p.target(e), "text": text})
	return err
}

func (p *playwright) click(ctx context.Context, e element) (int, error) {
	_, text, err := p.srv.Call(ctx, "browser_click", map[string]any{"element": e.role + " " + e.name, "target": p.target(e)})
	p.fileSnapshots = p.fileSnapshots || strings.Contains(text, "- [Snapshot](")
	return len(text), err
}

// target is a ref, or else a selector: playwright-mcp takes either.
func (p *playwright) target(e element) string {
	if e.ref != "" {
		return e.ref
	}
	return e.selector
}

func (p *playwright) evaluate(ctx context.Context, expr string) (string, error) {
	_, text, err := p.srv.Call(ctx, "browser_evaluate", map[string]any{"function": "() => " + expr})
	if err != nil {
		return "", err
	}
	// The value follows a "### Result" heading, before the next heading.
	_, v, ok := strings.Cut(text, "### Result\n")
	if !ok {
		return "", fmt.Errorf("browser_evaluate: no result in %q", benchkit.Clip(text, 300))
	}
	v, _, _ = strings.Cut(v, "\n###")
	return strings.TrimSpace(v), nil
}

func (p *playwright) stop(context.Context) error {
	if p.srv == nil {
		return nil
	}
	err := p.srv.Close()
	p.srv = nil
	return err
}

// cortex drives `cortex-peer mcp` against a running peer: one MCP server
// process per run, as a model's host starts one, and one session on the
// peer's Chromium, which outlives both.
type cortex struct {
	bin, data string
	srv       *benchkit.MCPServer
	session   string
	// opened is how long the last browser_open took.
	opened time.Duration
}

func (c *cortex) name() string { return "cortex-peer" }

func (c *cortex) start(ctx context.Context) error {
	srv, err := benchkit.StartMCP(ctx, "browserbench", callTimeout, exec.Command(c.bin, "mcp", "--data", c.data))
	if err != nil {
		return err
	}
	c.srv = srv
	c.session, c.opened, err = c.open(ctx)
	return err
}

// open opens a session and says how long it took.
func (c *cortex) open(ctx context.Context) (string, time.Duration, error) {
	t := time.Now()
	res, _, err := c.srv.Call(ctx, "browser_open", map[string]any{})
	d := time.Since(t)
	if err != nil {
		return "", d, err
	}
	var out struct {
		Session string `json:"session"`
	}
	if err := benchkit.Structured(res, &out); err != nil || out.Session == "" {
		return "", d, fmt.Errorf("browser_open: no session in %v (%v)", res.StructuredContent, err)
	}
	return out.Session, d, nil
}

func (c *cortex) close(ctx context.Context, session string) error {
	_, _, err := c.srv.Call(ctx, "browser_close", map[string]any{"session": session})
	return err
}

func (c *cortex) navigate(ctx context.Context, url string) error {
	res, _, err := c.srv.Call(ctx, "browser_navigate", map[string]any{"session": c.session, "url": url})
	if err != nil {
		return err
	}
	var out struct {
		Loaded bool `json:"loaded"`
	}
	if err := benchkit.Structured(res, &out); err != nil || !out.Loaded {
		return fmt.Errorf("browser_navigate: page not loaded: %v (%v)", res.StructuredContent, err)
	}
	return nil
}

func (c *cortex) snapshot(ctx context.Context) (string, string, error) {
	res, text, err := c.srv.Call(ctx, "browser_snapshot", map[string]any{"session": c.session})
	if err != nil {
		return "", "", err
	}
	var out struct {
		Truncated bool `json:"truncated"`
	}
	trunc := "?"
	if benchkit.Structured(res, &out) == nil {
		trunc = fmt.Sprint(out.Truncated)
	}
	return text, trunc, nil
}

func (c *cortex) typeText(ctx context.Context, e element, text string) error {
	args := c.target(e)
	args["text"] = text
	_, _, err := c.srv.Call(ctx, "browser_type", args)
	return err
}

func (c *cortex) click(ctx context.Context, e element) (int, error) {
	_, text, err := c.srv.Call(ctx, "browser_click", c.target(e))
	return len(text), err
}

// target is the session and the element's ref, or else its selector.
func (c *cortex) target(e element) map[string]any {
	if e.ref != "" {
		return map[string]any{"session": c.session, "ref": e.ref}
	}
	return map[string]any{"session": c.session, "selector": e.selector}
}

func (c *cortex) evaluate(ctx context.Context, expr string) (string, error) {
	_, text, err := c.srv.Call(ctx, "browser_evaluate", map[string]any{"session": c.session, "expression": expr})
	return strings.TrimSpace(text), err
}

func (c *cortex) stop(ctx context.Context) error {
	if c.srv == nil {
		return nil
	}
	var err error
	if c.session != "" {
		err = c.close(ctx, c.session)
		c.session = ""
	}
	if cerr := c.srv.Close(); err == nil {
		err = cerr
	}
	c.srv = nil
	return err
}
