// Package ignore matches paths against .cortexignore files written in gitignore syntax.
//
// It owns the parsing of ignore files and the matching of workspace paths
// against them; walking the tree and reading the files is the caller's job.
// The rules are git's (see gitignore(5)): blank lines and "#" comments are
// skipped, "\#" and "\!" escape a leading "#" or "!", trailing spaces are
// dropped unless escaped, "!" re-includes, a trailing "/" matches directories
// only, a "/" at the start or in the middle anchors the pattern to the
// directory of its file (otherwise it matches a name at any depth below it),
// "*", "?", "[...]" (with "!" or "^" negation, ranges and [:class:] names)
// do not match "/", and "**/", "/**/" and "/**" cross directories.
//
// Deliberate differences from git: matching is always case-sensitive
// (git's core.ignoreCase is not modelled), "?" and bracket expressions match
// one UTF-8 character rather than one byte, "**" glued to a name ("foo**/x")
// is always a plain "*" as gitignore(5) says (git's matcher sometimes lets it
// cross directories), and a malformed line (an
// unterminated "[", an unknown [:class:], a dangling "\") is dropped, which is
// what git's matcher amounts to, since such a pattern never matches.
//
// Git cannot re-include a file whose parent directory is excluded, because it
// never looks inside that directory. Match does not look at parents either: it
// answers for the path it is given. Callers get git's behaviour by not
// descending into a directory for which Match reports true.
package ignore

import (
	"bytes"
	"path"
	"strings"
	"unicode/utf8"
)

// FileName is the name of ignore files looked up in every directory of a workspace.
const FileName = ".cortexignore"

// Matcher holds the patterns in force for one directory (its own file plus all parents').
//
// A Matcher is immutable once built, so one value may be shared by goroutines
// and by every subdirectory that has no ignore file of its own.
type Matcher struct {
	patterns []pattern // in file order, parents first; the last match wins
}

// New returns a matcher with no patterns (ignores nothing).
func New() *Matcher { return &Matcher{} }

// Child parses the content of an ignore file found in directory dir (slash-separated path relative to the
// workspace root, "" for the root) and returns a new Matcher that holds m's patterns followed by these ones
// (later patterns win, as in git). m is not modified. Malformed lines are skipped, never an error.
//
// A nil m is treated as New(). Call Child only for directories that do have
// an ignore file; the others can keep their parent's Matcher.
func (m *Matcher) Child(dir string, content []byte) *Matcher {
	dir = cleanDir(dir)
	var pats []pattern
	if m != nil {
		// The full slice expression makes append copy, so m's backing
		// array, which other children may share, is never written.
		pats = m.patterns[:len(m.patterns):len(m.patterns)]
	}
	// Git skips a UTF-8 byte order mark, which some editors on Windows add.
	content = bytes.TrimPrefix(content, []byte("\xef\xbb\xbf"))
	for len(content) > 0 {
		line := content
		if i := bytes.IndexByte(content, '\n'); i >= 0 {
			line, content = content[:i], content[i+1:]
		} else {
			content = nil
		}
		if p, ok := parseLine(dir, string(line)); ok {
			pats = append(pats, p)
		}
	}
	return &Matcher{patterns: pats}
}

// Match reports whether the path (slash-separated, relative to the workspace root) is ignored. isDir says
// whether it is a directory (patterns ending in "/" match only directories).
//
// The path must be clean (no "./", "..", doubled or trailing slash); Match
// does not normalise it because it runs once per file of large trees. Only
// the path itself is tested, not its parents: see the package comment.
func (m *Matcher) Match(path string, isDir bool) bool {
	if m == nil || path == "" {
		return false
	}
	name := path[strings.LastIndexByte(path, '/')+1:]
	// Walking backwards lets the first hit decide: it is the last pattern
	// that matches, which is the one git obeys.
	for i := len(m.patterns) - 1; i >= 0; i-- {
		p := &m.patterns[i]
		if p.dirOnly && !isDir {
			continue
		}
		rel := path
		if b := p.base; b != "" {
			// A file's patterns apply strictly below its own directory.
			if len(path) <= len(b) || path[len(b)] != '/' || path[:len(b)] != b {
				continue
			}
			rel = path[len(b)+1:]
		}
		var hit bool
		switch {
		case !p.anchored:
			hit = p.name.match(name)
		case p.exact != "":
			hit = rel == p.exact
		default:
			hit = matchSegments(p.segs, rel)
		}
		if hit {
			return !p.negate
		}
	}
	return false
}

