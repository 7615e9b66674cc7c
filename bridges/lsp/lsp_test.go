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
