package delegation

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// Watching a task this peer does not coordinate: `logs [-f]` on any peer of
// the mesh finds the task's executor, reads its stored log (history), then
// follows the task's log topic (live), in order, with no duplicate and no
// hole, until the task ends.
const (
	locateTimeout = 2 * time.Second  // how long peers have to say they run a task
	watchQuery    = time.Second      // how often a watcher asks whether the task ended
	watchLost     = 30 * time.Second // an executor out of reach this long ends the watch
	watchGapWait  = gapWait          // as the coordinator's relay
	watchIdleFill = idleFill         // as the coordinator's relay
	watchPoll     = followPoll       // local follow of a task running here
)

// LogRange is the part of a task's output a reader asks for: one stream
// from a sequence number on, or (Stream 0) both streams whole.
type LogRange struct {
	Stream runtime.Stream
	From   uint64
}

// skipStream is a next sequence number no chunk reaches: a stream the
// range leaves out.
const skipStream = math.MaxUint64

// start is the first sequence number to send of each stream.
func (r LogRange) start() map[runtime.Stream]uint64 {
	next := map[runtime.Stream]uint64{runtime.Stdout: 1, runtime.Stderr: 1}
	if r.Stream != 0 {
		for s := range next {
			next[s] = skipStream
		}
		next[r.Stream] = max(r.From, 1)
	}
	return next
}

// ended is whether the task of an executor record has ended.
func (e *execRecord) ended() bool {
	return e.State == stateExited || e.State == stateFailed || e.State == stateDelivered
}

// watchTask sends the output of a task this peer does not coordinate: from its
// own executor record when the task runs here, else from the peer of the
// mesh that runs it.
func (d *Delegation) watchTask(ctx context.Context, id string, follow bool, rng LogRange, send func(runtime.Chunk) error) error {
	if _, err := d.rec.exec(id); err == nil {
		return d.followLocal(ctx, id, follow, rng, send, func() (bool, error) {
			e, err := d.rec.exec(id)
			if err != nil {
				return false, err
			}
			return e.ended(), nil
		})
	}
	exec, reply, err := d.locate(ctx, id)
	if err != nil {
		return err
	}
	return d.followRemote(ctx, id, exec, follow, rng, reply, send)
}

// followLocal sends a task's stored log from this peer's store, and with
// follow what is added to it until ended says so.
func (d *Delegation) followLocal(ctx context.Context, id string, follow bool, rng LogRange, send func(runtime.Chunk) error, ended func() (bool, error)) error {
	next := rng.start()
	for {
		// Read the state first: whatever was kept before it said "ended"
		// is read by the pass below.
		done, err := ended()
		if err != nil {
			return err
		}
		for _, s := range []runtime.Stream{runtime.Stdout, runtime.Stderr} {
			if next[s] == skipStream {
				continue
			}
			err := d.logs.Each(ctx, id, s, next[s], func(c runtime.Chunk) error {
				if c.Seq != next[s] {
					return errLogHole
				}
				next[s]++
				return send(c)
			})
			if errors.Is(err, errLogHole) {
				return nil // the log was capped here: nothing after it is kept
			}
			if err != nil {
				return err
			}
		}
		if !follow || done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.ctx.Done():
			return fmt.Errorf("this peer is shutting down: %w", errdefs.ErrUnavailable)
		case <-time.After(followPoll):
		}
	}
}

// locate asks every connected peer at once whether it runs task id; the
// first that does is its executor.
func (d *Delegation) locate(ctx context.Context, id string) (peer.ID, *meshv1.TaskReply, error) {
	ctx, cancel := context.WithTimeout(ctx, locateTimeout)
	defer cancel()
	type found struct {
		p     peer.ID
		reply *meshv1.TaskReply
	}
	ch := make(chan found, 1)
	var wg sync.WaitGroup
	var refusedMu sync.Mutex
	var refused []string
	for _, p := range d.host.Connected() {
		wg.Go(func() {
			reply, err := d.taskRequest(ctx, p, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Query{Query: &meshv1.QueryTask{TaskId: id}}})
			switch {
			case err != nil || reply.GetCode() == meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK:
			case reply.GetCode() == meshv1.ReplyCode_REPLY_CODE_OK:
				select {
				case ch <- found{p, reply}:
					cancel() // the others need not answer
				default:
				}
			default:
				refusedMu.Lock()
				refused = append(refused, fmt.Sprintf("%s: %s", shortID(p), reply.GetReason()))
				refusedMu.Unlock()
			}
		})
	}
	wg.Wait()
	select {
	case f := <-ch:
		return f.p, f.reply, nil
	default:
	}
	if len(refused) > 0 {
		return "", nil, fmt.Errorf("task %s: its executor will not show it to this peer (%v): %w", id, refused, errdefs.ErrPermissionDenied)
	}
	return "", nil, fmt.Errorf("task %s: no record here and no peer of the mesh runs it: %w", id, errdefs.ErrNotFound)
}

// followRemote relays a task's output from its executor: the stored log
// first, then, with follow, the live topic until the task ends. The same
// relay as the coordinator's puts chunks in order and fills holes; nothing
// is kept on this peer.
func (d *Delegation) followRemote(ctx context.Context, id string, exec peer.ID, follow bool, rng LogRange, first *meshv1.TaskReply, send func(runtime.Chunk) error) error {
	sink := &sendEvents{send: send}
	if !follow {
		r := newRelay(id, nil, sink)
		r.startAt(rng)
		r.fetch(ctx, d, exec, runtime.Stdout, 0)
		r.fetch(ctx, d, exec, runtime.Stderr, 0)
		return sink.err
	}
	// Listen before reading the history, so nothing falls between.
	relay, err := d.openRelay(id, exec, false)
	if err != nil {
		return err
	}
	defer relay.close()
	relay.ev = sink
	relay.startAt(rng)
	relay.fetch(ctx, d, exec, runtime.Stdout, 0)
	relay.fetch(ctx, d, exec, runtime.Stderr, 0)
	if res := first.GetResult(); res != nil {
		relay.complete(ctx, d, exec, res.GetStdoutChunks(), res.GetStderrChunks())
		return sink.err
	}
	gaps := time.NewTicker(gapWait)
	defer gaps.Stop()
	query := time.NewTicker(watchQuery)
	defer query.Stop()
	lastContact := time.Now()
	for sink.err == nil {
		select {
		case c := <-relay.in:
			relay.add(c)
			lastContact = time.Now()
		case <-gaps.C:
			relay.tick(ctx, d, exec)
		case now := <-query.C:
			reply, err := d.taskRequest(ctx, exec, &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Query{Query: &meshv1.QueryTask{TaskId: id}}})
			if err != nil {
				if now.Sub(lastContact) > watchLost {
					return fmt.Errorf("task %s: its executor %s could not be reached for %s: %w", id, exec, watchLost, errdefs.ErrUnavailable)
				}
				continue
			}
			lastContact = now
			if res := reply.GetResult(); res != nil {
				relay.complete(ctx, d, exec, res.GetStdoutChunks(), res.GetStderrChunks())
				return sink.err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-d.ctx.Done():
			return fmt.Errorf("this peer is shutting down: %w", errdefs.ErrUnavailable)
		}
	}
	return sink.err
}

// sendEvents hands relayed output to a watcher's send, keeping its first
// error (the watcher went away) so the watch stops.
type sendEvents struct {
	tasks.NopEvents
	send func(runtime.Chunk) error
	err  error
}

func (s *sendEvents) Output(c runtime.Chunk) error {
	if s.err == nil {
		s.err = s.send(c)
	}
	return s.err
}
