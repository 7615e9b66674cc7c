// Package diff3 merges two line-wise edits of a common base, with diff3 semantics.
//
// It owns the text-level part of merging a task's result (theirs) back into a
// user's directory (ours) that may have changed since the common base: the
// line diff, the three-way hunk walk, the conflict markers, and the
// heuristic that decides whether a file is text a line merge may touch.
// Choosing which files to merge and writing them is the caller's job.
//
// Lines keep their terminators: "\n" ends a line and "\r\n" stays part of
// it, and a last line without a newline is a line of its own. So a merge
// reproduces its inputs byte for byte where they agree, and a change of line
// ending, or the adding or removing of a final newline, is a change of that
// line like any other. Conflict marker lines end in "\n", also in a file
// with CRLF lines.
//
// Both sides are diffed against the base (Myers' O(ND) algorithm, with a work
// budget for huge rewrites; see diffBudget), and the changed base ranges of
// the two sides are grouped where they overlap. A group changed by one side
// only takes that side; a group changed the same way by both sides takes that
// change once; anything else is a conflict. Two changes overlap when they
// replace at least one common base line, when one inserts strictly inside a
// range the other replaces, or when both insert at the same place. Changes
// that merely touch (ours edits line 3, theirs line 4; one side inserts right
// before or after lines the other replaces or deletes) do not overlap and
// merge cleanly; an insertion next to a replaced range goes on the side of
// the range where it was made.
package diff3

import (
	"bytes"
	"slices"
	"strings"
)

// MaxTextSize is the largest file IsText accepts. Bigger files are not merged
// line-wise: their diffs would be slow and their conflicts unreadable.
const MaxTextSize = 8 << 20

// Result of a merge.
type Result struct {
	Merged    []byte // the merged text; when Conflicts > 0 it holds conflict markers (see below)
	Conflicts int    // number of conflicting hunks
}

// Merge merges the changes base->ours and base->theirs. Non-overlapping changes are both applied.
// Identical changes on both sides are applied once. Overlapping different changes are conflicts:
// the hunk is written as
//
//	<<<<<<< ours\n<ours lines>||||||| base\n<base lines>=======\n<theirs lines>>>>>>>> theirs\n
//
// (labels are the oursLabel/theirsLabel arguments). A section whose last line
// has no newline (the end of a file) gets one, so that every marker starts a
// line; a line break in a label is replaced by a space for the same reason.
// Merged never aliases the arguments.
func Merge(base, ours, theirs []byte, oursLabel, theirsLabel string) Result {
	// The trivial cases need no diff. merge3 gives the same answers; these
	// just skip the work.
	switch {
	case bytes.Equal(ours, theirs), bytes.Equal(base, theirs):
		return Result{Merged: bytes.Clone(ours)}
	case bytes.Equal(base, ours):
		return Result{Merged: bytes.Clone(theirs)}
	}
	return merge3(base, ours, theirs, oursLabel, theirsLabel)
}

// IsText reports whether b looks like text that a line merge may touch: no NUL
// byte in the first 8000 bytes (git's heuristic, which accepts UTF-8 and
// legacy 8-bit text alike and rejects UTF-16 and most binary formats, even
// those that happen to be valid UTF-8, like tar archives) and not larger than
// MaxTextSize.
func IsText(b []byte) bool {
	if len(b) > MaxTextSize {
		return false
	}
	return bytes.IndexByte(b[:min(len(b), 8000)], 0) < 0
}

// text is one input split into lines.
type text struct {
	data []byte
	ends []int // line i is data[ends[i-1]:ends[i]], with ends[-1] taken as 0
	ids  []int // interned line contents: equal lines have equal ids
}

// lines returns the bytes of lines [i, j).
func (t *text) lines(i, j int) []byte {
	if i >= j {
		return nil
	}
	start := 0
	if i > 0 {
		start = t.ends[i-1]
	}
	return t.data[start:t.ends[j-1]]
}

// splitLines cuts data into lines, keeping the terminators, and interns them
// in ids so that the diff compares integers instead of byte strings.
func splitLines(data []byte, ids map[string]int) text {
	t := text{data: data}
	n := bytes.Count(data, []byte{'\n'}) + 1
	t.ends = make([]int, 0, n)
	t.ids = make([]int, 0, n)
	// One string for the whole input: the map keys are substrings of it,
	// which spares an allocation per distinct line.
	str := string(data)
	for start := 0; start < len(str); {
		end := len(str)
		if i := strings.IndexByte(str[start:], '\n'); i >= 0 {
			end = start + i + 1
		}
		line := str[start:end]
		id, ok := ids[line]
		if !ok {
			id = len(ids)
			ids[line] = id
		}
		t.ends = append(t.ends, end)
		t.ids = append(t.ids, id)
		start = end
	}
	return t
}

// side is one of the two changed versions together with its hunks against
// the base.
type side struct {
	text
	hunks []hunk
}

