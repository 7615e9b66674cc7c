package delegation

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// candidates lists this peer and the live peers of the mesh as placement
// sees them.
func (d *Delegation) candidates() []candidate {
	self := d.mesh.Announcement()
	out := []candidate{{
		ID: d.self, Self: true, Labels: self.Labels, Caps: self.Capabilities,
		CPUs: self.Capacity.CPUs, Running: self.Capacity.RunningTasks, Images: self.Images,
		Draining: d.draining.Load(),
	}}
	for _, e := range d.mesh.Peers() {
		hb := e.Heartbeat
		out = append(out, candidate{
			ID: e.ID, Labels: hb.Labels, Caps: hb.Capabilities, Protocols: hb.Protocols,
			CPUs: hb.Capacity.CPUs, Running: hb.Capacity.RunningTasks, Images: hb.Images,
			Draining: hb.Draining,
		})
	}
	return out
}

// Workspace probes: how many blocks of the workspace are sampled, and how
// long a candidate has to answer before it counts as holding none.
const (
	probeSample  = 128
	probeTimeout = 500 * time.Millisecond
)

// probeWorkspace sets each remote candidate's Missing to the fraction of a
// sample of root's blocks it lacks, asking them all at once; this peer has
// them all (it just imported them). A candidate that does not answer in
// time lacks everything.
func (d *Delegation) probeWorkspace(ctx context.Context, root cid.Cid, cands []candidate) {
	sample, err := d.blocks.Sample(ctx, root, probeSample)
	if err != nil || len(sample) == 0 {
		d.log.Debug("sample workspace for placement", "root", root, "err", err)
		return
	}
	raw := make([][]byte, len(sample))
	for i, c := range sample {
		raw[i] = c.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i := range cands {
		if cands[i].Self {
			continue
		}
		cands[i].Missing = 1
		wg.Go(func() {
			reply, err := d.taskRequest(ctx, cands[i].ID, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Probe{Probe: &meshv1.ProbeBlocks{Cids: raw}}})
			if err == nil && reply.GetCode() == meshv1.ReplyCode_REPLY_CODE_OK {
				have := min(int(reply.GetHave()), len(raw))
				cands[i].Missing = 1 - float64(have)/float64(len(raw))
			}
		})
	}
	wg.Wait()
}

// RunRequest is one task a caller of this peer (the coordinator) asks for.
type RunRequest struct {
	Spec      runtime.Spec
	Workspace string // the caller's directory, absolute; "" for none
	Placement Placement
	Detach    bool // return once the task is submitted; it goes on without the caller
	// Verify checks the result with the workspace's language server
	// before it merges: "report" attaches what it found, "block" also
	// refuses a result that adds errors; "": no check.
	Verify string
	// RetryOnDrain places a task its executor returned (drained) again,
	// up to maxDrainRetries times. Attached runs only.
	RetryOnDrain bool

	base cid.Cid // the workspace as imported for placement, when it was
}

// maxDrainRetries bounds how often a returned task is placed again.
const maxDrainRetries = 3

// Submit places and starts a task. Attached, it returns when the task has
// ended, its output relayed to ev and its workspace merged; detached, once
// the executor has accepted it. With RetryOnDrain, a task returned by a
// drained executor is placed again under a new id (ID-r1, ID-r2…).
func (d *Delegation) Submit(ctx context.Context, req RunRequest, ev tasks.Events) (tasks.Outcome, error) {
	if req.RetryOnDrain && req.Detach {
		return tasks.Outcome{ID: req.Spec.ID}, fmt.Errorf("retry on drain needs an attached run (not detach): %w", errdefs.ErrInvalid)
	}
	if req.Spec.ID == "" {
		req.Spec.ID = tasks.NewTaskID()
	}
	first := req.Spec.ID
	out, err := d.submitOnce(ctx, req, ev)
	for attempt := 1; req.RetryOnDrain && attempt <= maxDrainRetries && ctx.Err() == nil && d.returned(out.ID); attempt++ {
		req.Spec.ID = fmt.Sprintf("%s-r%d", first, attempt)
		d.log.Info("task returned by a drained peer; placing it again", "task", out.ID, "as", req.Spec.ID)
		_ = ev.Progress(fmt.Sprintf("task %s returned by a drained peer; placing it again as %s", out.ID, req.Spec.ID), 0, 0)
		out, err = d.submitOnce(ctx, req, ev)
	}
	return out, err
}

// raiseFromLog raises res's output counts to what this peer's log of the
// task holds, when it holds more.
func (d *Delegation) raiseFromLog(id string, res *taskResultRecord) {
	ctx, cancel := context.WithTimeout(d.ctx, taskStreamTimeout)
	defer cancel()
	if c, b := d.keptOutput(ctx, id, runtime.Stdout); c > res.StdoutChunks {
		res.StdoutChunks, res.StdoutBytes = c, b
	}
	if c, b := d.keptOutput(ctx, id, runtime.Stderr); c > res.StderrChunks {
		res.StderrChunks, res.StderrBytes = c, b
	}
}

