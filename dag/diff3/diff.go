package diff3

// This file holds the two-way line diff that the merge is built on: Myers'
// O(ND) algorithm in its linear-space form (the "middle snake" divide and
// conquer of Myers 1986, section 4b), working on interned line ids.

// hunk says that base lines [bs, be) were replaced by side lines [ss, se).
// An insertion has bs == be, a deletion ss == se.
type hunk struct {
	bs, be int
	ss, se int
}

// diffBudget bounds the work, counted in visited diagonals plus compared
// lines, that one diff may spend in the middle-snake searches. Myers' search
// costs O((N+M)·D), which for a large file rewritten end to end (D close to
// N+M) is quadratic. When the budget runs out, the region being examined is
// reported as one change (all its base lines replaced by all its side lines)
// instead of being refined further. That is still a correct edit script,
// only a coarser one: the merge may then report a conflict where a minimal
// diff would have merged cleanly, but it never merges wrongly. Files with a
// few thousand changed lines stay well inside the budget; a region that runs
// out of it has mostly changed anyway. At roughly a nanosecond per unit the
// budget caps a diff at a few tens of milliseconds.
const diffBudget = 1 << 25

// diff returns the hunks that turn a into b, in order, each separated from the
// next by at least one unchanged line. Consecutive changes are coalesced into
// one hunk, so a side never has two hunks that touch.
func diff(a, b []int) []hunk {
	return diffBudgeted(a, b, diffBudget)
}

// diffBudgeted is diff with the given work budget.
func diffBudgeted(a, b []int, budget int) []hunk {
	n, m := len(a), len(b)
	// The common prefix and suffix are the usual case (a file with a few
	// edits) and cost nothing to strip before the real search.
	pre := 0
	for pre < n && pre < m && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < n-pre && suf < m-pre && a[n-1-suf] == b[m-1-suf] {
		suf++
	}
	a, b = a[pre:n-suf], b[pre:m-suf]
	if len(a) == 0 && len(b) == 0 {
		return nil
	}
	ca, cb := make([]bool, len(a)), make([]bool, len(b))

	// A line that does not occur at all on the other side can never be
	// matched, so it is marked changed up front and the search runs on the
	// remaining lines only. Removing unmatchable elements leaves the
	// longest common subsequence as it is, so the diff stays minimal, and
	// rewritten regions, where most lines are new, shrink to almost nothing
	// before the expensive part starts.
	fa, ia := keepShared(a, b, ca)
	fb, ib := keepShared(b, a, cb)

	d := differ{
		a:      fa,
		b:      fb,
		ca:     make([]bool, len(fa)),
		cb:     make([]bool, len(fb)),
		budget: budget,
	}
	// The search of any subproblem takes at most ceil((n+m)/2) steps, so
	// the arrays sized for the whole region serve every recursive call.
	size := 2*((len(fa)+len(fb)+1)/2) + 3
	d.vf = make([]int, size)
	d.vb = make([]int, size)
	d.compare(0, len(fa), 0, len(fb))
	for k, i := range ia {
		ca[i] = d.ca[k]
	}
	for k, j := range ib {
		cb[j] = d.cb[k]
	}

	// Pair the unchanged lines of both sides in order; everything between
	// two pairs is one hunk.
	var hs []hunk
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		if i < len(a) && j < len(b) && !ca[i] && !cb[j] {
			i++
			j++
			continue
		}
		si, sj := i, j
		for i < len(a) && ca[i] {
			i++
		}
		for j < len(b) && cb[j] {
			j++
		}
		if i == si && j == sj {
			// Unequal counts of unchanged lines would mean a bug in
			// compare; rather than loop forever, call the rest one change.
			i, j = len(a), len(b)
		}
		hs = append(hs, hunk{bs: pre + si, be: pre + i, ss: pre + sj, se: pre + j})
	}
	return hs
}

// keepShared returns the elements of x that also occur in y, with their
// indices in x, and marks the others in changed.
func keepShared(x, y []int, changed []bool) (kept, idx []int) {
	in := set(y)
	kept, idx = make([]int, 0, len(x)), make([]int, 0, len(x))
	for i, v := range x {
		if in(v) {
			kept = append(kept, v)
			idx = append(idx, i)
		} else {
			changed[i] = true
		}
	}
	return kept, idx
}