// span returns the lines of the side that stand for base lines [bs, be),
// given the side's hunks hs that lie in that range (possibly none). Outside
// its hunks a side equals the base, so the offsets carry over.
func (s *side) span(base *text, bs, be int, hs []hunk) []int {
	if len(hs) == 0 {
		return base.ids[bs:be]
	}
	first, last := hs[0], hs[len(hs)-1]
	return s.ids[first.ss-(first.bs-bs) : last.se+(be-last.be)]
}

// bytes is span's counterpart returning the text.
func (s *side) bytes(base *text, bs, be int, hs []hunk) []byte {
	if len(hs) == 0 {
		return base.lines(bs, be)
	}
	first, last := hs[0], hs[len(hs)-1]
	return s.lines(first.ss-(first.bs-bs), last.se+(be-last.be))
}

// overlaps reports whether hunk h, which sorts at or after every member of a
// group covering base lines [gs, ge), conflicts with that group; see the
// package documentation for the rule. Testing against the group's union
// rather than its members is exact: the hunks of one side never touch, so
// any base line or insertion point strictly inside the union that h reaches
// belongs to a hunk of the other side.
func overlaps(gs, ge int, h hunk) bool {
	switch {
	case gs == ge: // the group is insertions at gs only
		return h.bs == h.be && h.bs == gs
	case h.bs == h.be: // an insertion conflicts strictly inside a range
		return gs < h.bs && h.bs < ge
	default: // h.bs >= gs by the sort order
		return h.bs < ge
	}
}

// merge3 is Merge without the shortcuts.
func merge3(base, ours, theirs []byte, oursLabel, theirsLabel string) Result {
	// Sized for the usual case, where the three versions share most lines.
	ids := make(map[string]int, bytes.Count(base, []byte{'\n'})+16)
	b := splitLines(base, ids)
	o := side{text: splitLines(ours, ids)}
	t := side{text: splitLines(theirs, ids)}
	o.hunks = diff(b.ids, o.ids)
	t.hunks = diff(b.ids, t.ids)

	out := make([]byte, 0, max(len(base), len(ours), len(theirs)))
	var res Result
	pos := 0 // base lines before pos are written
	oi, ti := 0, 0
	// first returns the next hunk of either side in (bs, be) order: an
	// insertion sorts before a range starting at the same line, so it is
	// written before it.
	first := func() (hunk, bool) {
		switch {
		case oi == len(o.hunks):
			return t.hunks[ti], false
		case ti == len(t.hunks):
			return o.hunks[oi], true
		}
		oh, th := o.hunks[oi], t.hunks[ti]
		if oh.bs < th.bs || (oh.bs == th.bs && oh.be <= th.be) {
			return oh, true
		}
		return th, false
	}
	for oi < len(o.hunks) || ti < len(t.hunks) {
		// Grow a group from the first pending hunk while the next one
		// overlaps it.
		h, isOurs := first()
		gs, ge := h.bs, h.be
		o0, t0 := oi, ti
		for {
			if isOurs {
				oi++
			} else {
				ti++
			}
			if oi == len(o.hunks) && ti == len(t.hunks) {
				break
			}
			h, isOurs = first()
			if !overlaps(gs, ge, h) {
				break
			}
			ge = max(ge, h.be)
		}
		oh, th := o.hunks[o0:oi], t.hunks[t0:ti]

		out = append(out, b.lines(pos, gs)...)
		pos = ge
		switch {
		case len(th) == 0:
			out = append(out, o.bytes(&b, gs, ge, oh)...)
		case len(oh) == 0:
			out = append(out, t.bytes(&b, gs, ge, th)...)
		default:
			ol, tl, bl := o.span(&b, gs, ge, oh), t.span(&b, gs, ge, th), b.ids[gs:ge]
			switch {
			case slices.Equal(ol, tl), slices.Equal(tl, bl):
				out = append(out, o.bytes(&b, gs, ge, oh)...)
			case slices.Equal(ol, bl):
				out = append(out, t.bytes(&b, gs, ge, th)...)
			default:
				res.Conflicts++
				out = appendMarker(out, "<<<<<<<", oursLabel)
				out = appendSection(out, o.bytes(&b, gs, ge, oh))
				out = appendMarker(out, "|||||||", "base")
				out = appendSection(out, b.lines(gs, ge))
				out = append(out, "=======\n"...)
				out = appendSection(out, t.bytes(&b, gs, ge, th))
				out = appendMarker(out, ">>>>>>>", theirsLabel)
			}
		}
	}
	out = append(out, b.lines(pos, len(b.ids))...)
	res.Merged = out
	return res
}

// appendMarker writes a conflict marker line. A label must not break the
// line, or the marker would no longer be recognisable.
func appendMarker(out []byte, marker, label string) []byte {
	out = append(out, marker...)
	if label != "" {
		label = strings.Map(func(r rune) rune {
			if r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, label)
		out = append(out, ' ')
		out = append(out, label...)
	}
	return append(out, '\n')
}

// appendSection writes one side of a conflict, ending it with a newline if
// its last line (the end of the file) has none, so that the next marker
// starts a line.
func appendSection(out, lines []byte) []byte {
	out = append(out, lines...)
	if len(lines) > 0 && lines[len(lines)-1] != '\n' {
		out = append(out, '\n')
	}
	return out
}
