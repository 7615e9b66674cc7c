package node

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
	"github.com/cortex-peer/cortex-peer/node/tasklog"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// TasksConfig configures the tasks this peer runs.
type TasksConfig struct {
	ContainerdSocket string
	Namespace        string
	Policy           runtime.Policy
	// LogStoreCapBytes bounds the output kept per task in the store.
	LogStoreCapBytes int64
	// AcceptRemote lets other peers delegate tasks here; AcceptFrom, when
	// not empty, limits that to the peers it names.
	AcceptRemote bool
	AcceptFrom   []peer.ID
	// LostAfter is how long an unreachable executor's task stays running
	// on its coordinator before it is marked lost.
	LostAfter time.Duration
	// KeepTasks and KeepFor bound the ended tasks remembered (0: no bound).
	KeepTasks int
	KeepFor   time.Duration
}

// taskExecutor is what the runner needs of the runtime: the executor, plus
// the clean-up of what a crashed peer left behind and a running count.
type taskExecutor interface {
	runtime.Executor
	Cleanup(ctx context.Context) (int, error)
	Running() int
}

// taskRunner runs tasks on this peer. It connects to containerd on first
// use, so a peer starts (and serves everything else) where containerd is
// missing; each task then fails with an error that says how to install it.
type taskRunner struct {
	n   *Node
	cfg TasksConfig
	log *slog.Logger
	dir string // DIR/tasks: per-task working copies and runtime state

	// layers keeps workspaces as overlay layers; mounts are the tasks'
	// overlays, by task id.
	layers   *workspaceLayers
	mountsMu sync.Mutex
	mounts   map[string]*layerMount

	mu   sync.Mutex
	exec taskExecutor

	running atomic.Int64
}

func newTaskRunner(n *Node, cfg TasksConfig, dir, layersDir string, log *slog.Logger) *taskRunner {
	unmountLeftovers(filepath.Join(dir, "work"), log)
	return &taskRunner{n: n, cfg: cfg, dir: dir, log: log, mounts: map[string]*layerMount{},
		layers: newWorkspaceLayers(layersDir, n.dags, log)}
}

// executor connects to containerd once; the first connection removes the
// containers a previous run of this peer left behind.
func (t *taskRunner) executor(ctx context.Context) (taskExecutor, error) {
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
		Owner:     t.n.ID().String(),
		StateDir:  filepath.Join(t.dir, "state"),
		Policy:    t.cfg.Policy,
		Logger:    t.log,
	})
	if err != nil {
		return nil, err
	}
	if n, err := ex.Cleanup(ctx); err != nil {
		t.log.Warn("removing tasks left behind", "err", err)
	} else if n > 0 {
		t.log.Info("removed tasks left behind by an earlier run", "count", n)
	}
	t.exec = ex
	return ex, nil
}

