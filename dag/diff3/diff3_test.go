package diff3

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU runs fn on one locked OS thread and returns the CPU time that
// thread spent in it. Unlike wall-clock time it does not grow when other
// processes take the machine's cores, so a bound on it catches quadratic
// work without failing on a loaded machine.
func threadCPU(t *testing.T, fn func()) time.Duration {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	now := func() time.Duration {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
			t.Fatalf("thread CPU clock: %v", err)
		}
		return time.Duration(ts.Nano())
	}
	start := now()
	fn()
	return now() - start
}

func TestMerge(t *testing.T) {
	const (
		nine = "1\n2\n3\n4\n5\n6\n7\n8\n9\n"
		abc  = "a\nb\nc\n"
	)
	cases := []struct {
		name                string
		base, ours, theirs  string
		want                string
		conflicts           int
		oursLabel, theirsLb string // default "ours", "theirs"
	}{
		{name: "no change", base: abc, ours: abc, theirs: abc, want: abc},
		{name: "only ours changed", base: abc, ours: "a\nB\nc\n", theirs: abc, want: "a\nB\nc\n"},
		{name: "only theirs changed", base: abc, ours: abc, theirs: "a\nb\nC\nd\n", want: "a\nb\nC\nd\n"},
		{name: "both same change", base: abc, ours: "a\nX\nc\n", theirs: "a\nX\nc\n", want: "a\nX\nc\n"},
		{
			name: "both same change among other changes", base: nine,
			ours:   "1\n2\nX\n4\n5\n6\n7\n8\n9\n",
			theirs: "0\n1\n2\nX\n4\n5\n6\n7\n8\n",
			want:   "0\n1\n2\nX\n4\n5\n6\n7\n8\n",
		},
		{
			name: "start and end", base: nine,
			ours:   "one\n2\n3\n4\n5\n6\n7\n8\n9\n",
			theirs: "1\n2\n3\n4\n5\n6\n7\n8\nnine\n",
			want:   "one\n2\n3\n4\n5\n6\n7\n8\nnine\n",
		},
		{
			name: "start and middle", base: nine,
			ours:   "1\n2\n3\n4\nfive\n6\n7\n8\n9\n",
			theirs: "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n",
			want:   "0\n1\n2\n3\n4\nfive\n6\n7\n8\n9\n",
		},
		{
			name: "middle and end", base: nine,
			ours:   "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n",
			theirs: "1\n2\n3\n5\n6\n7\n8\n9\n",
			want:   "1\n2\n3\n5\n6\n7\n8\n9\n10\n",
		},
		{
			name: "adjacent edits", base: nine,
			ours:   "1\n2\nthree\n4\n5\n6\n7\n8\n9\n",
			theirs: "1\n2\n3\nfour\n5\n6\n7\n8\n9\n",
			want:   "1\n2\nthree\nfour\n5\n6\n7\n8\n9\n",
		},
		{
			name: "adjacent multi-line edits", base: nine,
			ours:   "1\nA\nB\n4\n5\n6\n7\n8\n9\n",
			theirs: "1\n2\n3\nC\n\nD\nE\n6\n7\n8\n9\n",
			want:   "1\nA\nB\nC\n\nD\nE\n6\n7\n8\n9\n",
		},
		{
			name: "insertions at the same point", base: "a\nb\n", ours: "a\nX\nb\n", theirs: "a\nY\nb\n",
			want:      "a\n<<<<<<< ours\nX\n||||||| base\n=======\nY\n>>>>>>> theirs\nb\n",
			conflicts: 1,
		},
		{name: "same insertion at the same point", base: "a\nb\n", ours: "a\nX\nb\n", theirs: "a\nX\nb\n", want: "a\nX\nb\n"},
		{
			name: "delete vs edit of the same line", base: abc, ours: "a\nc\n", theirs: "a\nB\nc\n",
			want:      "a\n<<<<<<< ours\n||||||| base\nb\n=======\nB\n>>>>>>> theirs\nc\n",
			conflicts: 1,
		},
		{
			name: "different edits of the same line", base: abc, ours: "a\nX\nc\n", theirs: "a\nY\nc\n",
			want:      "a\n<<<<<<< ours\nX\n||||||| base\nb\n=======\nY\n>>>>>>> theirs\nc\n",
			conflicts: 1,
		},
		{name: "both delete the same line", base: abc, ours: "a\nc\n", theirs: "a\nc\n", want: "a\nc\n"},
		{name: "both delete the same line, theirs more", base: nine, ours: "1\n2\n4\n5\n6\n7\n8\n9\n", theirs: "1\n2\n4\n5\n6\n7\n8\n", want: "1\n2\n4\n5\n6\n7\n8\n"},
		{
			name: "overlapping deletes differ", base: nine, ours: "1\n4\n5\n6\n7\n8\n9\n", theirs: "1\n2\n5\n6\n7\n8\n9\n",
			want:      "1\n<<<<<<< ours\n4\n||||||| base\n2\n3\n4\n=======\n2\n>>>>>>> theirs\n5\n6\n7\n8\n9\n",
			conflicts: 1,
		},
		{name: "delete next to edit", base: abc, ours: "a\nc\n", theirs: "a\nb\nC\n", want: "a\nC\n"},
		{name: "insert before a replaced line", base: abc, ours: "a\nnew\nb\nc\n", theirs: "a\nB\nc\n", want: "a\nnew\nB\nc\n"},
		{name: "insert after a deleted line", base: abc, ours: "a\nb\nnew\nc\n", theirs: "a\nc\n", want: "a\nnew\nc\n"},
		{
			name: "insert inside a replaced range", base: nine,
			ours:      "1\n2\n3\n4\nnew\n5\n6\n7\n8\n9\n",
			theirs:    "1\n2\nX\n7\n8\n9\n",
			want:      "1\n2\n<<<<<<< ours\n3\n4\nnew\n5\n6\n||||||| base\n3\n4\n5\n6\n=======\nX\n>>>>>>> theirs\n7\n8\n9\n",
			conflicts: 1,
		},
		{
			name: "two conflicts", base: nine,
			ours:      "X\n2\n3\n4\n5\n6\n7\n8\nX\n",
			theirs:    "Y\n2\n3\n4\n5\n6\n7\n8\nY\n",
			want:      "<<<<<<< ours\nX\n||||||| base\n1\n=======\nY\n>>>>>>> theirs\n2\n3\n4\n5\n6\n7\n8\n<<<<<<< ours\nX\n||||||| base\n9\n=======\nY\n>>>>>>> theirs\n",
			conflicts: 2,
		},
		{
			name: "labels", base: abc, ours: "a\nX\nc\n", theirs: "a\nY\nc\n",
			oursLabel: "workdir", theirsLb: "task\n42",
			want:      "a\n<<<<<<< workdir\nX\n||||||| base\nb\n=======\nY\n>>>>>>> task 42\nc\n",
			conflicts: 1,
		},

		// A missing final newline makes the last line differ from the
		// same line with one; it must survive where nobody touched it.
		{name: "no trailing newline anywhere", base: "a\nb", ours: "A\nb", theirs: "a\nb", want: "A\nb"},
		{name: "no trailing newline, both edit", base: "a\nb\nc", ours: "A\nb\nc", theirs: "a\nb\nC", want: "A\nb\nC"},
		{name: "ours adds the trailing newline", base: "a\nb", ours: "a\nb\n", theirs: "A\nb", want: "A\nb\n"},
		{name: "theirs adds the trailing newline", base: "a\nb", ours: "A\nb", theirs: "a\nb\n", want: "A\nb\n"},
		{name: "ours drops the trailing newline", base: "a\nb\n", ours: "a\nb", theirs: "A\nb\n", want: "A\nb"},
		{name: "theirs drops the trailing newline", base: "a\nb\n", ours: "A\nb\n", theirs: "a\nb", want: "A\nb"},
		{name: "theirs appends after an unterminated line", base: "a\nb", ours: "A\nb", theirs: "a\nb\nc", want: "A\nb\nc"},
		{
			name: "both append after an unterminated line", base: "a\nb", ours: "a\nb\nc", theirs: "a\nb\nd",
			want:      "a\n<<<<<<< ours\nb\nc\n||||||| base\nb\n=======\nb\nd\n>>>>>>> theirs\n",
			conflicts: 1,
		},

		{name: "CRLF lines", base: "a\r\nb\r\nc\r\n", ours: "A\r\nb\r\nc\r\n", theirs: "a\r\nb\r\nC\r\n", want: "A\r\nb\r\nC\r\n"},
		{name: "CRLF without trailing newline", base: "a\r\nb\r\nc", ours: "a\r\nB\r\nc", theirs: "a\r\nb\r\nc", want: "a\r\nB\r\nc"},
		{name: "lone CR stays inside the line", base: "a\rb\nc\n", ours: "a\rb\nC\n", theirs: "A\rb\nc\n", want: "A\rb\nC\n"},
		{
			name: "line ending change vs edit", base: "a\nb\nc\n", ours: "a\nb\r\nc\n", theirs: "a\nB\nc\n",
			want:      "a\n<<<<<<< ours\nb\r\n||||||| base\nb\n=======\nB\n>>>>>>> theirs\nc\n",
			conflicts: 1,
		},
		{name: "line ending change elsewhere", base: "a\nb\nc\n", ours: "a\r\nb\nc\n", theirs: "a\nb\nC\n", want: "a\r\nb\nC\n"},

		{name: "empty base, ours adds", base: "", ours: "x\ny\n", theirs: "", want: "x\ny\n"},
		{name: "empty base, both add the same", base: "", ours: "x\n", theirs: "x\n", want: "x\n"},
		{
			name: "empty base, both add differently", base: "", ours: "x\n", theirs: "y",
			want:      "<<<<<<< ours\nx\n||||||| base\n=======\ny\n>>>>>>> theirs\n",
			conflicts: 1,
		},
		{name: "empty everything", base: "", ours: "", theirs: "", want: ""},
		{name: "both empty the file", base: abc, ours: "", theirs: "", want: ""},
		{
			name: "ours empties the file, theirs edits", base: abc, ours: "", theirs: "a\nB\nc\n",
			want:      "<<<<<<< ours\n||||||| base\na\nb\nc\n=======\na\nB\nc\n>>>>>>> theirs\n",
			conflicts: 1,
		},
		// Ours deletes a blank line, theirs adds one: the diffs put both
		// at the end, where they touch without overlapping.
		{name: "blank lines only", base: "\n\n\n", ours: "\n\n", theirs: "\n\n\n\n", want: "\n\n\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ol, tl := c.oursLabel, c.theirsLb
			if ol == "" {
				ol = "ours"
			}
			if tl == "" {
				tl = "theirs"
			}
			for _, f := range []struct {
				name string
				fn   func(b, o, t []byte, ol, tl string) Result
			}{{"Merge", Merge}, {"merge3", merge3}} {
				got := f.fn([]byte(c.base), []byte(c.ours), []byte(c.theirs), ol, tl)
				if string(got.Merged) != c.want || got.Conflicts != c.conflicts {
					t.Errorf("%s:\n got %q (%d conflicts)\nwant %q (%d conflicts)",
						f.name, got.Merged, got.Conflicts, c.want, c.conflicts)
				}
			}
		})
	}
}

