package lsp

import (
	"bytes"
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
	"syscall"
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
		all, _, err := s.Diagnostics(ctx, nil)
		if err != nil || !slices.ContainsFunc(all, func(d Diagnostic) bool { return d.File == file && d.Line == line }) {
			t.Errorf("diagnostics of every file lack %s:%d: %v %v", file, line, all, err)
		}
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
	p := &process{s: s, changed: make(chan struct{}), diags: map[string]*publishedDiags{}, published: map[string]int{}, loading: map[string]bool{}, diagTokens: map[string]int{}}
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

// A cold start answers "warming" to a call whose deadline comes before
// the workspace is loaded, never an empty answer; the start goes on and a
// later call answers.
func TestColdStartWarming(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	s := readyServer(t, m, ws)
	short, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	p := Position{File: "encoder.go", Line: 59, Col: 14}
	defs, st, err := s.Definition(short, p)
	if err != nil || st.State != StateWarming || defs != nil {
		t.Fatalf("cold call: %v %v %v, want warming and no answer", defs, st, err)
	}
	if st := m.Servers()[0].State; st != "starting" && st != StateWarming {
		t.Errorf("server state %q right after a cold start", st)
	}
	ctx := testContext(t, 2*time.Minute)
	defs, st, err = s.Definition(ctx, p)
	if err != nil || st.State != StateReady || len(defs) != 1 {
		t.Fatalf("later call: %v %v %v", defs, st, err)
	}
}

// goplsProcesses are the bridge's gopls processes: its children named
// gopls (not the go commands gopls runs, which are named gopls too
// between their fork and exec).
func goplsProcesses(m *Manager) []int {
	var out []int
	for _, pid := range m.Processes() {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if strings.TrimSpace(string(comm)) == "gopls" && len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			out = append(out, pid)
		}
	}
	return out
}

// Two callers of a workspace at once share one gopls process.
func TestTwoCallersShareOneServer(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	ctx := testContext(t, 2*time.Minute)
	type answer struct {
		s    *Server
		defs []Location
		err  error
	}
	answers := make(chan answer, 2)
	for range 2 {
		go func() {
			s, err := m.Server(ctx, ws)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			defs, _, err := s.Definition(ctx, Position{File: "encoder.go", Line: 59, Col: 14})
			s.Release() // before the answer: the test counts the clients once both are in
			answers <- answer{s, defs, err}
		}()
	}
	a, b := <-answers, <-answers
	if a.err != nil || b.err != nil {
		t.Fatal(a.err, b.err)
	}
	if a.s != b.s || !slices.Equal(a.defs, b.defs) || len(a.defs) != 1 {
		t.Errorf("the callers got %p %v and %p %v", a.s, a.defs, b.s, b.defs)
	}
	if pids := goplsProcesses(m); len(pids) != 1 {
		t.Errorf("gopls processes: %v, want one", pids)
	}
	if infos := m.Servers(); len(infos) != 1 || infos[0].Clients != 0 {
		t.Errorf("servers: %+v", infos)
	}
}

