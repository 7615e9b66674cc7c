package lsp

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// maxFileBytes bounds a file the bridge reads to convert positions or
// apply edits.
const maxFileBytes = 32 << 20

// Position is a place in a file of the workspace: File relative to the
// root, Line and Col 1-based as editors show them (Col counts characters,
// that is Unicode code points).
type Position struct {
	File      string
	Line, Col int
}

// Location is a range in a file: File relative to the root, or absolute
// for a file outside it (the standard library, a module); 1-based lines and
// columns, the end exclusive. Outside the root, columns count UTF-16 units.
type Location struct {
	File                       string
	Line, Col, EndLine, EndCol int
}

// checkRel says whether name is a file path relative to the root that
// stays inside it (symlinks are checked when the file is read).
func checkRel(name string) error {
	if name == "" {
		return fmt.Errorf("lsp: no file given: %w", errdefs.ErrInvalid)
	}
	if filepath.IsAbs(name) || !filepath.IsLocal(name) {
		return fmt.Errorf("lsp: file %q: want a path relative to the workspace root, inside it: %w", name, errdefs.ErrInvalid)
	}
	return nil
}

// readFile reads a file of the workspace through os.Root, so that neither
// `..` nor a symlink leads out of it.
func readFile(root, name string) ([]byte, error) {
	if err := checkRel(name); err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("lsp: workspace %s: %w: %w", root, err, errdefs.ErrNotFound)
	}
	defer r.Close()
	f, err := r.Open(name)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("lsp: file %q: no such file in the workspace: %w", name, errdefs.ErrNotFound)
		case strings.Contains(err.Error(), "escapes"):
			return nil, fmt.Errorf("lsp: file %q leads outside the workspace: %w", name, errdefs.ErrInvalid)
		}
		return nil, fmt.Errorf("lsp: file %q: %w: %w", name, err, errdefs.ErrInvalid)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("lsp: file %q: %w", name, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("lsp: %q is not a regular file: %w", name, errdefs.ErrInvalid)
	}
	if info.Size() > maxFileBytes {
		return nil, fmt.Errorf("lsp: file %q has %d MiB, over the %d MiB the bridge reads: %w", name, info.Size()>>20, maxFileBytes>>20, errdefs.ErrInvalid)
	}
	b := make([]byte, info.Size())
	n, err := f.ReadAt(b, 0)
	if err != nil && n != len(b) {
		return nil, fmt.Errorf("lsp: read %q: %w", name, err)
	}
	return b, nil
}

// lines splits content at '\n'; a final newline ends the last line.
func lines(content []byte) [][]byte {
	ls := bytes.Split(content, []byte("\n"))
	if len(ls) > 1 && len(ls[len(ls)-1]) == 0 {
		ls = ls[:len(ls)-1]
	}
	return ls
}

// lineAt is the 0-based line i of content, without its '\n' (as lines
// splits it); false past the last line. It scans to the line, no further:
// a position is converted on every call, often in a large file.
func lineAt(content []byte, i int) ([]byte, bool) {
	if i < 0 {
		return nil, false
	}
	advanced := i > 0
	for ; i > 0; i-- {
		nl := bytes.IndexByte(content, '\n')
		if nl < 0 {
			return nil, false
		}
		content = content[nl+1:]
	}
	if len(content) == 0 && advanced {
		return nil, false // past a final newline: no line (an empty file has one)
	}
	if nl := bytes.IndexByte(content, '\n'); nl >= 0 {
		content = content[:nl]
	}
	return content, true
}

// toLSP converts a 1-based line and character column to LSP's 0-based line
// and UTF-16 column, checking that it lies in the file (a column just past
// the end of the line is allowed).
func toLSP(content []byte, p Position) (lspPosition, error) {
	line, ok := lineAt(content, p.Line-1)
	if !ok {
		return lspPosition{}, fmt.Errorf("lsp: %s:%d:%d: line %d is outside the file, which has %d lines: %w", p.File, p.Line, p.Col, p.Line, len(lines(content)), errdefs.ErrInvalid)
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	n := utf8.RuneCount(line)
	if p.Col < 1 || p.Col > n+1 {
		return lspPosition{}, fmt.Errorf("lsp: %s:%d:%d: column %d is outside the line, which has %d characters: %w", p.File, p.Line, p.Col, p.Col, n, errdefs.ErrInvalid)
	}
	u, i := 0, 0
	for _, r := range string(line) {
		if i == p.Col-1 {
			break
		}
		u += utf16.RuneLen(r)
		i++
	}
	return lspPosition{Line: p.Line - 1, Character: u}, nil
}

// fromLSP converts an LSP position to a 1-based line and character column;
// content nil: the column stays in UTF-16 units.
func fromLSP(content []byte, p lspPosition) (line, col int) {
	if content == nil {
		return p.Line + 1, p.Character + 1
	}
	text, ok := lineAt(content, p.Line)
	if !ok {
		return p.Line + 1, p.Character + 1
	}
	u, c := 0, 0
	for _, r := range string(text) {
		if u >= p.Character {
			break
		}
		u += utf16.RuneLen(r)
		c++
	}
	return p.Line + 1, c + 1
}

// fileURI is the file: URI of an absolute path.
func fileURI(path string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(path)}).String()
}

// uriPath is the path of a file: URI, "" for another scheme.
func uriPath(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "file" {
		return ""
	}
	return filepath.FromSlash(u.Path)
}

// relTo is path relative to root when it lies inside, else "".
func relTo(root, path string) string {
	rel, err := filepath.Rel(root, path)
	if err != nil || !filepath.IsLocal(rel) {
		return ""
	}
	return rel
}