// TestMergeDoesNotAlias makes sure callers may keep and modify the result.
func TestMergeDoesNotAlias(t *testing.T) {
	base, ours := []byte("a\nb\n"), []byte("a\nB\n")
	for _, r := range []Result{Merge(base, ours, base, "", ""), Merge(base, base, ours, "", ""), Merge(base, ours, ours, "", "")} {
		r.Merged[0] = 'z'
		if ours[0] != 'a' || base[0] != 'a' {
			t.Fatal("Merged aliases an argument")
		}
	}
}

// lines10k returns a 10,000-line file in the shape of source code.
func lines10k() []string {
	ls := make([]string, 10000)
	for i := range ls {
		ls[i] = fmt.Sprintf("\tx%d := compute(%d, %q) // line %d\n", i%97, i, "v", i)
	}
	return ls
}

// edits10k returns base, ours and theirs for a 10,000-line file with a few
// edits on each side, and the expected merge.
func edits10k() (base, ours, theirs, want []byte) {
	b := lines10k()
	o := append([]string(nil), b...)
	o[100] = "ours 100\n"
	o[5000] = "ours 5000\n"
	o = append(o[:7001], append([]string{"ours inserted\n", "after 7000\n"}, o[7001:]...)...)

	th := append([]string(nil), b...)
	th[101] = "theirs 101\n" // adjacent to ours' edit
	th = append(th[:6000], th[6001:]...)
	th = append(th, "theirs appended\n")

	w := append([]string(nil), b...)
	w[100], w[101], w[5000] = "ours 100\n", "theirs 101\n", "ours 5000\n"
	w = append(w[:7001], append([]string{"ours inserted\n", "after 7000\n"}, w[7001:]...)...)
	w = append(w[:6000], w[6001:]...)
	w = append(w, "theirs appended\n")

	join := func(s []string) []byte { return []byte(strings.Join(s, "")) }
	return join(b), join(o), join(th), join(w)
}

