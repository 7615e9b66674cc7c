package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/bridges/procs"
	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
)

const (
	// readyTimeout bounds the wait for a server to answer its first
	// ready definition (a cold start, or one after a kill).
	readyTimeout = 5 * time.Minute
	// diagnosticTimeout bounds the wait for an edit to show.
	diagnosticTimeout = 30 * time.Second
	// diagnosticsQuietFor is how long the reference gopls must publish no
	// diagnostics before its queries are timed: more than gopls's default
	// diagnosticsDelay (1 s).
	diagnosticsQuietFor = 2 * time.Second
	// killTimeout bounds the wait for a killed gopls to be gone.
	killTimeout = 10 * time.Second
)

// mlsDriver drives mcp-language-server, which runs its own gopls on the
// module.
type mlsDriver struct {
	bin, gopls, dir string
	srv             *benchkit.MCPServer
	last            string // the last definition's answer
}

func (m *mlsDriver) start(ctx context.Context) error {
	cmd := exec.Command(m.bin, "--workspace", m.dir, "--lsp", m.gopls)
	cmd.Dir = m.dir
	srv, err := benchkit.StartMCP(ctx, "lspbench", callTimeout, cmd)
	if err != nil {
		return err
	}
	m.srv = srv
	return nil
}

func (m *mlsDriver) stop() {
	if m.srv != nil {
		_ = m.srv.Close()
		m.srv = nil
	}
}

// definition asks for name's definition and says whether the answer
// holds the file def (relative to the module).
func (m *mlsDriver) definition(ctx context.Context, name, def string) (bool, error) {
	_, text, err := m.srv.Call(ctx, "definition", map[string]any{"symbolName": name})
	if err != nil {
		return false, err
	}
	m.last = text
	return strings.Contains(text, "File: "+filepath.Join(m.dir, def)), nil
}

func (m *mlsDriver) hover(ctx context.Context, p position) error {
	_, _, err := m.srv.Call(ctx, "hover", map[string]any{"filePath": filepath.Join(m.dir, p.file), "line": p.line, "column": p.col})
	return err
}

// measure times the cold start and the warm queries. Its definition tool
// takes a symbol name, not a position: each position's function by name
// (pkg.Func, or Func when gopls does not match the qualified one).
func (m *mlsDriver) measure(ctx context.Context, pos []position, rounds int, s samples, agree map[string]int) (string, error) {
	names := map[position]string{}
	t0 := time.Now()
	if err := m.start(ctx); err != nil {
		return "", err
	}
	deadline := t0.Add(readyTimeout)
	tries := 0
	for {
		ok, err := m.definition(ctx, pos[0].name, pos[0].def)
		if err != nil {
			return "", err
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("definition of %s: not found within %s", pos[0].name, readyTimeout)
		}
		if tries++; tries%200 == 0 {
			logf("%s: %d definitions of %s in %s, the last answered %q", tMLS, tries, pos[0].name, time.Since(t0).Round(time.Second), benchkit.Clip(m.last, 300))
		}
		time.Sleep(pollInterval) // "not found" answers at once: do not spin
	}
	s.add(mCold, ms(time.Since(t0)))
	qualified := 0
	for _, p := range pos {
		for _, name := range []string{p.symbol, p.name} {
			if ok, err := m.definition(ctx, name, p.def); err != nil {
				return "", err
			} else if ok {
				names[p] = name
				if name == p.symbol {
					qualified++
				}
				break
			}
		}
		if names[p] == "" {
			return "", fmt.Errorf("definition of %s (%s): not found", p.symbol, p)
		}
		if err := m.hover(ctx, p); err != nil {
			return "", err
		}
	}
	for range rounds {
		for _, p := range pos {
			var ok bool
			t, err := timed(func() (err error) { ok, err = m.definition(ctx, names[p], p.def); return err })
			if err != nil {
				return "", err
			}
			s.add(mDefSymbol, t)
			if ok {
				agree[tMLS]++
			}
			t, err = timed(func() error { return m.hover(ctx, p) })
			if err != nil {
				return "", err
			}
			s.add(mHover, t)
		}
	}
	logf("%s: start to first definition %.0f ms, definition %.1f ms, hover %.1f ms", tMLS, median(s[mCold]), median(s[mDefSymbol]), median(s[mHover]))
	return fmt.Sprintf("mcp-language-server %s, run as: mcp-language-server --workspace DIR --lsp %s; its definition takes a symbol name (found as pkg.Func for %d of %d positions, as Func for the rest) and returns the declaration's source", mlsVersion, m.gopls, qualified, len(pos)), nil
}

