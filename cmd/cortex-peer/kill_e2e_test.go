package main

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// killNet starts a 3-peer process testnet whose tasks run in the test
// namespace and whose coordinators give up on a silent executor after 3 s.
func killNet(t *testing.T) (string, *testnet.ProcessNet) {
	t.Helper()
	bin := testnet.BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	edits := map[string]string{`lost_after = "1m0s"`: `lost_after = "3s"`}
	maps.Copy(edits, testnet.TestNamespaceEdit)
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 3, Dir: t.TempDir(), Heartbeat: 300 * time.Millisecond, ConfigEdits: edits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pn.Stop() })
	if err := pn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return bin, pn
}

// taskState is `cortex-peer result TASK --json` as a test reads it.
type taskState struct {
	State  string `json:"state"`
	Error  string `json:"error"`
	Result *struct {
		ExitCode    int    `json:"exit_code"`
		Error       string `json:"error"`
		StdoutBytes uint64 `json:"stdout_bytes"`
	} `json:"result"`
}

func resultOf(t *testing.T, bin, dir, id string) (taskState, bool) {
	t.Helper()
	r := run(t, bin, "result", "--json", "--data", dir, id)
	var st taskState
	// result exits with the task's code, 1 while it has none.
	if json.Unmarshal([]byte(r.stdout), &st) != nil {
		return st, false
	}
	return st, true
}

// leftovers lists the containers in the test namespace that belong to the
// peer with id owner.
func leftovers(t *testing.T, owner string) []string {
	t.Helper()
	out, err := exec.Command("ctr", "-n", testnet.TestNamespace, "containers", "ls", "-q",
		`labels."io.cortex-peer.owner"==`+owner).Output()
	if err != nil {
		t.Fatalf("ctr containers ls (make deps installs containerd): %v", err)
	}
	return strings.Fields(string(out))
}

