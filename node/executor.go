package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/runtime"
	"github.com/cortex-peer/cortex-peer/runtime/images"
)

// Timeouts and intervals of delegation.
const (
	taskStreamTimeout   = 30 * time.Second       // one request and its reply on the task protocol
	deliverRetryMin     = 200 * time.Millisecond // first wait before delivering a result again
	deliverRetryMax     = 5 * time.Second        // longest wait between deliveries
	logRangeTimeout     = 30 * time.Second       // one range of stored output
	gapWait             = 250 * time.Millisecond // a hole in the live log older than this is filled from the executor
	idleFill            = time.Second            // a live log quiet for this long is checked against the executor's
	livenessInterval    = time.Second            // how often a waiting coordinator checks its executor
	queryInterval       = 5 * time.Second        // how often it asks the executor how the task is
	cancelGrace         = 15 * time.Second       // how long a cancelled run waits for the executor's result
	relayBuffer         = 4096                   // live chunks queued between gossip and the relay
	followPoll          = 50 * time.Millisecond  // how often logs --follow looks for new output
	stateFromRestarted  = "the executor restarted while the task ran; its output so far is kept there"
	stateFromNoExecutor = "the executor could not be reached for %v; the task is lost"
)

// delegation owns both sides of delegated tasks on this peer: as executor
// it runs what coordinators submit over /cortex/task and publishes the
// output on the task's log topic; as coordinator it submits, relays the
// output in order, waits for the result, and merges the workspace back.
type delegation struct {
	n   *Node
	rec records
	log *slog.Logger

	ctx    context.Context // ends at close: every goroutine here watches it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// recMu serialises changes to coordinator records, which the result
	// delivery, the waiting run and the merge all make.
	recMu sync.Mutex
	// mergeMu makes merges of results into callers' directories one at a
	// time, so that each result is merged once (see mergeBack).
	mergeMu sync.Mutex

	mu      sync.Mutex
	closed  bool
	running map[string]context.CancelFunc // executor: tasks running here for others
	waiters map[string]chan struct{}      // coordinator: tasks whose result someone awaits
}

func newDelegation(n *Node, log *slog.Logger) *delegation {
	ctx, cancel := context.WithCancel(context.Background())
	return &delegation{
		n: n, rec: records{st: n.store}, log: log,
		ctx: ctx, cancel: cancel,
		running: map[string]context.CancelFunc{},
		waiters: map[string]chan struct{}{},
	}
}

// start registers the stream handlers and takes up what an earlier run of
// this peer left unfinished: results not yet delivered, tasks that were
// running when it stopped, and coordinator records still waiting.
func (d *delegation) start() {
	h := d.n.host.Libp2p()
	h.SetStreamHandler(libp2pproto.ID(protocol.TaskProtocol), d.serveTask)
	h.SetStreamHandler(libp2pproto.ID(protocol.LogsProtocol), d.serveLogs)

	execs, err := d.rec.execs()
	if err != nil {
		d.log.Warn("read executor records", "err", err)
	}
	leftovers := false
	for _, e := range execs {
		switch e.State {
		case stateSubmitted, stateFetching, stateRunning:
			leftovers = true
			e.State = stateFailed
			e.Result = &taskResultRecord{Error: stateFromRestarted}
			if err := d.rec.putExec(e); err != nil {
				d.log.Warn("record interrupted task", "task", e.ID, "err", err)
			}
			d.rememberCoordinator(e)
			d.goDeliver(e.ID)
		case stateExited, stateFailed:
			if e.Result != nil {
				d.rememberCoordinator(e)
				d.goDeliver(e.ID)
			}
		}
	}
	if leftovers {
		// Connecting to containerd removes the containers a crashed run left.
		d.goFunc(func(ctx context.Context) {
			if _, err := d.n.tasks.executor(ctx); err != nil {
				d.log.Warn("clean up tasks left behind", "err", err)
			}
		})
	}
	tasks, err := d.rec.tasks()
	if err != nil {
		d.log.Warn("read task records", "err", err)
	}
	for _, t := range tasks {
		if !t.State.final() && t.Executor != d.n.ID().String() {
			d.goAwait(t, nil)
		} else if !t.State.final() {
			// A task of our own that was running when this peer stopped.
			d.failTask(t, errors.New("this peer stopped while the task ran"))
		}
	}
	d.goFunc(d.pruneLoop)
}

