package delegation

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// Timeouts and intervals of delegation.
const (
	taskStreamTimeout   = 30 * time.Second       // one request and its reply on the task protocol
	deliverRetryMin     = 200 * time.Millisecond // first wait before delivering a result again
	deliverRetryMax     = 5 * time.Second        // longest wait between deliveries
	logRangeTimeout     = 30 * time.Second       // one range of stored output
	gapWait             = 250 * time.Millisecond // a hole in the live log older than this is filled from the executor
	idleFill            = time.Second            // a live log quiet for this long is checked against the executor's
	cancelRetry         = 2 * time.Second        // how often the cancels of lost tasks are tried again
	busyQuiet           = 5 * time.Second        // a log quiet for less than this after output is checked after gapWait
	livenessInterval    = time.Second            // how often a waiting coordinator checks its executor
	queryInterval       = 5 * time.Second        // how often it asks the executor how the task is
	cancelGrace         = 15 * time.Second       // how long a cancelled run waits for the executor's result
	relayBuffer         = 4096                   // live chunks queued between gossip and the relay
	followPoll          = 50 * time.Millisecond  // how often logs --follow looks for new output
	stateFromRestarted  = "the executor restarted while the task ran; its output so far is kept there"
	stateFromNoExecutor = "the executor could not be reached for %v; the task is lost"
)

// serveTask answers one request on the task protocol.
func (d *Delegation) serveTask(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(taskStreamTimeout))
	if ok, first := d.rates.Allow(s.Conn().RemotePeer(), 1, time.Now()); !ok {
		if first {
			d.log.Warn("a peer sends task requests faster than allowed; refusing the excess", "peer", s.Conn().RemotePeer(),
				"per_second", taskRequestsPerSecond, "burst", taskRequestsBurst)
		}
		_ = protocol.WriteDelimited(s, refuse(meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE, "too many requests from peer %s: at most %d a second; retry later", s.Conn().RemotePeer(), taskRequestsPerSecond), protocol.MaxTaskMessage)
		return
	}
	var req meshv1.TaskRequest
	if err := protocol.ReadDelimited(bufio.NewReader(s), &req, protocol.MaxTaskMessage); err != nil {
		d.log.Debug("bad task request", "from", s.Conn().RemotePeer(), "err", err)
		_ = protocol.WriteDelimited(s, &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_INVALID, Reason: err.Error()}, protocol.MaxTaskMessage)
		return
	}
	from := s.Conn().RemotePeer()
	var reply *meshv1.TaskReply
	switch r := req.GetRequest().(type) {
	case *meshv1.TaskRequest_Submit:
		reply = d.accept(from, r.Submit)
	case *meshv1.TaskRequest_Cancel:
		reply = d.cancelHere(from, r.Cancel.GetTaskId())
	case *meshv1.TaskRequest_Query:
		reply = d.query(from, r.Query.GetTaskId())
	case *meshv1.TaskRequest_Deliver:
		reply = d.deliver(from, r.Deliver.GetResult())
	case *meshv1.TaskRequest_Probe:
		reply = d.probe(from, r.Probe.GetCids())
	case *meshv1.TaskRequest_Ack:
		reply = d.ackOutput(from, r.Ack)
	default:
		reply = refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "empty or unknown request")
	}
	if err := protocol.WriteDelimited(s, reply, protocol.MaxTaskMessage); err != nil {
		d.log.Debug("task reply", "to", from, "err", err)
	}
}

func refuse(code meshv1.ReplyCode, format string, args ...any) *meshv1.TaskReply {
	return &meshv1.TaskReply{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// maxProbeCIDs bounds one ProbeBlocks request.
const maxProbeCIDs = 256

// probe answers how many of the blocks asked about this peer holds, to a
// peer that may submit tasks here.
func (d *Delegation) probe(from peer.ID, raw [][]byte) *meshv1.TaskReply {
	if reply := d.mayRunFor(from); reply != nil {
		return reply
	}
	if len(raw) > maxProbeCIDs {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "probe of %d blocks, at most %d", len(raw), maxProbeCIDs)
	}
	have, err := d.blocks.CountHeld(d.ctx, raw)
	if err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "%v", err)
	}
	return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, Have: uint32(have)}
}