func TestMerge10kLines(t *testing.T) {
	base, ours, theirs, want := edits10k()
	best := time.Hour
	for range 5 {
		var got Result
		best = min(best, threadCPU(t, func() { got = Merge(base, ours, theirs, "ours", "theirs") }))
		if got.Conflicts != 0 || !bytes.Equal(got.Merged, want) {
			t.Fatalf("%d conflicts, merged text differs from the expected one", got.Conflicts)
		}
	}
	// The race detector slows this down several times and still stays far
	// below the limit.
	if best > 100*time.Millisecond {
		t.Errorf("merging 10k lines took %v of CPU", best)
	}
	t.Logf("10k lines merged in %v of CPU", best)

	// A conflict deep inside a large file.
	o := bytes.Replace(ours, []byte("// line 4242\n"), []byte("// ours 4242\n"), 1)
	th := bytes.Replace(theirs, []byte("// line 4242\n"), []byte("// theirs 4242\n"), 1)
	got := Merge(base, o, th, "ours", "theirs")
	if got.Conflicts != 1 || !bytes.Contains(got.Merged, []byte("// ours 4242\n||||||| base\n")) {
		t.Errorf("want one conflict at line 4242, got %d", got.Conflicts)
	}
}

// TestMergeHugeRewrite checks the guard against quadratic work: ours
// reverses the order of all lines of a large file, the search runs out of
// budget and the whole file is treated as one change, which is still a
// correct merge.
func TestMergeHugeRewrite(t *testing.T) {
	const n = 100000
	var bb, ob strings.Builder
	for i := range n {
		fmt.Fprintf(&bb, "line %d\n", i)
		fmt.Fprintf(&ob, "line %d\n", n-1-i)
	}
	base, ours := []byte(bb.String()), []byte(ob.String())
	theirs := bytes.Replace(base, []byte("line 500\n"), []byte("theirs 500\n"), 1)

	var got Result
	elapsed := threadCPU(t, func() { got = merge3(base, ours, base, "ours", "theirs") })
	if !bytes.Equal(got.Merged, ours) || got.Conflicts != 0 {
		t.Fatal("merge3(base, ours, base) != ours")
	}
	elapsed += threadCPU(t, func() { got = merge3(base, ours, theirs, "ours", "theirs") })
	want := "<<<<<<< ours\n" + string(ours) + "||||||| base\n" + string(base) + "=======\n" + string(theirs) + ">>>>>>> theirs\n"
	if got.Conflicts != 1 || string(got.Merged) != want {
		t.Errorf("got %d conflicts, want the whole file as one conflict", got.Conflicts)
	}
	// Without the budget this would take minutes; the bound is loose for
	// the race detector.
	if elapsed > 30*time.Second {
		t.Errorf("two merges of a reversed 100k-line file took %v of CPU", elapsed)
	}
	t.Logf("two merges of a reversed 100k-line file took %v of CPU", elapsed)
}

