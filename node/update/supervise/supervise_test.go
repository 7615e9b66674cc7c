package supervise

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node/update/releasedir"
)

// The peers these tests start are this test binary, re-executed in a mode
// that behaves like a good or a bad release.
const envFakeMode = "SUPERVISE_FAKE_PEER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envFakeMode); mode != "" {
		os.Exit(fakePeer(mode))
	}
	os.Exit(m.Run())
}

// fakePeer is a release: "good" says READY and serves until SIGTERM;
// "exit1" exits at once; "hang" never says READY; "crash" says READY and
// exits 3 after 5 s; "restart-once" asks for a restart on its first
// run (a marker file), then is good; "restart" says READY and asks for a
// restart every time.
func fakePeer(mode string) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	ready := func() {
		c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake peer: notify:", err)
			os.Exit(9)
		}
		_, _ = c.Write([]byte("READY=1\nSTATUS=serving"))
		c.Close()
	}
	fmt.Fprintf(os.Stderr, "fake peer %s pid %d trial=%q\n", mode, os.Getpid(), os.Getenv(EnvTrial))
	switch mode {
	case "exit1":
		return 1
	case "hang":
		select {}
	case "crash":
		ready()
		time.Sleep(5 * time.Second)
		return 3
	case "restart":
		ready()
		return ExitRestart
	case "restart-once":
		marker := os.Getenv("SUPERVISE_MARKER")
		if _, err := os.Stat(marker); err != nil {
			_ = os.WriteFile(marker, nil, 0o644)
			return ExitRestart
		}
	}
	ready()
	<-term
	return 0
}

// fixture is a releases dir with a system binary and installed versions,
// each a script running this test binary in a mode.
type fixture struct {
	t      *testing.T
	dir    releasedir.Dir
	system string
	logs   *syncBuffer
}

func newFixture(t *testing.T, systemMode string) *fixture {
	root := t.TempDir()
	f := &fixture{t: t, dir: releasedir.New(root), logs: &syncBuffer{}}
	f.system = f.script(filepath.Join(root, "system-peerd"), systemMode)
	return f
}

func (f *fixture) script(path, mode string) string {
	self, err := os.Executable()
	if err != nil {
		f.t.Fatal(err)
	}
	body := fmt.Sprintf("#!/bin/sh\n%s=%s exec %q -test.run='^$'\n", envFakeMode, mode, self)
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// install installs version as a script in mode and switches to it.
func (f *fixture) install(version, mode string) {
	tmp := f.script(filepath.Join(f.t.TempDir(), "bin"), mode)
	r, err := os.Open(tmp)
	if err != nil {
		f.t.Fatal(err)
	}
	defer r.Close()
	if err := f.dir.Install(version, r, nil); err != nil {
		f.t.Fatal(err)
	}
	if err := f.dir.Switch(version); err != nil {
		f.t.Fatal(err)
	}
}

// run starts the supervisor; stop sends it SIGTERM and returns its status.
func (f *fixture) run(health time.Duration) (stop func() int) {
	sigs := make(chan os.Signal, 2)
	s := New(Config{
		Releases: f.dir, SystemBinary: f.system, Env: append(os.Environ(), "SUPERVISE_MARKER="+filepath.Join(f.t.TempDir(), "marker")),
		HealthTimeout: health, KillGrace: 2 * time.Second, Stdout: f.logs, Stderr: f.logs,
	}, slog.New(slog.NewTextHandler(f.logs, nil)))
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := s.Run(context.Background(), sigs)
		done <- result{code, err}
	}()
	return func() int {
		sigs <- syscall.SIGTERM
		select {
		case r := <-done:
			if r.err != nil {
				f.t.Fatalf("supervisor: %v\n%s", r.err, f.logs)
			}
			return r.code
		case <-time.After(20 * time.Second):
			f.t.Fatalf("supervisor did not stop\n%s", f.logs)
			return -1
		}
	}
}