// mayRunFor refuses a peer this peer's policy does not run tasks for, or
// returns nil.
func (d *Delegation) mayRunFor(from peer.ID) *meshv1.TaskReply {
	cfg := d.cfg
	if !cfg.AcceptRemote {
		return refuse(meshv1.ReplyCode_REPLY_CODE_REFUSED, "peer %s does not run tasks for other peers (tasks.accept_remote = false)", d.self)
	}
	if len(cfg.AcceptFrom) > 0 && !slices.Contains(cfg.AcceptFrom, from) {
		return refuse(meshv1.ReplyCode_REPLY_CODE_REFUSED, "peer %s is not in tasks.accept_from of peer %s", from, d.self)
	}
	return nil
}

// accept takes a task submitted by a coordinator, after the policy allows
// the sender and the spec; the task then runs on its own goroutine.
func (d *Delegation) accept(from peer.ID, sub *meshv1.SubmitTask) *meshv1.TaskReply {
	id := sub.GetTaskId()
	if err := protocol.CheckTaskID(id); err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "%v", err)
	}
	if reply := d.mayRunFor(from); reply != nil {
		return reply
	}
	if d.draining.Load() {
		return refuse(meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE, "peer %s is draining: it takes no new tasks", d.self)
	}
	if e, err := d.rec.exec(id); err == nil {
		if e.Coordinator != from.String() {
			return refuse(meshv1.ReplyCode_REPLY_CODE_NOT_YOURS, "task %s belongs to another coordinator", id)
		}
		return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, State: stateToWire(e.State)}
	}
	spec, err := specFromWire(sub.GetSpec())
	if err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "%v", err)
	}
	spec.ID = id
	applied, err := d.cfg.Policy.Apply(spec)
	if err != nil {
		code := meshv1.ReplyCode_REPLY_CODE_REFUSED
		if errors.Is(err, errdefs.ErrInvalid) {
			code = meshv1.ReplyCode_REPLY_CODE_INVALID
		}
		return refuse(code, "peer %s: %v", d.self, err)
	}
	spec.Image = applied.Image // the default image, when the spec named none
	var root cid.Cid
	if b := sub.GetWorkspaceRoot(); len(b) > 0 {
		if root, err = cid.Cast(b); err != nil {
			return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "workspace root: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(d.ctx, taskStreamTimeout)
	err = d.runner.Ready(ctx)
	cancel()
	if err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE, "peer %s cannot run tasks: %v", d.self, err)
	}
	// The slot is taken before the record is written: a peer past its
	// share leaves nothing behind.
	d.mu.Lock()
	if max := d.cfg.MaxTasksPerPeer; max > 0 && d.runningFor[from] >= max {
		d.mu.Unlock()
		d.busy.Warn(from, "peer has as many tasks running here as it may; refusing more until one ends", "max_tasks_per_peer", max)
		return refuse(meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE, "peer %s runs %d tasks for %s already, at most %d (tasks.max_tasks_per_peer); retry when one ends", d.self, max, from, max)
	}
	d.runningFor[from]++
	d.mu.Unlock()
	release := func() {
		d.mu.Lock()
		if d.runningFor[from]--; d.runningFor[from] <= 0 {
			delete(d.runningFor, from)
		}
		d.mu.Unlock()
	}
	rec := &execRecord{ID: id, Coordinator: from.String(), CoordinatorAddrs: d.listenAddrsOf(from), State: stateSubmitted}
	if err := d.rec.putExec(rec); err != nil {
		release()
		return refuse(meshv1.ReplyCode_REPLY_CODE_INTERNAL, "record task: %v", err)
	}
	taskCtx, taskCancel := context.WithCancel(d.ctx)
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		taskCancel()
		release()
		return refuse(meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE, "peer %s is shutting down", d.self)
	}
	d.running[id] = taskCancel
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer taskCancel()
		d.runHere(taskCtx, rec, spec, root)
		// Counted as delivering before it stops counting as running, so
		// that a drain never sees it as neither.
		d.delivering.Add(1)
		defer d.delivering.Add(-1)
		d.mu.Lock()
		delete(d.running, id)
		delete(d.returning, id)
		d.mu.Unlock()
		release()
		d.deliverLoop(d.ctx, id, rec)
	}()
	d.log.Info("accepted task", "task", id, "coordinator", from, "image", spec.Image)
	return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, State: meshv1.TaskState_TASK_STATE_SUBMITTED}
}