func TestIsText(t *testing.T) {
	nulLate := append(bytes.Repeat([]byte("x"), 8000), 0)
	cases := []struct {
		name string
		b    []byte
		want bool
	}{
		{"empty", nil, true},
		{"ascii", []byte("hello\nworld\n"), true},
		{"utf-8", []byte("héllo wörld ✓\n"), true},
		{"latin-1", []byte("caf\xe9\n"), true},
		{"NUL", []byte("a\x00b"), false},
		{"UTF-16", []byte("\xff\xfeh\x00i\x00"), false},
		{"NUL after 8000 bytes", nulLate, true},
		{"at the size limit", bytes.Repeat([]byte("a\n"), MaxTextSize/2), true},
		{"over the size limit", bytes.Repeat([]byte("a"), MaxTextSize+1), false},
	}
	for _, c := range cases {
		if got := IsText(c.b); got != c.want {
			t.Errorf("%s: IsText = %v, want %v", c.name, got, c.want)
		}
	}
}

// lcsLen is the textbook quadratic LCS, the reference for diff's minimality.
func lcsLen(a, b []int) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for i := range a {
		for j := range b {
			if a[i] == b[j] {
				cur[j+1] = prev[j] + 1
			} else {
				cur[j+1] = max(cur[j], prev[j+1])
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkDiff verifies that hs is a well-formed edit script from a to b and
// returns its number of edited lines.
func checkDiff(t *testing.T, a, b []int, hs []hunk) int {
	t.Helper()
	var got []int
	ai, edits := 0, 0
	for k, h := range hs {
		if h.bs < ai || h.be < h.bs || h.se < h.ss || (h.bs == h.be && h.ss == h.se) {
			t.Fatalf("bad hunk %d %+v in %+v", k, h, hs)
		}
		if k > 0 && h.bs == ai {
			t.Fatalf("hunks %d and %d touch: %+v", k-1, k, hs)
		}
		if h.ss != len(got)+h.bs-ai {
			t.Fatalf("hunk %d %+v: side offset does not match", k, h)
		}
		got = append(got, a[ai:h.bs]...)
		got = append(got, b[h.ss:h.se]...)
		ai = h.be
		edits += h.be - h.bs + h.se - h.ss
	}
	got = append(got, a[ai:]...)
	if !slices.Equal(got, b) {
		t.Fatalf("applying %+v to %v gives %v, want %v", hs, a, got, b)
	}
	return edits
}

// TestDiffMinimal compares diff against the quadratic LCS on many random
// inputs over small alphabets, where lines repeat a lot and the choice of
// snakes matters.
func TestDiffMinimal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	seq := func(n, alpha int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = r.IntN(alpha)
		}
		return s
	}
	for range 20000 {
		alpha := 1 + r.IntN(5)
		a := seq(r.IntN(30), alpha)
		var b []int
		if r.IntN(2) == 0 {
			b = seq(r.IntN(30), alpha)
		} else { // a few edits of a
			b = append([]int(nil), a...)
			for range r.IntN(5) {
				p := r.IntN(len(b) + 1)
				switch r.IntN(3) {
				case 0:
					b = append(b[:p], append([]int{r.IntN(alpha + 1)}, b[p:]...)...)
				case 1:
					if p < len(b) {
						b = append(b[:p], b[p+1:]...)
					}
				case 2:
					if p < len(b) {
						b[p] = r.IntN(alpha + 1)
					}
				}
			}
		}
		edits := checkDiff(t, a, b, diff(a, b))
		if want := len(a) + len(b) - 2*lcsLen(a, b); edits != want {
			t.Fatalf("diff(%v, %v) makes %d edits, minimum is %d", a, b, edits, want)
		}
	}
}

// TestDiffBudget runs out of budget on purpose: the result must still be a
// valid edit script, and the time spent must stay bounded.
func TestDiffBudget(t *testing.T) {
	// Reversing a file keeps every line but leaves a common subsequence
	// of one line: the search would be quadratic.
	a, b := make([]int, 50000), make([]int, 50000)
	for i := range a {
		a[i], b[len(b)-1-i] = i, i
	}
	var hs []hunk
	elapsed := threadCPU(t, func() { hs = diff(a, b) })
	checkDiff(t, a, b, hs)
	if len(hs) != 1 {
		t.Errorf("got %d hunks, want the whole region as one", len(hs))
	}
	if elapsed > 15*time.Second {
		t.Errorf("diff of a reversed 50k-line file took %v of CPU", elapsed)
	}
	t.Logf("diff of a reversed 50k-line file, budget exhausted: %v of CPU", elapsed)

	// Budgets that run out somewhere inside the recursion leave some
	// regions refined and others not; the script must be valid anyway.
	r := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		a, b := make([]int, r.IntN(40)), make([]int, r.IntN(40))
		for i := range a {
			a[i] = r.IntN(3)
		}
		for i := range b {
			b[i] = r.IntN(3)
		}
		checkDiff(t, a, b, diffBudgeted(a, b, r.IntN(200)))
	}
}