// mlsVersion is the version make bench-lsp builds.
const mlsVersion = "v0.1.1"

// cortex drives `cortex-peer mcp` against a running peer.
type cortex struct {
	bin, data string
	peerPid   int
	ws        string
	srv       *benchkit.MCPServer
	shared    sharing
}

// sharing is what the peer showed while several sessions used it at once.
type sharing struct {
	sessions, servers, clients, gopls int
}

func (c *cortex) connect(ctx context.Context) (*benchkit.MCPServer, error) {
	return benchkit.StartMCP(ctx, "lspbench", callTimeout, exec.Command(c.bin, "mcp", "--data", c.data))
}

func (c *cortex) stop() {
	if c.srv != nil {
		_ = c.srv.Close()
		c.srv = nil
	}
}

type cxLocations struct {
	State     string `json:"state"`
	Locations []struct {
		File         string `json:"file"`
		Line, Column int
	} `json:"locations"`
}

// definition asks srv for a definition, by position or by symbol, and
// returns the answer's state and first location.
func (c *cortex) definition(ctx context.Context, srv *benchkit.MCPServer, p position, bySymbol bool) (state, loc string, err error) {
	args := map[string]any{"workspace": c.ws, "file": p.file, "line": p.line, "column": p.col}
	if bySymbol {
		args = map[string]any{"workspace": c.ws, "symbol": p.symbol}
	}
	res, _, err := srv.Call(ctx, "lsp_definition", args)
	if err != nil {
		return "", "", err
	}
	var out cxLocations
	if err := benchkit.Structured(res, &out); err != nil {
		return "", "", fmt.Errorf("lsp_definition: %w", err)
	}
	if len(out.Locations) > 0 {
		l := out.Locations[0]
		loc = fmt.Sprintf("%s:%d:%d", l.File, l.Line, l.Column)
	}
	return out.State, loc, nil
}

