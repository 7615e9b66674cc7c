package lsp

import (
	"bytes"
	"errors"
	"go/format"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Rename returns the new content of every file it touches, one new name
// per reference, and writes nothing.
func TestRenameReturnsNewContents(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	p := Position{File: "multibase.go", Line: 87, Col: 6} // func Encode
	refs, _, err := s.References(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	perFile := map[string]int{}
	for _, r := range refs {
		perFile[r.File]++
	}
	files, st, err := s.Rename(ctx, p, "EncodeWith")
	if err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	if len(files) != len(perFile) {
		t.Errorf("rename touched %d files, references are in %d: %v", len(files), len(perFile), perFile)
	}
	// The new name is at every reference (gopls renames doc comments too).
	for _, r := range refs {
		line := string(lines(files[r.File])[r.Line-1])
		if !strings.HasPrefix(string([]rune(line)[r.Col-1:]), "EncodeWith") {
			t.Errorf("%s:%d after the rename: %q", r.File, r.Line, line)
		}
	}
	for f, content := range files {
		if _, err := format.Source(content); err != nil {
			t.Errorf("%s after the rename does not parse: %v", f, err)
		}
		if disk, _ := os.ReadFile(filepath.Join(ws, f)); bytes.Contains(disk, []byte("EncodeWith")) {
			t.Errorf("%s was written", f)
		}
	}
	if _, _, err := s.Rename(ctx, p, "1nvalid"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("rename to 1nvalid: %v, want ErrInvalid", err)
	}
}

// Format returns what gofmt makes of a file, here one full of emoji,
// whose edits come in UTF-16 columns.
func TestFormatAsGofmt(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	path := filepath.Join(ws, "base256emoji.go")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mangled := bytes.ReplaceAll(orig, []byte("', '"), []byte("',    '"))
	mangled = bytes.ReplaceAll(mangled, []byte("func base256emojiEncode(in []byte) string {"), []byte("func   base256emojiEncode( in []byte ) string{"))
	if err := os.WriteFile(path, mangled, 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := format.Source(mangled)
	if err != nil {
		t.Fatal(err)
	}
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	got, st, err := s.Format(ctx, "base256emoji.go")
	if err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("format differs from gofmt:\n%s", firstDiff(got, want))
	}
	if disk, _ := os.ReadFile(path); !bytes.Equal(disk, mangled) {
		t.Error("the file was written")
	}
}

func firstDiff(a, b []byte) string {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return "line " + strconv.Itoa(i+1) + ": " + string(la[i]) + "\nwant: " + string(lb[i])
		}
	}
	return "lengths differ"
}

// Symbols of a file and of the workspace; Resolve names them as in Go.
func TestSymbolsAndResolve(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	syms, st, err := s.Symbols(ctx, "", "encoder.go")
	if err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	var names []string
	for _, x := range syms {
		names = append(names, x.Name)
	}
	for _, want := range []string{"Encoder", "NewEncoder", "(Encoder).Encode"} {
		if !slices.Contains(names, want) {
			t.Errorf("symbols of encoder.go: %v, want %s", names, want)
		}
	}
	syms, _, err = s.Symbols(ctx, "EncoderByName", "")
	if err != nil || len(syms) == 0 || syms[0].Location.File != "encoder.go" || syms[0].Location.Line != 35 || syms[0].Kind != "function" {
		t.Errorf("workspace symbols for EncoderByName: %+v %v", syms, err)
	}
	for _, c := range []struct {
		name string
		want Position
		err  error
	}{
		{"multibase.Encoder.Encode", Position{File: "encoder.go", Line: 58, Col: 18}, nil},
		{"Encoder.Encode", Position{File: "encoder.go", Line: 58, Col: 18}, nil},
		{"multibase.Encode", Position{File: "multibase.go", Line: 87, Col: 6}, nil},
		{"Encode", Position{}, errdefs.ErrInvalid}, // the function and the method
		{"multibase.NoSuchThing", Position{}, errdefs.ErrNotFound},
		{"", Position{}, errdefs.ErrInvalid},
	} {
		got, err := s.Resolve(ctx, c.name)
		if got != c.want || !errors.Is(err, c.err) && (c.err != nil || err != nil) {
			t.Errorf("resolve %q: %+v %v, want %+v %v", c.name, got, err, c.want, c.err)
		}
	}
}