// lineify turns arbitrary bytes into text of short, often repeated lines,
// so that the fuzzer explores line structure and not just byte noise. The
// last line keeps no newline when the input length is odd.
func lineify(in []byte) []byte {
	var out []byte
	for i, c := range in {
		out = append(out, 'a'+c%4)
		if i < len(in)-1 || len(in)%2 == 0 {
			out = append(out, '\n')
		}
	}
	return out
}

func FuzzMerge(f *testing.F) {
	f.Add([]byte("a\nb\nc\n"), []byte("a\nB\nc\n"), []byte("a\nb\nC\n"))
	f.Add([]byte("a\nb\n"), []byte("a\nX\nb\n"), []byte("a\nY\nb\n"))
	f.Add([]byte("a\nb"), []byte("a\nb\nc"), []byte("a\r\nb\n"))
	f.Add([]byte(""), []byte("x\n"), []byte("y"))
	f.Add([]byte("1\n2\n3\n4\n5\n"), []byte("1\n3\n5\n"), []byte("2\n3\n4\n"))
	f.Add([]byte{0, 1, 2, 3, 0, 1}, []byte{0, 2, 3, 1}, []byte{1, 2, 0, 3, 1, 1})
	f.Fuzz(func(t *testing.T, base, ours, theirs []byte) {
		for _, v := range [][3][]byte{{base, ours, theirs}, {lineify(base), lineify(ours), lineify(theirs)}} {
			checkMerge(t, v[0], v[1], v[2])
		}
	})
}

