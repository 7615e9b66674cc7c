package lsp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf16"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Edits the server proposes (rename, format) come back as new file
// contents; nothing is written.

type renameParams struct {
	positionParams
	NewName string `json:"newName"`
}

type formattingParams struct {
	TextDocument textDocumentID `json:"textDocument"`
	Options      struct {
		TabSize      int  `json:"tabSize"`
		InsertSpaces bool `json:"insertSpaces"`
	} `json:"options"`
}

type textEdit struct {
	Range   lspRange `json:"range"`
	NewText string   `json:"newText"`
}

// workspaceEdit is a rename's answer: edits by document, either form.
type workspaceEdit struct {
	Changes         map[string][]textEdit `json:"changes"`
	DocumentChanges []struct {
		Kind         string          `json:"kind"` // create, rename, delete: not supported
		TextDocument *textDocumentID `json:"textDocument"`
		Edits        []textEdit      `json:"edits"`
	} `json:"documentChanges"`
}

// symbolInformation is workspace/symbol's answer (and the flat form of
// textDocument/documentSymbol's).
type symbolInformation struct {
	Name          string      `json:"name"`
	Kind          int         `json:"kind"`
	ContainerName string      `json:"containerName"`
	Location      lspLocation `json:"location"`
}

// documentSymbol is textDocument/documentSymbol's hierarchical answer.
type documentSymbol struct {
	Name           string           `json:"name"`
	Kind           int              `json:"kind"`
	Range          lspRange         `json:"range"`
	SelectionRange lspRange         `json:"selectionRange"`
	Children       []documentSymbol `json:"children"`
	// Location is set instead when the answer is flat.
	Location      *lspLocation `json:"location"`
	ContainerName string       `json:"containerName"`
}

// symbolKinds names LSP's SymbolKind values.
var symbolKinds = [...]string{1: "file", "module", "namespace", "package", "class", "method", "property",
	"field", "constructor", "enum", "interface", "function", "variable", "constant", "string", "number",
	"boolean", "array", "object", "key", "null", "enum_member", "struct", "event", "operator", "type_parameter"}

func symbolKind(k int) string {
	if k > 0 && k < len(symbolKinds) {
		return symbolKinds[k]
	}
	return "unknown"
}

// offset is the byte offset of an LSP position in content.
func offset(content []byte, p lspPosition) (int, error) {
	off := 0
	for l := 0; l < p.Line; l++ {
		i := bytes.IndexByte(content[off:], '\n')
		if i < 0 {
			return 0, fmt.Errorf("lsp: the server's edit names line %d of a file of %d lines", p.Line+1, l+1)
		}
		off += i + 1
	}
	u := 0
	for i, r := range string(content[off:]) {
		if u >= p.Character || r == '\n' {
			return off + i, nil
		}
		u += utf16.RuneLen(r)
	}
	return len(content), nil
}

// applyEdits applies LSP text edits to content.
func applyEdits(content []byte, edits []textEdit) ([]byte, error) {
	type span struct {
		start, end int
		text       string
	}
	spans := make([]span, 0, len(edits))
	for _, e := range edits {
		s, err := offset(content, e.Range.Start)
		if err != nil {
			return nil, err
		}
		end, err := offset(content, e.Range.End)
		if err != nil {
			return nil, err
		}
		if end < s {
			return nil, errors.New("lsp: the server's edit ends before it starts")
		}
		spans = append(spans, span{s, end, e.NewText})
	}
	slices.SortStableFunc(spans, func(a, b span) int { return a.start - b.start })
	var out bytes.Buffer
	last := 0
	for _, s := range spans {
		if s.start < last {
			return nil, errors.New("lsp: the server's edits overlap")
		}
		out.Write(content[last:s.start])
		out.WriteString(s.text)
		last = s.end
	}
	out.Write(content[last:])
	return out.Bytes(), nil
}

// Rename renames the identifier at p to newName across the workspace and
// returns the new content of every file the rename touches (by path
// relative to the root), without writing them.
func (s *Server) Rename(ctx context.Context, p Position, newName string) (map[string][]byte, Stamp, error) {
	if newName == "" {
		return nil, Stamp{}, fmt.Errorf("lsp: rename to an empty name: %w", errdefs.ErrInvalid)
	}
	var out map[string][]byte
	st, err := s.call(ctx, func(pr *process) error {
		params, err := s.at(ctx, pr, p)
		if err != nil {
			return err
		}
		var we workspaceEdit
		if err := pr.rpc.call(ctx, "textDocument/rename", renameParams{positionParams: params, NewName: newName}, &we); err != nil {
			return err
		}
		byURI := map[string][]textEdit{}
		for uri, es := range we.Changes {
			byURI[uri] = append(byURI[uri], es...)
		}
		for _, dc := range we.DocumentChanges {
			if dc.Kind != "" || dc.TextDocument == nil {
				return fmt.Errorf("lsp: the rename would %s files, which the bridge does not propose: %w", cmp(dc.Kind, "change"), errdefs.ErrInvalid)
			}
			byURI[dc.TextDocument.URI] = append(byURI[dc.TextDocument.URI], dc.Edits...)
		}
		out, err = s.edited(byURI)
		return err
	})
	return out, st, err
}

func cmp(s, or string) string {
	if s == "" {
		return or
	}
	return s
}