// settleEnded finishes what nobody waiting finished for an ended task: with
// fill, the kept output is completed from the executor's log (this peer
// may have restarted while the task ran, and then missed part of it live);
// then the result is merged into the caller's directory, unless it was.
func (d *Delegation) settleEnded(ctx context.Context, rec *TaskRecord, fill bool) {
	exec, err := peer.Decode(rec.Executor)
	if fill && err == nil && exec != d.self && rec.Result != nil {
		if relay, err := d.openRelay(rec.ID, exec, true); err == nil {
			relay.complete(ctx, d, exec, rec.Result.StdoutChunks, rec.Result.StderrChunks)
			relay.close()
		} else {
			d.log.Warn("complete the output of a task", "task", rec.ID, "err", err)
		}
	}
	if err := d.mergeBack(ctx, rec); err != nil {
		d.log.Warn("merge result", "task", rec.ID, "err", err)
	}
}

// unmerged reports whether rec ended with a result for the caller's
// directory that was neither merged nor refused: a merge cut short by a
// stop of this peer.
func unmerged(rec *TaskRecord) bool {
	r := rec.Result
	return rec.State.final() && rec.Workspace != "" && !rec.Merged && rec.MergeErr == "" &&
		r != nil && r.ResultRoot != "" && !r.Cancelled && !r.TimedOut
}

// returned reports whether the task's executor handed it back.
func (d *Delegation) returned(id string) bool {
	rec, err := d.rec.task(id)
	return err == nil && rec.State == stateReturned
}

// submitOnce places and starts one task.
func (d *Delegation) submitOnce(ctx context.Context, req RunRequest, ev tasks.Events) (tasks.Outcome, error) {
	spec := req.Spec
	if spec.ID == "" {
		spec.ID = tasks.NewTaskID()
	}
	out := tasks.Outcome{ID: spec.ID}
	if err := req.Placement.validate(); err != nil {
		return out, err
	}
	switch req.Verify {
	case "", verifyReport, verifyBlock:
	default:
		return out, fmt.Errorf("verify %q: want report or block: %w", req.Verify, errdefs.ErrInvalid)
	}
	if req.Verify != "" && req.Workspace == "" {
		return out, fmt.Errorf("verify: a task without a workspace has no result to verify: %w", errdefs.ErrInvalid)
	}
	if req.Verify != "" && d.verifier == nil {
		return out, fmt.Errorf("verify: this peer has no language servers: %w", errdefs.ErrUnavailable)
	}
	if err := tasks.CheckArtifacts(spec.Artifacts); err != nil {
		return out, err
	}
	if len(spec.Artifacts) > 0 && req.Workspace == "" {
		return out, fmt.Errorf("artifacts are paths under /workspace: the task needs a workspace: %w", errdefs.ErrInvalid)
	}
	cands := d.candidates()
	if req.Workspace != "" && req.Placement.Peer == "" {
		// Where more than one peer fits, the workspace's blocks weigh in: it
		// is imported now (the run needs it anyway) and the candidates asked
		// how much of it they hold.
		if fits, err := fitting(req.Placement, cands); err == nil && len(fits) > 1 {
			_ = ev.Progress("importing workspace", 0, 0)
			if req.base, err = d.runner.ImportWorkspace(ctx, spec.ID, req.Workspace); err != nil {
				return out, err
			}
			d.probeWorkspace(ctx, req.base, cands)
		}
	}
	chosen, err := choose(req.Placement, cands, spec.Image)
	if err != nil {
		return out, err
	}
	rec := &TaskRecord{
		ID: spec.ID, Executor: chosen.ID.String(), Command: spec.Command, Image: spec.Image,
		Workspace: req.Workspace, State: stateSubmitted, Submitted: time.Now(), Verify: req.Verify,
	}
	if chosen.Self {
		return d.runLocal(ctx, req, spec, rec, ev)
	}
	return d.runRemote(ctx, req, spec, rec, chosen.ID, ev)
}

