package tasks_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// taskPeer starts one peer whose tasks run in the test namespace.
func taskPeer(t *testing.T) (*testnet.Net, *apiclient.Client) {
	t.Helper()
	tn := testnet.New(t, 1)
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return tn, c
}

func TestRunStreamsOutputAndExitCode(t *testing.T) {
	_, c := taskPeer(t)
	ctx := testnet.Context(t, 60*time.Second)
	var got testnet.RunEvents
	start := time.Now()
	res, err := c.Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{
		Command: []string{"sh", "-c", "echo out; echo err >&2; sleep 1.5; echo late; exit 3"},
	}}, got.Event)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetExitCode() != 3 || got.Stdout.String() != "out\nlate\n" || got.Stderr.String() != "err\n" {
		t.Fatalf("exit %d stdout %q stderr %q (%+v)", res.GetExitCode(), got.Stdout.String(), got.Stderr.String(), res)
	}
	if got.Started == nil || got.Started.GetTaskId() != res.GetTaskId() {
		t.Fatalf("started event %v for task %s", got.Started, res.GetTaskId())
	}
	// The first line arrives live, long before the task's end.
	if end := time.Now(); end.Sub(got.FirstOutput) < time.Second {
		t.Fatalf("first output %v after start, task ended %v after start: output was not live",
			got.FirstOutput.Sub(start), end.Sub(start))
	}
	if res.GetStdoutBytes() != 9 || res.GetStderrBytes() != 4 {
		t.Fatalf("byte counts %d/%d", res.GetStdoutBytes(), res.GetStderrBytes())
	}
}

func TestRunWorkspaceMergesBackWithoutOverwritingLocalEdits(t *testing.T) {
	_, c := taskPeer(t)
	ctx := testnet.Context(t, 90*time.Second)
	dir := t.TempDir()
	testnet.WriteFile(t, filepath.Join(dir, "input.txt"), []byte("one\ntwo\nthree\n"), 0o644)
	testnet.WriteFile(t, filepath.Join(dir, "mine.txt"), []byte("base\n"), 0o644)
	testnet.WriteFile(t, filepath.Join(dir, "sub", "keep.txt"), []byte("keep\n"), 0o644)

	// The task adds a file, edits one, and writes a file the user edits
	// while the task runs: that one must come back as a conflict.
	script := `set -e
test "$(pwd)" = /workspace
cat input.txt | wc -l > count.txt
echo task > mine.txt
echo ready
sleep 2
`
	done := make(chan struct{})
	var res *apiv1.TaskResult
	var runErr error
	got := testnet.RunEvents{StartedCh: make(chan struct{})}
	go func() {
		defer close(done)
		res, runErr = c.Run(ctx, &apiv1.RunRequest{Workspace: dir, Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", script}}}, got.Event)
	}()
	// Edit mine.txt locally once the task has started.
	select {
	case <-got.StartedCh:
	case <-done:
		t.Fatalf("run ended before the task started: %v", runErr)
	}
	testnet.WriteFile(t, filepath.Join(dir, "mine.txt"), []byte("local edit\n"), 0o644)
	<-done
	if runErr != nil {
		t.Fatal(runErr)
	}
	if res.GetExitCode() != 0 || res.GetError() != "" {
		t.Fatalf("task failed: %+v stderr %q", res, got.Stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "count.txt"))
	if err != nil || strings.TrimSpace(string(b)) != "3" {
		t.Fatalf("count.txt: %q %v", b, err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "mine.txt"))
	if string(b) != "local edit\n" {
		t.Fatalf("local edit overwritten: %q", b)
	}
	rep := res.GetMerge()
	if rep == nil || len(rep.GetConflicts()) != 1 || rep.GetConflicts()[0].GetPath() != "mine.txt" {
		t.Fatalf("merge report %+v", rep)
	}
	if res.GetBaseRoot() == "" || res.GetResultRoot() == "" || res.GetBaseRoot() == res.GetResultRoot() {
		t.Fatalf("roots %q -> %q", res.GetBaseRoot(), res.GetResultRoot())
	}
}

func TestRunCancelKillsTheTask(t *testing.T) {
	tn, c := taskPeer(t)
	ctx := testnet.Context(t, 60*time.Second)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var got testnet.RunEvents
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(runCtx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", "echo up; sleep 600"}}},
			func(ev *apiv1.RunEvent) {
				got.Event(ev)
				if _, ok := ev.GetEvent().(*apiv1.RunEvent_Output); ok {
					cancel()
				}
			})
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("run returned no error after cancel")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cancel did not end the run")
	}
	// The peer's running count drops back to 0 once the task is killed.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.GetCapacity().GetRunningTasks() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still counted as running after cancel")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = tn
}

func TestRunRefusesBadSpecs(t *testing.T) {
	_, c := taskPeer(t)
	ctx := testnet.Context(t, 30*time.Second)
	for name, spec := range map[string]*apiv1.TaskSpec{
		"negative memory":  {Command: []string{"true"}, Limits: &apiv1.TaskLimits{MemoryBytes: -1}},
		"absurd cpus":      {Command: []string{"true"}, Limits: &apiv1.TaskLimits{Cpus: 1e6}},
		"unknown tier":     {Command: []string{"true"}, Isolation: "kvm"},
		"relative workdir": {Command: []string{"true"}, Workdir: "work"},
		"host network":     {Command: []string{"true"}, Network: "host"},
		"negative timeout": {Command: []string{"true"}, TimeoutMs: -5},
	} {
		_, err := c.Run(ctx, &apiv1.RunRequest{Spec: spec}, nil)
		if !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Errorf("%s: %v, want invalid or permission denied", name, err)
		}
	}
	_, err := c.Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"true"}}, Workspace: "relative/dir"}, nil)
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("relative workspace: %v", err)
	}
}