// runHere runs a submitted task: fetch and materialise its workspace, run
// it with its output on the log topic, import what it left, record how it
// ended.
func (d *Delegation) runHere(ctx context.Context, rec *execRecord, spec runtime.Spec, root cid.Cid) {
	fail := func(err error) {
		if d.isReturning(rec.ID) {
			// A drain stopped it before it ran: handed back.
			rec.State = stateExited
			rec.Result = &taskResultRecord{Returned: true, Error: fmt.Sprintf("returned: peer %s was drained before the task ran", d.self)}
			_ = d.rec.putExec(rec)
			return
		}
		d.log.Warn("task failed", "task", rec.ID, "err", err)
		rec.State = stateFailed
		if rec.Result == nil {
			rec.Result = &taskResultRecord{}
		}
		rec.Result.Error = protocol.ErrorText(err)
		if err := d.rec.putExec(rec); err != nil {
			d.log.Warn("record task failure", "task", rec.ID, "err", err)
		}
	}
	t := d.runner
	defer t.Release(spec.ID)
	topic, err := d.host.Join(protocol.LogTopicPrefix+spec.ID, protocol.MaxLogChunkMessage, d.logValidator(d.self))
	if err != nil {
		fail(fmt.Errorf("join log topic: %w", err))
		return
	}
	defer topic.Close()

	if root.Defined() {
		rec.State = stateFetching
		_ = d.rec.putExec(rec)
		if err := d.fetchBase(ctx, spec.ID, root); err != nil {
			fail(err)
			return
		}
		if err := t.Prepare(ctx, &spec, root); err != nil {
			fail(err)
			return
		}
	}
	if err := d.ensureImage(ctx, spec.ID, spec.Image); err != nil {
		fail(err)
		return
	}
	rec.State = stateRunning
	_ = d.rec.putExec(rec)
	window := newOutputWindow(outputWindowBytes, ackStall)
	d.mu.Lock()
	d.windows[spec.ID] = window
	d.mu.Unlock()
	out, err := t.Execute(ctx, spec, root, &topicEvents{ctx: ctx, id: spec.ID, topic: topic, window: window, log: d.log})
	d.mu.Lock()
	delete(d.windows, spec.ID)
	d.mu.Unlock()
	res := outcomeRecord(out)
	rec.Result = res
	if d.isReturning(spec.ID) {
		// Killed by a drain at its deadline: handed back, not failed.
		res.Returned = true
		res.Error = fmt.Sprintf("returned: peer %s was drained and stopped the task at the drain's deadline", d.self)
		rec.State = stateExited
		if err := d.rec.putExec(rec); err != nil {
			d.log.Warn("record task result", "task", rec.ID, "err", err)
		}
		return
	}
	if err != nil && out.Result.StartedAt.IsZero() {
		fail(err)
		return
	}
	if err != nil {
		res.Error = protocol.ErrorText(err)
	}
	// A task over its disk limit gives nothing back: importing and carrying
	// what it wrote is the cost the limit bounds.
	if root.Defined() && !out.Result.Cancelled && !out.Result.TimedOut && !out.Result.DiskLimitExceeded && ctx.Err() == nil {
		if root, arts, err := t.ImportResult(ctx, spec.ID, spec.WorkspaceDir, spec.Artifacts); err != nil {
			res.Error = protocol.ErrorText(err)
		} else {
			res.ResultRoot = root.String()
			res.Artifacts = artifactRecords(arts)
		}
	}
	rec.State = stateExited
	if err := d.rec.putExec(rec); err != nil {
		// The result is delivered from memory (see deliverLoop); the
		// coordinator hears that this peer could not keep it.
		d.log.Warn("record task result", "task", rec.ID, "err", err)
		res.Error = strings.TrimPrefix(res.Error+"; ", "; ") + protocol.ErrorText(fmt.Errorf("task %s: record its result on the executor: %w", rec.ID, err))
	}
}