// runLocal runs a task on this peer, recorded as any other.
func (d *Delegation) runLocal(ctx context.Context, req RunRequest, spec runtime.Spec, rec *TaskRecord, ev tasks.Events) (tasks.Outcome, error) {
	// A spec this peer's policy refuses never runs: the caller is told,
	// and no task is recorded.
	if _, err := d.cfg.Policy.Apply(spec); err != nil {
		return tasks.Outcome{ID: spec.ID}, err
	}
	rec.State = stateRunning
	if err := d.rec.putTask(rec); err != nil {
		return tasks.Outcome{ID: spec.ID}, fmt.Errorf("task %s: record it before it runs: %w", spec.ID, err)
	}
	run := func(ctx context.Context, ev tasks.Events) (tasks.Outcome, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		d.mu.Lock()
		d.running[spec.ID] = cancel
		d.mu.Unlock()
		defer func() {
			d.mu.Lock()
			delete(d.running, spec.ID)
			d.mu.Unlock()
		}()
		if req.Verify != "" {
			ev = verifyingEvents{Events: ev, d: d, mode: req.Verify, workspace: req.Workspace}
		}
		out, err := d.runner.Run(ctx, spec, req.Workspace, ev)
		if rerr := d.recordLocal(rec, out, err); rerr != nil {
			// The caller hears how the task ended, and that its record
			// still says it runs (a restart marks it failed).
			err = errors.Join(err, fmt.Errorf("task %s: record how it ended: %w", spec.ID, rerr))
		}
		return out, err
	}
	if !req.Detach {
		return run(ctx, ev)
	}
	if !d.goFunc(func(ctx context.Context) { _, _ = run(ctx, tasks.NopEvents{}) }) {
		return tasks.Outcome{ID: spec.ID}, fmt.Errorf("task %s: this peer is shutting down: %w", spec.ID, errdefs.ErrUnavailable)
	}
	_ = ev.Started(spec.ID, d.self, cid.Undef)
	return tasks.Outcome{ID: spec.ID}, nil
}

// recordLocal stores how a local task ended; the error is the store's.
func (d *Delegation) recordLocal(rec *TaskRecord, out tasks.Outcome, err error) error {
	d.recMu.Lock()
	defer d.recMu.Unlock()
	rec.Result = outcomeRecord(out)
	if out.Base.Defined() {
		rec.BaseRoot = out.Base.String()
	}
	rec.Merge, rec.Merged = out.Merge, out.Merge != nil
	rec.VerifyReport = out.Verify
	rec.State = endedState(rec.Result)
	if err != nil {
		rec.Error = protocol.ErrorText(err)
		if out.Result.StartedAt.IsZero() {
			rec.State = stateFailed
		}
	}
	return d.saveTask(rec)
}

// runRemote delegates a task to another peer.
func (d *Delegation) runRemote(ctx context.Context, req RunRequest, spec runtime.Spec, rec *TaskRecord, executor peer.ID, ev tasks.Events) (tasks.Outcome, error) {
	out := tasks.Outcome{ID: spec.ID}
	var base cid.Cid
	if req.Workspace != "" {
		base = req.base
		if !base.Defined() {
			_ = ev.Progress("importing workspace", 0, 0)
			var err error
			if base, err = d.runner.ImportWorkspace(ctx, spec.ID, req.Workspace); err != nil {
				return out, err
			}
		}
		rec.BaseRoot = base.String()
		// The task's own pin keeps BASE for the merge, whatever the
		// directory's pin becomes meanwhile.
		if err := d.dags.Pin(basePin(spec.ID), base); err != nil {
			return out, err
		}
	}
	out.Base = base
	rec.ExecutorAddrs = d.listenAddrsOf(executor)
	if err := d.rec.putTask(rec); err != nil {
		return out, err
	}
	w := d.watch(rec.ID)
	defer d.unwatch(rec.ID, w)
	relay, err := d.openRelay(rec.ID, executor, true)
	if err != nil {
		d.failTask(rec, err)
		return out, err
	}
	defer func() {
		if !relay.detached { // a detached relay is handed to goAwait
			relay.close()
		}
	}()

	sub := &meshv1.SubmitTask{TaskId: spec.ID, Spec: specToWire(spec)}
	if base.Defined() {
		sub.WorkspaceRoot = base.Bytes()
	}
	_ = ev.Progress("submitting to "+shortID(executor), 0, 0)
	reply, err := d.taskRequest(ctx, executor, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Submit{Submit: sub}})
	if err == nil {
		err = replyError(executor, reply)
	}
	if err != nil {
		err = fmt.Errorf("task %s: submit to %s: %w", spec.ID, executor, err)
		if errors.Is(err, errdefs.ErrInvalid) || errors.Is(err, errdefs.ErrPermissionDenied) {
			// The executor refused the spec or this peer: the task never
			// ran, and the caller is told; nothing is recorded.
			d.forget(rec)
		} else {
			d.failTask(rec, err)
		}
		return out, err
	}
	d.log.Info("task delegated", "task", spec.ID, "executor", executor)
	if err := ev.Started(spec.ID, executor, base); err != nil {
		return out, err
	}
	if req.Detach {
		relay.detach()
		d.goAwait(rec, relay)
		return out, nil
	}
	return d.await(ctx, rec, relay, w, ev)
}

// saveTask stores a coordinator record; the caller holds recMu. A store
// that fails is logged: the task goes on, its record lags behind.
func (d *Delegation) saveTask(rec *TaskRecord) error {
	err := d.rec.putTask(rec)
	if err != nil {
		d.log.Warn("record task", "task", rec.ID, "state", rec.State, "err", err)
	}
	return err
}

