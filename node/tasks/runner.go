// Package tasks runs tasks on this peer: it connects to containerd on first
// use, keeps each task's output in the task log, and gives a task its
// workspace as an overlay of layers this peer keeps (layers.go), importing
// what the task changed and merging it back into a local directory. It
// knows nothing of other peers or the wire; it must not import node.
package tasks

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/dag/fswatch"
	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/node/tasklog"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// Config configures the tasks this peer runs.
type Config struct {
	ContainerdSocket string
	Namespace        string
	Policy           runtime.Policy
	// LogStoreCapBytes bounds the output kept per task in the store.
	LogStoreCapBytes int64
	// Dir holds per-task working copies and runtime state; LayersDir the
	// workspace layers tasks run on.
	Dir, LayersDir string
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.ContainerdSocket == "" || c.Namespace == "" || c.Dir == "" || c.LayersDir == "" {
		return fmt.Errorf("tasks config: containerd socket, namespace and directories are required: %w", errdefs.ErrInvalid)
	}
	return nil
}

// Locker is the read side of the lock that keeps GC away while blocks no
// pin reaches yet are added.
type Locker interface {
	RLock()
	RUnlock()
}

// taskExecutor is what the runner needs of the runtime: the executor, plus
// the clean-up of what a crashed peer left behind and a running count.
type taskExecutor interface {
	runtime.Executor
	Cleanup(ctx context.Context) ([]runtime.Leftover, error)
	Running() int
}

// Runner runs tasks on this peer. It connects to containerd on first
// use, so a peer starts (and serves everything else) where containerd is
// missing; each task then fails with an error that says how to install it.
type Runner struct {
	cfg   Config
	self  peer.ID // the owner of this peer's containers, and the executor events name
	dags  *dag.Store
	watch *fswatch.Watcher // nil: imports scan
	logs  *tasklog.Store
	gc    Locker
	log   *slog.Logger
	dir   string // per-task working copies and runtime state

	// layers keeps workspaces as overlay layers; mounts are the tasks'
	// overlays, by task id.
	layers   *workspaceLayers
	mountsMu sync.Mutex
	mounts   map[string]*layerMount

	mu        sync.Mutex
	exec      taskExecutor
	leftovers map[string]runtime.Leftover // what the first connection found, by task id

	running atomic.Int64
}

// New returns a runner for the peer self. Imports of local directories are
// watched with watch (nil: every import scans); gc is held for reading
// while blocks no pin reaches yet are added. Overlays and layers an earlier
// run left are removed.
func New(cfg Config, self peer.ID, dags *dag.Store, watch *fswatch.Watcher, logs *tasklog.Store, gc Locker, log *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	unmountLeftovers(filepath.Join(cfg.Dir, "work"), log)
	return &Runner{cfg: cfg, self: self, dags: dags, watch: watch, logs: logs, gc: gc, log: log, dir: cfg.Dir,
		mounts: map[string]*layerMount{}, layers: newWorkspaceLayers(cfg.LayersDir, dags, log)}, nil
}

// Ready connects to containerd, so a task can run; see executor.
func (t *Runner) Ready(ctx context.Context) error {
	_, err := t.executor(ctx)
	return err
}

