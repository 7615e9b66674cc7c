package tasks

import "github.com/cortex-peer/cortex-peer/runtime"

// maxCoalesced bounds the data of one coalesced output chunk.
const maxCoalesced = 256 << 10

// coalescer reads a task's output and joins chunks of one stream that are
// already queued, so a task writing fast reaches the store and the API in
// few large chunks, while a task writing a line now and then still has each
// line delivered at once: nothing ever waits for more data. Chunks are
// renumbered per stream from 1, so the numbers the store keeps are the ones
// every watcher sees.
type coalescer struct {
	in   <-chan runtime.Chunk
	held *runtime.Chunk
	seq  [3]uint64
}

func newCoalescer(in <-chan runtime.Chunk) *coalescer { return &coalescer{in: in} }

// next returns the next chunk, or false once the input is closed and drained.
func (c *coalescer) next() (runtime.Chunk, bool) {
	var first runtime.Chunk
	if c.held != nil {
		first, c.held = *c.held, nil
	} else {
		var ok bool
		if first, ok = <-c.in; !ok {
			return runtime.Chunk{}, false
		}
	}
	data := first.Data
	for len(data) < maxCoalesced {
		select {
		case ch, ok := <-c.in:
			if !ok {
				goto done
			}
			if ch.Stream != first.Stream || len(data)+len(ch.Data) > maxCoalesced {
				c.held = &ch
				goto done
			}
			if len(data) == len(first.Data) {
				// Copy once so the first chunk's buffer is not appended into.
				data = append(make([]byte, 0, min(maxCoalesced, 4*len(first.Data)+len(ch.Data))), data...)
			}
			data = append(data, ch.Data...)
		default:
			goto done
		}
	}
done:
	s := first.Stream
	if int(s) >= len(c.seq) {
		s = 0
	}
	c.seq[s]++
	first.Data, first.Seq = data, c.seq[s]
	return first, true
}

// queued reports whether more output is waiting to be read.
func (c *coalescer) queued() bool { return c.held != nil || len(c.in) > 0 }
