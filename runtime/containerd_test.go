package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Stdout and stderr arrive apart and whole, the exit code comes back, and
// the usage figures are filled in.
func TestRunOutputAndExitCode(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	r := te.mustRun(t, te.spec(`echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 7`))
	if r.Stdout != "out1\nout2\n" {
		t.Errorf("stdout %q", r.Stdout)
	}
	if r.Stderr != "err1\nerr2\n" {
		t.Errorf("stderr %q", r.Stderr)
	}
	res := r.Result
	if res.ExitCode != 7 || res.Signal != "" || res.OOMKilled || res.TimedOut || res.Cancelled {
		t.Errorf("result %+v, want exit 7 and nothing else", res)
	}
	if res.StartedAt.IsZero() || res.Duration <= 0 || res.Duration > testTimeout {
		t.Errorf("started %v, duration %v", res.StartedAt, res.Duration)
	}
	if res.PeakMemoryBytes == 0 {
		t.Errorf("no peak memory in %+v", res)
	}
	if te.Running() != 0 {
		t.Errorf("Running() = %d after the task ended", te.Running())
	}
}

// A task ending by a signal reports 128+n and the signal's name. (The task's
// init process is immune to signals sent from inside its own pid namespace,
// so the shell reports its child's death the same way.)
func TestExitBySignal(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	r := te.mustRun(t, te.spec(`sleep 100 & kill -9 $!; wait $!`))
	if r.Result.ExitCode != 137 || r.Result.Signal != "SIGKILL" {
		t.Errorf("result %+v, want 137 SIGKILL", r.Result)
	}
	if r.Result.Cancelled || r.Result.TimedOut {
		t.Errorf("result %+v: the task killed itself", r.Result)
	}
}

// CPU time is measured.
func TestCPUSeconds(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	// Busy for about a second: sha256 of 64 MiB of zeros, a few times.
	r := te.mustRun(t, te.spec(`for i in 1 2 3; do head -c 67108864 /dev/zero | sha256sum >/dev/null; done`))
	if r.Result.ExitCode != 0 || r.Result.CPUSeconds < 0.05 {
		t.Errorf("result %+v: want exit 0 and some CPU time", r.Result)
	}
	t.Logf("cpu %.3f s, peak memory %d B, duration %v", r.Result.CPUSeconds, r.Result.PeakMemoryBytes, r.Result.Duration)
}

// Output reaches the reader while the task runs, not at its end.
func TestLiveOutput(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	r := te.mustRun(t, te.spec(`echo first; sleep 2; echo second`))
	if r.Stdout != "first\nsecond\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	if lead := r.Ended.Sub(r.FirstChunk); lead < time.Second {
		t.Errorf("first chunk came %v before the end, want about 2 s", lead)
	}
	if len(r.Chunks) < 2 {
		t.Errorf("%d chunks, want one per line", len(r.Chunks))
	}
}

// A task past its timeout is killed, all of it, and reported as timed out.
func TestTimeout(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	spec := te.spec(`echo started; sleep 100 & sleep 100`)
	spec.Timeout = time.Second
	start := time.Now()
	r := te.mustRun(t, spec)
	if !r.Result.TimedOut || r.Result.Cancelled || r.Result.Signal != "SIGKILL" {
		t.Errorf("result %+v, want timed out by SIGKILL", r.Result)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v to end a task with a 1 s timeout", d)
	}
	if r.Stdout != "started\n" {
		t.Errorf("stdout %q", r.Stdout)
	}
}

// Kill ends the task and Wait reports it cancelled; Kill again is harmless.
func TestKill(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	task, err := te.Start(ctx, te.spec(`echo ready; sleep 100`))
	if err != nil {
		t.Fatal(err)
	}
	if c := <-task.Output(); string(c.Data) != "ready\n" {
		t.Fatalf("first chunk %q", c.Data)
	}
	if te.Running() != 1 {
		t.Errorf("Running() = %d, want 1", te.Running())
	}
	if err := task.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	r := collect(ctx, t, task)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if !r.Result.Cancelled || r.Result.TimedOut || r.Result.ExitCode != 137 {
		t.Errorf("result %+v, want cancelled, exit 137", r.Result)
	}
	if err := task.Kill(ctx); err != nil {
		t.Errorf("kill after the end: %v", err)
	}
}

