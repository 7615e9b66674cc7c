package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveBinary()
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t testing.TB, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "CORTEX_PEER_DATA=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

// startTestnet runs `cortex-peer testnet -n N --dir DIR` and waits for its
// "ready" line; it returns the process, to signal, and the peer lines.
func startTestnet(t *testing.T, bin, dir string, n string) (runningTestnet, []string) {
	t.Helper()
	tn := startTestnetLines(t, bin, dir, n)
	go func() {
		for range tn.lines {
		}
	}()
	return tn, tn.peers
}

// runningTestnet is a `cortex-peer testnet` process past its "ready" line.
type runningTestnet struct {
	cmd    *exec.Cmd
	peers  []string      // the peer lines, before "ready"
	lines  chan string   // the stdout lines after "ready"; closed at its end
	exited chan struct{} // closed once it has ended and been waited for
	stderr *lockedBuffer // what it wrote to stderr
}

// lockedBuffer is a bytes.Buffer a process writes while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startTestnetLines is startTestnet keeping the lines printed after
// "ready"; the caller must read them until the channel closes or the test
// ends.
func startTestnetLines(t *testing.T, bin, dir string, n string) runningTestnet {
	t.Helper()
	cmd := exec.Command(bin, "testnet", "-n", n, "--dir", dir, "--heartbeat", "500ms")
	// Its own process group, as a shell gives a job: a signal to the group
	// then reaches what it would in a terminal, and never this test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		for range lines {
		}
		<-exited
	})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_ = cmd.Wait() // after the last read, as exec asks
	}()
	var peers []string
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("testnet ended before ready; stderr:\n%s", stderr.String())
			}
			if l == "ready" {
				return runningTestnet{cmd: cmd, peers: peers, lines: lines, exited: exited, stderr: stderr}
			}
			peers = append(peers, l)
		case <-timeout:
			t.Fatalf("testnet not ready in 2 minutes; stderr:\n%s", stderr.String())
		}
	}
}

