package ignore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"
)

// files maps a directory ("" for the root) to the content of its ignore file.
type files map[string]string

type matchCase struct {
	name  string
	files files
	path  string
	isDir bool
	want  bool
}

// matcherFor builds the matcher a tree walk would hold when it reaches
// path's directory: root first, then each ancestor that has a file.
func matcherFor(fs files, p string) *Matcher {
	m := New()
	if c, ok := fs[""]; ok {
		m = m.Child("", []byte(c))
	}
	dir := ""
	for _, part := range strings.Split(path.Dir(p), "/") {
		if part == "." {
			break
		}
		dir = path.Join(dir, part)
		if c, ok := fs[dir]; ok {
			m = m.Child(dir, []byte(c))
		}
	}
	return m
}

func root(s string) files { return files{"": s} }

var matchCases = []matchCase{
	// Blank lines and comments.
	{"comment skipped", root("# comment\n\nfoo\n"), "foo", false, true},
	{"comment not a pattern", root("# comment\n"), "# comment", false, false},
	{"hash comment", root("#foo\n"), "#foo", false, false},
	{"escaped hash", root(`\#foo`), "#foo", false, true},
	{"hash mid-line is literal", root("a#b"), "a#b", false, true},
	{"only spaces line", root("   \nfoo"), "foo", false, true},

	// Escapes.
	{"escaped bang is literal", root(`\!foo`), "!foo", false, true},
	{"escaped bang does not negate", root("foo\n\\!foo"), "foo", false, true},
	{"escaped star", root(`\*`), "*", false, true},
	{"escaped star is not a wildcard", root(`\*`), "a", false, false},
	{"escaped question", root(`a\?`), "a?", false, true},
	{"escaped question literal only", root(`a\?`), "ab", false, false},
	{"escaped bracket", root(`\[ab]`), "[ab]", false, true},
	{"escaped bracket literal only", root(`\[ab]`), "a", false, false},
	{"escaped backslash", root(`a\\b`), `a\b`, false, true},
	{"trailing lone backslash skipped", root("foo\\\nbar"), "foo", false, false},
	{"trailing lone backslash, next line kept", root("foo\\\nbar"), "bar", false, true},

	// Trailing spaces.
	{"trailing spaces trimmed", root("foo   "), "foo", false, true},
	{"trailing spaces never kept", root("foo   "), "foo   ", false, false},
	{"escaped trailing space kept", root(`foo\ `), "foo ", false, true},
	{"escaped trailing space needed", root(`foo\ `), "foo", false, false},
	{"escaped space then spaces", root(`foo\   `), "foo ", false, true},
	{"inner spaces kept", root("a b"), "a b", false, true},
	{"leading spaces kept", root(" a"), " a", false, true},
	{"tab not trimmed", root("foo\t"), "foo", false, false},
	{"tab kept", root("foo\t"), "foo\t", false, true},
	{"escaped backslash then space trimmed", root(`foo\\ `), `foo\`, false, true},
	{"CRLF", root("foo\r\nbar\r\n"), "bar", false, true},
	{"CRLF first line", root("foo\r\nbar\r\n"), "foo", false, true},
	{"BOM skipped", root("\ufefffoo\n"), "foo", false, true},
	{"no final newline", root("a\nb"), "b", false, true},

	// Negation and order.
	{"negation re-includes", root("*.log\n!keep.log"), "keep.log", false, false},
	{"negation others stay", root("*.log\n!keep.log"), "a.log", false, true},
	{"later pattern wins", root("!keep.log\n*.log"), "keep.log", false, true},
	{"negation alone ignores nothing", root("!foo"), "foo", false, false},
	{"re-exclude after negation", root("*.log\n!*.log\nx.log"), "x.log", false, true},
	{"bang alone skipped", root("!\nfoo"), "foo", false, true},
	{"negated dir-only on file", root("*\n!sub/"), "sub", false, true},
	{"negated dir-only on dir", root("*\n!sub/"), "sub", true, false},

	// Directory-only patterns.
	{"dir-only matches dir", root("build/"), "build", true, true},
	{"dir-only skips file", root("build/"), "build", false, false},
	{"dir-only any depth", root("build/"), "a/b/build", true, true},
	{"dir-only anchored", root("/build/"), "a/build", true, false},
	{"dir-only anchored root", root("/build/"), "build", true, true},
	{"dir-only middle", root("a/build/"), "a/build", true, true},
	{"dir-only middle file", root("a/build/"), "a/build", false, false},
	{"slash alone skipped", root("/\nfoo"), "foo", false, true},
	{"slash alone matches nothing", root("/"), "a", true, false},
	{"two slashes match nothing", root("//"), "a", true, false},

	// Anchoring and depth.
	{"leading slash anchors", root("/build"), "build", false, true},
	{"leading slash not deeper", root("/build"), "a/build", false, false},
	{"middle slash anchors", root("doc/frotz"), "doc/frotz", false, true},
	{"middle slash not deeper", root("doc/frotz"), "a/doc/frotz", false, false},
	{"middle slash both", root("/doc/frotz"), "doc/frotz", true, true},
	{"no slash any depth", root("frotz"), "a/b/frotz", false, true},
	{"no slash top", root("frotz"), "frotz", true, true},
	{"no slash is whole name", root("frotz"), "xfrotz", false, false},
	{"no slash not a prefix", root("frotz"), "frotz/x", false, false},
	{"anchored whole path", root("a/b"), "a/b/c", false, false},
	{"anchored not suffix", root("a/b"), "x/a/b", false, false},
	{"double slash never matches", root("a//b"), "a/b", false, false},
	{"leading double slash never matches", root("//a"), "a", false, false},
	{"slash in brackets anchors", root("[/]a"), "a", false, false},
	{"escaped slash separates", root(`a\/b`), "a/b", false, true},

	// Star, question mark.
	{"star ext", root("*.go"), "main.go", false, true},
	{"star ext deep", root("*.go"), "a/b/main.go", false, true},
	{"star ext dir name", root("*.go"), "a.go/x", false, false},
	{"star empty", root("a*"), "a", false, true},
	{"star middle", root("a*z"), "abcz", false, true},
	{"star middle miss", root("a*z"), "abc", false, false},
	{"star alone", root("*"), "a/b/c", false, true},
	{"anchored star", root("a/*.go"), "a/b.go", false, true},
	{"anchored star no slash", root("a/*.go"), "a/b/c.go", false, false},
	{"star one segment", root("foo/*"), "foo/bar", false, true},
	{"star one segment only", root("foo/*"), "foo/bar/baz", false, false},
	{"star not dir itself", root("foo/*"), "foo", true, false},
	{"star segment", root("*/x"), "a/x", false, true},
	{"star segment one level", root("*/x"), "a/b/x", false, false},
	{"several stars backtrack", root("*a*b*c"), "xaxbxaxc", false, true},
	{"several stars miss", root("*a*b*c"), "xaxcxb", false, false},
	{"question", root("a?c"), "abc", false, true},
	{"question needs one", root("a?c"), "ac", false, false},
	{"question only one", root("a?c"), "abbc", false, false},
	{"question not slash", root("x/a?c"), "x/a/c", false, false},
	{"question UTF-8", root("a?c"), "aéc", false, true},
	{"star then question UTF-8", root("*?"), "é", false, true},
	{"star then two questions UTF-8", root("*??"), "é", false, false},

	// Character classes.
	{"range", root("[a-c].txt"), "b.txt", false, true},
	{"range miss", root("[a-c].txt"), "d.txt", false, false},
	{"set", root("[xyz]"), "y", false, true},
	{"negated bang", root("[!a-c].txt"), "d.txt", false, true},
	{"negated bang miss", root("[!a-c].txt"), "b.txt", false, false},
	{"negated caret", root("[^a]x"), "bx", false, true},
	{"negated caret miss", root("[^a]x"), "ax", false, false},
	{"bracket first literal", root("[]]x"), "]x", false, true},
	{"bracket first literal negated", root("[!]]x"), "]x", false, false},
	{"dash last literal", root("[a-]"), "-", false, true},
	{"dash first literal", root("[-a]"), "-", false, true},
	{"escaped in class", root(`[\]]`), "]", false, true},
	{"escaped range end", root(`[a-\z]`), "m", false, true},
	{"reversed range empty", root("[z-a]"), "m", false, false},
	{"class then literal", root("*.[oa]"), "x.a", false, true},
	{"posix digit", root("[[:digit:]]*"), "1abc", false, true},
	{"posix digit miss", root("[[:digit:]]*"), "abc", false, false},
	{"posix mixed", root("[[:upper:]x]"), "x", false, true},
	{"posix upper", root("[[:upper:]x]"), "Q", false, true},
	{"posix negated", root("[![:alpha:]]"), "1", false, true},
	{"not posix, colon literal", root("a[[:]"), "a:", false, true},
	{"not posix, bracket literal", root("a[[:]"), "a[", false, true},
	{"unknown posix skipped", root("[[:nope:]]\nfoo"), "foo", false, true},
	{"unterminated class skipped", root("[abc\nfoo"), "[abc", false, false},
	{"unterminated class, next line kept", root("[abc\nfoo"), "foo", false, true},
	{"class UTF-8", root("[é]"), "é", false, true},
	{"class UTF-8 range", root("[à-ÿ]x"), "éx", false, true},
	{"class UTF-8 negated", root("[!é]"), "è", false, true},
	{"class case-sensitive", root("[a-z]"), "A", false, false},
	{"case-sensitive", root("Makefile"), "makefile", false, false},

	// Double star.
	{"leading ** top", root("**/foo"), "foo", false, true},
	{"leading ** deep", root("**/foo"), "a/b/foo", false, true},
	{"leading ** whole name", root("**/foo"), "a/xfoo", false, false},
	{"leading ** two", root("**/foo/bar"), "x/y/foo/bar", false, true},
	{"leading ** two top", root("**/foo/bar"), "foo/bar", false, true},
	{"leading ** two miss", root("**/foo/bar"), "foo/x/bar", false, false},
	{"trailing ** inside", root("abc/**"), "abc/x", false, true},
	{"trailing ** deep", root("abc/**"), "abc/x/y/z", false, true},
	{"trailing ** not itself", root("abc/**"), "abc", true, false},
	{"trailing ** anchored", root("abc/**"), "x/abc/y", false, false},
	{"middle ** zero", root("a/**/b"), "a/b", false, true},
	{"middle ** one", root("a/**/b"), "a/x/b", false, true},
	{"middle ** many", root("a/**/b"), "a/x/y/z/b", false, true},
	{"middle ** whole names", root("a/**/b"), "a/xb", false, false},
	{"middle ** needs end", root("a/**/b"), "a/x/b/c", false, false},
	{"two middle **", root("a/**/b/**/c"), "a/x/b/y/b/c", false, true},
	{"two middle ** miss", root("a/**/b/**/c"), "a/x/c", false, false},
	{"** glob after", root("docs/**/*.pdf"), "docs/a/b/x.pdf", false, true},
	{"** glob after zero", root("docs/**/*.pdf"), "docs/x.pdf", false, true},
	{"** not alone is star", root("a**b"), "axyb", false, true},
	{"** not alone stays in name", root("x/a**b"), "x/a/b", false, false},
	{"** not alone anchored", root("x/a**b"), "x/aqqb", false, true},
	{"** after name is star", root("foo**/bar"), "foo/x/bar", false, false},
	{"** after name one level", root("foo**/bar"), "fooz/bar", false, true},
	{"*** is **", root("a/***/b"), "a/x/y/b", false, true},
	{"** alone", root("**"), "a/b/c", false, true},
	{"/** everything", root("/**"), "a/b", false, true},
	{"**/ dirs", root("**/"), "a", false, false},
	{"**/ dirs dir", root("**/"), "a/b", true, true},
	{"** trailing after **", root("a/**/**"), "a", true, false},
	{"** trailing after ** inside", root("a/**/**"), "a/x", false, true},
	{"**\\/ needs a dir", root(`a/**\/b`), "a/b", false, false},
	{"**\\/ one dir", root(`a/**\/b`), "a/x/b", false, true},

	// Nested ignore files: patterns relative to their own directory.
	{"nested anchored", files{"sub": "/foo"}, "sub/foo", false, true},
	{"nested anchored not root", files{"sub": "/foo"}, "foo", false, false},
	{"nested anchored not deeper", files{"sub": "/foo"}, "sub/x/foo", false, false},
	{"nested middle", files{"sub": "x/y"}, "sub/x/y", false, true},
	{"nested middle not root", files{"sub": "x/y"}, "x/y", false, false},
	{"nested any depth", files{"sub": "bar"}, "sub/x/bar", false, true},
	{"nested not sibling", files{"sub": "bar"}, "other/bar", false, false},
	{"nested name boundary", files{"sub": "bar"}, "subx/bar", false, false},
	{"nested not its own dir", files{"sub": "*"}, "sub", true, false},
	{"nested star", files{"sub": "*"}, "sub/a", false, true},
	{"nested deep dir", files{"a/b": "/c/d"}, "a/b/c/d", false, true},
	{"nested deep dir miss", files{"a/b": "/c/d"}, "a/c/d", false, false},
	{"nested **", files{"sub": "**/z"}, "sub/z", false, true},
	{"nested ** deep", files{"sub": "**/z"}, "sub/a/b/z", false, true},
	{"nested ** not outside", files{"sub": "**/z"}, "z", false, false},
	{"nested trailing **", files{"sub": "x/**"}, "sub/x/y", false, true},
	{"child negates parent", files{"": "*.tmp", "sub": "!*.tmp"}, "sub/a.tmp", false, false},
	{"child negation stays below", files{"": "*.tmp", "sub": "!*.tmp"}, "a.tmp", false, true},
	{"child overrides parent negation", files{"": "*.tmp\n!keep.tmp", "sub": "keep.tmp"}, "sub/keep.tmp", false, true},
	{"parent applies below", files{"": "/sub/x", "sub": "y"}, "sub/x", false, true},
	{"three levels", files{"": "*.o", "a": "!*.o", "a/b": "*.o"}, "a/b/c/x.o", false, true},
	{"three levels middle", files{"": "*.o", "a": "!*.o", "a/b": "*.o"}, "a/c/x.o", false, false},
}