// cleanDir normalises the directory of an ignore file to the form Match
// compares against: no leading, trailing or doubled slash, "" for the root.
func cleanDir(dir string) string {
	return strings.Trim(path.Clean("/"+dir), "/")
}

// pattern is one compiled line of an ignore file.
type pattern struct {
	base     string // directory of the ignore file, "" for the root
	negate   bool   // line started with "!"
	dirOnly  bool   // line ended with "/"
	anchored bool   // contains "/": matched against the path below base
	name     segment
	segs     []segment // anchored form, "**" segments included
	exact    string    // anchored and wildcard-free: the whole relative path
}

// parseLine compiles one line, following git's dir.c: CR and unescaped
// trailing spaces are dropped, then "!", then one trailing "/". ok is false
// for blank lines, comments and lines that could never match.
func parseLine(base, line string) (p pattern, ok bool) {
	line = strings.TrimSuffix(line, "\r")
	if line == "" || line[0] == '#' {
		return p, false
	}
	line = trimTrailingSpaces(line)
	p.base = base
	if strings.HasPrefix(line, "!") {
		p.negate = true
		line = line[1:]
	}
	if strings.HasSuffix(line, "/") {
		p.dirOnly = true
		line = line[:len(line)-1]
	}
	if line == "" {
		return p, false
	}
	// Like git, anchor on any "/" in the text: one escaped as "\/" is a
	// separator like any other, and one inside brackets makes a class that
	// can never match, since no name contains "/".
	if strings.IndexByte(line, '/') < 0 {
		segs, ok := compile(line)
		if !ok || len(segs) != 1 {
			return p, false
		}
		p.name = segs[0]
		if p.name.kind == segDoubleStar {
			// Within a single name "**" is just "*".
			p.name = segment{kind: segAny}
		}
		return p, true
	}
	p.anchored = true
	line = strings.TrimPrefix(line, "/")
	if line == "" {
		return p, false // "//": would only match the empty path
	}
	segs, ok := compile(line)
	if !ok {
		return p, false
	}
	p.segs = normalizeStars(segs)
	p.exact = exactPath(p.segs)
	return p, true
}

// trimTrailingSpaces drops unescaped trailing spaces (not tabs), as git does.
func trimTrailingSpaces(s string) string {
	end := len(s)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ':
			if end == len(s) {
				end = i
			}
		case '\\':
			i++
			end = len(s)
		default:
			end = len(s)
		}
	}
	if end < len(s) {
		// Everything after the first space of the final run is space.
		return s[:end]
	}
	return s
}

// normalizeStars merges runs of "**" segments, which match the same set of
// paths as one, and turns a trailing "**" into "*" followed by "**": git's
// "dir/**" matches everything inside dir but not dir itself, so at least one
// more segment is required.
func normalizeStars(segs []segment) []segment {
	out := segs[:0]
	for _, s := range segs {
		if s.kind == segDoubleStar && len(out) > 0 && out[len(out)-1].kind == segDoubleStar {
			continue
		}
		out = append(out, s)
	}
	if n := len(out); out[n-1].kind == segDoubleStar {
		out[n-1] = segment{kind: segAny}
		out = append(out, segment{kind: segDoubleStar})
	}
	return out
}

// exactPath returns the relative path an all-literal anchored pattern
// stands for, so Match can compare it in one go; "" if there is a wildcard.
func exactPath(segs []segment) string {
	var b strings.Builder
	for i, s := range segs {
		if s.kind != segLiteral || s.lit == "" {
			return ""
		}
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(s.lit)
	}
	return b.String()
}

