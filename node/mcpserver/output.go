package mcpserver

import (
	"bytes"
	"strings"
)

// Bounds on what one tool result carries inline.
const (
	// DefaultInlineBytes is the most output of one stream returned whole;
	// past it a result carries the head, the tail and a reference.
	DefaultInlineBytes = 16 << 10
	// defaultHeadBytes and defaultTailBytes are how much of a long output
	// is shown from each end.
	defaultHeadBytes = 4 << 10
	defaultTailBytes = 4 << 10
	// maxLineBytes bounds one progress or log notification: a line longer
	// than this (or output without newlines) is sent in pieces.
	maxLineBytes = 4 << 10
)

// StreamOutput is one stream of a task's output as a tool result shows it.
type StreamOutput struct {
	Text      string  `json:"text,omitempty" jsonschema:"the whole output, when it is at most the inline threshold"`
	Head      string  `json:"head,omitempty" jsonschema:"the first bytes of a long output"`
	Tail      string  `json:"tail,omitempty" jsonschema:"the last bytes of a long output"`
	Truncated bool    `json:"truncated" jsonschema:"true when only head and tail are here; page through the rest with task_logs and ref"`
	Bytes     uint64  `json:"bytes" jsonschema:"total bytes written to this stream"`
	Lines     uint64  `json:"lines" jsonschema:"total lines (newlines, plus a last unterminated line)"`
	Ref       *LogRef `json:"ref,omitempty" jsonschema:"where the full output is kept: call task_logs with these values"`
}

// LogRef names a range of a task's kept output: task_logs pages through it.
type LogRef struct {
	TaskID  string `json:"task_id"`
	Stream  string `json:"stream"`
	FromSeq uint64 `json:"from_seq" jsonschema:"first chunk sequence number"`
	ToSeq   uint64 `json:"to_seq" jsonschema:"last chunk sequence number"`
}

// capture keeps what a result shows of one stream in bounded memory: all of
// it while it is small, then only its head and a rolling tail.
type capture struct {
	inline, head, tail int

	buf      []byte // everything, until it passes inline
	over     bool
	headBuf  []byte
	tailBuf  []byte
	bytes    uint64
	newlines uint64
	lastNL   bool
	first    uint64
	last     uint64
}

func newCapture(inline int) *capture {
	if inline <= 0 {
		inline = DefaultInlineBytes
	}
	h, t := defaultHeadBytes, defaultTailBytes
	if h > inline/2 {
		h, t = inline/2, inline/2
	}
	return &capture{inline: inline, head: h, tail: t, lastNL: true}
}

func (c *capture) add(seq uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	if c.first == 0 || seq < c.first {
		c.first = seq
	}
	c.last = max(c.last, seq)
	c.bytes += uint64(len(data))
	c.newlines += uint64(bytes.Count(data, []byte{'\n'}))
	c.lastNL = data[len(data)-1] == '\n'
	if !c.over {
		c.buf = append(c.buf, data...)
		if len(c.buf) <= c.inline {
			return
		}
		c.over = true
		c.headBuf = append([]byte(nil), c.buf[:c.head]...)
		data = c.buf[c.head:]
		c.buf = nil
	}
	c.tailBuf = append(c.tailBuf, data...)
	if len(c.tailBuf) > 2*c.tail { // trim now and then, not on every chunk
		c.tailBuf = append(c.tailBuf[:0], c.tailBuf[len(c.tailBuf)-c.tail:]...)
	}
}

// result is the stream as a tool result shows it; ref names the task.
func (c *capture) result(taskID, stream string) StreamOutput {
	out := StreamOutput{Bytes: c.bytes, Lines: c.newlines}
	if !c.lastNL {
		out.Lines++
	}
	if !c.over {
		out.Text = text(c.buf)
		return out
	}
	tail := c.tailBuf
	if len(tail) > c.tail {
		tail = tail[len(tail)-c.tail:]
	}
	out.Truncated = true
	out.Head, out.Tail = text(c.headBuf), text(tail)
	out.Ref = &LogRef{TaskID: taskID, Stream: stream, FromSeq: c.first, ToSeq: c.last}
	return out
}

// text makes output safe to put in JSON: invalid UTF-8 (binary output, or a
// rune cut by head or tail) becomes U+FFFD.
func text(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }

// lineSplitter turns a stream's chunks into lines for notifications; a line
// is sent once complete, or in maxLineBytes pieces when it grows past that.
type lineSplitter struct {
	partial []byte
}

// push calls emit for each line completed by data, without its newline.
func (l *lineSplitter) push(data []byte, emit func(line []byte)) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			l.partial = append(l.partial, data...)
			for len(l.partial) >= maxLineBytes {
				emit(l.partial[:maxLineBytes])
				l.partial = append(l.partial[:0], l.partial[maxLineBytes:]...)
			}
			return
		}
		if len(l.partial) > 0 {
			l.partial = append(l.partial, data[:i]...)
			emit(l.partial)
			l.partial = l.partial[:0]
		} else {
			line := data[:i]
			for len(line) > maxLineBytes {
				emit(line[:maxLineBytes])
				line = line[maxLineBytes:]
			}
			emit(line)
		}
		data = data[i+1:]
	}
}

// flush emits an unterminated last line.
func (l *lineSplitter) flush(emit func(line []byte)) {
	if len(l.partial) > 0 {
		emit(l.partial)
		l.partial = l.partial[:0]
	}
}