// forget removes the record of a task that never ran, with its pin and
// log.
func (d *Delegation) forget(rec *TaskRecord) {
	d.recMu.Lock()
	defer d.recMu.Unlock()
	if err := errors.Join(d.rec.delete(taskRecordPrefix, rec.ID), d.logs.Delete(rec.ID), d.unpinTask(rec.ID)); err != nil {
		d.log.Warn("forget a task that never ran", "task", rec.ID, "err", err)
	}
}

func (d *Delegation) failTask(rec *TaskRecord, err error) {
	d.recMu.Lock()
	defer d.recMu.Unlock()
	rec.State, rec.Error = stateFailed, protocol.ErrorText(err)
	d.saveTask(rec)
}

// watch registers interest in a task's result delivery.
func (d *Delegation) watch(id string) chan struct{} {
	ch := make(chan struct{}, 1)
	d.mu.Lock()
	d.waiters[id] = ch
	d.mu.Unlock()
	return ch
}

func (d *Delegation) unwatch(id string, ch chan struct{}) {
	d.mu.Lock()
	if d.waiters[id] == ch {
		delete(d.waiters, id)
	}
	d.mu.Unlock()
}

// goAwait waits for a task's result on a goroutine owned by d: for
// detached runs, and for tasks a restarted coordinator still waits for.
func (d *Delegation) goAwait(rec *TaskRecord, relay *logRelay) {
	d.goFunc(func(ctx context.Context) {
		w := d.watch(rec.ID)
		defer d.unwatch(rec.ID, w)
		if relay == nil {
			exec, err := peer.Decode(rec.Executor)
			if err != nil {
				return
			}
			d.rememberAddrs(exec, rec.ExecutorAddrs)
			if relay, err = d.openRelay(rec.ID, exec, true); err != nil {
				d.log.Warn("follow task", "task", rec.ID, "err", err)
				return
			}
			relay.detach()
		}
		defer relay.close()
		if _, err := d.await(ctx, rec, relay, w, tasks.NopEvents{}); err != nil {
			d.log.Info("task ended", "task", rec.ID, "err", err)
		}
	})
}

// await relays a delegated task's output in order until its result
// arrives, then merges its workspace back. ctx ending cancels the task
// (unless the relay is detached); an executor out of reach for LostAfter
// makes it lost.
func (d *Delegation) await(ctx context.Context, rec *TaskRecord, relay *logRelay, results <-chan struct{}, ev tasks.Events) (tasks.Outcome, error) {
	relay.ev = ev
	exec, _ := peer.Decode(rec.Executor)
	live := time.NewTicker(livenessInterval)
	defer live.Stop()
	gaps := time.NewTicker(gapWait)
	defer gaps.Stop()
	lastContact, lastQuery := time.Now(), time.Now()
	var cancelledAt time.Time
	done := ctx.Done()
	// A result delivered before we started waiting is in the record already.
	if r, err := d.rec.task(rec.ID); err == nil && r.Result != nil {
		*rec = *r
		return d.finish(ctx, rec, relay, exec)
	}
	for {
		select {
		case c := <-relay.in:
			if rec.State == stateSubmitted || rec.State == stateFetching {
				d.setState(rec, stateRunning) // output flows: it runs
			}
			relay.add(c)
			if len(relay.in) == 0 {
				relay.flush()
			}
			lastContact = time.Now()
		case <-gaps.C:
			relay.tick(ctx, d, exec)
		case <-results:
			r, err := d.rec.task(rec.ID)
			if err != nil {
				return recordOutcome(rec), err
			}
			*rec = *r
			return d.finish(ctx, rec, relay, exec)
		case <-done:
			if relay.detached {
				// This peer is closing: the task goes on, and its result
				// is delivered when the peer is back.
				return recordOutcome(rec), fmt.Errorf("task %s: %w", rec.ID, ctx.Err())
			}
			done = nil
			cancelledAt = time.Now()
			d.cancelRemote(exec, rec.ID)
		case now := <-live.C:
			if !cancelledAt.IsZero() && now.Sub(cancelledAt) > cancelGrace {
				// The caller is gone; the task's end (or its loss) is
				// still recorded, in the background.
				d.goAwait(rec, nil)
				return recordOutcome(rec), fmt.Errorf("task %s: cancelled; no result from %s: %w", rec.ID, exec, context.Canceled)
			}
			if d.host.IsConnected(exec) {
				lastContact = now
			}
			lost := d.cfg.LostAfter
			if now.Sub(lastContact) > lost {
				err := fmt.Errorf(stateFromNoExecutor, lost)
				d.markLost(rec, err)
				return recordOutcome(rec), fmt.Errorf("task %s on %s: %w: %w", rec.ID, exec, err, errdefs.ErrUnavailable)
			}
			if now.Sub(lastQuery) > queryInterval && d.host.IsConnected(exec) {
				lastQuery = now
				d.queryRemote(ctx, rec, exec)
			}
		}
	}
}