// BenchmarkRunOutputThroughput measures task output through the whole
// path: container, peer, local API stream, client. 1 GiB of stdout per op
// (dd of zeros, as the runtime's own benchmark), counted and hashed.
func BenchmarkRunOutputThroughput(b *testing.B) {
	const size = 1 << 30
	tn := testnet.New(b, 1)
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	h := sha256.New()
	zeros := make([]byte, 1<<20)
	for range size >> 20 {
		h.Write(zeros)
	}
	want := h.Sum(nil)
	b.SetBytes(size)
	var chunks int
	for b.Loop() {
		var n int64
		h := sha256.New()
		res, err := c.Run(context.Background(), &apiv1.RunRequest{Spec: &apiv1.TaskSpec{
			Command: []string{"dd", "if=/dev/zero", "bs=1048576", fmt.Sprintf("count=%d", size>>20)},
		}}, func(ev *apiv1.RunEvent) {
			if o, ok := ev.GetEvent().(*apiv1.RunEvent_Output); ok && o.Output.GetStream() == "stdout" {
				n += int64(len(o.Output.GetData()))
				h.Write(o.Output.GetData())
				chunks++
			}
		})
		if err != nil || n != size || res.GetExitCode() != 0 || !bytes.Equal(h.Sum(nil), want) {
			b.Fatalf("got %d bytes (want %d), hash match %v, %v, %+v", n, int64(size), bytes.Equal(h.Sum(nil), want), err, res)
		}
	}
	b.ReportMetric(float64(chunks)/float64(b.N), "chunks/op")
}

// Successive tasks on a workspace run on overlays of the layers the earlier
// ones left: deletions, new directories, modes and edits carry from one
// task to the next and back into the directory, and the layers are kept.
func TestWorkspaceLayersAcrossTasks(t *testing.T) {
	tn, c := taskPeer(t)
	ctx := testnet.Context(t, 2*time.Minute)
	ws := t.TempDir()
	for name, body := range map[string]string{"a.txt": "a\n", "keep.txt": "keep\n", "run.sh": "echo run\n", "sub/old.txt": "old\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(ws, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ws, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		script    string
		stdout    string
		isolation string
	}{
		{`rm a.txt; echo new > b.txt; mkdir -p d/e; echo x > d/e/f; chmod +x run.sh; rm -r sub; mkdir sub; echo fresh > sub/new.txt`, "", ""},
		// gVisor sees the same overlay through its gofer.
		{`test ! -e a.txt && test -x run.sh && cat b.txt d/e/f && ls sub; echo more >> b.txt; rm -r d`, "new\nx\nnew.txt\n", "gvisor"},
		{`cat b.txt; test ! -e d && test ! -e sub/old.txt && ./run.sh`, "new\nmore\nrun\n", ""},
	}
	for i, st := range steps {
		var got testnet.RunEvents
		res, err := c.Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", st.script}, Isolation: st.isolation}, Workspace: ws}, got.Event)
		if err != nil || res.GetExitCode() != 0 || got.Stdout.String() != st.stdout {
			t.Fatalf("step %d: %+v %v, stdout %q (want %q), stderr %q", i+1, res, err, got.Stdout.String(), st.stdout, got.Stderr.String())
		}
	}
	for name, want := range map[string]string{"b.txt": "new\nmore\n", "keep.txt": "keep\n", "sub/new.txt": "fresh\n"} {
		if b, err := os.ReadFile(filepath.Join(ws, name)); err != nil || string(b) != want {
			t.Fatalf("%s: %q %v, want %q", name, b, err, want)
		}
	}
	for _, gone := range []string{"a.txt", "d", "sub/old.txt"} {
		if _, err := os.Lstat(filepath.Join(ws, gone)); !os.IsNotExist(err) {
			t.Fatalf("%s should be gone: %v", gone, err)
		}
	}
	if st, err := os.Stat(filepath.Join(ws, "run.sh")); err != nil || st.Mode()&0o100 == 0 {
		t.Fatalf("run.sh lost its executable bit: %v %v", st.Mode(), err)
	}
	// The tasks ran on overlays, each on the layers the one before left:
	// one export of the first base, then the changes of the first two tasks
	// (the third changed nothing). No mount is left.
	layers, err := os.ReadDir(filepath.Join(tn.Peers[0].Dir, "layers"))
	if err != nil || len(layers) != 3 {
		t.Fatalf("workspace layers: %d, %v (want one export and two tasks' changes)", len(layers), err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), tn.Peers[0].Dir) {
		t.Fatalf("a task overlay is still mounted:\n%s", mounts)
	}
}