// gopls killed with SIGKILL mid-query: that query fails with
// ErrUnavailable; the next one starts gopls again (after a backoff) and
// answers, from the files open before.
func TestCrashMidQueryThenNextAnswers(t *testing.T) {
	m := newTestManager(t)
	ws := workspace(t)
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	p := Position{File: "encoder.go", Line: 59, Col: 14}
	if _, st, err := s.Definition(ctx, p); err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	// Quiet first: no progress of gopls in flight, which would hold the
	// query back as "warming" once gopls is stopped.
	if _, _, err := s.Diagnostics(ctx, nil); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	pr := s.proc
	s.mu.Unlock()
	waitFor(t, func() bool { pr.mu.Lock(); defer pr.mu.Unlock(); return pr.readyLocked() }, "gopls to be ready")
	// Stopped, gopls cannot answer: the query is surely in flight.
	if err := syscall.Kill(pr.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := s.References(ctx, p)
		errc <- err
	}()
	waitFor(t, func() bool { return pr.rpc.pending.Load() > 0 }, "the query in flight")
	if err := syscall.Kill(pr.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("query during the kill: %v, want ErrUnavailable", err)
	}
	t0 := time.Now()
	refs, st, err := s.References(ctx, p)
	if err != nil || st.State != StateReady || len(refs) != 10 {
		t.Fatalf("next query: %d refs %v %v", len(refs), st, err)
	}
	t.Logf("next query answered %v after the kill", time.Since(t0))
	s.mu.Lock()
	_, open := s.open["encoder.go"]
	s.mu.Unlock()
	if pids := goplsProcesses(m); len(pids) != 1 || pids[0] == pr.pid || !open {
		t.Errorf("gopls processes %v (killed %d), encoder.go open: %v", pids, pr.pid, open)
	}
}

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A server no call used for IdleTimeout is shut down by Serve, and the
// next call starts it again.
func TestIdleShutdown(t *testing.T) {
	m := newTestManager(t, func(c *Config) { c.IdleTimeout = 400 * time.Millisecond })
	ws := workspace(t)
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	serveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Serve(serveCtx) }()
	defer func() { stop(); <-done }()
	p := Position{File: "encoder.go", Line: 59, Col: 14}
	if _, st, err := s.Hover(ctx, p); err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	waitFor(t, func() bool { return len(m.Processes()) == 0 && m.Servers()[0].State == "stopped" }, "the idle server to stop")
	if h, st, err := s.Hover(ctx, p); err != nil || st.State != StateReady || h == "" {
		t.Fatal(h, st, err)
	}
	// Stopped, released and idle, it is forgotten: the server list does
	// not grow with every workspace ever asked for.
	s.Release()
	waitFor(t, func() bool { return len(m.Servers()) == 0 }, "the released server to be forgotten")
	if _, _, err := s.Hover(ctx, p); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("call on a retired server: %v", err)
	}
}

