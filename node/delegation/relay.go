package delegation

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/node/tasklog"
	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// logRelay receives a delegated task's live output from its log topic and
// hands it on in order, per stream, with no hole and no duplicate: chunks
// that arrive early wait for the ones before them, and holes are filled
// from the executor's stored log. Everything handed on is also kept in
// this peer's task log, for `logs` and late watchers.
type logRelay struct {
	id       string
	topic    *p2p.Topic
	in       chan runtime.Chunk
	stop     context.CancelFunc
	wg       sync.WaitGroup
	ev       tasks.Events
	logw     *tasklog.Writer
	detached bool

	next    [3]uint64                   // next sequence number to hand on, per stream
	handed  [3]int64                    // bytes handed on, per stream
	pending [3]map[uint64]runtime.Chunk // arrived early
	since   [3]time.Time                // when the current hole was first seen

	lastChunk, lastIdleFill time.Time // a live chunk came; the log was last asked while quiet

	// The coordinator's relay acknowledges what it kept (see outputWindow).
	acks     bool
	sinceAck int64         // bytes handed on since the last ack
	ackNow   chan struct{} // wakes the ack sender
	ackMu    sync.Mutex
	ackSeq   [3]uint64 // what the next ack says
}

// openRelay joins the task's log topic before the task is submitted, so no
// chunk is published before someone listens.
// With keep, what it hands on is also kept in this peer's task log (the
// coordinator's copy); a watcher keeps nothing.
func (d *Delegation) openRelay(id string, executor peer.ID, keep bool) (*logRelay, error) {
	topic, err := d.host.Join(protocol.LogTopicPrefix+id, protocol.MaxLogChunkMessage, d.logValidator(executor))
	if err != nil {
		return nil, fmt.Errorf("join the log topic of task %s: %w", id, err)
	}
	var logw *tasklog.Writer
	if keep {
		if logw, err = d.logs.Writer(id, d.cfg.LogStoreCapBytes); err != nil {
			topic.Close()
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(d.ctx)
	r := newRelay(id, logw, tasks.NopEvents{})
	r.topic, r.stop = topic, cancel
	r.in = make(chan runtime.Chunk, relayBuffer)
	run, err := topic.SubscribeNow(func(m p2p.Message) {
		var c meshv1.LogChunk
		if proto.Unmarshal(m.Data, &c) != nil || c.GetTaskId() != id {
			return
		}
		select {
		case r.in <- chunkFromWire(&c):
		default: // the relay is behind: the hole is filled from the executor's log
		}
	})
	if err != nil {
		cancel()
		topic.Close()
		r.closeLog()
		return nil, err
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_ = run(ctx)
	}()
	if keep {
		// Only the coordinator acknowledges: the executor takes acks
		// from nobody else.
		r.acks, r.ackNow = true, make(chan struct{}, 1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.sendAcks(ctx, d, executor)
		}()
	}
	return r, nil
}

// sendAcks tells the executor what the relay kept, whenever ack asks,
// without ever holding the relay up: a slow ack is overtaken by the next.
func (r *logRelay) sendAcks(ctx context.Context, d *Delegation, exec peer.ID) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.ackNow:
		}
		r.ackMu.Lock()
		ack := &meshv1.AckOutput{TaskId: r.id, StdoutSeq: r.ackSeq[runtime.Stdout], StderrSeq: r.ackSeq[runtime.Stderr]}
		r.ackMu.Unlock()
		reply, err := d.taskRequest(ctx, exec, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Ack{Ack: ack}})
		if err == nil {
			err = replyError(exec, reply)
		}
		if err != nil {
			d.log.Debug("acknowledge output", "task", r.id, "err", err)
		}
	}
}

// ack has the sender acknowledge everything handed on so far.
func (r *logRelay) ack() {
	if !r.acks {
		return
	}
	r.sinceAck = 0
	r.ackMu.Lock()
	for s := range r.next {
		if r.next[s] > 0 {
			r.ackSeq[s] = r.next[s] - 1
		}
	}
	r.ackMu.Unlock()
	select {
	case r.ackNow <- struct{}{}:
	default: // one is on its way; it reads the latest numbers
	}
}

// newRelay is a relay that orders and fills chunks, not yet listening to a
// topic (openRelay adds that); logw may be nil.
func newRelay(id string, logw *tasklog.Writer, ev tasks.Events) *logRelay {
	r := &logRelay{id: id, logw: logw, ev: ev, lastChunk: time.Now()}
	for s := range r.pending {
		r.next[s] = 1
		r.pending[s] = map[uint64]runtime.Chunk{}
	}
	return r
}

// startAt makes the relay hand on only the range asked for: chunks before
// it, and a stream it leaves out, are dropped as duplicates are.
func (r *logRelay) startAt(rng LogRange) {
	for s, next := range rng.start() {
		r.next[s] = next
	}
}

func (r *logRelay) detach() { r.detached = true }

func (r *logRelay) close() {
	r.stop()
	r.wg.Wait()
	r.topic.Close()
	r.closeLog()
}

func (r *logRelay) closeLog() {
	if r.logw != nil {
		_, _ = r.logw.Close()
	}
}

// flush writes out what the relay kept so far.
func (r *logRelay) flush() {
	if r.logw != nil {
		_ = r.logw.Flush()
	}
}

