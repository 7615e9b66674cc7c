package lsp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// testModule is the real module the tests run gopls on: a copy of it from
// the module cache (its three dependencies are there too).
const testModule = "github.com/multiformats/go-multibase@v0.3.0"

func goplsBin(t testing.TB) string {
	t.Helper()
	bin := goplsPath()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("gopls is missing (%v): run `make deps`, which installs gopls v0.23.0", err)
	}
	return bin
}

// workspace copies testModule into a new dir the servers' uid can read.
func workspace(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), testModule)
	parent, err := os.MkdirTemp("", "lsp-ws-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAll(parent) })
	if err := os.Chmod(parent, 0o711); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(parent, "go-multibase")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s (is it in the module cache? `go mod download %s`): %v", testModule, testModule, err)
	}
	return dst
}

// newTestManager is a bridge on the real gopls with the shared test cache,
// closed with the test; after Close no process of it is left.
func newTestManager(t testing.TB, tune ...func(*Config)) *Manager {
	t.Helper()
	goplsBin(t)
	cfg := DefaultConfig(testCache)
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "lsp", "test", t.Name())
	for _, f := range tune {
		f(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if pids := m.Processes(); len(pids) > 0 {
			t.Errorf("processes left after Close: %v", pids)
		}
	})
	return m
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// goplsCLI runs `gopls VERB file:line:col` directly (columns in bytes; the
// test positions are ASCII) and returns the locations it prints, relative
// to ws.
func goplsCLI(t *testing.T, ws, verb string, p Position) []string {
	t.Helper()
	args := []string{verb}
	if verb == "references" {
		args = append(args, "-d") // the declaration too, as the bridge answers
	}
	cmd := exec.Command(goplsBin(t), append(args, fmt.Sprintf("%s:%d:%d", filepath.Join(ws, p.File), p.Line, p.Col))...)
	cmd.Dir = ws
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gopls %s: %v: %s", verb, err, out)
	}
	re := regexp.MustCompile(`(?m)^(\S+\.go):(\d+):(\d+)`)
	var locs []string
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		rel, err := filepath.Rel(ws, m[1])
		if err != nil || !filepath.IsLocal(rel) {
			rel = inModCache(m[1])
		}
		locs = append(locs, rel+":"+m[2]+":"+m[3])
	}
	slices.Sort(locs)
	return locs
}

// inModCache cuts a path in a module cache (the peer's, or the servers'
// own when the peer is root) down to the module's path and the file.
func inModCache(path string) string {
	for _, dir := range []string{"/pkg/mod/", "/modcache/"} {
		if _, after, ok := strings.Cut(path, dir); ok {
			return "mod:" + after
		}
	}
	return path
}

func locStrings(ls []Location) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, inModCache(l.File)+":"+strconv.Itoa(l.Line)+":"+strconv.Itoa(l.Col))
	}
	slices.Sort(out)
	return out
}

// readyServer is the server of ws, ready.
func readyServer(t *testing.T, m *Manager, ws string) *Server {
	t.Helper()
	ctx := testContext(t, 2*time.Minute)
	s, err := m.Server(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Release)
	return s
}

// Definition and references agree with `gopls definition` and `gopls
// references` run directly on the same positions; hover has the doc.
func TestDefinitionReferencesHoverAgreeWithGoplsCLI(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	positions := []Position{
		{File: "encoder.go", Line: 59, Col: 14},    // a call of Encode
		{File: "multibase.go", Line: 87, Col: 6},   // Encode's declaration
		{File: "multibase.go", Line: 119, Col: 34}, // b58.EncodeAlphabet, in a dependency
	}
	for _, p := range positions {
		t0 := time.Now()
		defs, st, err := s.Definition(ctx, p)
		if err != nil || st.State != StateReady {
			t.Fatalf("definition at %v: %v %v", p, st, err)
		}
		took := time.Since(t0)
		got, want := locStrings(defs), goplsCLI(t, ws, "definition", p)
		if !slices.Equal(got, want) {
			t.Errorf("definition at %v: bridge %v, gopls CLI %v", p, got, want)
		}
		t.Logf("definition at %v: %v (%v)", p, got, took)
		if strings.HasSuffix(got[0], ".go:87:6") {
			refs, st, err := s.References(ctx, p)
			if err != nil || st.State != StateReady {
				t.Fatalf("references at %v: %v %v", p, st, err)
			}
			got, want := locStrings(refs), goplsCLI(t, ws, "references", p)
			if !slices.Equal(got, want) {
				t.Errorf("references at %v: bridge %v, gopls CLI %v", p, got, want)
			}
			t.Logf("references at %v: %d", p, len(got))
		}
	}
	h, _, err := s.Hover(ctx, positions[0])
	if err != nil || !strings.Contains(h, "func Encode(base Encoding, data []byte) (string, error)") {
		t.Errorf("hover: %q %v", h, err)
	}
	if infos := m.Servers(); len(infos) != 1 || infos[0].State != StateReady || infos[0].PID == 0 || infos[0].Name != "gopls" {
		t.Errorf("servers: %+v", infos)
	}
	var _ = errors.Is
	var _ = errdefs.ErrInvalid
}

