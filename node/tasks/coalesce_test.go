package tasks

import (
	"bytes"
	"testing"

	"github.com/cortex-peer/cortex-peer/runtime"
)

func TestCoalescerJoinsQueuedChunksOfOneStream(t *testing.T) {
	in := make(chan runtime.Chunk, 16)
	send := func(s runtime.Stream, data string) { in <- runtime.Chunk{Stream: s, Data: []byte(data)} }
	send(runtime.Stdout, "a")
	send(runtime.Stdout, "b")
	send(runtime.Stderr, "E")
	send(runtime.Stdout, "c")
	big := bytes.Repeat([]byte{'x'}, maxCoalesced)
	in <- runtime.Chunk{Stream: runtime.Stdout, Data: big}
	send(runtime.Stdout, "d")
	close(in)

	c := newCoalescer(in)
	type want struct {
		s    runtime.Stream
		seq  uint64
		data string
	}
	for i, w := range []want{
		{runtime.Stdout, 1, "ab"},
		{runtime.Stderr, 1, "E"},
		{runtime.Stdout, 2, "c"}, // the next one would pass the cap
		{runtime.Stdout, 3, string(big)},
		{runtime.Stdout, 4, "d"},
	} {
		got, ok := c.next()
		if !ok || got.Stream != w.s || got.Seq != w.seq || string(got.Data) != w.data {
			t.Fatalf("chunk %d: %v %d %.10q, want %v %d %.10q", i, got.Stream, got.Seq, got.Data, w.s, w.seq, w.data)
		}
	}
	if _, ok := c.next(); ok {
		t.Fatal("chunk after the end")
	}
}

func TestCoalescerNeverWaitsForMore(t *testing.T) {
	in := make(chan runtime.Chunk, 1)
	in <- runtime.Chunk{Stream: runtime.Stdout, Data: []byte("line\n")}
	c := newCoalescer(in)
	got, ok := c.next() // must return although the channel is still open
	if !ok || string(got.Data) != "line\n" || got.Seq != 1 {
		t.Fatalf("%v %q", ok, got.Data)
	}
	// The first chunk's buffer is never appended into.
	first := []byte("ab")
	in2 := make(chan runtime.Chunk, 2)
	in2 <- runtime.Chunk{Stream: runtime.Stdout, Data: first[:1]}
	in2 <- runtime.Chunk{Stream: runtime.Stdout, Data: []byte("Z")}
	close(in2)
	got, _ = newCoalescer(in2).next()
	if string(got.Data) != "aZ" || string(first) != "ab" {
		t.Fatalf("joined %q, first buffer now %q", got.Data, first)
	}
}
