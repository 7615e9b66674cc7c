package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
	"github.com/cortex-peer/cortex-peer/testnet/quiet"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// hasBrowserTools says whether the peer's MCP server has the browser tools.
func (c *cortex) hasBrowserTools(ctx context.Context) (bool, error) {
	srv, err := benchkit.StartMCP(ctx, "browserbench", callTimeout, exec.Command(c.bin, "mcp", "--data", c.data))
	if err != nil {
		return false, err
	}
	defer srv.Close()
	tools, err := srv.Tools(ctx)
	if err != nil {
		return false, fmt.Errorf("cortex-peer tools/list: %w", err)
	}
	return slices.ContainsFunc(tools, func(t *mcp.Tool) bool { return t.Name == "browser_open" }), nil
}

// idleFigures are the peer's figures with Chromium already running.
type idleFigures struct {
	opens         []float64 // ms of each browser_open
	before, after memory
	sessions      int
}

// Memory is read once it holds still: two reads memPoll apart within
// memStable of each other, or at memSettle.
const (
	memPoll   = 250 * time.Millisecond
	memStable = 0.01
	memSettle = 5 * time.Second
)

func stableMemory(pid int) memory {
	prev := chromiumMemory(pid)
	deadline := time.Now().Add(memSettle)
	for time.Now().Before(deadline) {
		time.Sleep(memPoll)
		m := chromiumMemory(pid)
		if m.procs == prev.procs && absDiff(m.rss, prev.rss) <= int64(memStable*float64(prev.rss)) {
			return m
		}
		prev = m
	}
	return prev
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// idleSessions opens n sessions that stay on about:blank, timing each
// open (Chromium already runs), and reads the Chromium memory of the peer
// before and after; then it closes them.
func (c *cortex) idleSessions(ctx context.Context, peerPid, n int) (_ *idleFigures, err error) {
	srv, err := benchkit.StartMCP(ctx, "browserbench", callTimeout, exec.Command(c.bin, "mcp", "--data", c.data))
	if err != nil {
		return nil, err
	}
	c.srv = srv
	defer func() {
		if cerr := srv.Close(); err == nil {
			err = cerr
		}
		c.srv = nil
	}()
	f := &idleFigures{sessions: n}
	f.before = stableMemory(peerPid)
	if f.before.procs == 0 {
		return nil, fmt.Errorf("no Chromium process below the peer (pid %d)", peerPid)
	}
	var ids []string
	defer func() {
		for _, id := range ids {
			if cerr := c.close(ctx, id); err == nil && cerr != nil {
				err = cerr
			}
		}
	}()
	for range n {
		id, d, err := c.open(ctx)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
		f.opens = append(f.opens, ms(d))
	}
	f.after = stableMemory(peerPid)
	return f, nil
}

// settle waits, up to settleMax, until the machine is quiet: under 10% of
// its CPU time busy over a quarter of a second, so that each run, ours
// and the baseline's, starts from a quiet machine (a shorter wait than
// wsbench's: the machine is shared and may never be quiet).
func settle() {
	const settleMax = 5 * time.Second
	if !quiet.Wait(settleMax) {
		fmt.Fprintf(os.Stderr, "  (the machine did not settle within %s)\n", settleMax)
	}
}