// queryRemote asks the executor how the task is; a result it holds that
// never reached us (lost delivery) is taken as delivered.
func (d *Delegation) queryRemote(ctx context.Context, rec *TaskRecord, exec peer.ID) {
	reply, err := d.taskRequest(ctx, exec, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Query{Query: &meshv1.QueryTask{TaskId: rec.ID}}})
	if err != nil {
		return
	}
	if st := stateFromWire(reply.GetState()); st == stateFetching || st == stateRunning {
		d.setState(rec, st)
	}
	switch {
	case reply.GetCode() == meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK:
		d.failTask(rec, fmt.Errorf("executor %s no longer knows task %s", exec, rec.ID))
		d.notify(rec.ID)
	case reply.GetResult() != nil:
		_ = d.deliver(exec, reply.GetResult())
	}
}

// setState records a state the executor reported, unless the task has
// ended meanwhile.
func (d *Delegation) setState(rec *TaskRecord, st taskState) {
	d.recMu.Lock()
	defer d.recMu.Unlock()
	if cur, err := d.rec.task(rec.ID); err != nil || cur.State.final() || cur.State == st {
		return
	}
	rec.State = st
	d.saveTask(rec)
}

func (d *Delegation) markLost(rec *TaskRecord, err error) {
	d.recMu.Lock()
	defer d.recMu.Unlock()
	if r, gerr := d.rec.task(rec.ID); gerr == nil && r.Result != nil {
		return // delivered meanwhile
	}
	rec.State, rec.Error = stateLost, err.Error()
	d.saveTask(rec)
	d.log.Warn("task lost", "task", rec.ID, "executor", rec.Executor, "err", err)
}

// cancelRemote asks the executor to kill a task the caller gave up on;
// failing that, the task's result comes in its time.
func (d *Delegation) cancelRemote(exec peer.ID, id string) {
	if err := d.requestCancel(d.ctx, exec, id); err != nil {
		d.log.Warn("cancel task on its executor", "task", id, "err", err)
	}
}

// requestCancel sends a cancel for task id to its executor.
func (d *Delegation) requestCancel(ctx context.Context, exec peer.ID, id string) error {
	reply, err := d.taskRequest(ctx, exec, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Cancel{Cancel: &meshv1.CancelTask{TaskId: id}}})
	if err != nil {
		return fmt.Errorf("cancel task %s: %w", id, err)
	}
	return replyError(exec, reply)
}

// finish completes the output from the executor's log, then merges the
// result into the caller's directory once.
func (d *Delegation) finish(ctx context.Context, rec *TaskRecord, relay *logRelay, exec peer.ID) (tasks.Outcome, error) {
	var incomplete, failure error
	if res := rec.Result; res != nil {
		if res.Error != "" {
			// The task ran but ended in an error on its executor (its
			// output could not be kept, its result not imported): the
			// caller is told, as for a task run here. The text comes over
			// the wire with its code in front (protocol.ErrorText).
			failure = errors.New(res.Error)
		}
		relay.complete(ctx, d, exec, res.StdoutChunks, res.StderrChunks)
		if relay.raiseCounts(res) {
			d.saveTask(rec)
		}
		// The executor's log holds every chunk, so this happens only when
		// it could not be read (the executor went away, or its disk
		// failed): say so rather than report a run whose output has holes.
		if gap := relay.missing(res.StdoutChunks, res.StderrChunks, int64(res.StdoutBytes), int64(res.StderrBytes)); gap != "" && relay.logw != nil {
			msg := "output incomplete: " + gap + "; the rest never arrived from executor " + shortID(exec)
			d.log.Warn("task output incomplete", "task", rec.ID, "missing", gap)
			d.noteOutputMissing(rec, msg)
			incomplete = fmt.Errorf("task %s: %s: %w", rec.ID, msg, errdefs.ErrUnavailable)
		}
	}
	if rec.State == stateFailed {
		return recordOutcome(rec), fmt.Errorf("task %s: %s", rec.ID, rec.Error)
	}
	err := d.mergeBack(ctx, rec)
	switch {
	case err == nil:
		err = incomplete
	case incomplete != nil:
		err = fmt.Errorf("%w; %w", incomplete, err)
	}
	if failure != nil {
		err = errors.Join(failure, err)
	}
	return recordOutcome(rec), err
}

// noteOutputMissing records that a task's output has a hole, unless an
// error is recorded already.
func (d *Delegation) noteOutputMissing(rec *TaskRecord, msg string) {
	d.recMu.Lock()
	defer d.recMu.Unlock()
	if rec.Result == nil || rec.Result.Error != "" {
		return
	}
	rec.Result.Error = msg
	d.saveTask(rec)
}