func TestMatch(t *testing.T) {
	for _, c := range matchCases {
		t.Run(c.name, func(t *testing.T) {
			m := matcherFor(c.files, c.path)
			if got := m.Match(c.path, c.isDir); got != c.want {
				t.Errorf("files %q: Match(%q, dir=%v) = %v, want %v", c.files, c.path, c.isDir, got, c.want)
			}
			// The reference matcher must agree, or one of them is wrong.
			if got := refFor(c.files, c.path).match(c.path, c.isDir); got != c.want {
				t.Errorf("files %q: reference(%q, dir=%v) = %v, want %v", c.files, c.path, c.isDir, got, c.want)
			}
		})
	}
}

func TestNilAndEmpty(t *testing.T) {
	var m *Matcher
	if m.Match("a", false) {
		t.Error("nil Matcher matched")
	}
	if !m.Child("", []byte("a")).Match("a", false) {
		t.Error("Child of nil Matcher lost its pattern")
	}
	if New().Match("a", true) {
		t.Error("New matched")
	}
	if New().Child("", []byte("*")).Match("", true) {
		t.Error("empty path matched")
	}
}

func TestChildDoesNotModifyParent(t *testing.T) {
	parent := New().Child("", []byte("a\nb\n"))
	c1 := parent.Child("", []byte("!a"))
	c2 := parent.Child("", []byte("!b"))
	for _, tc := range []struct {
		m       *Matcher
		name    string
		p       string
		ignored bool
	}{
		{parent, "parent", "a", true},
		{parent, "parent", "b", true},
		{c1, "c1", "a", false},
		{c1, "c1", "b", true},
		{c2, "c2", "a", true},
		{c2, "c2", "b", false},
	} {
		if got := tc.m.Match(tc.p, false); got != tc.ignored {
			t.Errorf("%s.Match(%q) = %v, want %v", tc.name, tc.p, got, tc.ignored)
		}
	}
}