// Positions outside their file, files outside the root (`..`, absolute,
// a symlink out), missing files and roots in no language get clear errors.
func TestBadPositionsAndPaths(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	if err := os.Symlink("/etc/hostname", filepath.Join(ws, "out.go")); err != nil {
		t.Fatal(err)
	}
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	for _, c := range []struct {
		p    Position
		want error
	}{
		{Position{File: "../go-multibase/encoder.go", Line: 1, Col: 1}, errdefs.ErrInvalid},
		{Position{File: filepath.Join(ws, "encoder.go"), Line: 1, Col: 1}, errdefs.ErrInvalid},
		{Position{File: "out.go", Line: 1, Col: 1}, errdefs.ErrInvalid},
		{Position{File: "", Line: 1, Col: 1}, errdefs.ErrInvalid},
		{Position{File: "multibase-conv", Line: 1, Col: 1}, errdefs.ErrInvalid},
		{Position{File: "nope.go", Line: 1, Col: 1}, errdefs.ErrNotFound},
		{Position{File: "encoder.go", Line: 0, Col: 1}, errdefs.ErrInvalid},
		{Position{File: "encoder.go", Line: 10000, Col: 1}, errdefs.ErrInvalid},
		{Position{File: "encoder.go", Line: 59, Col: 0}, errdefs.ErrInvalid},
		{Position{File: "encoder.go", Line: 59, Col: 500}, errdefs.ErrInvalid},
	} {
		_, _, err := s.Definition(ctx, c.p)
		if !errors.Is(err, c.want) {
			t.Errorf("definition at %+v: %v, want %v", c.p, err, c.want)
		} else {
			t.Logf("%+v: %v", c.p, err)
		}
	}
	if err := s.Changed(ctx, []Change{{File: "../x.go", Kind: Changed}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("changed ../x.go: %v", err)
	}
	if _, _, err := s.Diagnostics(ctx, []string{"/etc/passwd"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("diagnostics of /etc/passwd: %v", err)
	}
	empty := t.TempDir()
	for root, want := range map[string]error{"relative/dir": errdefs.ErrInvalid, empty: errdefs.ErrInvalid, filepath.Join(empty, "nope"): errdefs.ErrNotFound} {
		if _, err := m.Server(ctx, root); !errors.Is(err, want) {
			t.Errorf("server of %s: %v, want %v", root, err, want)
		} else {
			t.Logf("%s: %v", root, err)
		}
	}
}

// Columns count characters: an emoji is one column, two UTF-16 units.
func TestColumnsUTF16(t *testing.T) {
	content := []byte("a := '🚀' + x\n\tb\n")
	for _, c := range []struct {
		col, utf16 int
	}{{1, 0}, {6, 5}, {7, 6}, {8, 8}, {12, 12}, {13, 13}} {
		lp, err := toLSP(content, Position{File: "f", Line: 1, Col: c.col})
		if err != nil || lp.Character != c.utf16 || lp.Line != 0 {
			t.Errorf("col %d: %+v %v, want character %d", c.col, lp, err, c.utf16)
		}
		if l, col := fromLSP(content, lp); l != 1 || col != c.col {
			t.Errorf("back from %+v: %d:%d, want 1:%d", lp, l, col, c.col)
		}
	}
	if _, err := toLSP(content, Position{File: "f", Line: 1, Col: 14}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("col past the end: %v", err)
	}
	got, err := applyEdits(content, []textEdit{{Range: lspRange{Start: lspPosition{0, 9}, End: lspPosition{0, 10}}, NewText: "-"}})
	if err != nil || string(got) != "a := '🚀'-+ x\n\tb\n" {
		t.Errorf("edit after the emoji: %q %v", got, err)
	}
}
