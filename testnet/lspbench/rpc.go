package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
)

// goplsConn is the reference: a gopls this program starts with `gopls
// serve` and talks LSP to over its stdio, with no layer in between. A
// minimal JSON-RPC 2.0 client: requests and their responses, and a null
// answer to whatever the server asks of the client.
type goplsConn struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	dir string

	wmu sync.Mutex // one message at a time on stdin

	mu      sync.Mutex
	next    int
	pending map[int]chan rpcResponse
	done    chan struct{} // closed when the reader ends
	err     error
	// lastDiag is when the server last published diagnostics.
	lastDiag time.Time
}

type rpcResponse struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// startGopls starts `gopls serve` in dir and initializes it on dir.
func startGopls(ctx context.Context, gopls, dir string) (*goplsConn, error) {
	cmd := exec.Command(gopls, "serve")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", gopls, err)
	}
	c := &goplsConn{cmd: cmd, in: in, dir: dir, pending: map[int]chan rpcResponse{}, done: make(chan struct{})}
	go c.read(bufio.NewReader(out))
	root := fileURI(dir)
	init := map[string]any{
		"processId": os.Getpid(),
		"rootUri":   root,
		"capabilities": map[string]any{
			"textDocument": map[string]any{"hover": map[string]any{"contentFormat": []string{"markdown", "plaintext"}}},
			"workspace":    map[string]any{"workspaceFolders": true, "configuration": true},
		},
		"workspaceFolders": []map[string]any{{"uri": root, "name": filepath.Base(dir)}},
	}
	if _, err := c.call(ctx, "initialize", init); err != nil {
		c.close()
		return nil, fmt.Errorf("gopls initialize: %w", err)
	}
	if err := c.notify("initialized", map[string]any{}); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func fileURI(path string) string { return (&url.URL{Scheme: "file", Path: path}).String() }

func (c *goplsConn) write(msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = fmt.Fprintf(c.in, "Content-Length: %d\r\n\r\n%s", len(b), b)
	return err
}

func (c *goplsConn) notify(method string, params any) error {
	return c.write(map[string]any{"jsonrpc": "2.0", "method": method, "params": params})
}

// call sends a request and waits for its response.
func (c *goplsConn) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.next++
	id := c.next
	ch := make(chan rpcResponse, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.write(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, fmt.Errorf("%s: %s (%d)", method, r.Error.Message, r.Error.Code)
		}
		return r.Result, nil
	case <-c.done:
		return nil, fmt.Errorf("%s: gopls ended: %w", method, c.err)
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// read dispatches the server's messages until its stdout ends.
func (c *goplsConn) read(r *bufio.Reader) {
	err := c.readLoop(r)
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	close(c.done)
}

func (c *goplsConn) readLoop(r *bufio.Reader) error {
	for {
		n := -1
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" {
				break
			}
			if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
				if n, err = strconv.Atoi(v); err != nil {
					return fmt.Errorf("gopls: bad header %q", line)
				}
			}
		}
		if n < 0 {
			return errors.New("gopls: a message without Content-Length")
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			rpcResponse
		}
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("gopls: %w", err)
		}
		switch {
		case m.Method != "" && m.ID != nil: // a request to the client
			var result any
			if m.Method == "workspace/configuration" {
				var p struct {
					Items []json.RawMessage `json:"items"`
				}
				_ = json.Unmarshal(m.Params, &p)
				result = make([]any, len(p.Items))
			}
			if err := c.write(map[string]any{"jsonrpc": "2.0", "id": m.ID, "result": result}); err != nil {
				return err
			}
		case m.Method == "textDocument/publishDiagnostics":
			c.mu.Lock()
			c.lastDiag = time.Now()
			c.mu.Unlock()
		case m.Method != "": // a notification: progress, logs
		default:
			id, err := strconv.Atoi(string(m.ID))
			if err != nil {
				continue
			}
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch != nil {
				ch <- m.rpcResponse
			}
		}
	}
}

func (c *goplsConn) position(p position) map[string]any {
	return map[string]any{
		"textDocument": map[string]any{"uri": fileURI(filepath.Join(c.dir, p.file))},
		"position":     map[string]any{"line": p.line - 1, "character": p.col - 1},
	}
}

// diagnosticsQuiet waits until the server has published no diagnostics
// for quietFor (gopls diagnoses a second after a change, by default), or
// ctx ends: its diagnostics of the files just opened must not compete
// with the queries timed next.
func (c *goplsConn) diagnosticsQuiet(ctx context.Context, quietFor time.Duration) {
	for ctx.Err() == nil {
		c.mu.Lock()
		since := time.Since(c.lastDiag)
		c.mu.Unlock()
		if since >= quietFor {
			return
		}
		select {
		case <-time.After(quietFor - since):
		case <-ctx.Done():
		}
	}
}

// open opens file (relative to the module) on the server, with its
// content on disk.
func (c *goplsConn) open(file string) error {
	b, err := os.ReadFile(filepath.Join(c.dir, file))
	if err != nil {
		return err
	}
	return c.notify("textDocument/didOpen", map[string]any{"textDocument": map[string]any{
		"uri": fileURI(filepath.Join(c.dir, file)), "languageId": "go", "version": 1, "text": string(b)}})
}

// definition returns the first location of the definition at p, as
// file:line:col (1-based, relative to the module).
func (c *goplsConn) definition(ctx context.Context, p position) (string, error) {
	res, err := c.call(ctx, "textDocument/definition", c.position(p))
	if err != nil {
		return "", err
	}
	var locs []struct {
		URI   string `json:"uri"`
		Range struct {
			Start struct{ Line, Character int } `json:"start"`
		} `json:"range"`
	}
	if err := json.Unmarshal(res, &locs); err != nil || len(locs) == 0 {
		return "", fmt.Errorf("definition at %s: no location in %s", p, benchkit.Clip(string(res), 200))
	}
	u, err := url.Parse(locs[0].URI)
	if err != nil {
		return "", err
	}
	rel, _ := filepath.Rel(c.dir, u.Path)
	return fmt.Sprintf("%s:%d:%d", rel, locs[0].Range.Start.Line+1, locs[0].Range.Start.Character+1), nil
}

// hover returns the length of the hover's text at p.
func (c *goplsConn) hover(ctx context.Context, p position) (int, error) {
	res, err := c.call(ctx, "textDocument/hover", c.position(p))
	if err != nil {
		return 0, err
	}
	var h struct {
		Contents struct {
			Value string `json:"value"`
		} `json:"contents"`
	}
	if err := json.Unmarshal(res, &h); err != nil || h.Contents.Value == "" {
		return 0, fmt.Errorf("hover at %s: no text in %s", p, benchkit.Clip(string(res), 200))
	}
	return len(h.Contents.Value), nil
}

// close shuts gopls down politely, then for good.
func (c *goplsConn) close() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if _, err := c.call(ctx, "shutdown", nil); err == nil {
		_ = c.notify("exit", nil)
	}
	_ = c.in.Close()
	select {
	case <-c.done:
	case <-ctx.Done():
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}