// Ended tasks beyond keep_tasks are forgotten: their records, kept output
// and pins; the newest stay.
func TestOldTasksAreForgotten(t *testing.T) {
	tn := testnet.New(t, 1, testnet.WithConfig(func(_ int, cfg *node.Config) { cfg.Delegation.KeepTasks = 2 }))
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := testnet.Context(t, time.Minute)
	var ids []string
	for i := range 4 {
		res, err := c.Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"echo", fmt.Sprint(i)}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.GetTaskId())
		time.Sleep(10 * time.Millisecond) // distinct end times
	}
	// The prune at start found nothing; a restart prunes again.
	if err := tn.Peers[0].Restart(); err != nil {
		t.Fatal(err)
	}
	c2, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	testnet.Eventually(t, "the two oldest tasks to be forgotten", 10*time.Second, func() bool {
		list, err := c2.ListTasks(ctx)
		return err == nil && len(list) == 2
	})
	for i, id := range ids {
		_, err := c2.GetTask(ctx, id)
		if kept := i >= 2; kept != (err == nil) {
			t.Fatalf("task %d: %v (kept: want %v)", i, err, kept)
		}
		var n int
		_ = c2.Logs(ctx, id, false, func(*apiv1.OutputChunk) { n++ })
		if kept := i >= 2; kept != (n > 0) {
			t.Fatalf("task %d: %d chunks of output kept (want kept: %v)", i, n, kept)
		}
	}
}