// add takes one live chunk.
func (r *logRelay) add(c runtime.Chunk) {
	r.lastChunk = time.Now()
	s := int(c.Stream)
	if s <= 0 || s >= len(r.next) || c.Seq < r.next[s] {
		return // a duplicate, or already filled from the log
	}
	if c.Seq > r.next[s] {
		if len(r.pending[s]) == 0 {
			r.since[s] = time.Now()
		}
		if len(r.pending[s]) < relayBuffer {
			r.pending[s][c.Seq] = c
		}
		return
	}
	r.emit(c)
	r.drain(s)
}

func (r *logRelay) emit(c runtime.Chunk) {
	r.next[c.Stream] = c.Seq + 1
	r.handed[c.Stream] += int64(len(c.Data))
	if r.logw != nil {
		_ = r.logw.Append(c)
	}
	_ = r.ev.Output(c)
	if r.sinceAck += int64(len(c.Data)); r.sinceAck >= ackEveryBytes {
		r.ack()
	}
}

// drain hands on the chunks that waited for the one just handed on.
func (r *logRelay) drain(s int) {
	for {
		c, ok := r.pending[s][r.next[s]]
		if !ok {
			break
		}
		delete(r.pending[s], c.Seq)
		r.emit(c)
	}
	if len(r.pending[s]) > 0 {
		r.since[s] = time.Now()
	}
}

// tick runs every gapWait: holes older than that are filled from the
// executor's log, and so is a log quiet for idleFill, since a chunk lost on
// its way (or published before we were heard) would wait for the next one.
func (r *logRelay) tick(ctx context.Context, d *Delegation, exec peer.ID) {
	r.fillGaps(ctx, d, exec)
	if r.sinceAck > 0 {
		r.ack()
	}
	// A task that was just writing and went quiet may be held by its
	// window, waiting for chunks of its tail that gossip dropped: ask soon.
	quiet := idleFill
	if r.acks && time.Since(r.lastChunk) < busyQuiet {
		quiet = gapWait
	}
	if time.Since(r.lastChunk) > quiet && time.Since(r.lastIdleFill) > quiet {
		r.lastIdleFill = time.Now()
		r.fetch(ctx, d, exec, runtime.Stdout, 0)
		r.fetch(ctx, d, exec, runtime.Stderr, 0)
		r.flush()
	}
}

// fillGaps fetches from the executor's log the holes older than gapWait.
func (r *logRelay) fillGaps(ctx context.Context, d *Delegation, exec peer.ID) {
	for s := 1; s < len(r.next); s++ {
		if len(r.pending[s]) == 0 || time.Since(r.since[s]) < gapWait {
			continue
		}
		first := uint64(0)
		for seq := range r.pending[s] {
			if first == 0 || seq < first {
				first = seq
			}
		}
		r.fetch(ctx, d, exec, runtime.Stream(s), first-1)
	}
}

// complete fetches whatever is still missing up to the final counts.
func (r *logRelay) complete(ctx context.Context, d *Delegation, exec peer.ID, stdout, stderr uint64) {
	for s, last := range map[runtime.Stream]uint64{runtime.Stdout: stdout, runtime.Stderr: stderr} {
		for len(r.in) > 0 {
			r.add(<-r.in)
		}
		if r.next[s] <= last {
			r.fetch(ctx, d, exec, s, last)
		}
	}
}

// raiseCounts counts in res the output the relay handed on past what res
// counts: an executor killed and restarted reports what its log kept, which
// lacks what it had not flushed when it died, while the relay got it live.
func (r *logRelay) raiseCounts(res *taskResultRecord) (raised bool) {
	if got := r.next[runtime.Stdout] - 1; r.next[runtime.Stdout] > 0 && got > res.StdoutChunks {
		res.StdoutChunks, res.StdoutBytes, raised = got, uint64(r.handed[runtime.Stdout]), true
	}
	if got := r.next[runtime.Stderr] - 1; r.next[runtime.Stderr] > 0 && got > res.StderrChunks {
		res.StderrChunks, res.StderrBytes, raised = got, uint64(r.handed[runtime.Stderr]), true
	}
	return raised
}

// missing says what of the task's output, as its result counts it, the
// relay never handed on: empty when it has all.
func (r *logRelay) missing(stdoutChunks, stderrChunks uint64, stdoutBytes, stderrBytes int64) string {
	var parts []string
	for _, s := range []struct {
		name          string
		stream        runtime.Stream
		chunks        uint64
		bytes, handed int64
	}{
		{"stdout", runtime.Stdout, stdoutChunks, stdoutBytes, r.handed[runtime.Stdout]},
		{"stderr", runtime.Stderr, stderrChunks, stderrBytes, r.handed[runtime.Stderr]},
	} {
		if r.next[s.stream] <= s.chunks {
			parts = append(parts, fmt.Sprintf("%s from chunk %d of %d (%d of %d bytes arrived)",
				s.name, r.next[s.stream], s.chunks, s.handed, s.bytes))
		}
	}
	return strings.Join(parts, ", ")
}

// fetch asks the executor's log for next..to of one stream (to 0: all it
// has).
func (r *logRelay) fetch(ctx context.Context, d *Delegation, exec peer.ID, s runtime.Stream, to uint64) {
	from := r.next[s]
	if to != 0 && to < from {
		return
	}
	err := d.fetchLogRange(ctx, exec, r.id, s, from, to, func(c runtime.Chunk) {
		if c.Seq == r.next[s] {
			delete(r.pending[s], c.Seq)
			r.emit(c)
		}
	})
	if err != nil {
		d.log.Debug("fill log gap", "task", r.id, "stream", s, "from", from, "to", to, "err", err)
	}
	r.drain(int(s))
}