// edited applies edits by URI to the files of the workspace.
func (s *Server) edited(byURI map[string][]textEdit) (map[string][]byte, error) {
	out := map[string][]byte{}
	for uri, es := range byURI {
		rel := relTo(s.Root, uriPath(uri))
		if rel == "" {
			return nil, fmt.Errorf("lsp: the edit touches %s, outside the workspace: %w", uri, errdefs.ErrInvalid)
		}
		content, err := readFile(s.Root, rel)
		if err != nil {
			return nil, err
		}
		if out[rel], err = applyEdits(content, es); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Format returns file formatted by the server, without writing it.
func (s *Server) Format(ctx context.Context, file string) ([]byte, Stamp, error) {
	var out []byte
	st, err := s.call(ctx, func(pr *process) error {
		content, err := readFile(s.Root, file)
		if err != nil {
			return err
		}
		if err := s.ensureOpen(ctx, pr, file, content); err != nil {
			return err
		}
		var fp formattingParams
		fp.TextDocument.URI = fileURI(s.abs(file))
		fp.Options.TabSize = 8
		var es []textEdit
		if err := pr.rpc.call(ctx, "textDocument/formatting", fp, &es); err != nil {
			return err
		}
		out, err = applyEdits(content, es)
		return err
	})
	return out, st, err
}

// Symbols finds symbols: in the whole workspace matching query (the
// server's fuzzy match), or, with file set, those of that file whose name
// contains query (every one for ""). A symbol's location is its name's.
func (s *Server) Symbols(ctx context.Context, query, file string) ([]Symbol, Stamp, error) {
	var out []Symbol
	st, err := s.call(ctx, func(pr *process) error {
		files := map[string][]byte{}
		if file == "" {
			var syms []symbolInformation
			if err := pr.rpc.call(ctx, "workspace/symbol", map[string]any{"query": query}, &syms); err != nil {
				return err
			}
			for _, sym := range syms {
				out = append(out, Symbol{Name: sym.Name, Kind: symbolKind(sym.Kind), Container: sym.ContainerName, Location: s.location(files, sym.Location)})
			}
			return nil
		}
		content, err := readFile(s.Root, file)
		if err != nil {
			return err
		}
		if err := s.ensureOpen(ctx, pr, file, content); err != nil {
			return err
		}
		var syms []documentSymbol
		if err := pr.rpc.call(ctx, "textDocument/documentSymbol", map[string]any{"textDocument": textDocumentID{URI: fileURI(s.abs(file))}}, &syms); err != nil {
			return err
		}
		files[file] = content
		uri := fileURI(s.abs(file))
		var walk func(container string, ds []documentSymbol)
		walk = func(container string, ds []documentSymbol) {
			for _, d := range ds {
				loc := lspLocation{URI: uri, Range: d.SelectionRange}
				if d.Location != nil {
					loc, container = *d.Location, d.ContainerName
				}
				if query == "" || strings.Contains(strings.ToLower(d.Name), strings.ToLower(query)) {
					out = append(out, Symbol{Name: d.Name, Kind: symbolKind(d.Kind), Container: container, Location: s.location(files, loc)})
				}
				walk(d.Name, d.Children)
			}
		}
		walk("", syms)
		return nil
	})
	return out, st, err
}

// Resolve finds the position of a symbol named as in Go source,
// qualified by its package ("multibase.Encoder.Encode", "multibase.Encode"):
// ErrNotFound when the workspace has none, ErrInvalid when several match.
func (s *Server) Resolve(ctx context.Context, symbol string) (Position, error) {
	if symbol == "" || strings.ContainsAny(symbol, " \t\n") {
		return Position{}, fmt.Errorf("lsp: symbol %q: want a name such as pkg.Type.Method: %w", symbol, errdefs.ErrInvalid)
	}
	syms, st, err := s.Symbols(ctx, symbol, "")
	if err != nil {
		return Position{}, err
	}
	if st.State != StateReady {
		return Position{}, fmt.Errorf("lsp: resolve %s: the server is still loading the workspace; try again: %w", symbol, errdefs.ErrUnavailable)
	}
	var found []Symbol
	for _, sym := range syms {
		if symbolMatches(sym, symbol) && !filepath.IsAbs(sym.Location.File) { // in the workspace
			found = append(found, sym)
		}
	}
	switch len(found) {
	case 0:
		return Position{}, fmt.Errorf("lsp: no symbol %s in the workspace %s: %w", symbol, s.Root, errdefs.ErrNotFound)
	case 1:
		l := found[0].Location
		return Position{File: l.File, Line: l.Line, Col: l.Col}, nil
	}
	where := make([]string, 0, len(found))
	for _, f := range found {
		where = append(where, fmt.Sprintf("%s:%d:%d", f.Location.File, f.Location.Line, f.Location.Col))
	}
	slices.Sort(where)
	return Position{}, fmt.Errorf("lsp: %d symbols are named %s (%s); qualify it: %w", len(found), symbol, strings.Join(where, ", "), errdefs.ErrInvalid)
}

// symbolMatches says whether a workspace symbol is the one named: its
// name, qualified by its container when the server gives one, is the name
// asked or ends with it after a dot.
func symbolMatches(sym Symbol, name string) bool {
	full := sym.Name
	if sym.Container != "" && !strings.HasPrefix(full, sym.Container+".") {
		full = sym.Container + "." + full
	}
	return full == name || strings.HasSuffix(full, "."+name) || strings.HasSuffix(full, "/"+name)
}