// mergeBack merges BASE -> RESULT into the task's directory, once: the
// waiting run, a detached run and a delivery that nobody awaited may all
// get here, and only the first merges; the others take its report.
func (d *Delegation) mergeBack(ctx context.Context, rec *TaskRecord) error {
	res := rec.Result
	if rec.Workspace == "" || res == nil || res.ResultRoot == "" || res.Cancelled || res.TimedOut {
		return nil
	}
	// Merges are few and each writes into a caller's directory: one at a
	// time keeps two of the same task (or of one directory) apart.
	d.mergeMu.Lock()
	defer d.mergeMu.Unlock()
	if cur, err := d.rec.task(rec.ID); err == nil && cur.Merged {
		*rec = *cur
		return nil
	}
	base, err1 := cid.Decode(rec.BaseRoot)
	theirs, err2 := cid.Decode(res.ResultRoot)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("task %s: roots: %w", rec.ID, err)
	}
	var rep dag.MergeReport
	err := d.fetchResult(ctx, rec.ID, base, theirs)
	if err == nil && !base.Equals(theirs) && rec.Verify != "" {
		// Outside the GC lock: the check imports the workspace, which
		// takes it.
		var vrep *tasks.VerifyReport
		vrep, err = d.verifyResult(ctx, rec.Verify, rec.Workspace, base, theirs)
		d.recMu.Lock()
		rec.VerifyReport = vrep
		d.recMu.Unlock()
	}
	if err == nil && !base.Equals(theirs) {
		d.gc.RLock()
		rep, err = d.dags.Merge(ctx, base, theirs, rec.Workspace)
		d.gc.RUnlock()
	}
	d.recMu.Lock()
	defer d.recMu.Unlock()
	if err != nil {
		rec.MergeErr = err.Error()
	} else {
		rec.Merge, rec.Merged = &rep, true
	}
	d.saveTask(rec)
	if err != nil {
		return fmt.Errorf("task %s: merge result into %s: %w", rec.ID, rec.Workspace, err)
	}
	return nil
}

// fetchResult pins a task's result and fetches what it changed.
func (d *Delegation) fetchResult(ctx context.Context, id string, base, theirs cid.Cid) error {
	d.gc.RLock()
	defer d.gc.RUnlock()
	if err := d.dags.Pin(resultPin(id), theirs); err != nil {
		return err
	}
	if base.Equals(theirs) {
		return nil
	}
	// BASE is here (pinned for the task): only what the task changed is
	// walked and fetched.
	_, err := d.blocks.FetchAgainst(ctx, base, theirs, 0, nil)
	return err
}

// The modes of run --verify.
const (
	verifyReport = "report"
	verifyBlock  = "block"
)

// verifyResult checks a result before it merges. A check that cannot run
// is logged and the result merges, unless the mode blocks; so does a
// result that adds errors.
func (d *Delegation) verifyResult(ctx context.Context, mode, workspace string, base, result cid.Cid) (*tasks.VerifyReport, error) {
	rep, err := d.verifier.Verify(ctx, workspace, base, result)
	if err != nil {
		if mode == verifyBlock {
			return nil, fmt.Errorf("verify the result %s: %w; not merged (--verify=block)", result, err)
		}
		d.log.Warn("the result could not be verified; merging it", "workspace", workspace, "result", result, "err", err)
		return nil, nil
	}
	if mode == verifyBlock && rep.AddedErrors > 0 {
		return rep, fmt.Errorf("the result adds %d errors (see its verify report); not merged (--verify=block); it is %s", rep.AddedErrors, result)
	}
	return rep, nil
}

// verifyingEvents checks a local task's result before the runner merges
// it (tasks.Verifier).
type verifyingEvents struct {
	tasks.Events
	d         *Delegation
	mode      string
	workspace string
}

func (v verifyingEvents) VerifyResult(ctx context.Context, base, result cid.Cid) (*tasks.VerifyReport, error) {
	return v.d.verifyResult(ctx, v.mode, v.workspace, base, result)
}