// untilReady asks for p's definition until an answer is ready with a
// location; it returns the calls it made and the first error seen.
func (c *cortex) untilReady(ctx context.Context, p position) (calls int, firstErr error, err error) {
	deadline := time.Now().Add(readyTimeout)
	for {
		calls++
		state, loc, err := c.definition(ctx, c.srv, p, false)
		if err == nil && state == "ready" && loc != "" {
			return calls, firstErr, nil
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if time.Now().After(deadline) {
			return calls, firstErr, fmt.Errorf("definition at %s: not ready within %s (state %q, %v)", p, readyTimeout, state, err)
		}
		if err != nil {
			time.Sleep(pollInterval) // an error answers at once: do not spin
		}
	}
}

// pollInterval paces the retries after an error.
const pollInterval = 50 * time.Millisecond

func (c *cortex) measure(ctx context.Context, o options, pos []position, want map[position]string, s samples, agree map[string]int) ([]string, error) {
	var notes []string
	var err error
	t0 := time.Now()
	if c.srv, err = c.connect(ctx); err != nil {
		return nil, err
	}
	calls, firstErr, err := c.untilReady(ctx, pos[0])
	if err != nil {
		return nil, err
	}
	s.add(mCold, ms(time.Since(t0)))
	notes = append(notes, fmt.Sprintf("cortex-peer cold: %d lsp_definition calls until a ready answer (first error: %v); the peer's gopls cache, GOCACHE and module cache were empty", calls, firstErr))

	// Each position asked once before the timed rounds, as of the others.
	for _, p := range pos {
		_, loc, err := c.definition(ctx, c.srv, p, false)
		if err != nil {
			return nil, err
		}
		if loc != want[p] {
			logf("%s: definition at %s: %s, gopls CLI says %s", tCX, p, loc, want[p])
		}
		if _, _, err := c.srv.Call(ctx, "lsp_hover", map[string]any{"workspace": c.ws, "file": p.file, "line": p.line, "column": p.col}); err != nil {
			return nil, err
		}
	}
	// As of the reference: the server finished what the first asks
	// started (the module's type-check after a cold start) before the
	// timed rounds.
	settleWithin(time.Minute)
	// The first ask by name at this root: the peer looks the name up
	// (workspace/symbol), then keeps where it found it until the tree
	// moves, so the rounds below find it kept.
	for _, p := range pos {
		t, err := timed(func() error { _, _, err := c.definition(ctx, c.srv, p, true); return err })
		if err != nil {
			return nil, fmt.Errorf("by symbol %s: %w", p.symbol, err)
		}
		s.add(mDefSymbolFirst, t)
	}
	warming := 0
	for range o.rounds {
		for _, p := range pos {
			var state, loc string
			t, err := timed(func() (err error) { state, loc, err = c.definition(ctx, c.srv, p, false); return err })
			if err != nil {
				return nil, err
			}
			s.add(mDef, t)
			if state != "ready" {
				warming++
			}
			if loc == want[p] {
				agree[tCX]++
			}
			if t, err = timed(func() (err error) { state, _, err = c.definition(ctx, c.srv, p, true); return err }); err != nil {
				return nil, fmt.Errorf("by symbol %s: %w", p.symbol, err)
			}
			s.add(mDefSymbol, t)
			t, err = timed(func() error {
				_, _, err := c.srv.Call(ctx, "lsp_hover", map[string]any{"workspace": c.ws, "file": p.file, "line": p.line, "column": p.col})
				return err
			})
			if err != nil {
				return nil, err
			}
			s.add(mHover, t)
			// What the way in costs without the workspace's import or
			// gopls: an MCP ping (stdio alone), and a call of the peer's
			// API (list_tasks, none to list).
			if t, err = timed(func() error { return c.srv.Ping(ctx) }); err != nil {
				return nil, err
			}
			s.add(mPing, t)
			if t, err = timed(func() error { _, _, err := c.srv.Call(ctx, "list_tasks", map[string]any{}); return err }); err != nil {
				return nil, err
			}
			s.add(mAPI, t)
		}
	}
	if warming > 0 {
		notes = append(notes, fmt.Sprintf("cortex-peer: %d warm definitions answered warming", warming))
	}
	logf("%s: cold %.0f ms, definition %.1f ms, by symbol %.1f ms (first ask %.1f ms), hover %.1f ms", tCX, median(s[mCold]), median(s[mDef]), median(s[mDefSymbol]), median(s[mDefSymbolFirst]), median(s[mHover]))

	settle()
	if err := c.edits(ctx, o.edits, pos[0].def, s); err != nil {
		return nil, fmt.Errorf("edit to diagnostic: %w", err)
	}
	settle()
	if err := c.share(ctx, o.clients, pos, s); err != nil {
		return nil, fmt.Errorf("%d sessions: %w", o.clients, err)
	}
	settle()
	note, err := c.restart(ctx, pos[0], s)
	if err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	return append(notes, note), nil
}

type cxDiagnostics struct {
	Diagnostics []struct {
		File     string `json:"file"`
		Line     int    `json:"line"`
		Severity string `json:"severity"`
		Message  string `json:"message"`
	} `json:"diagnostics"`
}

// edits writes a type error at the end of file, times until
// lsp_diagnostics shows it, takes it out and waits until it is gone.
func (c *cortex) edits(ctx context.Context, n int, file string, s samples) error {
	path := filepath.Join(c.ws, file)
	orig, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer os.WriteFile(path, orig, 0o644)
	errLine := strings.Count(string(orig), "\n") + 2
	if !strings.HasSuffix(string(orig), "\n") {
		errLine++
	}
	shows := func() (bool, error) {
		res, _, err := c.srv.Call(ctx, "lsp_diagnostics", map[string]any{"workspace": c.ws, "file": file})
		if err != nil {
			return false, err
		}
		var out cxDiagnostics
		if err := benchkit.Structured(res, &out); err != nil {
			return false, err
		}
		for _, d := range out.Diagnostics {
			if d.File == file && d.Line == errLine && d.Severity == "error" {
				return true, nil
			}
		}
		return false, nil
	}
	until := func(want bool) error {
		deadline := time.Now().Add(diagnosticTimeout)
		for {
			got, err := shows()
			if err != nil {
				return err
			}
			if got == want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s:%d: the error shown %v after %s, want %v", file, errLine, got, diagnosticTimeout, want)
			}
		}
	}
	for i := range n {
		edited := strings.TrimSuffix(string(orig), "\n") + "\n\nvar _ int = \"lspbench edit " + fmt.Sprint(i) + "\"\n"
		t0 := time.Now()
		if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
			return err
		}
		if err := until(true); err != nil {
			return err
		}
		s.add(mEdit, ms(time.Since(t0)))
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			return err
		}
		if err := until(false); err != nil {
			return err
		}
	}
	logf("%s: edit to diagnostic %.0f ms (median of %d)", tCX, median(s[mEdit]), n)
	return nil
}