// Closing the executor kills what runs, refuses new tasks, and is safe twice.
func TestCloseKillsRunning(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	task, err := te.Start(ctx, te.spec(`sleep 100`))
	if err != nil {
		t.Fatal(err)
	}
	var r ran
	done := make(chan struct{})
	go func() {
		defer close(done)
		r = collect(ctx, t, task)
	}()
	if err := te.Close(); err != nil {
		t.Fatal(err)
	}
	if err := te.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	<-done
	if r.Err != nil || !r.Result.Cancelled {
		t.Errorf("result %+v, %v: want cancelled", r.Result, r.Err)
	}
	_, err = te.Start(ctx, te.spec(`true`))
	wantKind(t, err, errdefs.ErrUnavailable)
}

// Closing with a reader that never reads still finishes: the output is
// dropped after a grace period.
func TestCloseWithAbandonedReader(t *testing.T) {
	t.Parallel()
	te := newTestExec(t, func(c *Config) { c.OutputBuffer = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	task, err := te.Start(ctx, te.spec(`yes`))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := te.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > closeDrainGrace+20*time.Second {
		t.Errorf("close took %v", d)
	}
	res, err := task.Wait(ctx)
	if err != nil || !res.Cancelled {
		t.Errorf("result %+v, %v: want cancelled", res, err)
	}
}

// Bad specs and missing things get errors of the right kind, with messages
// that say what to do.
func TestStartErrors(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	spec := te.spec(`true`)
	spec.Image = "cortex/no-such-image:test"
	_, err := te.Start(ctx, spec)
	wantKind(t, err, errdefs.ErrNotFound)
	if !strings.Contains(err.Error(), "cortex/no-such-image:test") || !strings.Contains(err.Error(), "import") {
		t.Errorf("missing image error does not say which or what to do: %v", err)
	}

	for name, edit := range map[string]func(*Spec){
		"negative memory":   func(s *Spec) { s.Limits.MemoryBytes = -1 },
		"tiny memory":       func(s *Spec) { s.Limits.MemoryBytes = 1 },
		"near-zero cpus":    func(s *Spec) { s.Limits.CPUs = 0.0001 },
		"negative pids":     func(s *Spec) { s.Limits.Pids = -5 },
		"unknown isolation": func(s *Spec) { s.Isolation = "kvm" },
		"unknown network":   func(s *Spec) { s.Network = "bridge" },
		"relative workdir":  func(s *Spec) { s.Workdir = "work" },
		"workdir in proc":   func(s *Spec) { s.Workdir = "/proc/self/fd/7" },
	} {
		spec := te.spec(`true`)
		edit(&spec)
		_, err := te.Start(ctx, spec)
		if err == nil {
			t.Errorf("%s: started", name)
			continue
		}
		wantKind(t, err, errdefs.ErrInvalid)
	}
	for name, edit := range map[string]func(*Spec){
		"absurd memory": func(s *Spec) { s.Limits.MemoryBytes = 1 << 50 },
		"absurd cpus":   func(s *Spec) { s.Limits.CPUs = 1000 },
		"host network":  func(s *Spec) { s.Network = NetworkHost },
		"root":          func(s *Spec) { s.UID = new(uint32) },
	} {
		spec := te.spec(`true`)
		edit(&spec)
		_, err := te.Start(ctx, spec)
		if err == nil {
			t.Errorf("%s: started", name)
			continue
		}
		wantKind(t, err, errdefs.ErrPermissionDenied)
	}

	// A program that is not there: the start fails and leaves nothing.
	spec = te.spec("")
	spec.Command = []string{"/no/such/program"}
	if _, err := te.Start(ctx, spec); err == nil {
		t.Error("started a program that does not exist")
	}

	// The same id twice at once.
	spec = te.spec(`sleep 100`)
	task, err := te.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = te.Start(ctx, spec)
	wantKind(t, err, errdefs.ErrAlreadyExists)
	task.Kill(ctx)
	if r := collect(ctx, t, task); r.Err != nil {
		t.Error(r.Err)
	}
}

// An unreachable containerd is reported as unavailable, naming the socket
// and `make deps`.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Address = filepath.Join(t.TempDir(), "no.sock")
	cfg.Owner = "unreachable"
	cfg.StateDir = t.TempDir()
	_, err := NewContainerd(context.Background(), cfg)
	wantKind(t, err, errdefs.ErrUnavailable)
	if !strings.Contains(err.Error(), cfg.Address) || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("message does not name the socket and make deps: %v", err)
	}
	cfg.Owner = "bad owner!"
	_, err = NewContainerd(context.Background(), cfg)
	wantKind(t, err, errdefs.ErrInvalid)
}