// matchSegments matches a slash-separated path against pattern segments
// where "**" stands for any number of whole path segments and every other
// segment for exactly one. Since each non-"**" segment consumes exactly one
// path segment, greedy matching that backtracks only to the latest "**" is
// complete, and runs in O(len(segs)·segments(s)) segment tests without
// recursion or allocation.
func matchSegments(segs []segment, s string) bool {
	n := len(s)
	pi, si := 0, 0 // si is the start of the current path segment; n+1 once all are consumed
	starP, starS := -1, 0
	for {
		if pi < len(segs) {
			sg := &segs[pi]
			if sg.kind == segDoubleStar {
				starP, starS = pi, si
				pi++
				continue
			}
			if si <= n {
				end := segEnd(s, si)
				if sg.match(s[si:end]) {
					pi, si = pi+1, end+1
					continue
				}
			}
		} else if si > n {
			return true
		}
		if starP < 0 || starS > n {
			return false
		}
		// Let the last "**" swallow one more path segment and retry.
		starS = segEnd(s, starS) + 1
		pi, si = starP+1, starS
	}
}

// segEnd returns the index of the "/" ending the segment that starts at i,
// or len(s) for the last segment.
func segEnd(s string, i int) int {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return i + j
	}
	return len(s)
}

type segKind uint8

const (
	segLiteral    segKind = iota // lit exactly
	segAny                       // "*": any one segment
	segPrefix                    // lit followed by "*"
	segSuffix                    // "*" followed by lit
	segGlob                      // anything else: run toks
	segDoubleStar                // "**" alone between slashes: zero or more segments
)

// segment matches one path segment (a name without "/"). The common shapes
// ("name", "*.ext", "prefix*") get a kind of their own so they cost one
// string comparison; only the rest runs the token matcher.
type segment struct {
	kind segKind
	lit  string
	toks []token
}

func (s *segment) match(name string) bool {
	switch s.kind {
	case segLiteral:
		return name == s.lit
	case segAny:
		return true
	case segPrefix:
		return strings.HasPrefix(name, s.lit)
	case segSuffix:
		return strings.HasSuffix(name, s.lit)
	case segGlob:
		return matchTokens(s.toks, name)
	}
	return false // segDoubleStar never reaches here: matchSegments handles it
}

type tokKind uint8

const (
	tokLit   tokKind = iota // lit exactly
	tokAny                  // "?": one character
	tokStar                 // "*": any run of characters
	tokClass                // "[...]": one character in (or not in) class
)

type token struct {
	kind  tokKind
	lit   string
	class *charClass
}

// matchTokens is the classic wildcard matcher: each token but "*" consumes
// a fixed piece of name, so on a mismatch it is enough to let the most recent
// "*" absorb one more character. Linear in practice, no recursion.
func matchTokens(toks []token, name string) bool {
	ti, ni := 0, 0
	starT, starN := -1, 0
	for {
		if ti < len(toks) {
			t := &toks[ti]
			switch t.kind {
			case tokStar:
				starT, starN = ti, ni
				ti++
				if !skipToLit(toks, ti, name, &starN) {
					return false
				}
				ni = starN
				continue
			case tokLit:
				if strings.HasPrefix(name[ni:], t.lit) {
					ti, ni = ti+1, ni+len(t.lit)
					continue
				}
			case tokAny:
				if ni < len(name) {
					ti, ni = ti+1, ni+runeLen(name, ni)
					continue
				}
			case tokClass:
				if ni < len(name) {
					r, w := decodeRune(name, ni)
					if t.class.has(r) {
						ti, ni = ti+1, ni+w
						continue
					}
				}
			}
		} else if ni == len(name) {
			return true
		}
		if starT < 0 || starN >= len(name) {
			return false
		}
		// A "*" steps over whole characters so that a following "?" or
		// class sees the same characters it would without the star.
		starN += runeLen(name, starN)
		if !skipToLit(toks, starT+1, name, &starN) {
			return false
		}
		ti, ni = starT+1, starN
	}
}