func TestChildDirForms(t *testing.T) {
	for _, dir := range []string{"", ".", "/", "./"} {
		if !New().Child(dir, []byte("/x")).Match("x", false) {
			t.Errorf("Child(%q) is not the root", dir)
		}
	}
	for _, dir := range []string{"a/b", "a/b/", "/a/b", "./a/b", "a//b"} {
		m := New().Child(dir, []byte("/x"))
		if !m.Match("a/b/x", false) || m.Match("x", false) || m.Match("a/x", false) {
			t.Errorf("Child(%q) is not a/b", dir)
		}
	}
}

// TestMatchAllocs pins the promise Match makes to the import walk.
func TestMatchAllocs(t *testing.T) {
	m := New().Child("", []byte(benchPatterns))
	m = m.Child("src", []byte("*.gen.go\n!keep/\n"))
	paths := benchPaths(200)
	allocs := testing.AllocsPerRun(10, func() {
		for i, p := range paths {
			m.Match(p, i%7 == 0)
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times per run, want 0", allocs)
	}
}

func FuzzMatch(f *testing.F) {
	seen := map[string]bool{}
	for _, c := range matchCases {
		for dir, content := range c.files {
			if key := dir + "\x00" + content + "\x00" + c.path; !seen[key] {
				seen[key] = true
				f.Add(content, dir, c.path, c.isDir)
			}
		}
	}
	f.Add(benchPatterns, "", "src/a/b/x.log", false)
	f.Add("[[:alpha:]-z]\n[a-\\", "", "q", false)
	f.Add("**\\/**\n!a/**/\n", "x", "x/a/b", true)
	f.Add("\xff[\xff-\xfe]*?", "", "\xff\xfe", false)
	f.Fuzz(func(t *testing.T, content, dir, p string, isDir bool) {
		m := New().Child(dir, []byte(content))
		got := m.Match(p, isDir)
		ref := (*refMatcher)(nil).child(cleanDir(dir), content)
		if want := ref.match(p, isDir); got != want {
			t.Fatalf("content %q dir %q: Match(%q, %v) = %v, reference says %v", content, dir, p, isDir, got, want)
		}
		// Stacking the same file twice must not change the answer: the
		// second copy's patterns come last but say the same things.
		if dir == "" {
			if got2 := m.Child("", []byte(content)).Match(p, isDir); got2 != got {
				t.Fatalf("content %q: Match(%q) changed from %v to %v when stacked", content, p, got, got2)
			}
		}
	})
}

// TestRandomAgainstReference complements FuzzMatch: patterns and paths
// drawn from a tiny alphabet hit "**", classes and escapes against paths
// that can actually match far more often than mutated bytes do.
func TestRandomAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func(alphabet string, max int) string {
		b := make([]byte, rng.IntN(max+1))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	n := 200000
	if testing.Short() {
		n = 20000
	}
	for range n {
		content := gen("ab/*?[]!-\\^: \n", 12)
		p := strings.Trim(gen("ab/", 8), "/")
		isDir := rng.IntN(2) == 0
		got := New().Child("", []byte(content)).Match(p, isDir)
		if want := (*refMatcher)(nil).child("", content).match(p, isDir); got != want {
			t.Fatalf("content %q: Match(%q, %v) = %v, reference says %v", content, p, isDir, got, want)
		}
	}
}

// benchPatterns is a realistic 20-line ignore file.
const benchPatterns = `# build output
/build/
/dist
**/target/
*.o
*.[oa]
*.so
*.log
!important.log
*.tmp
__pycache__/
*~
.DS_Store
[Tt]humbs.db
*.sw[op]
node_modules/
.cache/
tmp-*
vendor/**/testdata
docs/**/*.pdf
/coverage.out
`

// benchPaths returns n deterministic paths shaped like a source tree.
func benchPaths(n int) []string {
	dirs := []string{"src", "src/net", "src/net/http", "internal/ignore", "docs/guide", "vendor/x/y", "cmd/tool", "pkg/a/b/c", "build", "web/node_modules/x"}
	names := []string{"main", "util", "server_test", "README", "index", "handler", "thumbs", "Thumbs", "tmp-1", "important"}
	exts := []string{".go", ".c", ".o", ".log", ".md", ".pdf", ".txt", ".tmp", ".db", ".swp", ""}
	paths := make([]string, 0, n)
	for i := 0; len(paths) < n; i++ {
		d := dirs[i%len(dirs)]
		if i%3 == 0 {
			d += fmt.Sprintf("/sub%d", i%13)
		}
		paths = append(paths, fmt.Sprintf("%s/%s%d%s", d, names[(i/7)%len(names)], i%17, exts[(i/3)%len(exts)]))
	}
	return paths
}

func BenchmarkMatch(b *testing.B) {
	m := New().Child("", []byte(benchPatterns))
	if n := len(m.patterns); n != 20 {
		b.Fatalf("benchPatterns has %d patterns, want 20", n)
	}
	paths := benchPaths(15000)
	ignored := 0
	for _, p := range paths {
		if m.Match(p, false) {
			ignored++
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i, p := range paths {
			m.Match(p, i%7 == 0)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(paths)), "ns/path")
	b.ReportMetric(float64(ignored), "ignored/15000")
}

// ---- Reference matcher ----
//
// refMatcher is a deliberately naive second implementation used as the
// oracle of FuzzMatch: the line parsing of git's dir.c and a transcription of
// git's dowild (wildmatch.c, WM_PATHNAME) that works on the pattern text on
// every call. The only departures from git are the package's own ones: "?"
// and brackets take a UTF-8 character, and "*" advances by characters.

type refPattern struct {
	base            string
	body            string
	negate, dirOnly bool
	noDir           bool // no "/" in body: matched against the base name
}

type refMatcher struct{ pats []refPattern }

func refFor(fs files, p string) *refMatcher {
	var m *refMatcher
	if c, ok := fs[""]; ok {
		m = m.child("", c)
	}
	dir := ""
	for _, part := range strings.Split(path.Dir(p), "/") {
		if part == "." {
			break
		}
		dir = path.Join(dir, part)
		if c, ok := fs[dir]; ok {
			m = m.child(dir, c)
		}
	}
	return m
}

func (m *refMatcher) child(dir, content string) *refMatcher {
	n := &refMatcher{}
	if m != nil {
		n.pats = append(n.pats, m.pats...)
	}
	content = strings.TrimPrefix(content, "\ufeff")
	for _, line := range strings.SplitAfter(content, "\n") {
		line = strings.TrimSuffix(line, "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		// trim_trailing_spaces
		lastSpace := -1
		for i := 0; i < len(line); i++ {
			if line[i] == ' ' {
				if lastSpace < 0 {
					lastSpace = i
				}
				continue
			}
			if line[i] == '\\' {
				i++
			}
			lastSpace = -1
		}
		if lastSpace >= 0 {
			line = line[:lastSpace]
		}
		p := refPattern{base: dir}
		if strings.HasPrefix(line, "!") {
			p.negate, line = true, line[1:]
		}
		if strings.HasSuffix(line, "/") {
			p.dirOnly, line = true, line[:len(line)-1]
		}
		p.noDir = !strings.Contains(line, "/")
		if !p.noDir {
			line = strings.TrimPrefix(line, "/")
		}
		p.body = line
		n.pats = append(n.pats, p)
	}
	return n
}

func (m *refMatcher) match(p string, isDir bool) bool {
	if m == nil || p == "" {
		return false
	}
	for i := len(m.pats) - 1; i >= 0; i-- {
		pt := m.pats[i]
		if pt.dirOnly && !isDir {
			continue
		}
		rel := p
		if pt.base != "" {
			if !strings.HasPrefix(p, pt.base+"/") {
				continue
			}
			rel = p[len(pt.base)+1:]
		}
		if pt.body == "" {
			continue // git: an empty pattern matches no name
		}
		subject := rel
		if pt.noDir {
			subject = p[strings.LastIndexByte(p, '/')+1:]
		}
		if refWild(pt.body, subject) == wmMatch {
			return !pt.negate
		}
	}
	return false
}

const (
	wmMatch = iota
	wmNoMatch
	wmAbortAll
	wmAbortToStarStar
)

func refWild(p, t string) int {
	pi, ti := 0, 0
	for pi < len(p) {
		pc := p[pi]
		if ti >= len(t) && pc != '*' {
			return wmAbortAll
		}
		switch pc {
		case '\\':
			pi++
			if pi >= len(p) || t[ti] != p[pi] {
				return wmNoMatch
			}
			pi, ti = pi+1, ti+1
		case '?':
			if t[ti] == '/' {
				return wmNoMatch
			}
			_, w := utf8.DecodeRuneInString(t[ti:])
			pi, ti = pi+1, ti+w
		case '*':
			pi++
			matchSlash := false
			if pi < len(p) && p[pi] == '*' {
				prev := pi - 2
				for pi < len(p) && p[pi] == '*' {
					pi++
				}
				if (prev < 0 || p[prev] == '/') &&
					(pi == len(p) || p[pi] == '/' || (p[pi] == '\\' && pi+1 < len(p) && p[pi+1] == '/')) {
					if pi < len(p) && p[pi] == '/' && refWild(p[pi+1:], t[ti:]) == wmMatch {
						return wmMatch
					}
					matchSlash = true
				}
			}
			if pi == len(p) {
				if !matchSlash && strings.Contains(t[ti:], "/") {
					return wmNoMatch
				}
				return wmMatch
			}
			if !matchSlash && p[pi] == '/' {
				j := strings.IndexByte(t[ti:], '/')
				if j < 0 {
					return wmNoMatch
				}
				pi, ti = pi+1, ti+j+1
				continue
			}
			for ti < len(t) {
				r := refWild(p[pi:], t[ti:])
				if r != wmNoMatch {
					if !matchSlash || r != wmAbortToStarStar {
						return r
					}
				} else if !matchSlash && t[ti] == '/' {
					return wmAbortToStarStar
				}
				_, w := utf8.DecodeRuneInString(t[ti:])
				ti += w
			}
			return wmAbortAll
		case '[':
			tc, tw := utf8.DecodeRuneInString(t[ti:])
			pi++
			negated := false
			if pi < len(p) && (p[pi] == '!' || p[pi] == '^') {
				negated = true
				pi++
			}
			matched := false
			var prev rune
			hasPrev := false
			for first := true; ; first = false {
				if pi >= len(p) {
					return wmAbortAll
				}
				pc, pw := utf8.DecodeRuneInString(p[pi:])
				if pc == ']' && !first {
					pi++
					break
				}
				switch {
				case pc == '\\':
					pi++
					if pi >= len(p) {
						return wmAbortAll
					}
					pc, pw = utf8.DecodeRuneInString(p[pi:])
					matched = matched || tc == pc
					prev, hasPrev = pc, true
					pi += pw
				case pc == '-' && hasPrev && pi+1 < len(p) && p[pi+1] != ']':
					pi++
					hi, hw := utf8.DecodeRuneInString(p[pi:])
					if hi == '\\' {
						pi++
						if pi >= len(p) {
							return wmAbortAll
						}
						hi, hw = utf8.DecodeRuneInString(p[pi:])
					}
					pi += hw
					matched = matched || (prev <= tc && tc <= hi)
					hasPrev = false
				case pc == '[' && pi+1 < len(p) && p[pi+1] == ':':
					s := pi + 2
					e := s
					for e < len(p) && p[e] != ']' {
						e++
					}
					if e >= len(p) {
						return wmAbortAll
					}
					if e-s-1 < 0 || p[e-1] != ':' {
						matched = matched || tc == '['
						prev, hasPrev = '[', true
						pi++
						continue
					}
					in, ok := refPOSIX(p[s:e-1], tc)
					if !ok {
						return wmAbortAll
					}
					matched = matched || in
					hasPrev = false
					pi = e + 1
				default:
					matched = matched || tc == pc
					prev, hasPrev = pc, true
					pi += pw
				}
			}
			if matched == negated || tc == '/' {
				return wmNoMatch
			}
			ti += tw
		default:
			if t[ti] != pc {
				return wmNoMatch
			}
			pi, ti = pi+1, ti+1
		}
	}
	if ti < len(t) {
		return wmNoMatch
	}
	return wmMatch
}

func refPOSIX(name string, r rune) (in, ok bool) {
	if r >= utf8.RuneSelf {
		switch name {
		case "alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space", "upper", "xdigit":
			return false, true
		}
		return false, false
	}
	b := byte(r)
	switch name {
	case "alnum":
		return strings.IndexByte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", b) >= 0, true
	case "alpha":
		return strings.IndexByte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", b) >= 0, true
	case "blank":
		return b == ' ' || b == '\t', true
	case "cntrl":
		return b < 0x20 || b == 0x7f, true
	case "digit":
		return strings.IndexByte("0123456789", b) >= 0, true
	case "graph":
		return b >= 0x21 && b <= 0x7e, true
	case "lower":
		return strings.IndexByte("abcdefghijklmnopqrstuvwxyz", b) >= 0, true
	case "print":
		return b >= 0x20 && b <= 0x7e, true
	case "punct":
		return strings.IndexByte("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", b) >= 0, true
	case "space":
		return strings.IndexByte(" \t\n\v\f\r", b) >= 0, true
	case "upper":
		return strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZ", b) >= 0, true
	case "xdigit":
		return strings.IndexByte("0123456789abcdefABCDEF", b) >= 0, true
	}
	return false, false
}

// TestAgainstGit replays the table through git check-ignore in a scratch
// repository, so the matcher is checked against the tool users know. Cases
// that rely on documented departures from git are listed in gitDiffers.
func TestAgainstGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git not found: this test compares with git check-ignore; install git (apt-get install -y git)")
	}
	gitDiffers := map[string]bool{
		// "?" and brackets match one byte in git.
		"question UTF-8": true, "star then question UTF-8": true, "star then two questions UTF-8": true, "class UTF-8": true,
		"class UTF-8 range": true, "class UTF-8 negated": true,
		// git's literal-prefix shortcut in match_pathname lets "foo**/"
		// also act as "foo/**/"; its documentation, its wildmatch and this
		// package treat it as "foo*/".
		"** after name is star": true,
	}
	for _, c := range matchCases {
		if gitDiffers[c.name] {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			git := func(args ...string) string {
				cmd := exec.Command("git", args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_CONFIG_GLOBAL=/dev/null")
				out, _ := cmd.Output()
				return string(out)
			}
			git("init", "-q")
			git("config", "core.ignoreCase", "false")
			full := filepath.Join(dir, filepath.FromSlash(c.path))
			if c.isDir {
				if err := os.MkdirAll(full, 0o755); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dirs := make([]string, 0, len(c.files))
			for d := range c.files {
				dirs = append(dirs, d)
			}
			sort.Strings(dirs)
			for _, d := range dirs {
				fd := filepath.Join(dir, filepath.FromSlash(d))
				if err := os.MkdirAll(fd, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(fd, ".gitignore"), []byte(c.files[d]), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Only compare paths whose parents are not ignored: git would
			// report those through the parent, which Match leaves to the walk.
			for p := path.Dir(c.path); p != "."; p = path.Dir(p) {
				if matcherFor(c.files, p).Match(p, true) {
					t.Skip("parent ignored")
				}
			}
			got := strings.TrimSpace(git("check-ignore", "-v", "--no-index", c.path))
			// -v prints "source:line:pattern\tpath" even for a negated
			// match; a leading "!" in the pattern means not ignored.
			ignored := false
			if got != "" {
				fields := strings.SplitN(strings.SplitN(got, "\t", 2)[0], ":", 3)
				ignored = len(fields) == 3 && !strings.HasPrefix(fields[2], "!")
			}
			if ignored != c.want {
				t.Errorf("git says %v (%q), table says %v", ignored, got, c.want)
			}
		})
	}
}