// waitFor waits until the logs show s.
func (f *fixture) waitFor(s string, within time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(f.logs.String(), s) {
		if time.Now().After(deadline) {
			f.t.Fatalf("no %q in the supervisor's logs within %v:\n%s", s, within, f.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fixture) state() releasedir.State {
	st, err := f.dir.State()
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

func TestSupervisorKeepsAHealthyVersion(t *testing.T) {
	f := newFixture(t, "good")
	f.install("1.1.0", "good")
	stop := f.run(500 * time.Millisecond)
	f.waitFor("new version is healthy; keeping it", 10*time.Second)
	if code := stop(); code != 0 {
		t.Fatalf("status %d\n%s", code, f.logs)
	}
	if st := f.state(); st.Trial != "" || len(st.Bad) != 0 {
		t.Fatalf("state after a healthy trial: %+v", st)
	}
	if cur, _ := f.dir.Current(); cur != "1.1.0" {
		t.Fatalf("current %q, want 1.1.0", cur)
	}
}

// Each bad release is rolled back to the previous version, marked bad,
// and the previous version serves again.
func TestSupervisorRollsBackBadVersions(t *testing.T) {
	for _, tc := range []struct {
		mode, why string
		health    time.Duration
	}{
		{"exit1", "exited with status 1 on probation", 1500 * time.Millisecond},
		{"hang", "not healthy within", 1500 * time.Millisecond},
		{"crash", "exited with status 3 on probation", 8 * time.Second},
		{"restart", "exited with status 75 on probation", 1500 * time.Millisecond},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			f := newFixture(t, "good")
			f.install("1.1.0", "good")
			if err := f.dir.Update(func(s *releasedir.State) { s.Trial = "" }); err != nil {
				t.Fatal(err)
			}
			f.install("1.2.0", tc.mode)
			start := time.Now()
			stop := f.run(tc.health)
			f.waitFor("rolled back", 20*time.Second)
			took := time.Since(start)
			f.waitFor("fake peer good", 10*time.Second)
			if code := stop(); code != 0 {
				t.Fatalf("status %d\n%s", code, f.logs)
			}
			st := f.state()
			bad, ok := st.Bad["1.2.0"]
			if !ok || !strings.Contains(bad.Reason, tc.why) {
				t.Fatalf("bad list %+v, want 1.2.0 for %q\n%s", st.Bad, tc.why, f.logs)
			}
			if cur, _ := f.dir.Current(); cur != "1.1.0" {
				t.Fatalf("current %q after rollback, want 1.1.0", cur)
			}
			if st.RolledBack != "1.2.0" {
				t.Fatalf("rolled_back %q", st.RolledBack)
			}
			t.Logf("%s rolled back after %v (health_timeout %v)", tc.mode, took.Round(time.Millisecond), tc.health)
			if took > tc.health+10*time.Second {
				t.Errorf("rolled back after %v: over health_timeout + 10 s", took)
			}
		})
	}
}

// A rollback from the first release returns to the system's binary.
func TestSupervisorRollsBackToTheSystemBinary(t *testing.T) {
	f := newFixture(t, "good")
	f.install("1.2.0", "exit1")
	stop := f.run(time.Second)
	f.waitFor("fake peer good", 10*time.Second)
	if code := stop(); code != 0 {
		t.Fatalf("status %d", code)
	}
	if cur, _ := f.dir.Current(); cur != "" {
		t.Fatalf("current %q, want none (the system binary)", cur)
	}
}

// A peer that asks for a restart is started again; a peer that exits on
// its own (not on probation) ends the supervisor with its status.
func TestSupervisorRestartsOnRequest(t *testing.T) {
	f := newFixture(t, "restart-once")
	stop := f.run(time.Second)
	f.waitFor("peer asked to restart", 10*time.Second)
	f.waitFor("peer is ready", 10*time.Second)
	if code := stop(); code != 0 {
		t.Fatalf("status %d\n%s", code, f.logs)
	}

	f = newFixture(t, "exit1")
	sigs := make(chan os.Signal)
	code, err := New(Config{Releases: f.dir, SystemBinary: f.system, Env: os.Environ(), HealthTimeout: time.Second, Stdout: f.logs, Stderr: f.logs},
		slog.New(slog.NewTextHandler(f.logs, nil))).Run(context.Background(), sigs)
	if err != nil || code != 1 {
		t.Fatalf("status %d, %v; want 1", code, err)
	}
}

// A system binary upgraded past the current release (by the system's
// package manager) is started instead of it.
func TestSupervisorPrefersANewerSystemBinary(t *testing.T) {
	f := newFixture(t, "good")
	f.install("1.1.0", "exit1")
	sigs := make(chan os.Signal, 1)
	s := New(Config{Releases: f.dir, SystemBinary: f.system, SystemVersion: "1.2.0", Env: os.Environ(), HealthTimeout: time.Second, Stdout: f.logs, Stderr: f.logs},
		slog.New(slog.NewTextHandler(f.logs, nil)))
	done := make(chan int, 1)
	go func() { code, _ := s.Run(context.Background(), sigs); done <- code }()
	f.waitFor("fake peer good", 10*time.Second)
	sigs <- syscall.SIGTERM
	if code := <-done; code != 0 {
		t.Fatalf("status %d\n%s", code, f.logs)
	}
	if st := f.state(); len(st.Bad) != 0 {
		t.Fatalf("the release was tried: %+v", st)
	}
}

// An install cut before its switch leaves the old version current: the
// trial it recorded is dropped, nothing is marked bad.
func TestSupervisorDropsACutInstall(t *testing.T) {
	f := newFixture(t, "good")
	f.install("1.1.0", "good")
	if err := f.dir.Update(func(s *releasedir.State) { s.Trial = "1.2.0" }); err != nil {
		t.Fatal(err)
	}
	stop := f.run(time.Second)
	f.waitFor("an install was cut", 10*time.Second)
	f.waitFor("peer is ready", 10*time.Second)
	stop()
	if st := f.state(); st.Trial != "" || len(st.Bad) != 0 {
		t.Fatalf("state %+v", st)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