// close stops every goroutine of delegation and waits for them. Tasks
// running here for others are killed; their records say so when this peer
// next starts. Safe to call twice.
func (d *delegation) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	if h := d.n.host; h != nil {
		h.Libp2p().RemoveStreamHandler(libp2pproto.ID(protocol.TaskProtocol))
		h.Libp2p().RemoveStreamHandler(libp2pproto.ID(protocol.LogsProtocol))
	}
	d.cancel()
	d.wg.Wait()
}

// goFunc runs fn on a goroutine owned by d, unless d is closing.
func (d *delegation) goFunc(fn func(ctx context.Context)) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		fn(d.ctx)
	}()
	return true
}

// serveTask answers one request on the task protocol.
func (d *delegation) serveTask(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(taskStreamTimeout))
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
func (d *delegation) probe(from peer.ID, raw [][]byte) *meshv1.TaskReply {
	if reply := d.mayRunFor(from); reply != nil {
		return reply
	}
	if len(raw) > maxProbeCIDs {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "probe of %d blocks, at most %d", len(raw), maxProbeCIDs)
	}
	var have uint32
	for _, b := range raw {
		c, err := cid.Cast(b)
		if err != nil {
			return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "probe: %v", err)
		}
		if ok, err := d.n.dags.Blocks().Has(d.ctx, c); err == nil && ok {
			have++
		}
	}
	return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, Have: have}
}

// mayRunFor refuses a peer this peer's policy does not run tasks for, or
// returns nil.
func (d *delegation) mayRunFor(from peer.ID) *meshv1.TaskReply {
	cfg := d.n.cfg.Tasks
	if !cfg.AcceptRemote {
		return refuse(meshv1.ReplyCode_REPLY_CODE_REFUSED, "peer %s does not run tasks for other peers (tasks.accept_remote = false)", d.n.ID())
	}
	if len(cfg.AcceptFrom) > 0 && !slices.Contains(cfg.AcceptFrom, from) {
		return refuse(meshv1.ReplyCode_REPLY_CODE_REFUSED, "peer %s is not in tasks.accept_from of peer %s", from, d.n.ID())
	}
	return nil
}

// accept takes a task submitted by a coordinator, after the policy allows
// the sender and the spec; the task then runs on its own goroutine.
func (d *delegation) accept(from peer.ID, sub *meshv1.SubmitTask) *meshv1.TaskReply {
	id := sub.GetTaskId()
	if err := protocol.CheckTaskID(id); err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "%v", err)
	}
	if reply := d.mayRunFor(from); reply != nil {
		return reply
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
	applied, err := d.n.cfg.Tasks.Policy.Apply(spec)
	if err != nil {
		code := meshv1.ReplyCode_REPLY_CODE_REFUSED
		if errors.Is(err, errdefs.ErrInvalid) {
			code = meshv1.ReplyCode_REPLY_CODE_INVALID
		}
		return refuse(code, "peer %s: %v", d.n.ID(), err)
	}
	spec.Image = applied.Image // the default image, when the spec named none
	var root cid.Cid
	if b := sub.GetWorkspaceRoot(); len(b) > 0 {
		if root, err = cid.Cast(b); err != nil {
			return refuse(meshv1.ReplyCode_REPLY_CODE_INVALID, "workspace root: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(d.ctx, taskStreamTimeout)
	_, err = d.n.tasks.executor(ctx)
	cancel()
	if err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE, "peer %s cannot run tasks: %v", d.n.ID(), err)
	}
	rec := &execRecord{ID: id, Coordinator: from.String(), CoordinatorAddrs: d.listenAddrsOf(from), State: stateSubmitted}
	if err := d.rec.putExec(rec); err != nil {
		return refuse(meshv1.ReplyCode_REPLY_CODE_INTERNAL, "record task: %v", err)
	}
	taskCtx, taskCancel := context.WithCancel(d.ctx)
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		taskCancel()
		return refuse(meshv1.ReplyCode_REPLY_CODE_UNAVAILABLE, "peer %s is shutting down", d.n.ID())
	}
	d.running[id] = taskCancel
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer taskCancel()
		d.runHere(taskCtx, rec, spec, root)
		d.mu.Lock()
		delete(d.running, id)
		d.mu.Unlock()
		d.deliverLoop(d.ctx, id)
	}()
	d.log.Info("accepted task", "task", id, "coordinator", from, "image", spec.Image)
	return &meshv1.TaskReply{Code: meshv1.ReplyCode_REPLY_CODE_OK, State: meshv1.TaskState_TASK_STATE_SUBMITTED}
}