// set returns the membership test of the values in y. Interned line ids are
// small non-negative integers, for which a bitmap beats a map several times;
// anything else (only tests pass such ids) gets a map.
func set(y []int) func(int) bool {
	lo, hi := 0, 0
	for _, v := range y {
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo >= 0 && hi < 1<<26 {
		bits := make([]uint64, hi/64+1)
		for _, v := range y {
			bits[v/64] |= 1 << (v % 64)
		}
		return func(v int) bool { return v >= 0 && v <= hi && bits[v/64]&(1<<(v%64)) != 0 }
	}
	m := make(map[int]struct{}, len(y))
	for _, v := range y {
		m[v] = struct{}{}
	}
	return func(v int) bool { _, ok := m[v]; return ok }
}

// differ is the state of one linear-space Myers diff of a against b.
type differ struct {
	a, b   []int
	ca, cb []bool // ca[i]: a[i] is deleted; cb[j]: b[j] is inserted
	vf, vb []int  // furthest-reaching x per diagonal, forward and backward
	budget int    // work left before giving up on refinement
}

// compare marks the changed lines of a[aLo:aHi] against b[bLo:bHi] with a
// minimal edit script (or a coarser one once the budget is spent).
func (d *differ) compare(aLo, aHi, bLo, bHi int) {
	for aLo < aHi && bLo < bHi && d.a[aLo] == d.b[bLo] {
		aLo++
		bLo++
	}
	for aLo < aHi && bLo < bHi && d.a[aHi-1] == d.b[bHi-1] {
		aHi--
		bHi--
	}
	if aLo == aHi || bLo == bHi {
		d.change(aLo, aHi, bLo, bHi)
		return
	}
	x, y, ok := d.split(aLo, aHi, bLo, bHi)
	// After the trimming above the distance is at least 2, so a split on an
	// optimal path always leaves edits on both halves and lies strictly
	// inside the rectangle; the corner checks only guard the recursion.
	if !ok || (x == aLo && y == bLo) || (x == aHi && y == bHi) {
		d.change(aLo, aHi, bLo, bHi)
		return
	}
	d.compare(aLo, x, bLo, y)
	d.compare(x, aHi, y, bHi)
}

// change marks the whole of a[aLo:aHi] deleted and b[bLo:bHi] inserted.
func (d *differ) change(aLo, aHi, bLo, bHi int) {
	for i := aLo; i < aHi; i++ {
		d.ca[i] = true
	}
	for j := bLo; j < bHi; j++ {
		d.cb[j] = true
	}
}

// split finds a point (x, y) on a shortest edit path from (aLo, bLo) to
// (aHi, bHi) that has half the edits (rounded up) before it, by running the
// greedy search forwards from the start and backwards from the end until
// the two frontiers overlap. It reports false when the budget runs out.
//
// The searches run on the unbounded grid: a frontier point may lie past the
// last line of a or b, where no lines match, so it is a dead end that can
// never reach the other corner. That keeps the recurrences free of bounds
// checks. Overlap is tested on the in-grid part of a diagonal: if the forward
// search reaches x on diagonal k with f edits, every in-grid point of that
// diagonal up to x is reachable with at most f edits (follow the path until
// it first reaches the point's row or column, then go straight to it), and
// symmetrically backwards; so clamping both frontiers into the grid before
// comparing them keeps the test exact.
func (d *differ) split(aLo, aHi, bLo, bHi int) (x, y int, ok bool) {
	a, b := d.a[aLo:aHi], d.b[bLo:bHi]
	n, m := len(a), len(b)
	delta := n - m
	odd := delta&1 != 0
	maxSteps := (n + m + 1) / 2
	off := maxSteps + 1
	vf, vb := d.vf, d.vb

	// inGrid gives the range of x on diagonal k that lies inside the grid.
	inGrid := func(k int) (lo, hi int, ok bool) {
		lo, hi = max(0, k), min(n, m+k)
		return lo, hi, lo <= hi
	}

	for step := 0; step <= maxSteps; step++ {
		d.budget -= 4*step + 2
		if d.budget < 0 {
			return 0, 0, false
		}

		// Forward: vf[off+k] is the furthest x on diagonal k = x-y that
		// step edits reach from (0, 0).
		for k := -step; k <= step; k += 2 {
			var x int
			switch {
			case step == 0:
				x = 0
			case k == -step || (k != step && vf[off+k-1] < vf[off+k+1]):
				x = vf[off+k+1] // insertion: down from diagonal k+1
			default:
				x = vf[off+k-1] + 1 // deletion: right from diagonal k-1
			}
			y, x0 := x-k, x
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			d.budget -= x - x0
			vf[off+k] = x
			// With an odd delta the paths meet after a forward step:
			// compare with the backward frontier of step-1.
			if odd && k >= delta-(step-1) && k <= delta+(step-1) {
				if lo, hi, ok := inGrid(k); ok {
					xf, xb := min(x, hi), max(vb[off+k-delta], lo)
					if xf >= xb {
						return aLo + xf, bLo + xf - k, true
					}
				}
			}
		}

		// Backward: vb[off+k-delta] is the smallest x on diagonal k that
		// step edits reach from (n, m).
		for k := delta - step; k <= delta+step; k += 2 {
			j := k - delta
			var x int
			switch {
			case step == 0:
				x = n
			case j == step || (j != -step && vb[off+j-1] < vb[off+j+1]-1):
				x = vb[off+j-1] // up from diagonal k-1
			default:
				x = vb[off+j+1] - 1 // left from diagonal k+1
			}
			y, x0 := x-k, x
			for x > 0 && y > 0 && a[x-1] == b[y-1] {
				x--
				y--
			}
			d.budget -= x0 - x
			vb[off+j] = x
			// With an even delta the paths meet after a backward step:
			// compare with the forward frontier of the same step.
			if !odd && k >= -step && k <= step {
				if lo, hi, ok := inGrid(k); ok {
					xf, xb := min(vf[off+k], hi), max(x, lo)
					if xf >= xb {
						return aLo + xf, bLo + xf - k, true
					}
				}
			}
		}
	}
	return 0, 0, false
}