// The workspace is mounted at /workspace, writable by the task's (non-root)
// user, and what the task writes there appears on the host.
func TestWorkspace(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	ws := filepath.Join(t.TempDir(), "ws")
	if err := os.MkdirAll(filepath.Join(ws, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "sub", "in.txt"), []byte("input\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A link out of the workspace must not make the host target change owner.
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(ws, "link")); err != nil {
		t.Fatal(err)
	}
	spec := te.spec(`pwd; id -u; cat sub/in.txt; echo hello > out.txt && echo more > sub/new.txt && grep -E ' /workspace ' /proc/self/mounts`)
	spec.WorkspaceDir = ws
	r := te.mustRun(t, spec)
	if r.Result.ExitCode != 0 {
		t.Fatalf("exit %d, stderr %q, stdout %q", r.Result.ExitCode, r.Stderr, r.Stdout)
	}
	lines := strings.Split(r.Stdout, "\n")
	if lines[0] != "/workspace" || lines[1] != "65534" || lines[2] != "input" {
		t.Errorf("stdout %q", r.Stdout)
	}
	mnt := lines[3]
	for _, opt := range []string{"rw", "nosuid", "nodev"} {
		if !strings.Contains(mnt, opt) {
			t.Errorf("workspace mount %q lacks %s", mnt, opt)
		}
	}
	got, err := os.ReadFile(filepath.Join(ws, "out.txt"))
	if err != nil || string(got) != "hello\n" {
		t.Errorf("out.txt on the host: %q, %v", got, err)
	}
	if fi, err := os.Stat(outside); err != nil || statUID(fi) != uint32(os.Getuid()) {
		t.Errorf("the target of a link out of the workspace changed owner: %v", err)
	}
}

// Twenty tasks at once all finish with their own output intact, and leave
// nothing behind.
func TestConcurrentTasks(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	const n = 20
	var wg sync.WaitGroup
	results := make([]ran, n)
	specs := make([]Spec, n)
	for i := range n {
		specs[i] = te.spec(fmt.Sprintf(`for j in $(seq 1 200); do echo "task %d line $j"; done; echo "err %d" >&2`, i, i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = te.run(t, specs[i])
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.Err != nil {
			t.Errorf("task %d: %v", i, r.Err)
			continue
		}
		var want strings.Builder
		for j := 1; j <= 200; j++ {
			fmt.Fprintf(&want, "task %d line %d\n", i, j)
		}
		if r.Stdout != want.String() || r.Stderr != fmt.Sprintf("err %d\n", i) || r.Result.ExitCode != 0 {
			t.Errorf("task %d: exit %d, stdout %d bytes (want %d), stderr %q", i, r.Result.ExitCode, len(r.Stdout), want.Len(), r.Stderr)
		}
	}
	if te.Running() != 0 {
		t.Errorf("Running() = %d", te.Running())
	}
	// assertNothingLeft runs at cleanup; check now too, while others still
	// have a chance to say which test leaked.
	te.assertNothingLeft()
}

// Output arrives byte-exact at volume (the benchmark does 1 GiB).
func TestOutputVolume(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	const size = 64 << 20
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	task, err := te.Start(ctx, te.spec(fmt.Sprintf(`head -c %d /dev/zero | tr '\0' 'z'`, size)))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n := 0
	for c := range task.Output() {
		if c.Stream != Stdout {
			t.Fatalf("stderr: %q", c.Data)
		}
		n += len(c.Data)
		h.Write(c.Data)
	}
	res, err := task.Wait(ctx)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("result %+v, %v", res, err)
	}
	want := sha256.Sum256(bytes.Repeat([]byte{'z'}, size))
	if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("got %d bytes (want %d), hash match %v", n, size, bytes.Equal(h.Sum(nil), want[:]))
	}
}

// Cleanup removes containers of this owner that a crashed peer left behind
// (one never started, one running, one that exited by itself), reports how
// each was found, and leaves other owners' alone.
func TestCleanupLeftovers(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), testNamespace), testTimeout)
	defer cancel()
	client, err := newRawClient()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	img, err := client.GetImage(ctx, testImage)
	if err != nil {
		t.Fatal(err)
	}
	mkRun := func(id, owner string, args ...string) containerd.Container {
		c, err := client.NewContainer(ctx, id,
			containerd.WithContainerLabels(map[string]string{labelOwner: owner, labelTask: id}),
			containerd.WithNewSnapshot(id, img),
			containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mk := func(id, owner string) containerd.Container { return mkRun(id, owner, "sleep", "1000") }
	start := func(c containerd.Container) containerd.Task {
		task, err := c.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return task
	}
	neverStarted := mk(te.id(), te.owner)
	running := mk(te.id(), te.owner)
	start(running)
	exited := mkRun(te.id(), te.owner, "sh", "-c", "exit 7")
	exitedTask := start(exited)
	exitCh, err := exitedTask.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-exitCh
	// A snapshot of this owner that no container uses: a crash between
	// preparing it and creating the container, which leaves it held by the
	// creation's lease (so containerd's garbage collector keeps it).
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orphan := te.id()
	sn := client.SnapshotService(DefaultSnapshotter)
	lctx, dropLease, err := client.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer dropLease(ctx)
	if _, err := sn.Prepare(lctx, orphan, identity.ChainID(diffIDs).String(), snapshots.WithLabels(map[string]string{labelOwner: te.owner})); err != nil {
		t.Fatal(err)
	}
	otherOwner := te.owner + "-other"
	other := mk(otherOwner+"-1", otherOwner)
	defer other.Delete(ctx, containerd.WithSnapshotCleanup)

	// A task of this executor that is running is not a leftover.
	live, err := te.Start(ctx, te.spec(`sleep 100`))
	if err != nil {
		t.Fatal(err)
	}

	found, err := te.Cleanup(ctx)
	if err != nil || len(found) != 3 {
		t.Fatalf("cleanup removed %+v, %v; want 3", found, err)
	}
	want := map[string]Leftover{
		neverStarted.ID(): {TaskID: neverStarted.ID()},
		running.ID():      {TaskID: running.ID()},
		exited.ID():       {TaskID: exited.ID(), Exited: true, ExitCode: 7},
	}
	for _, f := range found {
		if f != want[f.TaskID] {
			t.Errorf("found %+v, want %+v", f, want[f.TaskID])
		}
	}
	if _, err := sn.Stat(ctx, orphan); !cerrdefs.IsNotFound(err) {
		t.Errorf("orphan snapshot still there: %v", err)
	}
	if _, err := client.LoadContainer(ctx, other.ID()); err != nil {
		t.Errorf("another owner's container was removed: %v", err)
	}
	if te.Running() != 1 {
		t.Errorf("Running() = %d, want the live task", te.Running())
	}
	live.Kill(ctx)
	if r := collect(ctx, t, live); r.Err != nil || !r.Result.Cancelled {
		t.Errorf("live task: %+v, %v", r.Result, r.Err)
	}
	if found, err := te.Cleanup(ctx); err != nil || len(found) != 0 {
		t.Errorf("second cleanup removed %+v, %v", found, err)
	}
}

// A start cut short by its context leaves nothing behind, wherever it was
// cut (the leftover check runs at the test's cleanup).
func TestStartCancelled(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	for _, d := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		task, err := te.Start(ctx, te.spec(`echo hi`))
		cancel()
		if err != nil {
			t.Logf("start within %v: %v", d, err)
			continue
		}
		wctx, wcancel := context.WithTimeout(context.Background(), testTimeout)
		r := collect(wctx, t, task)
		wcancel()
		if r.Err != nil || r.Stdout != "hi\n" {
			t.Errorf("start within %v: %q, %v", d, r.Stdout, r.Err)
		}
	}
	if te.Running() != 0 {
		t.Errorf("Running() = %d", te.Running())
	}
}

