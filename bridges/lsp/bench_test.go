package lsp

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkWarm measures definition and hover on a warm gopls through the
// bridge beside the same request sent straight over the bridge's LSP
// connection to that gopls (what a client holding its own warm connection
// pays): the difference is the bridge's cost (reading the file, checking
// and converting positions).
//
//	go test -run '^$' -bench Warm -benchtime 200x ./bridges/lsp/
func BenchmarkWarm(b *testing.B) {
	m := newTestManager(b)
	ws := workspace(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := m.Server(ctx, ws)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Release()
	p := Position{File: "encoder.go", Line: 59, Col: 14}
	if _, st, err := s.Definition(ctx, p); err != nil || st.State != StateReady {
		b.Fatal(st, err)
	}
	// Quiet: the round of diagnostics the file's opening started is over.
	if _, _, err := s.Diagnostics(ctx, nil); err != nil {
		b.Fatal(err)
	}
	s.mu.Lock()
	pr := s.proc
	s.mu.Unlock()
	params := positionParams{TextDocument: textDocumentID{URI: fileURI(s.abs(p.File))}, Position: lspPosition{Line: p.Line - 1, Character: p.Col - 1}}
	b.Run("definition/bridge", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.Definition(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("definition/direct", func(b *testing.B) {
		for b.Loop() {
			var raw json.RawMessage
			if err := pr.rpc.call(ctx, "textDocument/definition", params, &raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hover/bridge", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.Hover(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hover/direct", func(b *testing.B) {
		for b.Loop() {
			var h *hoverResult
			if err := pr.rpc.call(ctx, "textDocument/hover", params, &h); err != nil {
				b.Fatal(err)
			}
		}
	})
}