// ensureImage pulls the task's image from its registry when this peer
// lacks it; a pull that fails fails the task with an error naming the image
// and this peer.
func (d *Delegation) ensureImage(ctx context.Context, id, image string) error {
	if err := d.images.Ensure(ctx, id, image); err != nil {
		return fmt.Errorf("peer %s: %w", d.self, err)
	}
	return nil
}

// fetchBase fetches a task's workspace root (only the blocks missing here)
// and pins it for the task.
func (d *Delegation) fetchBase(ctx context.Context, id string, root cid.Cid) error {
	d.gc.RLock()
	defer d.gc.RUnlock()
	if _, err := d.blocks.FetchAll(ctx, 0, root); err != nil {
		return fmt.Errorf("fetch workspace %s: %w", root, err)
	}
	return d.dags.Pin(basePin(id), root)
}

// topicEvents publishes a task's output on its log topic. A publish that
// fails loses nothing: the chunk is in the task log, where the coordinator
// finds every hole. While the coordinator lags by more than the window, it
// holds the task's output (see outputWindow).
type topicEvents struct {
	ctx    context.Context
	id     string
	topic  *p2p.Topic
	window *outputWindow
	log    *slog.Logger
}

func (e *topicEvents) Started(string, peer.ID, cid.Cid) error { return nil }
func (e *topicEvents) Progress(string, uint64, uint64) error  { return nil }
func (e *topicEvents) Output(c runtime.Chunk) error {
	b, err := proto.Marshal(chunkToWire(e.id, c))
	if err == nil {
		_ = e.topic.Publish(e.ctx, b)
	}
	e.window.sent(c)
	if e.window.wait(e.ctx) {
		e.log.Warn("the coordinator stopped acknowledging output; the task writes on, its output is kept here",
			"task", e.id, "waited", ackStall)
	}
	return nil
}

// WouldHold implements tasks.Holder.
func (e *topicEvents) WouldHold(c runtime.Chunk) bool { return e.window.wouldHold(c) }

// ackOutput takes a coordinator's acknowledgement of its task's output.
func (d *Delegation) ackOutput(from peer.ID, ack *meshv1.AckOutput) *meshv1.TaskReply {
	if _, refusal := d.coordinatorsTask(from, ack.GetTaskId()); refusal != nil {
		return refusal
	}
	d.mu.Lock()
	w := d.windows[ack.GetTaskId()]
	d.mu.Unlock()
	if w != nil {
		w.ack(ack.GetStdoutSeq(), ack.GetStderrSeq())
	}
	return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK}
}

// logValidator accepts on a task's log topic only well-formed chunks of that
// task authored by its executor.
func (d *Delegation) logValidator(executor peer.ID) p2p.Validator {
	return func(from peer.ID, data []byte) error {
		if from != executor {
			return fmt.Errorf("log chunk from %s, not the task's executor: %w", from, errdefs.ErrPermissionDenied)
		}
		var c meshv1.LogChunk
		if err := proto.Unmarshal(data, &c); err != nil {
			return fmt.Errorf("log chunk: %v: %w", err, errdefs.ErrInvalid)
		}
		if c.GetSeq() == 0 || (c.GetStream() != uint32(runtime.Stdout) && c.GetStream() != uint32(runtime.Stderr)) {
			return fmt.Errorf("log chunk: stream %d seq %d: %w", c.GetStream(), c.GetSeq(), errdefs.ErrInvalid)
		}
		return nil
	}
}

// coordinatorsTask is the executor record of id when from is its
// coordinator, else the refusal to send.
func (d *Delegation) coordinatorsTask(from peer.ID, id string) (*execRecord, *meshv1.TaskReply) {
	e, err := d.rec.exec(id)
	if err != nil {
		return nil, refuse(meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK, "no task %s on peer %s", id, d.self)
	}
	if e.Coordinator != from.String() {
		return nil, refuse(meshv1.ReplyCode_REPLY_CODE_NOT_YOURS, "task %s belongs to another coordinator", id)
	}
	return e, nil
}