// Under gVisor, a start that fails (no such program) leaves a created task
// that must be killed before it can be deleted: nothing may remain.
func TestGVisorFailedStart(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	spec := te.spec("")
	spec.Command = []string{"/no/such/program"}
	spec.Isolation = IsolationGVisor
	start := time.Now()
	task, err := te.Start(ctx, spec)
	t.Logf("start of a missing program under gVisor: %v after %v", err, time.Since(start))
	if xe := (*ExecError)(nil); err != nil && (!errors.As(err, &xe) || xe.ExitCode() != ExitNotFound) {
		t.Errorf("a missing program under gVisor: %v, want executable file not found", err)
	}
	if err == nil {
		// runsc may report the missing program as the task's exit instead.
		r := collect(ctx, t, task)
		if r.Err != nil || r.Result.ExitCode == 0 {
			t.Errorf("a missing program ran: %+v, %v", r.Result, r.Err)
		}
	}
	// And a task that runs and is killed under gVisor.
	spec = te.spec(`echo up; sleep 100`)
	spec.Isolation = IsolationGVisor
	spec.Timeout = 2 * time.Second
	r := te.mustRun(t, spec)
	if !r.Result.TimedOut || r.Stdout != "up\n" {
		t.Errorf("gVisor timeout: %+v, stdout %q", r.Result, r.Stdout)
	}
	t.Logf("gVisor result: %+v", r.Result)
}