// checkMerge checks the properties a merge must have whatever its input.
func checkMerge(t *testing.T, b, o, th []byte) {
	t.Helper()
	for _, f := range []struct {
		name string
		fn   func(b, o, t []byte, ol, tl string) Result
	}{{"Merge", Merge}, {"merge3", merge3}} {
		expect := func(what string, r Result, want []byte) {
			t.Helper()
			if r.Conflicts != 0 || !bytes.Equal(r.Merged, want) {
				t.Fatalf("%s: %s = %q (%d conflicts), want %q", f.name, what, r.Merged, r.Conflicts, want)
			}
		}
		expect("Merge(b, b, b)", f.fn(b, b, b, "o", "t"), b)
		expect("Merge(b, o, b)", f.fn(b, o, b, "o", "t"), o)
		expect("Merge(b, b, t)", f.fn(b, b, th, "o", "t"), th)
		expect("Merge(b, o, o)", f.fn(b, o, o, "o", "t"), o)
		expect("Merge(b, t, t)", f.fn(b, th, th, "o", "t"), th)

		// A clean merge must not depend on which side is ours.
		r1, r2 := f.fn(b, o, th, "o", "t"), f.fn(b, th, o, "o", "t")
		if r1.Conflicts != r2.Conflicts || (r1.Conflicts == 0 && !bytes.Equal(r1.Merged, r2.Merged)) {
			t.Fatalf("%s: not symmetric: %q (%d) vs %q (%d)", f.name, r1.Merged, r1.Conflicts, r2.Merged, r2.Conflicts)
		}
	}
}