// skipToLit moves *at, where a "*" is about to stop, to the next place where
// the literal token toks[ti] matches, if that is the token after the star:
// stopping anywhere before it can only fail. It reports false if the literal
// does not occur at all. The jump lands on a character boundary, as the star
// must, because a literal starting with ASCII or a UTF-8 lead byte never
// occurs inside a character; literals starting with a stray continuation
// byte are left to the slow path.
func skipToLit(toks []token, ti int, name string, at *int) bool {
	if ti >= len(toks) || toks[ti].kind != tokLit {
		return true
	}
	lit := toks[ti].lit
	if c := lit[0]; c >= 0x80 && c < 0xc0 {
		return true
	}
	j := strings.Index(name[*at:], lit)
	if j < 0 {
		return false
	}
	*at += j
	return true
}

func decodeRune(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

func runeLen(s string, i int) int {
	if s[i] < utf8.RuneSelf {
		return 1
	}
	_, w := utf8.DecodeRuneInString(s[i:])
	return w
}

// compile splits a pattern (without its "!", trailing "/" or leading "/")
// into segments at each "/" outside brackets, "\/" included, and compiles
// each. ok is false if the pattern is malformed.
func compile(pat string) (segs []segment, ok bool) {
	var (
		toks  []token
		lit   []byte // pending literal bytes
		stars int    // unescaped "*" seen in this segment
		plain = true // segment so far has only unescaped "*"
	)
	flushLit := func() {
		if len(lit) > 0 {
			toks = append(toks, token{kind: tokLit, lit: string(lit)})
			lit = lit[:0]
		}
	}
	endSeg := func(escaped bool) {
		flushLit()
		switch {
		case plain && stars >= 2 && escaped:
			// Git tries "**" as zero directories only before a plain
			// "/", so "**\/" needs at least one: "*/**/".
			segs = append(segs, segment{kind: segAny}, segment{kind: segDoubleStar})
		case plain && stars >= 2:
			segs = append(segs, segment{kind: segDoubleStar})
		default:
			segs = append(segs, newSegment(toks))
		}
		toks, stars, plain = nil, 0, true
	}
	for i := 0; i < len(pat); {
		switch c := pat[i]; c {
		case '/':
			endSeg(false)
			i++
		case '\\':
			if i+1 >= len(pat) {
				return nil, false // git: a lone trailing "\" never matches
			}
			if pat[i+1] == '/' {
				endSeg(true)
			} else {
				lit = append(lit, pat[i+1])
				plain = false
			}
			i += 2
		case '*':
			stars++
			// Adjacent stars inside a name mean the same as one.
			if len(lit) > 0 || len(toks) == 0 || toks[len(toks)-1].kind != tokStar {
				flushLit()
				toks = append(toks, token{kind: tokStar})
			}
			i++
		case '?':
			flushLit()
			toks = append(toks, token{kind: tokAny})
			plain = false
			i++
		case '[':
			cl, n, ok := parseClass(pat[i+1:])
			if !ok {
				return nil, false
			}
			flushLit()
			toks = append(toks, token{kind: tokClass, class: cl})
			plain = false
			i += 1 + n
		default:
			lit = append(lit, c)
			plain = false
			i++
		}
	}
	endSeg(false)
	return segs, true
}

// newSegment picks the cheapest matcher for a segment's tokens.
func newSegment(toks []token) segment {
	switch {
	case len(toks) == 0:
		return segment{kind: segLiteral}
	case len(toks) == 1 && toks[0].kind == tokLit:
		return segment{kind: segLiteral, lit: toks[0].lit}
	case len(toks) == 1 && toks[0].kind == tokStar:
		return segment{kind: segAny}
	case len(toks) == 2 && toks[0].kind == tokLit && toks[1].kind == tokStar:
		return segment{kind: segPrefix, lit: toks[0].lit}
	case len(toks) == 2 && toks[0].kind == tokStar && toks[1].kind == tokLit:
		return segment{kind: segSuffix, lit: toks[1].lit}
	}
	return segment{kind: segGlob, toks: toks}
}

// charClass is a compiled bracket expression. ASCII membership is a bitmap;
// other characters, rare in ignore files, go through a range list.
type charClass struct {
	negate bool
	ascii  [2]uint64
	ranges []runeRange
}

type runeRange struct{ lo, hi rune }

func (c *charClass) has(r rune) bool {
	in := false
	if r >= 0 && r < utf8.RuneSelf {
		in = c.ascii[r>>6]&(1<<(uint(r)&63)) != 0
	} else {
		for _, rg := range c.ranges {
			if rg.lo <= r && r <= rg.hi {
				in = true
				break
			}
		}
	}
	return in != c.negate
}

func (c *charClass) add(lo, hi rune) {
	for r := max(lo, 0); r <= hi && r < utf8.RuneSelf; r++ {
		c.ascii[r>>6] |= 1 << (uint(r) & 63)
	}
	if hi >= utf8.RuneSelf {
		c.ranges = append(c.ranges, runeRange{max(lo, utf8.RuneSelf), hi})
	}
}

// parseClass parses a bracket expression; s starts just after the "[". It
// returns the class and the number of bytes of s it used, closing "]"
// included. The grammar is git's wildmatch: "!" or "^" first negates, a "]"
// first is literal, "\" escapes, "a-z" is a range unless "-" is first or last,
// and "[:name:]" is a POSIX class; "[:" without ":]" before the next "]" is a
// literal "[". ok is false if the class is unterminated or names an unknown
// POSIX class, which git treats as never matching.
func parseClass(s string) (c *charClass, n int, ok bool) {
	c = &charClass{}
	i := 0
	if i < len(s) && (s[i] == '!' || s[i] == '^') {
		c.negate = true
		i++
	}
	var prev rune
	hasPrev := false
	for first := true; ; first = false {
		if i >= len(s) {
			return nil, 0, false
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == ']' && !first:
			return c, i + 1, true
		case r == '\\':
			i++
			if i >= len(s) {
				return nil, 0, false
			}
			r, w = utf8.DecodeRuneInString(s[i:])
			c.add(r, r)
			prev, hasPrev = r, true
			i += w
		case r == '-' && hasPrev && i+1 < len(s) && s[i+1] != ']':
			i++
			hi, w := utf8.DecodeRuneInString(s[i:])
			if hi == '\\' {
				i++
				if i >= len(s) {
					return nil, 0, false
				}
				hi, w = utf8.DecodeRuneInString(s[i:])
			}
			i += w
			c.add(prev, hi) // a reversed range adds nothing, as in git
			hasPrev = false
		case r == '[' && i+1 < len(s) && s[i+1] == ':':
			j := strings.IndexByte(s[i+2:], ']')
			if j < 0 {
				return nil, 0, false
			}
			end := i + 2 + j // index of the "]"
			if end-1 < i+2 || s[end-1] != ':' {
				c.add('[', '[') // not a [:name:], so a plain "["
				prev, hasPrev = '[', true
				i++
				continue
			}
			if !c.addPOSIX(s[i+2 : end-1]) {
				return nil, 0, false
			}
			i = end + 1
			hasPrev = false
		default:
			c.add(r, r)
			prev, hasPrev = r, true
			i += w
		}
	}
}

// addPOSIX adds a [:name:] class. Like git's, the classes are ASCII-only.
func (c *charClass) addPOSIX(name string) bool {
	for r := rune(0); r < utf8.RuneSelf; r++ {
		var in bool
		switch name {
		case "alnum":
			in = isAlpha(r) || isDigit(r)
		case "alpha":
			in = isAlpha(r)
		case "blank":
			in = r == ' ' || r == '\t'
		case "cntrl":
			in = r < ' ' || r == 0x7f
		case "digit":
			in = isDigit(r)
		case "graph":
			in = r > ' ' && r < 0x7f
		case "lower":
			in = 'a' <= r && r <= 'z'
		case "print":
			in = r >= ' ' && r < 0x7f
		case "punct":
			in = r > ' ' && r < 0x7f && !isAlpha(r) && !isDigit(r)
		case "space":
			in = r == ' ' || ('\t' <= r && r <= '\r')
		case "upper":
			in = 'A' <= r && r <= 'Z'
		case "xdigit":
			in = isDigit(r) || ('a' <= r && r <= 'f') || ('A' <= r && r <= 'F')
		default:
			return false
		}
		if in {
			c.add(r, r)
		}
	}
	return true
}

func isAlpha(r rune) bool { return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' }
func isDigit(r rune) bool { return '0' <= r && r <= '9' }