// runDetached starts script on executor from coord with run --detach and
// returns the task's id.
func runDetached(t *testing.T, bin string, coord, executor *testnet.ProcessPeer, script string) string {
	t.Helper()
	r := run(t, bin, "run", "--detach", "--data", coord.DataDir, "--peer", executor.ID, "--", "sh", "-c", script)
	if r.code != 0 {
		t.Fatalf("run --detach: %d %s", r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// verifyStore wants every block p's store holds, and every pin's DAG,
// whole and intact (ws verify) after p was killed and started again.
func verifyStore(t *testing.T, bin string, p *testnet.ProcessPeer) {
	t.Helper()
	if r := run(t, bin, "ws", "verify", "--data", p.DataDir); r.code != 0 {
		t.Fatalf("ws verify of %s after kill -9: exit %d\n%s%s", p.Name, r.code, r.stdout, r.stderr)
	}
}

// restartExecutor starts a killed executor again, waits until it has
// removed what its dead process left and its word on task id reached the
// coordinator, and returns the task as the coordinator then reports it.
func restartExecutor(t *testing.T, bin string, coord, executor *testnet.ProcessPeer, id string) taskState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := executor.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, bin, executor)
	waitFor(t, "the restarted executor to clean up", 30*time.Second, func() bool { return len(leftovers(t, executor.ID)) == 0 })
	var st taskState
	waitFor(t, "the restarted executor's word on the task", 30*time.Second, func() bool {
		var ok bool
		st, ok = resultOf(t, bin, coord.DataDir, id)
		return ok && st.Result != nil
	})
	return st
}

// taskStatus is the status containerd gives the task of the container id
// in the test namespace ("" when it has no task).
func taskStatus(t *testing.T, id string) string {
	t.Helper()
	out, err := exec.Command("ctr", "-n", testnet.TestNamespace, "tasks", "ls").Output()
	if err != nil {
		t.Fatalf("ctr tasks ls (make deps installs containerd): %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill -9 of the executor mid-task: the coordinator marks the task lost
// with a clear error within lost_after; the restarted executor removes the
// container the dead process left and reports the task as cut short.
func TestKillExecutorMidTask(t *testing.T) {
	bin, pn := killNet(t)
	coord, executor := pn.Peers[0], pn.Peers[1]
	id := runDetached(t, bin, coord, executor, "echo up; sleep 600")
	waitFor(t, "the task to run", 30*time.Second, func() bool {
		st, ok := resultOf(t, bin, coord.DataDir, id)
		return ok && st.State == "running"
	})
	// "running" is recorded as the executor starts the task, a moment
	// before containerd has its container: wait for it, not on timing.
	waitFor(t, "the task's container on the executor", 30*time.Second, func() bool {
		return len(leftovers(t, executor.ID)) == 1
	})
	waitFor(t, "the task's first line at the coordinator", 30*time.Second, func() bool {
		return strings.Contains(run(t, bin, "logs", "--data", coord.DataDir, id).stdout, "up")
	})
	if err := executor.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-executor.Exited()
	var st taskState
	waitFor(t, "the task to be marked lost", 30*time.Second, func() bool {
		var ok bool
		st, ok = resultOf(t, bin, coord.DataDir, id)
		return ok && st.State == "lost"
	})
	if !strings.Contains(st.Error, "could not be reached") {
		t.Fatalf("lost task's error %q: want it to say the executor could not be reached", st.Error)
	}
	// The killed process left its container running under containerd.
	if n := len(leftovers(t, executor.ID)); n != 1 {
		t.Fatalf("%d containers of the killed executor, want its one running task", n)
	}
	st = restartExecutor(t, bin, coord, executor, id)
	// The truth, as the runtime found the container: still running, so
	// killed (it used to say "failed" with exit 1 whatever happened).
	if st.State != "failed" || st.Result.ExitCode != 137 || !strings.Contains(st.Result.Error, "still running and was killed") {
		t.Fatalf("after the restart: state %q, exit %d, %q; want failed, 137, killed while still running", st.State, st.Result.ExitCode, st.Result.Error)
	}
	// Its result counts the output it printed before the kill ("up\n"),
	// which its log kept: it used to count none.
	if st.Result.StdoutBytes != 3 {
		t.Fatalf("after the restart the result counts %d bytes of stdout, want the 3 the task printed", st.Result.StdoutBytes)
	}
}

// kill -9 of the executor while its task goes on, which then exits by
// itself while the executor is down: the restarted executor reports the
// task's own exit code, not a made-up one.
func TestExecutorRestartReportsExitMeanwhile(t *testing.T) {
	bin, pn := killNet(t)
	coord, executor := pn.Peers[0], pn.Peers[1]
	id := runDetached(t, bin, coord, executor, "sleep 3; exit 7")
	waitFor(t, "the task to run on the executor", 30*time.Second, func() bool { return taskStatus(t, id) == "RUNNING" })
	if err := executor.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-executor.Exited()
	// The task ends by itself while its peer is down.
	waitFor(t, "the task to exit while its peer is down", 30*time.Second, func() bool { return taskStatus(t, id) == "STOPPED" })
	st := restartExecutor(t, bin, coord, executor, id)
	if st.Result.ExitCode != 7 || !strings.Contains(st.Result.Error, "exited 7 meanwhile") {
		t.Fatalf("after the restart: state %q, exit %d, %q; want exit 7, exited meanwhile", st.State, st.Result.ExitCode, st.Result.Error)
	}
}

// kill -9 of the coordinator mid-task, then restart: the record is there,
// the executor delivers the result it kept, and `result TASK` answers.
func TestKillCoordinatorMidTask(t *testing.T) {
	bin, pn := killNet(t)
	coord, executor := pn.Peers[0], pn.Peers[1]
	id := runDetached(t, bin, coord, executor, "echo up; sleep 2; echo done")
	waitFor(t, "the task to run", 30*time.Second, func() bool {
		st, ok := resultOf(t, bin, coord.DataDir, id)
		return ok && st.State == "running"
	})
	if err := coord.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-coord.Exited()
	// The task ends while its coordinator is down.
	waitFor(t, "the task to end on the executor", 30*time.Second, func() bool { return len(leftovers(t, executor.ID)) == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := coord.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, bin, coord)
	var st taskState
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range pn.Peers {
				b, _ := os.ReadFile(p.LogFile)
				t.Logf("%s log:\n%s", p.Name, b)
			}
		}
	})
	waitFor(t, "result TASK to answer with the result", 30*time.Second, func() bool {
		var ok bool
		st, ok = resultOf(t, bin, coord.DataDir, id)
		return ok && st.State == "delivered"
	})
	if st.Result == nil || st.Result.ExitCode != 0 || st.Result.Error != "" {
		t.Fatalf("result after the coordinator's restart: %+v", st)
	}
	logs := run(t, bin, "logs", "--data", coord.DataDir, id)
	if logs.code != 0 || logs.stdout != "up\ndone\n" {
		t.Fatalf("logs after restart: %d %q %s", logs.code, logs.stdout, logs.stderr)
	}
}