// Close releases the containerd connection and waits for the removal of
// workspace layers. Safe to call twice.
func (t *taskRunner) Close() error {
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
func (t *taskRunner) Running() int { return int(t.running.Load()) }

// runEvents receives what happens to a task, in order, from one goroutine.
type runEvents interface {
	started(id string, executor peer.ID, base cid.Cid) error
	output(c runtime.Chunk) error
	progress(phase string, done, total uint64) error
}

// taskOutcome is how a task run on this peer ended, workspace included.
type taskOutcome struct {
	ID        string
	Result    runtime.Result
	Base      cid.Cid
	ResultCID cid.Cid
	Merge     *dag.MergeReport
	Log       tasklog.Stats
	Stdout    int64
	Stderr    int64
	// Number of output chunks per stream (their last sequence numbers).
	StdoutChunks, StderrChunks uint64
}

// killTimeout bounds the kill of a task whose caller went away.
const killTimeout = 10 * time.Second

func newTaskID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "t" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// run runs spec here. With a workspace directory, the directory is imported,
// a copy of it is mounted at /workspace, and what the task changed is merged
// back three-way into the directory as it is by then. Cancelling ctx kills
// the task; its changes are then not merged.
func (t *taskRunner) run(ctx context.Context, spec runtime.Spec, workspace string, ev runEvents) (taskOutcome, error) {
	if spec.ID == "" {
		spec.ID = newTaskID()
	}
	out := taskOutcome{ID: spec.ID}
	if _, err := t.executor(ctx); err != nil {
		return out, err
	}
	// Check the spec before the workspace is imported, so a bad spec fails fast.
	if _, err := t.cfg.Policy.Apply(spec); err != nil {
		return out, err
	}
	defer t.removeWorkDir(spec.ID)
	var base cid.Cid
	if workspace != "" {
		var err error
		if base, err = t.prepareWorkspace(ctx, spec, workspace, ev); err != nil {
			return out, err
		}
		t.useWorkspace(&spec)
	}
	out, err := t.execute(ctx, spec, base, ev)
	if err != nil {
		return out, err
	}
	if workspace == "" || out.Result.Cancelled || out.Result.TimedOut || ctx.Err() != nil {
		return out, nil
	}
	return out, t.returnWorkspace(ctx, &out, workspace, spec.WorkspaceDir, ev)
}

// workDir is where a task's working copy lives (apart from the runtime's
// state dir: a task id from the wire cannot name it).
func (t *taskRunner) workDir(id string) string { return filepath.Join(t.dir, "work", id) }

// copyDir is the task's working copy of its workspace, mounted at /workspace.
func (t *taskRunner) copyDir(id string) string { return filepath.Join(t.workDir(id), "workspace") }

// useWorkspace points spec at the task's working copy.
func (t *taskRunner) useWorkspace(spec *runtime.Spec) {
	spec.WorkspaceDir = t.copyDir(spec.ID)
	t.mountsMu.Lock()
	spec.WorkspaceOwned = t.mounts[spec.ID] != nil // the overlay's layers are owned already
	t.mountsMu.Unlock()
}

// removeWorkDir drops the task's overlay (if its result was not kept) and
// working copy.
func (t *taskRunner) removeWorkDir(id string) {
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

// execute runs spec, whose workspace (if any) is already materialised at
// spec.WorkspaceDir, streams its output to ev and into the task log, and
// returns how it ended. Cancelling ctx kills the task.
func (t *taskRunner) execute(ctx context.Context, spec runtime.Spec, base cid.Cid, ev runEvents) (taskOutcome, error) {
	out := taskOutcome{ID: spec.ID, Base: base}
	ex, err := t.executor(ctx)
	if err != nil {
		return out, err
	}
	logw, err := t.n.taskLogs.Writer(spec.ID, t.cfg.LogStoreCapBytes)
	if err != nil {
		return out, err
	}
	defer logw.Close()

	t.running.Add(1)
	task, err := ex.Start(ctx, spec)
	if err != nil {
		t.running.Add(-1)
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
	if err := ev.started(spec.ID, t.n.ID(), out.Base); err != nil {
		sendErr = err
	}
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
		_ = logw.Append(c) // a store error is counted as dropped output, never stops the task
		if !output.queued() {
			_ = logw.Flush()
		}
		if sendErr == nil {
			if err := ev.output(c); err != nil {
				// The caller is gone; the task is killed by ctx. Keep
				// draining so the task is not blocked on its writes.
				sendErr = err
			}
		}
	}
	res, werr := task.Wait(context.WithoutCancel(ctx))
	t.running.Add(-1)
	out.Result = res
	out.Log, _ = logw.Close()
	if werr != nil {
		return out, fmt.Errorf("task %s: %w", spec.ID, werr)
	}
	t.log.Info("task ended", "task", spec.ID, "exit", res.ExitCode, "signal", res.Signal,
		"oom", res.OOMKilled, "timed_out", res.TimedOut, "cancelled", res.Cancelled, "seconds", res.Duration.Seconds())
	return out, sendErr
}

// prepareWorkspace imports dir (incrementally) and materialises it under
// work/workspace for the task.
func (t *taskRunner) prepareWorkspace(ctx context.Context, spec runtime.Spec, dir string, ev runEvents) (cid.Cid, error) {
	_ = ev.progress("importing workspace", 0, 0)
	root, err := t.importWorkspace(ctx, spec.ID, dir)
	if err != nil {
		return cid.Undef, err
	}
	if err := t.materialise(ctx, spec, root); err != nil {
		return cid.Undef, err
	}
	return root, nil
}

// importWorkspace imports the caller's directory dir (incrementally, with
// the import index) and pins it as that directory's latest root.
func (t *taskRunner) importWorkspace(ctx context.Context, id, dir string) (cid.Cid, error) {
	// GC is held off only while blocks are added; the pin keeps them after.
	t.n.gcMu.RLock()
	defer t.n.gcMu.RUnlock()
	imp, err := t.n.dags.Import(ctx, dir, dag.ImportOptions{Watch: t.n.watch})
	if err != nil {
		return cid.Undef, fmt.Errorf("task %s: import workspace: %w", id, err)
	}
	if err := t.n.dags.Pin("ws:"+dir, imp.Root); err != nil {
		return cid.Undef, err
	}
	return imp.Root, nil
}

// materialise makes root, whose blocks are here, the task's working copy
// (workDir/workspace): an overlay of root's layers where overlays can be
// used, else an export of it.
func (t *taskRunner) materialise(ctx context.Context, spec runtime.Spec, root cid.Cid) error {
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
	if _, err := t.n.dags.Export(ctx, root, t.copyDir(id), dag.ExportOptions{}); err != nil {
		return fmt.Errorf("task %s: materialise workspace %s: %w", id, root, err)
	}
	return nil
}

// importResult imports what a task left in its working copy and pins it as
// the task's result. An overlay is imported through its base's index
// (reading only the files the task wrote) and kept as the result's layers.
func (t *taskRunner) importResult(ctx context.Context, id, copyDir string) (cid.Cid, error) {
	t.n.gcMu.RLock()
	defer t.n.gcMu.RUnlock()
	t.mountsMu.Lock()
	m := t.mounts[id]
	t.mountsMu.Unlock()
	// A copy is new and will be removed: an index of it would only be litter.
	opts := dag.ImportOptions{NoIndex: true}
	pending := "layers:pending:" + id
	if m != nil {
		opts = dag.ImportOptions{IndexFrom: m.indexFrom(), IndexTo: pending}
	}
	imp, err := t.n.dags.Import(ctx, copyDir, opts)
	if err != nil {
		if m != nil {
			_ = t.n.dags.DropIndex(pending)
		}
		return cid.Undef, fmt.Errorf("task %s: import result: %w", id, err)
	}
	if m != nil {
		t.log.Debug("imported task result", "task", id, "files_read", imp.FilesRead, "files", imp.Files)
		if err := t.n.dags.RenameIndex(pending, m.indexFor(imp.Root)); err != nil {
			t.log.Warn("keep the index of a task result", "task", id, "err", err)
		}
		m.finish(imp.Root)
	}
	if err := t.n.dags.Pin("task:"+id, imp.Root); err != nil {
		return cid.Undef, err
	}
	return imp.Root, nil
}

// returnWorkspace imports what the task left in its copy and merges
// BASE -> RESULT into the caller's directory as it is now.
func (t *taskRunner) returnWorkspace(ctx context.Context, out *taskOutcome, dir, copyDir string, ev runEvents) error {
	_ = ev.progress("importing result", 0, 0)
	root, err := t.importResult(ctx, out.ID, copyDir)
	if err != nil {
		return err
	}
	out.ResultCID = root
	if root.Equals(out.Base) {
		out.Merge = &dag.MergeReport{}
		return nil
	}
	_ = ev.progress("merging", 0, 0)
	t.n.gcMu.RLock()
	defer t.n.gcMu.RUnlock()
	rep, err := t.n.dags.Merge(ctx, out.Base, root, dir)
	if err != nil {
		return fmt.Errorf("task %s: merge result into %s: %w", out.ID, dir, err)
	}
	out.Merge = &rep
	return nil
}