// runHere runs a submitted task: fetch and materialise its workspace, run
// it with its output on the log topic, import what it left, record how it
// ended.
func (d *delegation) runHere(ctx context.Context, rec *execRecord, spec runtime.Spec, root cid.Cid) {
	fail := func(err error) {
		d.log.Warn("task failed", "task", rec.ID, "err", err)
		rec.State = stateFailed
		if rec.Result == nil {
			rec.Result = &taskResultRecord{}
		}
		rec.Result.Error = err.Error()
		_ = d.rec.putExec(rec)
	}
	t := d.n.tasks
	defer t.removeWorkDir(spec.ID)
	topic, err := d.n.host.Join(protocol.LogTopicPrefix+spec.ID, protocol.MaxLogChunkMessage, d.logValidator(d.n.ID()))
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
		if err := t.materialise(ctx, spec, root); err != nil {
			fail(err)
			return
		}
		t.useWorkspace(&spec)
	}
	if err := d.ensureImage(ctx, spec.ID, spec.Image); err != nil {
		fail(err)
		return
	}
	rec.State = stateRunning
	_ = d.rec.putExec(rec)
	out, err := t.execute(ctx, spec, root, &topicEvents{ctx: ctx, id: spec.ID, topic: topic})
	res := outcomeRecord(out)
	rec.Result = res
	if err != nil && out.Result.StartedAt.IsZero() {
		fail(err)
		return
	}
	if err != nil {
		res.Error = err.Error()
	}
	if root.Defined() && !out.Result.Cancelled && !out.Result.TimedOut && ctx.Err() == nil {
		if root, err := t.importResult(ctx, spec.ID, spec.WorkspaceDir); err != nil {
			res.Error = err.Error()
		} else {
			res.ResultRoot = root.String()
		}
	}
	rec.State = stateExited
	if err := d.rec.putExec(rec); err != nil {
		d.log.Warn("record task result", "task", rec.ID, "err", err)
	}
}

// ensureImage pulls the task's image from its registry when this peer
// lacks it; a pull that fails fails the task with an error naming the image
// and this peer.
func (d *delegation) ensureImage(ctx context.Context, id, image string) error {
	st, err := d.n.images.get(ctx)
	if err != nil {
		return err
	}
	if _, err := st.Get(ctx, image); err == nil {
		return nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("image %q on peer %s: %w", image, d.n.ID(), err)
	}
	d.log.Info("pulling the image of a task", "task", id, "image", image)
	defer d.n.images.changed()
	if _, err := st.Pull(ctx, image, images.PullOptions{}); err != nil {
		return fmt.Errorf("image %q is not on peer %s and could not be pulled: %w", image, d.n.ID(), err)
	}
	return nil
}