// A workspace keeps its modes and its links through a task: the task sees
// a 0600 file as 0600, a 0700 directory as 0700 and a virtualenv's link to
// the system's interpreter as it is (resolved in the container); what it
// writes comes back with its modes, and a new link of its own that points
// out of the directory is reported as a conflict, not created.
func TestRunWorkspaceKeepsModesAndLinks(t *testing.T) {
	_, c := taskPeer(t)
	ctx := testnet.Context(t, 90*time.Second)
	dir := t.TempDir()
	testnet.WriteFile(t, filepath.Join(dir, "secret.env"), []byte("A=1\n"), 0o600)
	testnet.WriteFile(t, filepath.Join(dir, "private", "key"), []byte("k\n"), 0o600)
	if err := os.Chmod(filepath.Join(dir, "private"), 0o700); err != nil {
		t.Fatal(err)
	}
	testnet.WriteFile(t, filepath.Join(dir, "venv", "pyvenv.cfg"), []byte("home = /usr/bin\n"), 0o644)
	for link, target := range map[string]string{"venv/bin/python": "/usr/bin/python3", "venv/bin/sh": "/bin/sh"} {
		if err := os.MkdirAll(filepath.Join(dir, "venv", "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	script := `set -e
stat -c %a secret.env private private/key
readlink venv/bin/python
venv/bin/sh -c 'echo through the link'
echo A=2 >> secret.env
umask 077
echo new > new.secret
ln -s /etc etc-link
`
	var got testnet.RunEvents
	res, err := c.Run(ctx, &apiv1.RunRequest{Workspace: dir, Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", script}}}, got.Event)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetExitCode() != 0 || res.GetError() != "" {
		t.Fatalf("task failed: %+v stderr %q", res, got.Stderr.String())
	}
	if want := "600\n700\n600\n/usr/bin/python3\nthrough the link\n"; got.Stdout.String() != want {
		t.Fatalf("the task saw %q, want %q", got.Stdout.String(), want)
	}
	for rel, want := range map[string]os.FileMode{"secret.env": 0o600, "new.secret": 0o600, "private": 0o700} {
		st, err := os.Stat(filepath.Join(dir, rel))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s after the merge: %v %v, want %04o", rel, st.Mode(), err, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "secret.env")); string(b) != "A=1\nA=2\n" {
		t.Errorf("secret.env: %q", b)
	}
	if target, err := os.Readlink(filepath.Join(dir, "venv", "bin", "python")); err != nil || target != "/usr/bin/python3" {
		t.Errorf("venv/bin/python after the merge: %q %v", target, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc-link")); !os.IsNotExist(err) {
		t.Errorf("the task's link to /etc was created: %v", err)
	}
	cs := res.GetMerge().GetConflicts()
	if len(cs) != 1 || cs[0].GetPath() != "etc-link" || cs[0].GetReason() != "escaping-link" || cs[0].GetLinkTarget() != "/etc" {
		t.Fatalf("conflicts %v, want etc-link as an escaping link", cs)
	}
}

// A program the image lacks ends the task as a shell would: exit 127 and
// "executable file not found: NAME" on stderr (also in the kept log), not
// runc's internals and a failed run.
func TestRunMissingProgramExits127(t *testing.T) {
	_, c := taskPeer(t)
	ctx := testnet.Context(t, 60*time.Second)
	var got testnet.RunEvents
	res, err := c.Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"nosuchcmd", "arg"}}}, got.Event)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	const want = "cortex-peer: executable file not found: nosuchcmd\n"
	if res.GetExitCode() != 127 || got.Stderr.String() != want || res.GetError() != "" || got.Started == nil {
		t.Fatalf("exit %d, stderr %q, error %q, started %v; want 127 and %q", res.GetExitCode(), got.Stderr.String(), res.GetError(), got.Started, want)
	}
	var kept strings.Builder
	if err := c.Logs(ctx, res.GetTaskId(), false, func(ch *apiv1.OutputChunk) { kept.Write(ch.GetData()) }); err != nil || kept.String() != want {
		t.Fatalf("kept log %q, %v", kept.String(), err)
	}
}

// A task that writes past its disk limit fails and nothing of its
// workspace comes back: not the file past the limit, not the small one
// beside it; run here or delegated to another peer.
func TestRunOverDiskLimitMergesNothing(t *testing.T) {
	tn := testnet.New(t, 2, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.Tasks.Policy.DefaultLimits.DiskBytes = 8 << 20
		cfg.Delegation.Policy.DefaultLimits.DiskBytes = 8 << 20
	}))
	if err := tn.WaitMesh(testnet.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, on := range []string{"peer1", "peer2"} {
		ctx := testnet.Context(t, 90*time.Second)
		dir := t.TempDir()
		testnet.WriteFile(t, filepath.Join(dir, "in.txt"), []byte("in\n"), 0o644)
		res, err := c.Run(ctx, &apiv1.RunRequest{Workspace: dir, Labels: map[string]string{"testnet": on}, Spec: &apiv1.TaskSpec{
			Command: []string{"sh", "-c", "echo small > small.txt; dd if=/dev/zero of=big bs=1M count=64"},
		}}, nil)
		if err != nil {
			t.Fatalf("run on %s: %v", on, err)
		}
		if res.GetExitCode() == 0 || !res.GetDiskLimitExceeded() || len(res.GetMerge().GetApplied()) > 0 || res.GetResultRoot() != "" {
			t.Errorf("on %s, over its disk limit: exit %d, disk_limit_exceeded %v, result root %q, merge %+v",
				on, res.GetExitCode(), res.GetDiskLimitExceeded(), res.GetResultRoot(), res.GetMerge())
		}
		for _, name := range []string{"big", "small.txt"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				t.Errorf("on %s: %s was merged back from a task over its disk limit", on, name)
			}
		}
		// A task's own --disk travels with it: 32 MiB lets it write 16.
		res, err = c.Run(ctx, &apiv1.RunRequest{Workspace: dir, Labels: map[string]string{"testnet": on}, Spec: &apiv1.TaskSpec{
			Command: []string{"sh", "-c", "dd if=/dev/zero of=big bs=1M count=16"},
			Limits:  &apiv1.TaskLimits{DiskBytes: 32 << 20},
		}}, nil)
		if err != nil || res.GetExitCode() != 0 || res.GetDiskLimitExceeded() {
			t.Fatalf("on %s, within its own --disk: %+v %v", on, res, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, "big")); err != nil || fi.Size() != 16<<20 {
			t.Errorf("on %s: big not merged back whole: %v", on, err)
		}
		_ = os.Remove(filepath.Join(dir, "big"))
	}
}
