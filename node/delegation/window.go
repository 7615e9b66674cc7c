package delegation

import (
	"context"
	"sync"
	"time"

	"github.com/cortex-peer/cortex-peer/runtime"
)

// Flow control of a delegated task's output. The executor publishes every
// chunk on gossip, which may drop it; the coordinator hands chunks on in
// order, filling holes from the executor's log, and acknowledges what it
// has kept. While more than outputWindowBytes are unacknowledged the
// executor stops reading the task's pipes, so the task blocks on its
// writes as it would on a slow terminal, and the coordinator never falls
// further behind than the window.
const (
	outputWindowBytes = 8 << 20
	// ackEveryBytes is how much the coordinator hands on between acks: a
	// fraction of the window, so the executor rarely waits for one.
	ackEveryBytes = 1 << 20
	// ackStall is how long the executor waits for an ack before it lets
	// the task write again: the coordinator may be gone or may never
	// acknowledge. Nothing is lost then either, since every chunk is in
	// the executor's log, where the coordinator fills what it missed.
	ackStall = 10 * time.Second
)

// outputWindow counts a task's unacknowledged output on the executor.
type outputWindow struct {
	limit int64
	stall time.Duration

	mu        sync.Mutex
	unacked   [3][]sentMark // per stream, in order
	sentBytes [3]int64      // bytes sent per stream
	acked     [3]int64      // bytes acknowledged per stream
	ackSeq    [3]uint64
	room      chan struct{} // closed when an ack frees room
	stalled   bool          // the last wait ran out: writes no longer wait until an ack comes
}

// sentMark is a chunk sent: its sequence number and its stream's bytes
// sent up to and including it.
type sentMark struct {
	seq   uint64
	total int64
}

func newOutputWindow(limit int64, stall time.Duration) *outputWindow {
	return &outputWindow{limit: limit, stall: stall, room: make(chan struct{})}
}

// sent counts a chunk published.
func (w *outputWindow) sent(c runtime.Chunk) {
	s := int(c.Stream)
	if s <= 0 || s >= len(w.sentBytes) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.Seq <= w.ackSeq[s] {
		return
	}
	w.sentBytes[s] += int64(len(c.Data))
	w.unacked[s] = append(w.unacked[s], sentMark{seq: c.Seq, total: w.sentBytes[s]})
}

// wouldHold says whether sending c fills the window, so that the sender
// will wait for an ack.
func (w *outputWindow) wouldHold(c runtime.Chunk) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.stalled && w.pending()+int64(len(c.Data)) > w.limit
}

// ack takes the coordinator's word that it has every chunk up to these
// sequence numbers.
func (w *outputWindow) ack(stdout, stderr uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	freed := false
	for s, seq := range map[runtime.Stream]uint64{runtime.Stdout: stdout, runtime.Stderr: stderr} {
		if seq <= w.ackSeq[s] {
			continue
		}
		w.ackSeq[s] = seq
		marks := w.unacked[s]
		i := 0
		for i < len(marks) && marks[i].seq <= seq {
			w.acked[s] = marks[i].total
			i++
		}
		if i > 0 {
			w.unacked[s] = marks[i:]
			freed = true
		}
	}
	if freed {
		w.stalled = false
		close(w.room)
		w.room = make(chan struct{})
	}
}

func (w *outputWindow) pending() int64 {
	var n int64
	for s := range w.sentBytes {
		n += w.sentBytes[s] - w.acked[s]
	}
	return n
}

// wait returns once the unacknowledged output fits the window, ctx ends, or
// no ack has come for the stall time (it then reports true, and later
// waits return at once until an ack comes).
func (w *outputWindow) wait(ctx context.Context) (stalled bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		w.mu.Lock()
		if w.stalled || w.pending() <= w.limit {
			w.mu.Unlock()
			return false
		}
		room := w.room
		w.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(w.stall)
		}
		select {
		case <-room: // progress: the stall is counted from here again
			timer.Reset(w.stall)
		case <-ctx.Done():
			return false
		case <-timer.C:
			w.mu.Lock()
			w.stalled = true
			w.mu.Unlock()
			return true
		}
	}
}
