package mcpserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxStdioLine bounds one inbound message on stdio, as the SDK's default.
const maxStdioLine = mcp.DefaultMaxLineLength

// StdioTransport is newline-delimited JSON-RPC on a reader and a writer
// (stdin and stdout for `cortex-peer mcp`). Unlike the SDK's StdioTransport,
// which ends the session on the first line it cannot decode, it answers a
// malformed line with a JSON-RPC error (parse error or invalid request) and
// reads on: one bad message from an agent must not cost it the session.
type StdioTransport struct {
	In  io.Reader
	Out io.Writer
}

// Connect starts the filter that sits between In and the SDK's connection.
// The filter's goroutine ends when In ends or the connection is closed.
func (t *StdioTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	pr, pw := io.Pipe()
	out := &lockedWriter{w: t.Out}
	go func() { pw.CloseWithError(filterLines(t.In, pw, out)) }()
	return (&mcp.IOTransport{Reader: pr, Writer: nopCloser{out}}).Connect(ctx)
}

// filterLines copies each decodable JSON-RPC line from in to good and answers
// every other line on reply. It returns at the end of in (nil) or when good
// is closed.
func filterLines(in io.Reader, good io.Writer, reply io.Writer) error {
	r := bufio.NewReaderSize(in, 64<<10)
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > maxStdioLine {
				if derr := discardLine(r); derr != nil {
					return nil
				}
				line = line[:0]
				if werr := writeError(reply, jsonrpc.ID{}, jsonrpc.CodeInvalidRequest, fmt.Sprintf("message over %d bytes", maxStdioLine)); werr != nil {
					return werr
				}
			}
			continue
		}
		if err != nil && len(line) == 0 {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		msg := bytes.TrimSpace(line)
		if len(msg) > 0 {
			if code, why, id := check(msg); code != 0 {
				if werr := writeError(reply, id, code, why); werr != nil {
					return werr
				}
			} else if _, werr := good.Write(append(msg, '\n')); werr != nil {
				return werr
			}
		}
		line = line[:0]
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// check reports why msg is not a JSON-RPC message the SDK can take, with the
// id to answer to when one can be read. A batch (array) is refused: MCP
// removed batches in 2025-06-18, and the SDK ends a session on one.
func check(msg []byte) (code int64, why string, id jsonrpc.ID) {
	if !json.Valid(msg) {
		return jsonrpc.CodeParseError, "parse error: the message is not valid JSON", id
	}
	if msg[0] == '[' {
		return jsonrpc.CodeInvalidRequest, "invalid request: JSON-RPC batches are not supported (MCP 2025-06-18 removed them): send one message at a time", id
	}
	if _, err := jsonrpc.DecodeMessage(msg); err != nil {
		var probe struct {
			ID any `json:"id"`
		}
		if json.Unmarshal(msg, &probe) == nil {
			id, _ = jsonrpc.MakeID(probe.ID)
		}
		return jsonrpc.CodeInvalidRequest, "invalid request: " + err.Error(), id
	}
	return 0, "", id
}

func discardLine(r *bufio.Reader) error {
	for {
		_, err := r.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}

func writeError(w io.Writer, id jsonrpc.ID, code int64, msg string) error {
	data, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: code, Message: msg}})
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// lockedWriter keeps the SDK's messages and the filter's error replies whole
// on one output: each writes a message in one Write call.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// nopCloser leaves the output open when the session closes: stdout belongs
// to the process.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