// Leftover connects to containerd if need be and says how the first
// connection found task id, which an earlier run of this peer left behind:
// exited by itself (and how), or still running and killed. False when it
// found no container of that task.
func (t *Runner) Leftover(ctx context.Context, id string) (runtime.Leftover, bool, error) {
	if _, err := t.executor(ctx); err != nil {
		return runtime.Leftover{}, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.leftovers[id]
	return l, ok, nil
}

// executor connects to containerd once; the first connection removes the
// containers a previous run of this peer left behind.
func (t *Runner) executor(ctx context.Context) (taskExecutor, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.exec != nil {
		return t.exec, nil
	}
	if err := os.MkdirAll(filepath.Join(t.dir, "state"), 0o700); err != nil {
		return nil, fmt.Errorf("task state dir: %w", err)
	}
	ex, err := runtime.NewContainerd(ctx, runtime.Config{
		Address:   t.cfg.ContainerdSocket,
		Namespace: t.cfg.Namespace,
		Owner:     t.self.String(),
		StateDir:  filepath.Join(t.dir, "state"),
		Policy:    t.cfg.Policy,
		Logger:    t.log,
	})
	if err != nil {
		return nil, err
	}
	found, err := ex.Cleanup(ctx)
	if err != nil {
		t.log.Warn("removing tasks left behind", "err", err)
	} else if len(found) > 0 {
		t.log.Info("removed tasks left behind by an earlier run", "count", len(found))
	}
	t.leftovers = map[string]runtime.Leftover{}
	for _, l := range found {
		t.leftovers[l.TaskID] = l
	}
	t.exec = ex
	return ex, nil
}

// Close releases the containerd connection and waits for the removal of
// workspace layers. Safe to call twice.
func (t *Runner) Close() error {
	t.layers.Close()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.exec == nil {
		return nil
	}
	err := t.exec.Close()
	t.exec = nil
	return err
}

// Running is the number of tasks running here, for the heartbeat.
func (t *Runner) Running() int { return int(t.running.Load()) }

// Events receives what happens to a task, in order, from one goroutine.
type Events interface {
	Started(id string, executor peer.ID, base cid.Cid) error
	Output(c runtime.Chunk) error
	Progress(phase string, done, total uint64) error
}

// VerifyReport is what a task's result adds to the diagnostics of its base
// and what it fixes, as the workspace's language server sees them.
type VerifyReport struct {
	Added       []Diagnostic `json:"added,omitempty"`
	Fixed       []Diagnostic `json:"fixed,omitempty"`
	AddedErrors int          `json:"added_errors"`
}

// Diagnostic is one problem a language server reports.
type Diagnostic struct {
	File     string `json:"file"`
	Line     int    `json:"line"`
	Column   int    `json:"column"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	Source   string `json:"source,omitempty"`
}

// Verifier is implemented by Events that check a result before it merges
// (run --verify): the report is attached to the outcome, and an error
// keeps the result from merging.
type Verifier interface {
	VerifyResult(ctx context.Context, base, result cid.Cid) (*VerifyReport, error)
}

// Holder is implemented by Events whose Output may hold the task, waiting
// for a reader that lags (a coordinator across the mesh). Before a chunk it
// would hold on, Execute makes the task log readable up to that chunk, so
// that the reader, filling what it missed from the log, finds it.
type Holder interface {
	WouldHold(c runtime.Chunk) bool
}

// NopEvents discards a task's events: for detached runs, whose output is
// read from the task log.
type NopEvents struct{}

func (NopEvents) Started(string, peer.ID, cid.Cid) error { return nil }
func (NopEvents) Output(runtime.Chunk) error             { return nil }
func (NopEvents) Progress(string, uint64, uint64) error  { return nil }

// Outcome is how a task run on this peer ended, workspace included.
type Outcome struct {
	ID        string
	Result    runtime.Result
	Base      cid.Cid
	ResultCID cid.Cid
	Merge     *dag.MergeReport
	Verify    *VerifyReport
	Log       tasklog.Stats
	Stdout    int64
	Stderr    int64
	// Number of output chunks per stream (their last sequence numbers).
	StdoutChunks, StderrChunks uint64
	// Artifacts are what the spec's artifact patterns matched.
	Artifacts []Artifact
}

// CancelledExitCode is the exit code of a cancelled task, as a shell reports
// a command stopped by Ctrl-C (128 + SIGINT), whatever signal killed it.
const CancelledExitCode = 130

// killTimeout bounds the kill of a task whose caller went away.
const killTimeout = 10 * time.Second

// NewTaskID returns a fresh random task id.
func NewTaskID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "t" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Run runs spec here. With a workspace directory, the directory is imported,
// a copy of it is mounted at /workspace, and what the task changed is merged
// back three-way into the directory as it is by then. Cancelling ctx kills
// the task; its changes are then not merged.
func (t *Runner) Run(ctx context.Context, spec runtime.Spec, workspace string, ev Events) (Outcome, error) {
	if spec.ID == "" {
		spec.ID = NewTaskID()
	}
	out := Outcome{ID: spec.ID}
	if _, err := t.executor(ctx); err != nil {
		return out, err
	}
	// Check the spec before the workspace is imported, so a bad spec fails fast.
	if _, err := t.cfg.Policy.Apply(spec); err != nil {
		return out, err
	}
	if err := CheckArtifacts(spec.Artifacts); err != nil {
		return out, err
	}
	if len(spec.Artifacts) > 0 && workspace == "" {
		return out, fmt.Errorf("artifacts are paths under /workspace: the task needs a workspace: %w", errdefs.ErrInvalid)
	}
	defer t.Release(spec.ID)
	var base cid.Cid
	if workspace != "" {
		var err error
		if base, err = t.prepareWorkspace(ctx, spec, workspace, ev); err != nil {
			return out, err
		}
		t.useWorkspace(&spec)
	}
	out, err := t.Execute(ctx, spec, base, ev)
	if err != nil {
		return out, err
	}
	// A task over its disk limit gives nothing back: importing what it
	// wrote is the cost the limit is there to bound.
	if workspace == "" || out.Result.Cancelled || out.Result.TimedOut || out.Result.DiskLimitExceeded || ctx.Err() != nil {
		return out, nil
	}
	return out, t.returnWorkspace(ctx, &out, workspace, spec.WorkspaceDir, spec.Artifacts, ev)
}

// workDir is where a task's working copy lives (apart from the runtime's
// state dir: a task id from the wire cannot name it).
func (t *Runner) workDir(id string) string { return filepath.Join(t.dir, "work", id) }

// copyDir is the task's working copy of its workspace, mounted at /workspace.
func (t *Runner) copyDir(id string) string { return filepath.Join(t.workDir(id), "workspace") }

// Prepare makes root, whose blocks are here, the task's working copy and
// points spec at it.
func (t *Runner) Prepare(ctx context.Context, spec *runtime.Spec, root cid.Cid) error {
	if err := t.materialise(ctx, *spec, root); err != nil {
		return err
	}
	t.useWorkspace(spec)
	return nil
}

// useWorkspace points spec at the task's working copy.
func (t *Runner) useWorkspace(spec *runtime.Spec) {
	spec.WorkspaceDir = t.copyDir(spec.ID)
	t.mountsMu.Lock()
	if m := t.mounts[spec.ID]; m != nil {
		spec.WorkspaceOwned = true      // the overlay's layers are owned already
		spec.WorkspaceChanges = m.upper // what the task writes, for its disk limit
	}
	t.mountsMu.Unlock()
}

// Release drops the task's overlay (if its result was not kept) and
// working copy.
func (t *Runner) Release(id string) {
	t.mountsMu.Lock()
	m := t.mounts[id]
	delete(t.mounts, id)
	t.mountsMu.Unlock()
	if m != nil {
		m.finish(cid.Undef)
	}
	if err := os.RemoveAll(t.workDir(id)); err != nil {
		t.log.Warn("remove task working copy", "task", id, "err", err)
	}
}

// Execute runs spec, whose workspace (if any) is already materialised at
// spec.WorkspaceDir, streams its output to ev and into the task log, and
// returns how it ended. Cancelling ctx kills the task.
func (t *Runner) Execute(ctx context.Context, spec runtime.Spec, base cid.Cid, ev Events) (Outcome, error) {
	out := Outcome{ID: spec.ID, Base: base}
	ex, err := t.executor(ctx)
	if err != nil {
		return out, err
	}
	logw, err := t.logs.Writer(spec.ID, t.cfg.LogStoreCapBytes)
	if err != nil {
		return out, err
	}
	defer logw.Close()

	t.running.Add(1)
	task, err := ex.Start(ctx, spec)
	if err != nil {
		t.running.Add(-1)
		if xe := (*runtime.ExecError)(nil); errors.As(err, &xe) {
			return t.execFailed(out, xe, logw, ev)
		}
		return out, err
	}
	t.log.Info("task started", "task", spec.ID, "image", spec.Image, "workspace", spec.WorkspaceDir != "")
	// The task is killed when the caller goes away; stop ends the watcher.
	stop := context.AfterFunc(ctx, func() {
		kctx, cancel := context.WithTimeout(context.Background(), killTimeout)
		defer cancel()
		if err := task.Kill(kctx); err != nil {
			t.log.Warn("kill task", "task", spec.ID, "err", err)
		}
	})
	defer stop()

	var sendErr error
	if err := ev.Started(spec.ID, t.self, out.Base); err != nil {
		sendErr = err
	}
	// logErr: the task log could not keep a chunk. Past a full disk
	// (ErrResourceExhausted) the task is killed, as nothing more of its
	// output could be kept (nor, for a delegated task, reach its
	// coordinator, which fills its holes from this log); any other failure
	// of the log lets the task run on. Either way the run ends with the
	// error: output cut short is never reported as a success.
	var logErr error
	var killing sync.WaitGroup
	defer killing.Wait()
	for output := newCoalescer(task.Output()); ; {
		c, ok := output.next()
		if !ok {
			break
		}
		if c.Stream == runtime.Stdout {
			out.Stdout += int64(len(c.Data))
			out.StdoutChunks = c.Seq
		} else {
			out.Stderr += int64(len(c.Data))
			out.StderrChunks = c.Seq
		}
		if err := logw.Append(c); err != nil && logErr == nil {
			logErr = err // counted as dropped output from here on
			if errors.Is(err, errdefs.ErrResourceExhausted) {
				t.log.Warn("the task's output cannot be kept: killing it", "task", spec.ID, "err", err)
				killing.Add(1)
				go func() { // the output is drained meanwhile
					defer killing.Done()
					kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
					defer cancel()
					if err := task.Kill(kctx); err != nil {
						t.log.Warn("kill task", "task", spec.ID, "err", err)
					}
				}()
			}
		}
		if holder, ok := ev.(Holder); !output.queued() || (ok && sendErr == nil && holder.WouldHold(c)) {
			_ = logw.Flush()
		}
		if sendErr == nil {
			if err := ev.Output(c); err != nil {
				// The caller is gone; the task is killed by ctx. Keep
				// draining so the task is not blocked on its writes.
				sendErr = err
			}
		}
	}
	res, werr := task.Wait(context.WithoutCancel(ctx))
	t.running.Add(-1)
	if errors.Is(logErr, errdefs.ErrResourceExhausted) && ctx.Err() == nil {
		res.Cancelled = false // this peer killed it, not its caller: SIGKILL says so
	}
	if res.Cancelled {
		// One exit code for a cancelled task everywhere (run's own, the
		// result, the records): a shell's for a command interrupted.
		res.ExitCode = CancelledExitCode
	}
	out.Result = res
	var closeErr error
	out.Log, closeErr = logw.Close()
	if werr != nil {
		return out, fmt.Errorf("task %s: %w", spec.ID, werr)
	}
	t.log.Info("task ended", "task", spec.ID, "exit", res.ExitCode, "signal", res.Signal,
		"oom", res.OOMKilled, "timed_out", res.TimedOut, "cancelled", res.Cancelled, "seconds", res.Duration.Seconds())
	if logErr == nil {
		logErr = closeErr // the last chunks or the stats record could not be written
	}
	if logErr != nil {
		return out, errors.Join(outputLost(out, logErr), sendErr)
	}
	return out, sendErr
}

// outputLost says that task out's output was not all kept, and why: the
// cause first (no space left on …), then what became of the task.
func outputLost(out Outcome, err error) error {
	kept := out.Stdout + out.Stderr - out.Log.DroppedBytes
	what := "it ran on"
	if errors.Is(err, errdefs.ErrResourceExhausted) {
		what = "it was killed; free space and run it again"
	}
	return fmt.Errorf("%w; task %s: only the first %d of %d bytes of its output were kept (cortex-peer logs %s), %s",
		err, out.ID, kept, out.Stdout+out.Stderr, out.ID, what)
}

// execFailed ends a task whose program could not be executed as a shell
// ends `nosuchcmd`: the reason on stderr and exit code 127 (126 for a
// program that cannot be executed). The CLI, the API and MCP then report it
// as the task's own exit, and not as a failure of the peer.
func (t *Runner) execFailed(out Outcome, xe *runtime.ExecError, logw *tasklog.Writer, ev Events) (Outcome, error) {
	now := time.Now()
	c := runtime.Chunk{Stream: runtime.Stderr, Seq: 1, Time: now, Data: []byte("cortex-peer: " + xe.Error() + "\n")}
	_ = logw.Append(c)
	out.Stderr, out.StderrChunks = int64(len(c.Data)), c.Seq
	out.Result = runtime.Result{ExitCode: xe.ExitCode(), StartedAt: now}
	out.Log, _ = logw.Close()
	t.log.Info("task could not start its program", "task", out.ID, "err", xe, "exit", xe.ExitCode())
	if err := ev.Started(out.ID, t.self, out.Base); err != nil {
		return out, err
	}
	return out, ev.Output(c)
}

// prepareWorkspace imports dir (incrementally) and materialises it under
// work/workspace for the task.
func (t *Runner) prepareWorkspace(ctx context.Context, spec runtime.Spec, dir string, ev Events) (cid.Cid, error) {
	_ = ev.Progress("importing workspace", 0, 0)
	root, err := t.ImportWorkspace(ctx, spec.ID, dir)
	if err != nil {
		return cid.Undef, err
	}
	if err := t.materialise(ctx, spec, root); err != nil {
		return cid.Undef, err
	}
	return root, nil
}

// ImportWorkspace imports the caller's directory dir (incrementally, with
// the import index) and pins it as that directory's latest root. A tree
// that holds a peer's data dir is refused: its secrets would travel.
func (t *Runner) ImportWorkspace(ctx context.Context, id, dir string) (cid.Cid, error) {
	// GC is held off only while blocks are added; the pin keeps them after.
	t.gc.RLock()
	defer t.gc.RUnlock()
	imp, err := t.dags.Import(ctx, dir, dag.ImportOptions{Watch: t.watch, Refuse: locate.RefuseDataDir})
	if err != nil {
		return cid.Undef, fmt.Errorf("task %s: import workspace: %w", id, err)
	}
	if err := t.dags.Pin("ws:"+dir, imp.Root); err != nil {
		return cid.Undef, err
	}
	return imp.Root, nil
}

// materialise makes root, whose blocks are here, the task's working copy
// (workDir/workspace): an overlay of root's layers where overlays can be
// used, else an export of it.
func (t *Runner) materialise(ctx context.Context, spec runtime.Spec, root cid.Cid) error {
	id := spec.ID
	if err := os.MkdirAll(t.workDir(id), 0o700); err != nil {
		return fmt.Errorf("task %s: working dir: %w", id, err)
	}
	if applied, err := t.cfg.Policy.Apply(spec); err == nil {
		m, err := t.layers.mount(ctx, t.workDir(id), root, *applied.UID, *applied.GID)
		switch {
		case err == nil:
			t.mountsMu.Lock()
			t.mounts[id] = m
			t.mountsMu.Unlock()
			return nil
		case !errors.Is(err, errNoOverlay):
			return fmt.Errorf("task %s: workspace %s: %w", id, root, err)
		}
	}
	if _, err := t.dags.Export(ctx, root, t.copyDir(id), taskExport); err != nil {
		return fmt.Errorf("task %s: materialise workspace %s: %w", id, root, err)
	}
	return nil
}

// ImportResult imports what a task left in its working copy and pins it as
// the task's result. An overlay is imported through its base's index
// (reading only the files the task wrote) and kept as the result's layers.
func (t *Runner) ImportResult(ctx context.Context, id, copyDir string, artifacts []string) (cid.Cid, []Artifact, error) {
	t.gc.RLock()
	defer t.gc.RUnlock()
	arts, err := t.collectArtifacts(ctx, id, copyDir, artifacts)
	if err != nil {
		return cid.Undef, nil, err
	}
	root, err := t.importResult(ctx, id, copyDir)
	return root, arts, err
}

// importResult imports the working copy; t.gc is held.
func (t *Runner) importResult(ctx context.Context, id, copyDir string) (cid.Cid, error) {
	t.mountsMu.Lock()
	m := t.mounts[id]
	t.mountsMu.Unlock()
	// A copy is new and will be removed: an index of it would only be litter.
	opts := dag.ImportOptions{NoIndex: true}
	pending := "layers:pending:" + id
	if m != nil {
		opts = dag.ImportOptions{IndexFrom: m.indexFrom(), IndexTo: pending}
	}
	imp, err := t.dags.Import(ctx, copyDir, opts)
	if err != nil {
		if m != nil {
			_ = t.dags.DropIndex(pending)
		}
		return cid.Undef, fmt.Errorf("task %s: import result: %w", id, err)
	}
	if m != nil {
		t.log.Debug("imported task result", "task", id, "files_read", imp.FilesRead, "files", imp.Files)
		if err := t.dags.RenameIndex(pending, m.indexFor(imp.Root)); err != nil {
			t.log.Warn("keep the index of a task result", "task", id, "err", err)
		}
		m.finish(imp.Root)
	}
	if err := t.dags.Pin("task:"+id, imp.Root); err != nil {
		return cid.Undef, err
	}
	return imp.Root, nil
}

// returnWorkspace imports what the task left in its copy and merges
// BASE -> RESULT into the caller's directory as it is now.
func (t *Runner) returnWorkspace(ctx context.Context, out *Outcome, dir, copyDir string, artifacts []string, ev Events) error {
	_ = ev.Progress("importing result", 0, 0)
	root, arts, err := t.ImportResult(ctx, out.ID, copyDir, artifacts)
	if err != nil {
		return err
	}
	out.ResultCID, out.Artifacts = root, arts
	if root.Equals(out.Base) {
		out.Merge = &dag.MergeReport{}
		return nil
	}
	if v, ok := ev.(Verifier); ok {
		_ = ev.Progress("verifying", 0, 0)
		rep, err := v.VerifyResult(ctx, out.Base, root)
		out.Verify = rep
		if err != nil {
			return fmt.Errorf("task %s: %w", out.ID, err)
		}
	}
	_ = ev.Progress("merging", 0, 0)
	t.gc.RLock()
	defer t.gc.RUnlock()
	rep, err := t.dags.Merge(ctx, out.Base, root, dir)
	if err != nil {
		return fmt.Errorf("task %s: merge result into %s: %w", out.ID, dir, err)
	}
	out.Merge = &rep
	return nil
}