// An edit that introduces a type error (the file written, then Changed)
// shows in Diagnostics at once, on an open file and on one the server
// does not have open; reverting it clears it.
func TestEditShowsInDiagnostics(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	// encoder.go is open (a query touched it); base2.go is not.
	if _, st, err := s.Hover(ctx, Position{File: "encoder.go", Line: 59, Col: 14}); err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	diags, st, err := s.Diagnostics(ctx, []string{"encoder.go"})
	if err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	for _, d := range diags {
		if d.Severity == "error" {
			t.Fatalf("an error before the edit: %+v", d)
		}
	}
	for _, file := range []string{"encoder.go", "base2.go"} {
		path := filepath.Join(ws, file)
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		edited := append(slices.Clone(orig), []byte("\nvar _ int = \"not an int\"\n")...)
		line := strings.Count(string(edited), "\n") // the line added
		if err := os.WriteFile(path, edited, 0o644); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := s.Changed(ctx, []Change{{File: file, Kind: Changed}}); err != nil {
			t.Fatal(err)
		}
		diags, st, err := s.Diagnostics(ctx, []string{file})
		took := time.Since(t0)
		if err != nil || st.State != StateReady {
			t.Fatal(st, err)
		}
		found := false
		for _, d := range diags {
			if d.File == file && d.Line == line && d.Severity == "error" && strings.Contains(d.Message, "cannot use") {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s: no type error on line %d after the edit: %+v", file, line, diags)
		}
		t.Logf("%s: edit to diagnostic: %v", file, took)
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Changed(ctx, []Change{{File: file, Kind: Changed}}); err != nil {
			t.Fatal(err)
		}
		diags, _, err = s.Diagnostics(ctx, []string{file})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range diags {
			if d.Severity == "error" {
				t.Fatalf("%s: an error after the revert: %+v", file, d)
			}
		}
	}
}

// A 10 MB burst of diagnostics keeps at most Config.DiagnosticsBytes.
func TestDiagnosticsBurstBounded(t *testing.T) {
	m := newTestManager(t, func(c *Config) { c.DiagnosticsBytes = 1 << 20 })
	s := &Server{m: m, Root: "/w", cfg: m.cfg.Servers["gopls"]}
	p := &process{s: s, changed: make(chan struct{}), diags: map[string]*publishedDiags{}, loading: map[string]bool{}, diagTokens: map[string]int{}}
	msg := strings.Repeat("x", 1000)
	var b strings.Builder
	for f := range 10 {
		b.Reset()
		fmt.Fprintf(&b, `{"uri":"file:///w/f%d.go","diagnostics":[`, f)
		for i := range 1000 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"range":{"start":{"line":%d,"character":0},"end":{"line":%d,"character":1}},"severity":1,"source":"compiler","message":%q}`, i, i, msg)
		}
		b.WriteString("]}")
		p.notification("textDocument/publishDiagnostics", []byte(b.String()))
	}
	if p.diagBytes > m.cfg.DiagnosticsBytes || p.diagBytes < m.cfg.DiagnosticsBytes/2 {
		t.Errorf("kept %d bytes of diagnostics, cap %d", p.diagBytes, m.cfg.DiagnosticsBytes)
	}
	if p.dropped < 9000 {
		t.Errorf("dropped %d of 10000", p.dropped)
	}
	// A file published again with none frees its share.
	p.notification("textDocument/publishDiagnostics", []byte(`{"uri":"file:///w/f0.go","diagnostics":[]}`))
	if p.diagBytes != 0 {
		t.Errorf("%d bytes kept after f0.go cleared (only f0.go fitted)", p.diagBytes)
	}
}
