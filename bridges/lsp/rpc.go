package lsp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"go.lsp.dev/jsonrpc2"
)

// rpc is a JSON-RPC 2.0 connection to a language server over its stdio,
// with LSP's Content-Length framing. It is the only user of
// go.lsp.dev/jsonrpc2: payloads are this package's own types, marshalled
// with encoding/json.
type rpc struct {
	conn    jsonrpc2.Conn
	pending atomic.Int32 // calls waiting for their answer
}

// inbound handles what the server sends on its own: notifications (run on
// the connection's read goroutine, so they must not block) and requests,
// answered with a result or an error.
type inbound interface {
	notification(method string, params json.RawMessage)
	request(method string, params json.RawMessage) (any, error)
}

// pipes joins a process's stdout and stdin into one stream.
type pipes struct {
	io.Reader
	io.WriteCloser
	rc io.Closer
}

func (p pipes) Close() error { return errors.Join(p.WriteCloser.Close(), p.rc.Close()) }

func newRPC(stdout io.ReadCloser, stdin io.WriteCloser, in inbound) *rpc {
	c := jsonrpc2.NewConn(jsonrpc2.NewStream(pipes{Reader: stdout, WriteCloser: stdin, rc: stdout}))
	c.Go(context.Background(), func(ctx context.Context, req *jsonrpc2.Request) (any, error) {
		params := json.RawMessage(append([]byte(nil), req.Params()...))
		if !req.IsCall() {
			in.notification(req.Method(), params)
			return nil, nil
		}
		res, err := in.request(req.Method(), params)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(res)
		if err != nil {
			return nil, err
		}
		return json.RawMessage(b), nil
	})
	return &rpc{conn: c}
}

// errMethodNotFound answers a request the client does not handle.
var errMethodNotFound = jsonrpc2.ErrMethodNotFound

// call sends a request and decodes its result into result (nil: discard).
// A call whose ctx ends is cancelled on the server too.
func (r *rpc) call(ctx context.Context, method string, params, result any) error {
	b, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	var raw json.RawMessage
	r.pending.Add(1)
	id, err := r.conn.Call(ctx, method, json.RawMessage(b), &raw)
	r.pending.Add(-1)
	if err != nil {
		if ctx.Err() != nil && id.IsValid() {
			if n, ok := id.Number(); ok {
				_ = r.conn.Notify(context.Background(), "$/cancelRequest", map[string]any{"id": n})
			}
		}
		var werr *jsonrpc2.Error
		if errors.As(err, &werr) {
			return &serverError{method: method, code: int(werr.Code), msg: werr.Message}
		}
		return fmt.Errorf("%s: %w", method, err)
	}
	if result == nil || len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, result); err != nil {
		return fmt.Errorf("%s: decode the answer: %w", method, err)
	}
	return nil
}

// notify sends a notification.
func (r *rpc) notify(ctx context.Context, method string, params any) error {
	b, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	if err := r.conn.Notify(ctx, method, json.RawMessage(b)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
}

// close ends the connection; the process must be gone or going, or close
// waits for calls in flight.
func (r *rpc) close() { _ = r.conn.Close() }

// serverError is an error answer of the server.
type serverError struct {
	method string
	code   int
	msg    string
}

func (e *serverError) Error() string {
	return fmt.Sprintf("%s: the language server answered: %s (code %d)", e.method, e.msg, e.code)
}