// A program the image lacks ends as a shell reports it: exit 127 and
// "executable file not found: NAME", not runc's own words; one that cannot
// be executed, 126. A failed start of another kind is not taken for one.
func TestMissingProgram(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, c := range []struct {
		program string
		code    int
		msg     string
	}{
		{"nosuchcmd", ExitNotFound, "executable file not found: nosuchcmd"},
		{"/no/such/program", ExitNotFound, "executable file not found: /no/such/program"},
		{"/etc/passwd", ExitNotExecutable, "permission denied: cannot execute /etc/passwd"},
	} {
		spec := te.spec("")
		spec.Command = []string{c.program, "arg"}
		task, err := te.Start(ctx, spec)
		if err == nil {
			task.Kill(ctx)
			collect(ctx, t, task)
			t.Errorf("%s: started", c.program)
			continue
		}
		var xe *ExecError
		if !errors.As(err, &xe) || xe.ExitCode() != c.code || xe.Error() != c.msg {
			t.Errorf("%s: error %v (%#v), want an ExecError %q with exit code %d", c.program, err, xe, c.msg, c.code)
		}
		if strings.Contains(err.Error(), "runc") || strings.Contains(err.Error(), "OCI") {
			t.Errorf("%s: error %q tells runc's internals", c.program, err)
		}
	}
	// A start that fails for another reason is not a missing program.
	spec := te.spec(`true`)
	spec.Workdir = "/etc/passwd/sub"
	if task, err := te.Start(ctx, spec); err == nil {
		task.Kill(ctx)
		collect(ctx, t, task)
	} else if xe := (*ExecError)(nil); errors.As(err, &xe) {
		t.Errorf("a bad working directory taken for a missing program: %v", err)
	}
	te.assertNothingLeft()
}

// A task that writes more to /workspace than its disk limit fails with
// DiskLimitExceeded: one big file is cut by the kernel, many small ones
// (each under the limit) by the watch or the last measure; a task within
// its limit is not flagged.
func TestDiskLimit(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	for _, c := range []struct {
		name, script string
		over         bool
	}{
		{"one big file", `dd if=/dev/zero of=big bs=1M count=64`, true},
		{"many files", `for i in $(seq 1 16); do dd if=/dev/zero of=f$i bs=1M count=4 2>/dev/null || exit 1; done`, true},
		{"slow writer", `for i in $(seq 1 64); do dd if=/dev/zero of=s$i bs=1M count=1 2>/dev/null; sleep 0.1; done; echo not killed`, true},
		{"within", `dd if=/dev/zero of=small bs=1M count=4`, false},
	} {
		ws := t.TempDir()
		own := filepath.Join(ws, "base.bin") // the workspace's own bytes do not count
		if err := os.WriteFile(own, make([]byte, 16<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		spec := te.spec(c.script)
		spec.WorkspaceDir = ws
		spec.Limits.DiskBytes = 8 << 20
		r := te.mustRun(t, spec)
		if r.Result.DiskLimitExceeded != c.over || (c.over && r.Result.ExitCode == 0) {
			t.Errorf("%s: %+v, stdout %q stderr %q; want over the limit: %v", c.name, r.Result, r.Stdout, r.Stderr, c.over)
		}
		if c.name == "slow writer" && strings.Contains(r.Stdout, "not killed") {
			t.Errorf("slow writer: not killed once over its limit")
		}
	}
	te.assertNothingLeft()
}