// fetchBase fetches a task's workspace root (only the blocks missing here)
// and pins it for the task.
func (d *delegation) fetchBase(ctx context.Context, id string, root cid.Cid) error {
	d.n.gcMu.RLock()
	defer d.n.gcMu.RUnlock()
	if _, err := d.n.fetchAll(ctx, root); err != nil {
		return fmt.Errorf("fetch workspace %s: %w", root, err)
	}
	return d.n.dags.Pin("task:"+id+":base", root)
}

// topicEvents publishes a task's output on its log topic. A publish that
// fails loses nothing: the chunk is in the task log, where the coordinator
// finds every hole.
type topicEvents struct {
	ctx   context.Context
	id    string
	topic *p2p.Topic
}

func (e *topicEvents) started(string, peer.ID, cid.Cid) error { return nil }
func (e *topicEvents) progress(string, uint64, uint64) error  { return nil }
func (e *topicEvents) output(c runtime.Chunk) error {
	b, err := proto.Marshal(chunkToWire(e.id, c))
	if err == nil {
		_ = e.topic.Publish(e.ctx, b)
	}
	return nil
}

// logValidator accepts on a task's log topic only well-formed chunks of that
// task authored by its executor.
func (d *delegation) logValidator(executor peer.ID) p2p.Validator {
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
func (d *delegation) coordinatorsTask(from peer.ID, id string) (*execRecord, *meshv1.TaskReply) {
	e, err := d.rec.exec(id)
	if err != nil {
		return nil, refuse(meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK, "no task %s on peer %s", id, d.n.ID())
	}
	if e.Coordinator != from.String() {
		return nil, refuse(meshv1.ReplyCode_REPLY_CODE_NOT_YOURS, "task %s belongs to another coordinator", id)
	}
	return e, nil
}

// cancelHere kills a task running here, if the sender is its coordinator.
func (d *delegation) cancelHere(from peer.ID, id string) *meshv1.TaskReply {
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
func (d *delegation) visibleTask(from peer.ID, id string) (*execRecord, *meshv1.TaskReply) {
	e, err := d.rec.exec(id)
	if err != nil {
		return nil, refuse(meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK, "no task %s on peer %s", id, d.n.ID())
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
func (d *delegation) query(from peer.ID, id string) *meshv1.TaskReply {
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

// goDeliver delivers a stored result on a goroutine owned by d.
func (d *delegation) goDeliver(id string) {
	d.goFunc(func(ctx context.Context) { d.deliverLoop(ctx, id) })
}

// deliverLoop sends a task's result to its coordinator until the
// coordinator acknowledges it, backing off while it cannot be reached.
func (d *delegation) deliverLoop(ctx context.Context, id string) {
	wait := deliverRetryMin
	for {
		e, err := d.rec.exec(id)
		if err != nil || e.Result == nil || e.State == stateDelivered {
			return
		}
		coord, err := peer.Decode(e.Coordinator)
		if err != nil {
			return
		}
		reply, err := d.n.taskRequest(ctx, coord, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Deliver{
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
func (d *delegation) listenAddrsOf(p peer.ID) []string {
	addrs := d.n.host.Libp2p().Peerstore().Addrs(p)
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
func (d *delegation) rememberAddrs(p peer.ID, addrs []string) {
	var mas []ma.Multiaddr
	for _, a := range addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			mas = append(mas, m)
		}
	}
	if len(mas) > 0 {
		d.n.host.Libp2p().Peerstore().AddAddrs(p, mas, rememberedAddrTTL)
	}
}

func (d *delegation) rememberCoordinator(e *execRecord) {
	if p, err := peer.Decode(e.Coordinator); err == nil {
		d.rememberAddrs(p, e.CoordinatorAddrs)
	}
}

// errRangeEnd stops reading a task log past the range asked for.
var errRangeEnd = errors.New("end of the range")

// serveLogs answers one LogRangeRequest with the stored chunks of the range.
func (d *delegation) serveLogs(s network.Stream) {
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
	err := d.n.taskLogs.Each(d.ctx, e.ID, stream, max(req.GetFromSeq(), 1), func(c runtime.Chunk) error {
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