// TestMergeRandom runs the fuzz properties on seeded random line files, so
// that plain `go test` covers them beyond the fuzz seeds.
func TestMergeRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	file := func() []byte {
		var b []byte
		for range r.IntN(20) {
			b = append(b, byte('a'+r.IntN(4)))
			switch r.IntN(6) {
			case 0:
				b = append(b, '\r', '\n')
			case 1:
			default:
				b = append(b, '\n')
			}
		}
		return b
	}
	for range 3000 {
		checkMerge(t, file(), file(), file())
	}
}

// TestMergeDisjointEdits builds merges whose answer is known: a base of
// unique lines in segments divided by untouched separator lines, where each
// segment is left alone, edited by one side, edited the same way by both, or
// replaced differently by both (a conflict of exactly that segment).
func TestMergeDisjointEdits(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	fresh := 0
	line := func() string { fresh++; return fmt.Sprintf("line %d\n", fresh) }
	edit := func(seg []string) []string {
		var out []string
		for _, l := range seg {
			switch r.IntN(4) {
			case 0: // delete
			case 1: // replace
				out = append(out, line())
			case 2: // insert before
				out = append(out, line(), l)
			default:
				out = append(out, l)
			}
		}
		if r.IntN(3) == 0 {
			out = append(out, line())
		}
		return out
	}
	for range 2000 {
		var base, ours, theirs, want strings.Builder
		conflicts := 0
		for s := range 1 + r.IntN(8) {
			if s > 0 {
				sep := line()
				for _, b := range []*strings.Builder{&base, &ours, &theirs, &want} {
					b.WriteString(sep)
				}
			}
			seg := make([]string, 1+r.IntN(4))
			for i := range seg {
				seg[i] = line()
			}
			o, th := seg, seg
			switch r.IntN(5) {
			case 1:
				o = edit(seg)
			case 2:
				th = edit(seg)
			case 3:
				o = edit(seg)
				th = o
			case 4:
				o, th = []string{line()}, []string{line()}
				conflicts++
			}
			join := func(ls []string) string { return strings.Join(ls, "") }
			base.WriteString(join(seg))
			ours.WriteString(join(o))
			theirs.WriteString(join(th))
			if join(o) != join(seg) && join(th) != join(seg) && join(o) != join(th) {
				fmt.Fprintf(&want, "<<<<<<< ours\n%s||||||| base\n%s=======\n%s>>>>>>> theirs\n", join(o), join(seg), join(th))
			} else if join(o) != join(seg) {
				want.WriteString(join(o))
			} else {
				want.WriteString(join(th))
			}
		}
		for _, f := range []func(b, o, t []byte, ol, tl string) Result{Merge, merge3} {
			got := f([]byte(base.String()), []byte(ours.String()), []byte(theirs.String()), "ours", "theirs")
			if string(got.Merged) != want.String() || got.Conflicts != conflicts {
				t.Fatalf("base %q\nours %q\ntheirs %q\ngot  %q (%d)\nwant %q (%d)",
					base.String(), ours.String(), theirs.String(), got.Merged, got.Conflicts, want.String(), conflicts)
			}
		}
	}
}

func BenchmarkMerge(b *testing.B) {
	base, ours, theirs, _ := edits10k()
	b.Run("10k-lines-few-edits", func(b *testing.B) {
		b.SetBytes(int64(len(base)))
		for b.Loop() {
			Merge(base, ours, theirs, "ours", "theirs")
		}
	})
	// Every line rewritten: the lines unique to one side are set aside
	// before the search, so this costs little more than the above.
	other := bytes.ReplaceAll(base, []byte("compute"), []byte("recompute"))
	b.Run("10k-lines-all-rewritten", func(b *testing.B) {
		b.SetBytes(int64(len(base)))
		for b.Loop() {
			Merge(base, other, theirs, "ours", "theirs")
		}
	})
	// The worst case the budget guards against: all lines kept, order
	// reversed.
	lines := strings.SplitAfter(string(base), "\n")
	slices.Reverse(lines)
	reversed := []byte(strings.Join(lines, ""))
	b.Run("10k-lines-reversed", func(b *testing.B) {
		b.SetBytes(int64(len(base)))
		for b.Loop() {
			Merge(base, reversed, theirs, "ours", "theirs")
		}
	})
}
