package runtime

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	cerrdefs "github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// ctrTask is a task of the containerd executor. Its run goroutine watches
// the process, kills it when asked or at its deadline, collects the result
// and removes the container.
type ctrTask struct {
	e    *Containerd
	spec Spec
	log  *slog.Logger

	out            chan Chunk
	stdout, stderr *chunkWriter

	killOnce sync.Once
	killReq  chan struct{} // closed by Kill
	killSent chan struct{} // closed by run once SIGKILL went out, or the task ended

	startedAt time.Time  // set before run starts
	disk      *diskWatch // set before run starts; nil without a workspace

	done   chan struct{} // closed by run when the task is removed; result and err are final
	result Result
	err    error
}

var _ Task = (*ctrTask)(nil)

func newTask(e *Containerd, spec Spec) *ctrTask {
	out := make(chan Chunk, e.cfg.OutputBuffer)
	return &ctrTask{
		e:        e,
		spec:     spec,
		log:      e.log.With("task", spec.ID),
		out:      out,
		stdout:   &chunkWriter{stream: Stdout, out: out, discard: e.discard},
		stderr:   &chunkWriter{stream: Stderr, out: out, discard: e.discard},
		killReq:  make(chan struct{}),
		killSent: make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// ID implements Task.
func (t *ctrTask) ID() string { return t.spec.ID }

// Output implements Task.
func (t *ctrTask) Output() <-chan Chunk { return t.out }

// Wait implements Task.
func (t *ctrTask) Wait(ctx context.Context) (Result, error) {
	select {
	case <-t.done:
		return t.result, t.err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("wait for task %s: %w", t.spec.ID, ctx.Err())
	}
}

// Kill implements Task. It returns once SIGKILL has been sent to every
// process of the task (or the task had ended already), or when ctx ends.
func (t *ctrTask) Kill(ctx context.Context) error {
	t.killOnce.Do(func() { close(t.killReq) })
	select {
	case <-t.killSent:
		return nil
	case <-t.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill task %s: %w", t.spec.ID, ctx.Err())
	}
}

// Ways a task can be ended by the executor.
const (
	endedByTimeout = "timeout"
	endedByKill    = "kill"
	endedByClose   = "executor closed"
	endedByDisk    = "disk limit exceeded"
)

// run owns the task from its start to its removal.
func (t *ctrTask) run(task containerd.Task, container containerd.Container, exitCh <-chan containerd.ExitStatus, stopWait context.CancelFunc) {
	defer t.e.wg.Done()
	defer stopWait()

	deadline := time.NewTimer(t.spec.Timeout)
	defer deadline.Stop()
	var (
		resendTick *time.Ticker
		resend     <-chan time.Time
		endedBy    string
		status     containerd.ExitStatus
		killReq    = t.killReq
		closing    = t.e.closing
		sentOnce   sync.Once
	)
	markSent := func() { sentOnce.Do(func() { close(t.killSent) }) }
	overDisk, stopDiskWatch := t.watchDisk()
	defer stopDiskWatch()
	kill := func(why string) {
		if endedBy == "" {
			endedBy = why
			t.log.Info("killing task", "why", why)
		}
		t.killAll(task)
		markSent()
		if resendTick == nil {
			resendTick = time.NewTicker(killResend)
			resend = resendTick.C
		}
	}
wait:
	for {
		select {
		case status = <-exitCh:
			break wait
		case <-deadline.C:
			kill(endedByTimeout)
		case <-killReq:
			killReq = nil
			kill(endedByKill)
		case <-closing:
			closing = nil
			kill(endedByClose)
		case <-overDisk:
			overDisk = nil
			kill(endedByDisk)
		case <-resend:
			t.log.Warn("task still running after SIGKILL: sending it again")
			t.killAll(task)
		}
	}
	if resendTick != nil {
		resendTick.Stop()
	}
	markSent()

	res := Result{StartedAt: t.startedAt}
	code, exitedAt, werr := status.Result()
	var err error
	if werr != nil {
		// The exit stream broke (containerd restarted?): the task's fate is
		// unknown, so make sure it is dead before removing it.
		err = fmt.Errorf("task %s: lost track of its exit: %w: %w", t.spec.ID, werr, errdefs.ErrUnavailable)
		t.killAll(task)
		// Its output may never end: stop copying it rather than wait.
		if io := task.IO(); io != nil {
			io.Cancel()
		}
		res.Duration = time.Since(t.startedAt)
	} else {
		res.ExitCode = int(code)
		res.Signal = signalName(code)
		if !exitedAt.IsZero() && exitedAt.After(t.startedAt) {
			res.Duration = exitedAt.Sub(t.startedAt)
		} else {
			res.Duration = time.Since(t.startedAt)
		}
	}
	switch endedBy {
	case endedByTimeout:
		res.TimedOut = true
	case endedByKill, endedByClose:
		res.Cancelled = true
	}
	stopDiskWatch()
	if endedBy == endedByDisk || (t.disk != nil && t.disk.over()) {
		res.DiskLimitExceeded = true
		if res.ExitCode == 0 {
			res.ExitCode = 1 // it wrote past its limit between two checks: a failure all the same
		}
		t.log.Info("task wrote past its disk limit", "limit", t.disk.limit)
	}

	// The cgroup is still there until the task is deleted.
	mctx, cancel := context.WithTimeout(t.e.bg, metricsTimeout)
	if m, merr := task.Metrics(mctx); merr != nil {
		t.log.Debug("no metrics for the task", "err", merr)
	} else if u, perr := parseMetrics(m); perr != nil {
		t.log.Debug("unreadable metrics for the task", "err", perr)
	} else {
		res.CPUSeconds, res.PeakMemoryBytes, res.OOMKilled = u.CPUSeconds, u.PeakMemoryBytes, u.OOMKills > 0
	}
	cancel()

	// Every byte the task wrote is delivered before Output is closed.
	if io := task.IO(); io != nil {
		io.Wait()
	}
	close(t.out)

	rctx, cancel := t.e.removeContext()
	if rerr := t.e.removeContainer(rctx, container, task); rerr != nil && err == nil {
		err = fmt.Errorf("task %s: remove its container: %w", t.spec.ID, rerr)
	}
	cancel()
	if err != nil {
		t.log.Warn("task ended with an error", "err", err)
	}
	t.log.Debug("task removed", "exit", res.ExitCode, "signal", res.Signal, "oom", res.OOMKilled,
		"timed_out", res.TimedOut, "cancelled", res.Cancelled, "duration", res.Duration)
	t.result, t.err = res, err
	t.e.forget(t)
	close(t.done)
}

// watchDisk measures the task's writes every diskCheckInterval until stop is
// called (safe twice; it returns once the watch has ended); over is closed
// when they pass the limit. Without a workspace over is never closed.
func (t *ctrTask) watchDisk() (over <-chan struct{}, stop func()) {
	if t.disk == nil {
		return nil, func() {}
	}
	overc, quit, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() { // owned by run, which stops it before it returns
		defer close(done)
		tick := time.NewTicker(diskCheckInterval)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				if t.disk.over() {
					close(overc)
					return
				}
			}
		}
	}()
	var once sync.Once
	return overc, func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// killAll sends SIGKILL to every process of the task.
func (t *ctrTask) killAll(task containerd.Task) {
	ctx, cancel := context.WithTimeout(t.e.bg, removeTimeout)
	defer cancel()
	if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsFailedPrecondition(err) {
		t.log.Warn("kill task", "err", err)
	}
}

// signalName names the signal that an exit status of 128+n reports. (The
// shim reports a death by signal n as 128+n, which a process could also
// exit with by itself: the two cannot be told apart.)
func signalName(code uint32) string {
	if code <= 128 || code > 128+64 {
		return ""
	}
	return unix.SignalName(syscall.Signal(code - 128))
}

// chunkWriter turns each write of one output stream into a Chunk. The
// cio copier calls it from a single goroutine per stream, so Seq needs no
// lock. A write blocks until the chunk is queued: a slow reader slows the
// task down instead of growing memory.
type chunkWriter struct {
	stream  Stream
	seq     uint64
	out     chan<- Chunk
	discard <-chan struct{} // closed when nobody will read any more
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.seq++
	c := Chunk{Stream: w.stream, Seq: w.seq, Time: time.Now(), Data: bytes.Clone(p)}
	select {
	case w.out <- c:
	case <-w.discard:
	}
	return len(p), nil
}