func TestCLIEndToEnd(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := t.TempDir()
	tn, lines := startTestnet(t, bin, dir, "3")
	if len(lines) != 3 {
		t.Fatalf("want 3 peer lines, got %q", lines)
	}
	ids := map[string]string{} // data dir -> id
	for i, l := range lines {
		f := strings.Fields(l)
		want := filepath.Join(dir, "peer"+string(rune('1'+i)))
		if len(f) != 3 || f[0] != "peer"+string(rune('1'+i)) || !strings.HasPrefix(f[1], "12D3KooW") || f[2] != want {
			t.Fatalf("peer line %q: want NAME ID %s", l, want)
		}
		ids[f[2]] = f[1]
	}

	for peerDir, self := range ids {
		r := run(t, bin, "peers", "--json", "--data", peerDir)
		if r.code != 0 {
			t.Fatalf("peers --json: exit %d: %s", r.code, r.stderr)
		}
		var peers []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &peers); err != nil {
			t.Fatalf("peers --json is not a JSON array: %v\n%s", err, r.stdout)
		}
		if len(peers) != 2 {
			t.Fatalf("%s sees %d peers, want 2:\n%s", peerDir, len(peers), r.stdout)
		}
		for _, p := range peers {
			for _, k := range []string{"id", "addrs", "labels", "version", "capabilities", "last_seen"} {
				if _, ok := p[k]; !ok {
					t.Fatalf("peer object lacks %q: %v", k, p)
				}
			}
			if p["id"] == self {
				t.Fatalf("%s lists itself", peerDir)
			}
			caps, _ := p["capabilities"].(map[string]any)
			if _, ok := caps["containerd"]; !ok {
				t.Fatalf("capabilities lack containerd: %v", p["capabilities"])
			}
		}

		r = run(t, bin, "id", "--json", "--data", peerDir)
		var id struct {
			ID    string   `json:"id"`
			Addrs []string `json:"addrs"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &id); err != nil || id.ID != self || len(id.Addrs) == 0 {
			t.Fatalf("id --json: %v %q", err, r.stdout)
		}
	}

	p1 := filepath.Join(dir, "peer1")
	if r := run(t, bin, "peers", "--data", p1); r.code != 0 || !strings.Contains(r.stdout, "PEER") || !strings.Contains(r.stdout, "testnet=peer2") {
		t.Fatalf("peers table: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, bin, "status", "--data", p1); r.code != 0 || !strings.Contains(r.stdout, "2 known") {
		t.Fatalf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// CORTEX_PEER_DATA is honoured when --data is absent.
	cmd := exec.Command(bin, "id")
	cmd.Env = append(os.Environ(), "CORTEX_PEER_DATA="+p1)
	if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), ids[p1]) {
		t.Fatalf("id with CORTEX_PEER_DATA: %v %q", err, out)
	}
	// A second peer on the same data dir refuses, clearly.
	if r := run(t, bin, "join", "--data", p1); r.code == 0 || !strings.Contains(r.stderr, "in use by process") {
		t.Fatalf("second join on one dir: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, bin, "mesh-key", "--data", p1); r.code != 0 || !strings.HasPrefix(r.stdout, "/key/swarm/psk/1.0.0/") {
		t.Fatalf("mesh-key: exit %d %q", r.code, r.stdout)
	}
	if r := run(t, bin, "init", "--data", p1); r.code == 0 || !strings.Contains(r.stderr, "already initialized") {
		t.Fatalf("init over an existing peer: exit %d %q", r.code, r.stderr)
	}

	// SIGINT stops the testnet and all its peers cleanly.
	if err := tn.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tn.exited:
		if code := tn.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("testnet exit %d on SIGINT; stderr:\n%s", code, tn.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("testnet did not stop within 30 s of SIGINT")
	}
	for peerDir := range ids {
		if r := run(t, bin, "id", "--data", peerDir); r.code == 0 || !strings.Contains(r.stderr, "no peer is running") {
			t.Fatalf("%s still answers after the testnet stopped: %q", peerDir, r.stdout+r.stderr)
		}
	}
}

func TestCLIUsageAndHelp(t *testing.T) {
	bin := testnet.BuildBinary(t)
	for _, verb := range []string{"init", "join", "id", "peers", "status", "version", "mesh-key", "testnet", "mcp"} {
		r := run(t, bin, verb, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%s --help: exit %d\n%s", verb, r.code, r.stdout)
		}
	}
	if r := run(t, bin, "testnet", "restart", "--help"); r.code != 0 || !strings.Contains(r.stdout, "restart NAME --dir DIR") || !strings.Contains(r.stdout, "SIGHUP") {
		t.Errorf("testnet restart --help: exit %d\n%s", r.code, r.stdout)
	}
	// Help for a peer verb comes from cortex-peerd, flags and all.
	if r := run(t, bin, "help", "join"); r.code != 0 || !strings.Contains(r.stdout, "--mcp-listen") {
		t.Errorf("help join: exit %d\n%s", r.code, r.stdout)
	}
	// So does shell completion of their flags.
	if r := run(t, bin, "__complete", "join", "--mcp"); r.code != 0 || !strings.Contains(r.stdout, "--mcp-listen") {
		t.Errorf("completion of join's flags: exit %d\n%s", r.code, r.stdout)
	}
	if r := run(t, bin, "init", "--no-such-flag"); r.code != 2 {
		t.Errorf("peer verb, unknown flag: exit %d, want 2", r.code)
	}
	if r := run(t, bin, "peers", "--no-such-flag"); r.code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", r.code)
	}
	if r := run(t, bin, "peers", "extra"); r.code != 2 {
		t.Errorf("extra argument: exit %d, want 2", r.code)
	}
	empty := t.TempDir()
	if r := run(t, bin, "peers", "--data", empty); r.code != 1 || !strings.Contains(r.stderr, "cortex-peer init --data "+empty) {
		t.Errorf("uninitialized dir: exit %d %q", r.code, r.stderr)
	}
	r := run(t, bin, "version", "--json")
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["version"] == nil {
		t.Errorf("version --json: %v %q", err, r.stdout)
	}
}

func TestTwoMachinesFlow(t *testing.T) {
	// The README's two-data-dirs flow: init a mesh, copy its key, init a
	// second peer with it, join both, see each other.
	bin := testnet.BuildBinary(t)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	if r := run(t, bin, "init", "--data", a, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--heartbeat", "300ms"); r.code != 0 {
		t.Fatalf("init a: %s", r.stderr)
	}
	key := filepath.Join(t.TempDir(), "mesh.key")
	r := run(t, bin, "mesh-key", "--data", a)
	if err := os.WriteFile(key, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, bin, "init", "--data", b, "--mesh-key", key, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--heartbeat", "300ms"); r.code != 0 {
		t.Fatalf("init b: %s", r.stderr)
	}
	startJoin(t, bin, "--data", a)
	var idA struct {
		Addrs []string `json:"addrs"`
	}
	waitCLI(t, func() bool {
		r := run(t, bin, "id", "--json", "--data", a)
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &idA) == nil && len(idA.Addrs) > 0
	})
	startJoin(t, bin, "--data", b, "--bootstrap", idA.Addrs[0])
	waitCLI(t, func() bool {
		r := run(t, bin, "peers", "--json", "--data", b)
		return r.code == 0 && strings.Count(r.stdout, `"id"`) == 1
	})
}

func startJoin(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"join"}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	return cmd
}

func waitCLI(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkCLIPeers measures `cortex-peer peers --json` as a user runs it:
// process start, config and token read, API round trip, JSON output.
func BenchmarkCLIPeers(b *testing.B) {
	bin := testnet.BuildBinary(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 3, Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer pn.Stop()
	if err := pn.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if r := run(b, bin, "peers", "--json", "--data", pn.Peers[0].DataDir); r.code != 0 {
			b.Fatal(r.stderr)
		}
	}
}

func TestCLIWorkspaces(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := t.TempDir()
	startTestnet(t, bin, dir, "2")
	p1, p2 := filepath.Join(dir, "peer1"), filepath.Join(dir, "peer2")
	src := t.TempDir()
	for rel, content := range map[string]string{"a.txt": "one\ntwo\nthree\n", "empty": "", "sub/b.txt": "b"} {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	add := func() map[string]any {
		r := run(t, bin, "ws", "add", "--json", "--data", p1, src)
		var out map[string]any
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
			t.Fatalf("ws add: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		for _, k := range []string{"cid", "files", "bytes"} {
			if _, ok := out[k]; !ok {
				t.Fatalf("ws add --json lacks %q: %v", k, out)
			}
		}
		return out
	}
	first := add()
	base := first["cid"].(string)
	if first["unchanged"] != false || first["dirs_listed"] != float64(2) {
		t.Errorf("first ws add: unchanged %v, dirs_listed %v; want false, 2", first["unchanged"], first["dirs_listed"])
	}
	// The peer watches what it imported: the same tree again is not scanned.
	if again := add(); again["cid"] != base || again["unchanged"] != true {
		t.Errorf("second ws add: %v, want %s unchanged", again, base)
	}
	copyDir := filepath.Join(t.TempDir(), "copy")
	if r := run(t, bin, "ws", "get", "--data", p2, base, copyDir); r.code != 0 {
		t.Fatalf("ws get: %s", r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(copyDir, "a.txt")); err != nil || string(b) != "one\ntwo\nthree\n" {
		t.Fatalf("copy: %q %v", b, err)
	}
	// The task (here: us) changes line 3 in src; the user changes line 1 in the copy.
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("one\ntwo\nTHREE\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	second := add()
	if second["files_read"].(float64) != 1 {
		t.Fatalf("incremental add read %v files", second["files_read"])
	}
	theirs := second["cid"].(string)
	if r := run(t, bin, "ws", "diff", "--data", p2, base, theirs); r.code != 0 || strings.TrimSpace(r.stdout) != "M a.txt" {
		t.Fatalf("ws diff: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if err := os.WriteFile(filepath.Join(copyDir, "a.txt"), []byte("ONE\ntwo\nthree\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, bin, "ws", "merge", "--json", "--data", p2, base, theirs, copyDir)
	var rep struct {
		Merged    []string `json:"merged"`
		Conflicts []any    `json:"conflicts"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || len(rep.Merged) != 1 || len(rep.Conflicts) != 0 {
		t.Fatalf("ws merge: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(copyDir, "a.txt")); string(b) != "ONE\ntwo\nTHREE\n" {
		t.Fatalf("merged: %q", b)
	}
	// A conflicting change, merged twice: the second THEIRS cannot take
	// a.txt.theirs, and the summary must not claim it did.
	if err := os.WriteFile(filepath.Join(copyDir, "a.txt"), []byte("ONE\ntwo\nmine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, beside := range []string{"a.txt.theirs", "a.txt.theirs.1"} {
		r := run(t, bin, "ws", "merge", "--data", p2, base, theirs, copyDir)
		if r.code != 1 || !strings.Contains(r.stderr, "(theirs in "+beside+")") || strings.Contains(r.stderr, "PATH.theirs") {
			t.Fatalf("conflicting merge %d: exit %d, stderr %q; want 1, naming %s and no PATH.theirs", i+1, r.code, r.stderr, beside)
		}
		if _, err := os.Stat(filepath.Join(copyDir, beside)); err != nil {
			t.Fatalf("conflicting merge %d: %v", i+1, err)
		}
	}
	// CAR round trip between the peers.
	car := filepath.Join(t.TempDir(), "ws.car")
	r = run(t, bin, "dag", "export", "--data", p1, theirs)
	if r.code != 0 {
		t.Fatalf("dag export: %s", r.stderr)
	}
	if err := os.WriteFile(car, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(t, bin, "dag", "import", "--data", p2, car); r.code != 0 || strings.TrimSpace(r.stdout) != theirs {
		t.Fatalf("dag import: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, bin, "ws", "get", "--data", p2, "not-a-cid", filepath.Join(t.TempDir(), "x")); r.code != 1 || !strings.Contains(r.stderr, "not a CID") {
		t.Fatalf("bad CID: exit %d %s", r.code, r.stderr)
	}
	// A root no peer has: diff and export give up after --stall-timeout.
	missing := "bafkreie5cvv4h45feyalwqhbagebuoceukxvamxksoxibbuvsf3cykcvxy"
	for _, args := range [][]string{{"ws", "diff", missing, missing}, {"dag", "export", missing}} {
		r := run(t, bin, append(args, "--stall-timeout", "1s", "--data", p2)...)
		if r.code != 1 || !strings.Contains(r.stderr, "no block") {
			t.Fatalf("%v of a missing root: exit %d %s", args, r.code, r.stderr)
		}
	}
}