// deliver takes a result from the executor of one of our tasks. The first
// delivery is stored; later ones (retries, queries) are acknowledged and
// change nothing, so a result counts exactly once.
func (d *Delegation) deliver(from peer.ID, w *meshv1.TaskResult) *meshv1.TaskReply {
	id := w.GetTaskId()
	if err := protocol.CheckTaskID(id); err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "%v", err)
	}
	res, err := resultFromWire(w)
	if err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "%v", err)
	}
	if w.GetState() == meshv1.TaskState_TASK_STATE_FAILED {
		// A task its executor's restart interrupted: the executor counts
		// what its log kept, which lacks what it had not flushed when it
		// died; this peer's copy may hold more, received live.
		d.raiseFromLog(id, res)
	}
	d.recMu.Lock()
	rec, err := d.rec.task(id)
	switch {
	case err != nil:
		d.recMu.Unlock()
		return refuse(meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK, "peer %s coordinates no task %s", d.self, id)
	case rec.Executor != from.String():
		d.recMu.Unlock()
		d.notYours.Warn(from, "result from a peer that is not the task's executor", "task", id)
		return refuse(meshv1.ReplyCode_REPLY_CODE_NOT_YOURS, "task %s does not run on %s", id, from)
	case rec.Result != nil:
		d.recMu.Unlock()
		return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, State: stateToWire(rec.State)}
	}
	rec.Result = res
	rec.State = endedState(res)
	// A task that ran and ended in an error (its output could not be
	// kept, say) reads as a local one does: the record carries the error.
	rec.Error = res.Error
	if w.GetState() == meshv1.TaskState_TASK_STATE_FAILED {
		rec.State = stateFailed
	}
	err = d.rec.putTask(rec)
	d.recMu.Unlock()
	if err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INTERNAL, "store result: %v", err)
	}
	d.log.Info("result received", "task", id, "executor", from, "exit", res.ExitCode)
	if !d.notify(id) {
		// Nobody waits (this peer restarted since): complete the kept
		// output and merge on our own.
		d.goFunc(func(ctx context.Context) { d.settleEnded(ctx, rec, true) })
	}
	return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, State: stateToWire(rec.State)}
}

// notify wakes whoever awaits a task's result; false when nobody does.
func (d *Delegation) notify(id string) bool {
	d.mu.Lock()
	ch, ok := d.waiters[id]
	d.mu.Unlock()
	if ok {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return ok
}

// Tasks lists the tasks this peer coordinates, newest first.
func (d *Delegation) Tasks() ([]*TaskRecord, error) { return d.rec.tasks() }

// Outcome is the task's outcome as far as its record knows it.
func (r *TaskRecord) Outcome() tasks.Outcome { return recordOutcome(r) }

// recordOutcome is a record as the API reports it.
func recordOutcome(rec *TaskRecord) tasks.Outcome {
	out := tasks.Outcome{ID: rec.ID, Merge: rec.Merge, Verify: rec.VerifyReport}
	out.Base, _ = cid.Decode(rec.BaseRoot)
	if r := rec.Result; r != nil {
		out.Result = runtime.Result{
			ExitCode: r.ExitCode, Signal: r.Signal, OOMKilled: r.OOMKilled, TimedOut: r.TimedOut, Cancelled: r.Cancelled,
			DiskLimitExceeded: r.DiskLimitExceeded,
			CPUSeconds:        r.CPUSeconds, PeakMemoryBytes: r.PeakMemoryBytes, StartedAt: r.StartedAt,
			Duration: time.Duration(r.Duration * float64(time.Second)),
		}
		out.ResultCID, _ = cid.Decode(r.ResultRoot)
		out.Artifacts = artifactsOf(r.Artifacts)
		out.Stdout, out.Stderr = int64(r.StdoutBytes), int64(r.StderrBytes)
		out.StdoutChunks, out.StderrChunks = r.StdoutChunks, r.StderrChunks
		out.Log.DroppedBytes = int64(r.LogDropped)
	}
	return out
}

// Task returns a task this peer coordinates. A task still running
// elsewhere is asked after on its executor, so a result that could not be
// delivered is picked up.
func (d *Delegation) Task(ctx context.Context, id string) (*TaskRecord, error) {
	if err := protocol.CheckTaskID(id); err != nil {
		return nil, err
	}
	rec, err := d.rec.task(id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return d.observe(ctx, id) // not ours: its executor says how it is, as logs does
	}
	if err != nil {
		return nil, err
	}
	if !rec.State.final() && rec.Executor != d.self.String() {
		if exec, err := peer.Decode(rec.Executor); err == nil {
			d.queryRemote(ctx, rec, exec)
			if r, err := d.rec.task(id); err == nil {
				rec = r
			}
		}
	}
	return rec, nil
}

// observe is a task another peer coordinates, as its executor (this peer,
// or the peer of the mesh that runs it) reports it: the state and, once it
// ended, the result; the command and times only its coordinator knows.
func (d *Delegation) observe(ctx context.Context, id string) (*TaskRecord, error) {
	if e, err := d.rec.exec(id); err == nil {
		return &TaskRecord{ID: id, Executor: d.self.String(), State: e.State, Result: e.Result, Updated: e.Updated, observed: true}, nil
	}
	exec, reply, err := d.locate(ctx, id)
	if err != nil {
		return nil, err
	}
	rec := &TaskRecord{ID: id, Executor: exec.String(), State: stateFromWire(reply.GetState()), observed: true}
	if w := reply.GetResult(); w != nil {
		if rec.Result, err = resultFromWire(w); err != nil {
			return nil, fmt.Errorf("task %s: result from %s: %w", id, exec, err)
		}
		rec.Error = rec.Result.Error
	}
	return rec, nil
}

// Cancel kills a task wherever it runs. A lost task (its executor out of
// reach) may still run there: the cancel is recorded, queued is true, and
// it is delivered when the executor is back (see cancelLoop).
func (d *Delegation) Cancel(ctx context.Context, id string) (queued bool, err error) {
	rec, err := d.Task(ctx, id)
	if err != nil {
		return false, err
	}
	if rec.observed {
		return false, fmt.Errorf("task %s runs on %s for another peer: only the peer it was submitted to can cancel it: %w", id, rec.Executor, errdefs.ErrPermissionDenied)
	}
	if rec.State == stateLost {
		return d.cancelLost(ctx, rec)
	}
	if rec.State.final() {
		return false, fmt.Errorf("task %s has ended (%s): %w", id, rec.State, errdefs.ErrInvalid)
	}
	if rec.Executor == d.self.String() {
		d.mu.Lock()
		cancel := d.running[id]
		d.mu.Unlock()
		if cancel == nil {
			return false, fmt.Errorf("task %s is not running here: %w", id, errdefs.ErrNotFound)
		}
		cancel()
		return false, nil
	}
	exec, err := peer.Decode(rec.Executor)
	if err != nil {
		return false, err
	}
	return false, d.requestCancel(ctx, exec, id)
}

// cancelLost records the cancel of a lost task and tries to deliver it at
// once; failing that, cancelLoop delivers it when the executor is back.
func (d *Delegation) cancelLost(ctx context.Context, rec *TaskRecord) (bool, error) {
	d.recMu.Lock()
	rec.CancelPending = true
	d.saveTask(rec)
	d.recMu.Unlock()
	d.queueCancel(rec.ID, true)
	if d.deliverCancel(ctx, rec) {
		return false, nil
	}
	return true, nil
}

// deliverCancel sends a recorded cancel to the task's executor; true once
// the executor has it (or no longer knows the task), and the record is
// cleared.
func (d *Delegation) deliverCancel(ctx context.Context, rec *TaskRecord) bool {
	exec, err := peer.Decode(rec.Executor)
	if err != nil || !d.host.IsConnected(exec) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, taskStreamTimeout)
	defer cancel()
	if err := d.requestCancel(ctx, exec, rec.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		d.log.Debug("deliver the cancel of a lost task", "task", rec.ID, "err", err)
		return false
	}
	d.recMu.Lock()
	defer d.recMu.Unlock()
	if cur, err := d.rec.task(rec.ID); err == nil {
		cur.CancelPending = false
		d.saveTask(cur)
	}
	d.queueCancel(rec.ID, false)
	d.log.Info("cancel of a lost task delivered", "task", rec.ID, "executor", rec.Executor)
	return true
}

