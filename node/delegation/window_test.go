package delegation

import (
	"context"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/runtime"
)

func chunkOf(s runtime.Stream, seq uint64, n int) runtime.Chunk {
	return runtime.Chunk{Stream: s, Seq: seq, Data: make([]byte, n)}
}

// The window holds the sender while more than its limit is unacknowledged
// and lets it go on the ack that makes room, per stream.
func TestOutputWindowHoldsUntilAcked(t *testing.T) {
	w := newOutputWindow(100, time.Hour)
	for seq := uint64(1); seq <= 3; seq++ {
		w.sent(chunkOf(runtime.Stdout, seq, 40))
	}
	w.sent(chunkOf(runtime.Stderr, 1, 10))
	if !w.wouldHold(chunkOf(runtime.Stdout, 4, 1)) {
		t.Fatal("130 bytes unacknowledged of 100: would not hold")
	}
	released := make(chan bool)
	go func() { released <- w.wait(context.Background()) }()
	select {
	case <-released:
		t.Fatal("wait returned with 130 bytes unacknowledged")
	case <-time.After(50 * time.Millisecond):
	}
	w.ack(1, 0) // 90 left: fits
	if stalled := <-released; stalled {
		t.Fatal("released by the stall, not the ack")
	}
	// Old and repeated acks change nothing.
	w.ack(1, 0)
	w.ack(0, 0)
	w.mu.Lock()
	pending := w.pending()
	w.mu.Unlock()
	if pending != 90 {
		t.Fatalf("pending %d, want 90", pending)
	}
	w.ack(3, 1)
	if w.wouldHold(chunkOf(runtime.Stdout, 4, 100)) {
		t.Fatal("everything acknowledged: would hold")
	}
}

// A coordinator that stops acknowledging holds the task for the stall time
// only; later writes do not wait until an ack comes again.
func TestOutputWindowStall(t *testing.T) {
	w := newOutputWindow(10, 20*time.Millisecond)
	w.sent(chunkOf(runtime.Stdout, 1, 50))
	if !w.wait(context.Background()) {
		t.Fatal("no ack: want released by the stall")
	}
	w.sent(chunkOf(runtime.Stdout, 2, 50))
	if w.wait(context.Background()) || w.wouldHold(chunkOf(runtime.Stdout, 3, 50)) {
		t.Fatal("after a stall: writes still wait")
	}
	w.ack(2, 0)
	w.sent(chunkOf(runtime.Stdout, 3, 50))
	if !w.wouldHold(chunkOf(runtime.Stdout, 4, 1)) {
		t.Fatal("an ack came: the window should hold again")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if w.wait(ctx) {
		t.Fatal("a cancelled wait reported a stall")
	}
}