// cancelHere kills a task running here, if the sender is its coordinator.
func (d *Delegation) cancelHere(from peer.ID, id string) *meshv1.TaskReply {
	e, refusal := d.coordinatorsTask(from, id)
	if refusal != nil {
		return refusal
	}
	d.mu.Lock()
	cancel := d.running[id]
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		d.log.Info("task cancelled by its coordinator", "task", id)
	}
	return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, State: stateToWire(e.State)}
}

// visibleTask returns a task running here that from may see: its
// coordinator, or a watcher this peer would run tasks for (the same trust:
// tasks.accept_remote and tasks.accept_from).
func (d *Delegation) visibleTask(from peer.ID, id string) (*execRecord, *meshv1.TaskReply) {
	e, err := d.rec.exec(id)
	if err != nil {
		return nil, refuse(meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK, "no task %s on peer %s", id, d.self)
	}
	if e.Coordinator != from.String() {
		if refusal := d.mayRunFor(from); refusal != nil {
			return nil, refusal
		}
	}
	return e, nil
}

// query tells the coordinator, or a watcher, how a task is, with the
// result once ended.
func (d *Delegation) query(from peer.ID, id string) *meshv1.TaskReply {
	e, refusal := d.visibleTask(from, id)
	if refusal != nil {
		return refusal
	}
	reply := &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, State: stateToWire(e.State)}
	if e.Result != nil && (e.State == stateExited || e.State == stateFailed || e.State == stateDelivered) {
		reply.Result = resultToWire(e.ID, e.State, e.Result)
	}
	return reply
}

// settleInterrupted records how the tasks that were running here when this
// peer stopped ended, as the runtime found them, and delivers that to
// their coordinators: a task that went on and exited while the peer was
// down says so with its exit code; one still running was killed, since
// nobody could read its output or bring its workspace back.
func (d *Delegation) settleInterrupted(ctx context.Context, recs []*execRecord) {
	ctx, cancel := context.WithTimeout(ctx, taskStreamTimeout)
	defer cancel()
	for _, e := range recs {
		res := &taskResultRecord{Error: stateFromRestarted}
		l, found, err := d.runner.Leftover(ctx, e.ID)
		switch {
		case err != nil:
			d.log.Warn("clean up tasks left behind", "err", err)
		case found && l.Exited:
			res.ExitCode = l.ExitCode
			res.Error = fmt.Sprintf("this peer restarted while the task ran; the task exited %d meanwhile, but its output since and its workspace are lost", l.ExitCode)
		case found:
			res.ExitCode, res.Signal = 128+9, "SIGKILL"
			res.Error = "this peer restarted while the task ran; the task was still running and was killed (its output and workspace could not be taken up again)"
		}
		// The output it wrote before the restart is in its log here: the
		// result counts it, so the coordinator knows what to expect.
		res.StdoutChunks, res.StdoutBytes = d.keptOutput(ctx, e.ID, runtime.Stdout)
		res.StderrChunks, res.StderrBytes = d.keptOutput(ctx, e.ID, runtime.Stderr)
		e.State, e.Result = stateFailed, res
		if err := d.rec.putExec(e); err != nil {
			d.log.Warn("record interrupted task", "task", e.ID, "err", err)
		}
		d.log.Info("task interrupted by a restart", "task", e.ID, "found", found, "exited", l.Exited, "exit", res.ExitCode)
		d.rememberCoordinator(e)
		d.goDeliver(e.ID)
	}
}

// keptOutput counts the chunks and bytes of one stream of a task's log
// (the last sequence number kept, and the bytes up to it).
func (d *Delegation) keptOutput(ctx context.Context, id string, stream runtime.Stream) (chunks, bytes uint64) {
	err := d.logs.Each(ctx, id, stream, 1, func(c runtime.Chunk) error {
		chunks, bytes = c.Seq, bytes+uint64(len(c.Data))
		return nil
	})
	if err != nil {
		d.log.Debug("count the output of an interrupted task", "task", id, "err", err)
	}
	return chunks, bytes
}