// A server that hangs on initialize is killed after InitTimeout and
// reported (ErrUnavailable); a later call starts it again after a backoff.
func TestInitializeHangs(t *testing.T) {
	m := newTestManager(t, func(c *Config) {
		c.InitTimeout = 300 * time.Millisecond
		c.Servers["hang"] = ServerConfig{Command: []string{"/bin/sleep", "600"}, Languages: []string{"hang"}, Patterns: []string{"*.hang"}}
	})
	parent, err := os.MkdirTemp("", "lsp-hang-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	_ = os.Chmod(parent, 0o755)
	if err := os.WriteFile(filepath.Join(parent, "a.hang"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, time.Minute)
	s, err := m.Server(ctx, parent)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	for i := range 2 {
		_, _, err := s.Hover(ctx, Position{File: "a.hang", Line: 1, Col: 1})
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "initialize") {
			t.Fatalf("call %d: %v, want ErrUnavailable about initialize", i, err)
		}
		if pids := m.Processes(); len(pids) > 0 {
			t.Fatalf("call %d: processes left: %v", i, pids)
		}
	}
}

// New kills what a previous run left running from its cache dir.
func TestNewKillsLeftovers(t *testing.T) {
	old := newTestManager(t)
	ws := workspace(t)
	s := readyServer(t, old, ws)
	ctx := testContext(t, 2*time.Minute)
	if _, _, err := s.Hover(ctx, Position{File: "encoder.go", Line: 59, Col: 14}); err != nil {
		t.Fatal(err)
	}
	left := goplsProcesses(old)
	if len(left) != 1 {
		t.Fatalf("gopls processes: %v", left)
	}
	newTestManager(t) // the peer started again: the old one "crashed"
	if pids := goplsProcesses(old); len(pids) != 0 {
		t.Errorf("gopls %v left running from the previous run", pids)
	}
}

// Past MaxServers, the server used least recently is shut down to make
// room; it starts again when called.
func TestMaxServersMakesRoom(t *testing.T) {
	m := newTestManager(t, func(c *Config) { c.MaxServers = 1 })
	a, b := readyServer(t, m, workspace(t)), readyServer(t, m, workspace(t))
	ctx := testContext(t, 2*time.Minute)
	p := Position{File: "encoder.go", Line: 59, Col: 14}
	for i, s := range []*Server{a, b, a} {
		if _, st, err := s.Hover(ctx, p); err != nil || st.State != StateReady {
			t.Fatal(st, err)
		}
		if pids := goplsProcesses(m); len(pids) != 1 {
			var desc []string
			for _, pid := range pids {
				st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
				cl, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
				desc = append(desc, string(st)+" "+strings.ReplaceAll(string(cl), "\x00", " "))
			}
			t.Errorf("call %d: gopls processes: %v, want 1; servers %+v", i, desc, m.Servers())
		}
	}
}

// A server over MaxMemoryBytes is stopped by the sweep and starts again
// on the next call.
func TestMemoryCapRestarts(t *testing.T) {
	m := newTestManager(t, func(c *Config) { c.MaxMemoryBytes = 1 << 20 })
	s := readyServer(t, m, workspace(t))
	ctx := testContext(t, 2*time.Minute)
	p := Position{File: "encoder.go", Line: 59, Col: 14}
	if _, st, err := s.Hover(ctx, p); err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	before := goplsProcesses(m)
	if mem := m.Servers()[0].MemoryBytes; mem < 1<<20 {
		t.Fatalf("gopls uses %d bytes", mem)
	}
	m.sweep(time.Now())
	if pids := goplsProcesses(m); len(pids) != 0 {
		t.Fatalf("gopls %v still runs over the cap", pids)
	}
	if _, st, err := s.Hover(ctx, p); err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	if after := goplsProcesses(m); len(after) != 1 || slices.Equal(after, before) {
		t.Errorf("gopls before %v, after %v", before, after)
	}
}

// A workspace of several modules under a go.work: the server answers
// across them, and a dependency of one of them is prepared for its uid as
// for a go.mod at the root.
func TestGoWorkWorkspace(t *testing.T) {
	m := newTestManager(t)
	parent, err := os.MkdirTemp("", "lsp-work-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAll(parent) })
	if err := os.Chmod(parent, 0o711); err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(parent, "work")
	for name, content := range map[string]string{
		"go.work":  "go 1.22\n\nuse (\n\t./a\n\t./b\n\t../elsewhere\n)\n",
		"a/go.mod": "module example.com/a\n\ngo 1.22\n",
		"a/a.go":   "package a\n\nimport \"example.com/b\"\n\nvar OK = b.Valid(\"v1.2.3\")\n",
		"b/go.mod": "module example.com/b\n\ngo 1.22\n\nrequire golang.org/x/mod v0.41.0\n",
		"b/go.sum": "golang.org/x/mod v0.41.0 h1:qJmnOUb4YB+FsEuM3HcWucdZASCPGhsX6uljO6pog0c=\ngolang.org/x/mod v0.41.0/go.mod h1:Ek9pY8RKWXwsWvd3rQiHYtMqkjSUV+s1Rj7j4H5Ur6o=\n",
		"b/b.go":   "package b\n\nimport \"golang.org/x/mod/semver\"\n\n// Valid says whether v is a semantic version.\nfunc Valid(v string) bool { return semver.IsValid(v) }\n",
	} {
		p := filepath.Join(ws, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if dirs := moduleDirs(ws); len(dirs) != 2 {
		t.Fatalf("modules of the go.work: %v, want a and b (not ../elsewhere)", dirs)
	}
	// Without the use outside the workspace, which go would refuse.
	if err := os.WriteFile(filepath.Join(ws, "go.work"), []byte("go 1.22\n\nuse (\n\t./a\n\t./b\n)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	defs, st, err := s.Definition(ctx, Position{File: "a/a.go", Line: 5, Col: 12}) // waits while warming
	if err != nil || st.State != StateReady {
		t.Fatal(st, err)
	}
	if len(defs) != 1 || defs[0].File != filepath.Join("b", "b.go") || defs[0].Line != 6 {
		t.Fatalf("definition of b.Valid from a: %+v, want b/b.go:6", defs)
	}
	if diags, _, err := s.Diagnostics(ctx, []string{"b/b.go"}); err != nil || len(diags) != 0 {
		t.Fatalf("diagnostics of b/b.go: %+v %v", diags, err)
	}
	// semver comes from the module cache prepared for the server's uid.
	defs, _, err = s.Definition(ctx, Position{File: "b/b.go", Line: 6, Col: 45})
	if err != nil || len(defs) != 1 || !strings.Contains(defs[0].File, "golang.org/x/mod@v0.41.0/semver") {
		t.Fatalf("definition of semver.IsValid: %+v %v", defs, err)
	}
	diags, _, err := s.Diagnostics(ctx, []string{"b/b.go"})
	if err != nil || len(diags) != 0 {
		t.Fatalf("diagnostics of b/b.go: %+v %v", diags, err)
	}
}
