package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
	"github.com/cortex-peer/cortex-peer/runtime/images"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// initTaskPeer makes a data dir whose tasks run in the test namespace of
// containerd, never the user's, and starts `join` on it.
func initTaskPeer(t *testing.T, bin string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "peer")
	if r := run(t, bin, "init", "--data", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	if err := testnet.EditConfig(filepath.Join(dir, "config.toml"), testnet.TestNamespaceEdit); err != nil {
		t.Fatalf("point the peer at the test namespace: %v", err)
	}
	startJoin(t, bin, "--data", dir)
	waitCLI(t, func() bool { return run(t, bin, "status", "--data", dir).code == 0 })
	return dir
}

// The task verbs as a user runs them: live output to the right streams, the
// task's exit code as run's, --json, the workspace merged back, a bad spec
// refused as usage, and images imported, listed, used and removed.
func TestCLIRunAndImages(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := initTaskPeer(t, bin)

	r := run(t, bin, "run", "--data", dir, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out\n" || !strings.Contains(r.stderr, "err\n") {
		t.Fatalf("run: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	ws := t.TempDir()
	if err := os.WriteFile(filepath.Join(ws, "in.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, bin, "run", "--json", "--data", dir, "--workspace", ws, "--", "sh", "-c", "tr a-z A-Z < in.txt > out.txt; id -u")
	var sum struct {
		TaskID     string  `json:"task_id"`
		ExitCode   int     `json:"exit_code"`
		Duration   float64 `json:"duration_seconds"`
		ResultRoot string  `json:"result_root"`
		Merge      struct {
			Applied []string `json:"applied"`
		} `json:"merge"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &sum) != nil {
		t.Fatalf("run --json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if sum.TaskID == "" || sum.ExitCode != 0 || sum.ResultRoot == "" || len(sum.Merge.Applied) != 1 || sum.Merge.Applied[0] != "out.txt" {
		t.Fatalf("run --json summary: %+v", sum)
	}
	if !strings.Contains(r.stderr, "65534") {
		t.Errorf("with --json the task's stdout goes to stderr: %q", r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "out.txt")); err != nil || string(b) != "HELLO\n" {
		t.Fatalf("merged result: %q, %v", b, err)
	}

	// An artifact comes back by CID, told on stderr and in --json, and is
	// not merged; get writes it.
	r = run(t, bin, "run", "--data", dir, "--workspace", ws, "--artifact", "build/*", "--", "sh", "-c", "mkdir build; echo app > build/app")
	if r.code != 0 || !strings.Contains(r.stderr, "artifact build/app: ") {
		t.Fatalf("run --artifact: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(ws, "build", "app")); err == nil {
		t.Fatal("run --artifact merged the artifact into the workspace")
	}
	artCID := strings.Fields(strings.SplitN(r.stderr, "artifact build/app: ", 2)[1])[0]
	if g := run(t, bin, "get", "--data", dir, artCID, "-o", "-"); g.code != 0 || g.stdout != "app\n" {
		t.Fatalf("get the artifact: exit %d %q %s", g.code, g.stdout, g.stderr)
	}

	// A program the image lacks: 127 and a plain message, as with a shell
	// or docker, not runc's internals.
	r = run(t, bin, "run", "--data", dir, "--", "nosuchcmd")
	if r.code != 127 || !strings.Contains(r.stderr, "executable file not found: nosuchcmd") || strings.Contains(r.stderr, "runc") {
		t.Errorf("missing program: exit %d, stderr %q", r.code, r.stderr)
	}

	r = run(t, bin, "run", "--data", dir, "--timeout", "1s", "--", "sleep", "30")
	if r.code != cli.ExitTimedOut || !strings.Contains(r.stderr, "timed out") {
		t.Errorf("timeout: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(t, bin, "run", "--data", dir, "--memory", "-5M", "--", "true")
	if r.code != cli.ExitUsage {
		t.Errorf("bad --memory: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(t, bin, "run", "--data", dir, "--isolation", "kvm", "--", "true")
	// Refused by the peer's policy rather than by the flag parser: wrong
	// usage all the same.
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "isolation") {
		t.Errorf("unknown isolation: exit %d, stderr %q", r.code, r.stderr)
	}

	// An image of our own, imported through the CLI, run, listed, removed.
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cortex/busybox:e2e-" + hex.EncodeToString(b[:])
	tarball := filepath.Join(t.TempDir(), "img.tar")
	f, err := os.Create(tarball)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.BuildBusybox(f, "/bin/busybox", name); err != nil {
		t.Fatalf("build test image (make deps installs busybox-static): %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if r := run(t, bin, "image", "import", "--data", dir, tarball); r.code != 0 || !strings.Contains(r.stdout, name) {
		t.Fatalf("image import: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	t.Cleanup(func() { run(t, bin, "image", "rm", "--data", dir, name) })
	if r := run(t, bin, "image", "ls", "--data", dir); r.code != 0 || !strings.Contains(r.stdout, name) {
		t.Fatalf("image ls: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := run(t, bin, "run", "--data", dir, "--image", name, "--", "echo", "from e2e image"); r.code != 0 || r.stdout != "from e2e image\n" {
		t.Fatalf("run --image: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := run(t, bin, "image", "rm", "--data", dir, name); r.code != 0 {
		t.Fatalf("image rm: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, bin, "image", "ls", "--json", "--data", dir); r.code != 0 || strings.Contains(r.stdout, name) {
		t.Fatalf("image still listed after rm: %q", r.stdout)
	}
	if r := run(t, bin, "run", "--data", dir, "--image", name, "--", "true"); r.code != cli.ExitError || !strings.Contains(r.stderr, name) {
		t.Errorf("run of a removed image: exit %d, stderr %q", r.code, r.stderr)
	}
}

// A result that cannot be merged (here the workspace directory was
// replaced by a file while the task ran) does not hide how the task itself
// ended: run says both, and exits with the task's code, or 1 when the task
// succeeded.
func TestCLIRunMergeFailureKeepsExitCode(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := initTaskPeer(t, bin)
	for _, c := range []struct {
		exit, want int
	}{{3, 3}, {0, cli.ExitError}} {
		ws := filepath.Join(t.TempDir(), "ws")
		testnet.WriteFile(t, filepath.Join(ws, "in.txt"), []byte("hello\n"), 0o644)
		// The task says it runs, then gives the test time to pull the
		// directory from under it before it writes its result.
		script := "echo go; sleep 5; echo new > new.txt; exit " + string(rune('0'+c.exit))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, "run", "--data", dir, "--workspace", ws, "--", "sh", "-c", script)
		cmd.Env = append(os.Environ(), "CORTEX_PEER_DATA=")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if line != "go\n" {
			t.Fatalf("first output %q", line)
		}
		if err := os.RemoveAll(ws); err != nil {
			t.Fatal(err)
		}
		testnet.WriteFile(t, ws, []byte("not a directory\n"), 0o644)
		_, _ = io.Copy(io.Discard, stdout)
		err = cmd.Wait()
		cancel()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if code != c.want || !strings.Contains(stderr.String(), "merge") || !strings.Contains(stderr.String(), "the task exited with "+string(rune('0'+c.exit))) {
			t.Errorf("exit %d, merge failing: run exit %d, stderr %q; want %d, naming the merge failure and the task's exit", c.exit, code, stderr.String(), c.want)
		}
	}
}

// result of a task that has not ended says so, and how to follow it,
// instead of exiting 1 without a word.
func TestCLIResultOfRunningTask(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := initTaskPeer(t, bin)
	r := run(t, bin, "run", "--detach", "--data", dir, "--", "sleep", "60")
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || id == "" {
		t.Fatalf("run --detach: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	t.Cleanup(func() { run(t, bin, "cancel", "--data", dir, id) })
	r = run(t, bin, "result", "--data", dir, id)
	if r.code != cli.ExitError || !strings.Contains(r.stderr, "has not ended") || !strings.Contains(r.stderr, "logs -f "+id) {
		t.Fatalf("result of a running task: exit %d, stderr %q; want 1, saying it has not ended and how to follow it", r.code, r.stderr)
	}
}

// A spec the peer's policy refuses never ran: run exits 2 (wrong usage),
// says why in the user's units, and leaves no task behind.
func TestCLIRunRefusedSpecIsUsage(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := initTaskPeer(t, bin)
	r := run(t, bin, "run", "--data", dir, "--memory", "1K", "--", "true")
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "1 KiB is under the minimum") {
		t.Errorf("run --memory 1K: exit %d, stderr %q; want %d and the minimum", r.code, r.stderr, cli.ExitUsage)
	}
	r = run(t, bin, "tasks", "--json", "--data", dir)
	var tasks []any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tasks) != nil || len(tasks) != 0 {
		t.Errorf("tasks after a refused spec: exit %d, %s; want none", r.code, r.stdout)
	}
}

// A child killed for memory while the task's own process lives on is told
// as that, not as the task killed (which exited 0 here).
func TestCLIRunChildOOM(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := initTaskPeer(t, bin)
	r := run(t, bin, "run", "--data", dir, "--memory", "16M", "--", "sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; echo after")
	if r.code != 0 || r.stdout != "after\n" || strings.Contains(r.stderr, "cortex-peer: task ") ||
		!strings.Contains(r.stderr, "a process of task") || !strings.Contains(r.stderr, "the task itself exited 0") {
		t.Fatalf("child OOM: exit %d, stdout %q, stderr %q; want 0 and a child named as killed", r.code, r.stdout, r.stderr)
	}
}