// goDeliver delivers a stored result on a goroutine owned by d.
func (d *Delegation) goDeliver(id string) {
	d.delivering.Add(1)
	if !d.goFunc(func(ctx context.Context) {
		defer d.delivering.Add(-1)
		d.deliverLoop(ctx, id, nil)
	}) {
		d.delivering.Add(-1)
	}
}

// deliverLoop sends a task's result to its coordinator until the
// coordinator acknowledges it, backing off while it cannot be reached.
func (d *Delegation) deliverLoop(ctx context.Context, id string, mem *execRecord) {
	wait := deliverRetryMin
	for {
		e, err := d.rec.exec(id)
		if (err != nil || e.Result == nil) && mem != nil && mem.Result != nil {
			e, err = mem, nil // its record could not be written: the result is still owed
		}
		if err != nil || e.Result == nil || e.State == stateDelivered {
			return
		}
		coord, err := peer.Decode(e.Coordinator)
		if err != nil {
			return
		}
		reply, err := d.taskRequest(ctx, coord, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Deliver{
			Deliver: &meshv1.DeliverResult{Result: resultToWire(id, e.State, e.Result)},
		}})
		switch {
		case err == nil && reply.GetCode() == meshv1.ReplyCode_REPLY_CODE_OK:
			e.State = stateDelivered
			if err := d.rec.putExec(e); err != nil {
				d.log.Warn("record delivery", "task", id, "err", err)
			}
			d.log.Info("result delivered", "task", id, "coordinator", coord)
			return
		case err == nil:
			// The coordinator does not want it (unknown task, not its own):
			// trying again would not change that.
			d.log.Warn("result refused by the coordinator", "task", id, "code", reply.GetCode(), "reason", reply.GetReason())
			return
		}
		d.log.Debug("deliver result", "task", id, "coordinator", coord, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, deliverRetryMax)
	}
}

// listenAddrsOf is what the peerstore knows of p's listen addresses (from
// identify and heartbeats), as strings for a record.
func (d *Delegation) listenAddrsOf(p peer.ID) []string {
	addrs := d.host.Libp2p().Peerstore().Addrs(p)
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// rememberedAddrTTL keeps a record's addresses of a peer in the peerstore
// long enough for a restarted peer to find it again, and no longer.
const rememberedAddrTTL = time.Hour

// rememberAddrs puts addresses kept in a record back into the peerstore, so
// dialling p works after a restart before discovery finds it. Addresses that
// do not parse are skipped: a record is ours, but may be old.
func (d *Delegation) rememberAddrs(p peer.ID, addrs []string) {
	var mas []ma.Multiaddr
	for _, a := range addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			mas = append(mas, m)
		}
	}
	if len(mas) > 0 {
		d.host.Libp2p().Peerstore().AddAddrs(p, mas, rememberedAddrTTL)
	}
}

func (d *Delegation) rememberCoordinator(e *execRecord) {
	if p, err := peer.Decode(e.Coordinator); err == nil {
		d.rememberAddrs(p, e.CoordinatorAddrs)
	}
}

// errRangeEnd stops reading a task log past the range asked for.
var errRangeEnd = errors.New("end of the range")

// serveLogs answers one LogRangeRequest with the stored chunks of the range.
func (d *Delegation) serveLogs(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(logRangeTimeout))
	var req meshv1.LogRangeRequest
	if err := protocol.ReadDelimited(bufio.NewReader(s), &req, protocol.MaxLogRangeRequest); err != nil {
		s.Reset()
		return
	}
	e, refusal := d.visibleTask(s.Conn().RemotePeer(), req.GetTaskId())
	if refusal != nil {
		s.Reset()
		return
	}
	stream := runtime.Stream(req.GetStream())
	w := bufio.NewWriterSize(s, 256<<10)
	err := d.logs.Each(d.ctx, e.ID, stream, max(req.GetFromSeq(), 1), func(c runtime.Chunk) error {
		if to := req.GetToSeq(); to != 0 && c.Seq > to {
			return errRangeEnd
		}
		return protocol.WriteDelimited(w, chunkToWire(e.ID, c), protocol.MaxLogChunkMessage)
	})
	if err != nil && !errors.Is(err, errRangeEnd) {
		s.Reset()
		return
	}
	_ = w.Flush()
}