// queueCancel adds a lost task to those whose cancel cancelLoop delivers,
// or with queued false takes it off.
func (d *Delegation) queueCancel(id string, queued bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if queued {
		d.cancels[id] = true
	} else {
		delete(d.cancels, id)
	}
}

// cancelLoop delivers the cancels of lost tasks once their executors are
// back, until ctx ends.
func (d *Delegation) cancelLoop(ctx context.Context) {
	t := time.NewTicker(cancelRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Only the queued tasks are read, not every record: this runs
		// every few seconds for the life of the peer.
		d.mu.Lock()
		ids := slices.Collect(maps.Keys(d.cancels))
		d.mu.Unlock()
		for _, id := range ids {
			rec, err := d.rec.task(id)
			if errors.Is(err, errdefs.ErrNotFound) || err == nil && !rec.CancelPending {
				d.queueCancel(id, false) // forgotten, or delivered meanwhile
				continue
			}
			if err == nil {
				d.deliverCancel(ctx, rec)
			}
		}
	}
}

// errLogHole stops reading a task log at its first missing chunk.
var errLogHole = errors.New("hole in the task log")

// Logs sends a task's kept output in order, stdout and stderr each from
// its first chunk; with follow it goes on until the task has ended and
// everything is sent. The output of tasks coordinated here is in this
// peer's task log, wherever they ran.
func (d *Delegation) Logs(ctx context.Context, id string, follow bool, rng LogRange, send func(runtime.Chunk) error) error {
	if err := protocol.CheckTaskID(id); err != nil {
		return err
	}
	if _, err := d.rec.task(id); errors.Is(err, errdefs.ErrNotFound) {
		return d.watchTask(ctx, id, follow, rng, send) // not ours: a late watcher
	}
	return d.followLocal(ctx, id, follow, rng, send, func() (bool, error) {
		rec, err := d.rec.task(id)
		if err != nil {
			return false, err
		}
		return rec.State.final(), nil
	})
}