type cxServers struct {
	Servers []struct {
		Workspace string `json:"workspace"`
		PID       int    `json:"pid"`
		State     string `json:"state"`
		Clients   int    `json:"clients"`
	} `json:"servers"`
}

func (c *cortex) servers(ctx context.Context, srv *benchkit.MCPServer) (cxServers, error) {
	var out cxServers
	res, _, err := srv.Call(ctx, "lsp_servers", map[string]any{})
	if err == nil {
		err = benchkit.Structured(res, &out)
	}
	return out, err
}

// share opens n sessions in all (this one and n-1 more), has each ask a
// definition at the same time, and counts the servers and the gopls
// processes of the peer meanwhile.
func (c *cortex) share(ctx context.Context, n int, pos []position, s samples) error {
	sessions := []*benchkit.MCPServer{c.srv}
	defer func() {
		for _, srv := range sessions[1:] {
			_ = srv.Close()
		}
	}()
	for range n - 1 {
		srv, err := c.connect(ctx)
		if err != nil {
			return err
		}
		sessions = append(sessions, srv)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	times := make([]float64, n)
	for i, srv := range sessions {
		wg.Go(func() {
			p := pos[i%len(pos)]
			times[i], errs[i] = timed(func() error {
				_, loc, err := c.definition(ctx, srv, p, false)
				if err == nil && loc == "" {
					err = fmt.Errorf("definition at %s: no location", p)
				}
				return err
			})
		})
	}
	// Count while the sessions are open.
	gopls := len(goplsBelow(c.peerPid))
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	for _, t := range times {
		s.add(mShared, t)
	}
	list, err := c.servers(ctx, sessions[n-1])
	if err != nil {
		return err
	}
	c.shared = sharing{sessions: n, gopls: max(gopls, len(goplsBelow(c.peerPid)))}
	for _, x := range list.Servers {
		if x.Workspace == c.ws {
			c.shared.servers++
			c.shared.clients = max(c.shared.clients, x.Clients)
		}
	}
	logf("%s: %d sessions: %d servers for the workspace, %d gopls processes below the peer", tCX, n, c.shared.servers, c.shared.gopls)
	return nil
}

// restart kills the peer's gopls with SIGKILL and times the next ready
// definition, from the moment the process is gone.
func (c *cortex) restart(ctx context.Context, p position, s samples) (string, error) {
	list, err := c.servers(ctx, c.srv)
	if err != nil {
		return "", err
	}
	pid := 0
	for _, x := range list.Servers {
		if x.Workspace == c.ws {
			pid = x.PID
		}
	}
	if pid <= 0 {
		return "", fmt.Errorf("lsp_servers: no server for %s in %+v", c.ws, list)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return "", fmt.Errorf("kill gopls %d: %w", pid, err)
	}
	deadline := time.Now().Add(killTimeout)
	for procs.Alive(pid) {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("gopls %d still alive %s after SIGKILL", pid, killTimeout)
		}
		time.Sleep(pollInterval)
	}
	t0 := time.Now()
	calls, firstErr, err := c.untilReady(ctx, p)
	if err != nil {
		return "", err
	}
	s.add(mRestart, ms(time.Since(t0)))
	after, err := c.servers(ctx, c.srv)
	if err != nil {
		return "", err
	}
	newPid := 0
	for _, x := range after.Servers {
		if x.Workspace == c.ws {
			newPid = x.PID
		}
	}
	logf("%s: gopls %d killed; ready again in %.0f ms (gopls %d), %d calls", tCX, pid, median(s[mRestart]), newPid, calls)
	return fmt.Sprintf("cortex-peer restart: gopls pid %d killed (SIGKILL), pid %d answered ready after %d lsp_definition calls (first error: %v)", pid, newPid, calls, firstErr), nil
}
