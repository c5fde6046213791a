package policy

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxCaptures bounds the {name} captures of one rule, so that matching can
// keep them in a fixed array on the stack.
const maxCaptures = 4

type tokKind uint8

const (
	tokLiteral tokKind = iota // a whole segment, compared exactly (or folded)
	tokStar                   // "*": any one segment
	tokGlob                   // a segment with '*' wildcards: "*.jpg", "IMG_*"
	tokCapture                // "{name}": any one segment, remembered
	tokAny                    // "**": zero or more segments
)

type token struct {
	kind tokKind
	lit  string // tokLiteral: the literal (canonical form when folding); tokGlob: the glob
	cap  uint8  // tokCapture: index into the rule's captures
}

// pattern is a compiled path pattern. Patterns are matched against cleaned
// relative paths ("" is the mount root) segment by segment.
type pattern struct {
	src  string
	toks []token

	// Quick rejection, checked by Policy.match before match.
	nseg   int    // tokens other than "**": the fewest segments a match has
	anyTok bool   // has a "**": more segments may match
	first  string // the first token's literal, when it is one
	lit0   bool   // first is set
}

// capSet holds the values captured while matching one rule. The values are
// substrings of the path being decided: no allocation.
type capSet [maxCaptures]string

// compilePattern parses src. names holds the rule's capture names so far; a
// capture not yet in it is appended (the index is the rule-level index).
func compilePattern(src string, fold bool, names *[]string) (*pattern, error) {
	p := &pattern{src: src}
	if src == "" {
		return p, nil // the root only
	}
	if strings.HasPrefix(src, "/") {
		return nil, fmt.Errorf("pattern %q: must be relative to the mount root (no leading '/')", src)
	}
	if strings.HasSuffix(src, "/") {
		return nil, fmt.Errorf("pattern %q: trailing '/'", src)
	}
	seen := map[string]bool{}
	for _, seg := range strings.Split(src, "/") {
		switch {
		case seg == "":
			return nil, fmt.Errorf("pattern %q: empty segment", src)
		case seg == "." || seg == "..":
			return nil, fmt.Errorf("pattern %q: segment %q is not allowed", src, seg)
		case strings.ContainsRune(seg, 0):
			return nil, fmt.Errorf("pattern %q: NUL byte", src)
		case seg == "**":
			p.toks = append(p.toks, token{kind: tokAny})
		case strings.Contains(seg, "**"):
			return nil, fmt.Errorf("pattern %q: '**' must be a whole segment", src)
		case seg == "*":
			p.toks = append(p.toks, token{kind: tokStar})
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}"):
			name := seg[1 : len(seg)-1]
			if !validIdent(name) {
				return nil, fmt.Errorf("pattern %q: capture %q: the name must be letters, digits and '_', not starting with a digit", src, seg)
			}
			if seen[name] {
				return nil, fmt.Errorf("pattern %q: capture {%s} appears twice", src, name)
			}
			seen[name] = true
			idx := -1
			for i, n := range *names {
				if n == name {
					idx = i
				}
			}
			if idx < 0 {
				if len(*names) == maxCaptures {
					return nil, fmt.Errorf("pattern %q: more than %d distinct captures in one rule", src, maxCaptures)
				}
				*names = append(*names, name)
				idx = len(*names) - 1
			}
			p.toks = append(p.toks, token{kind: tokCapture, cap: uint8(idx)})
		case strings.ContainsAny(seg, "{}"):
			return nil, fmt.Errorf("pattern %q: segment %q: '{' and '}' may only enclose a whole segment capture such as {pkg}", src, seg)
		case strings.Contains(seg, "*"):
			p.toks = append(p.toks, token{kind: tokGlob, lit: canonLit(seg, fold)})
		default:
			p.toks = append(p.toks, token{kind: tokLiteral, lit: canonLit(seg, fold)})
		}
	}
	for _, t := range p.toks {
		if t.kind == tokAny {
			p.anyTok = true
		} else {
			p.nseg++
		}
	}
	if len(p.toks) > 0 && p.toks[0].kind == tokLiteral {
		p.first, p.lit0 = p.toks[0].lit, true
	}
	return p, nil
}

// quickReject reports whether p cannot match a path of nseg segments whose
// first segment is first.
func (p *pattern) quickReject(nseg int, first string, fold bool) bool {
	if nseg < p.nseg || (!p.anyTok && nseg != p.nseg) {
		return true
	}
	if p.lit0 {
		if fold {
			return !eqFold(first, p.first)
		}
		return first != p.first
	}
	return false
}

func validIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// captures returns the rule-level indexes of the captures in p.
func (p *pattern) captures() []uint8 {
	var out []uint8
	for _, t := range p.toks {
		if t.kind == tokCapture {
			out = append(out, t.cap)
		}
	}
	return out
}

// match reports whether path (clean, relative; canonical when folding and
// not ASCII) matches p, recording captures in caps. It is the classic
// wildcard algorithm over segments: on a mismatch it backtracks only to the
// most recent "**", letting it swallow one more segment, which keeps it
// O(segments × tokens) whatever the number of "**".
func (p *pattern) match(path string, fold bool, caps *capSet) bool {
	toks := p.toks
	n := len(path)
	off := 0
	if path == "" {
		off = 1 // no segments at all
	}
	ti := 0
	starTi, starOff := -1, 0
	for off <= n {
		// The segment starting at off.
		end := strings.IndexByte(path[off:], '/')
		if end < 0 {
			end = n
		} else {
			end += off
		}
		seg := path[off:end]
		if ti < len(toks) {
			t := &toks[ti]
			if t.kind == tokAny {
				if ti == len(toks)-1 {
					return true // a trailing "**" takes whatever is left
				}
				starTi, starOff = ti, off
				ti++
				continue
			}
			if t.matchSeg(seg, fold) {
				if t.kind == tokCapture {
					caps[t.cap] = seg
				}
				ti++
				off = end + 1
				continue
			}
		}
		if starTi < 0 {
			return false
		}
		// Let the last "**" swallow one more segment and retry after it.
		e := strings.IndexByte(path[starOff:], '/')
		if e < 0 {
			starOff = n + 1
		} else {
			starOff += e + 1
		}
		off = starOff
		ti = starTi + 1
	}
	for ; ti < len(toks); ti++ {
		if toks[ti].kind != tokAny {
			return false
		}
	}
	return true
}

func (t *token) matchSeg(seg string, fold bool) bool {
	switch t.kind {
	case tokLiteral:
		if fold {
			return eqFold(seg, t.lit)
		}
		return seg == t.lit
	case tokStar, tokCapture:
		return true
	case tokGlob:
		return globMatch(t.lit, seg, fold)
	}
	return false
}

// globMatch matches name against glob, where '*' matches any run of bytes
// (including none) and every other byte matches itself (ASCII letters folded
// when fold is set; glob is then canonical).
func globMatch(glob, name string, fold bool) bool {
	gi, ni := 0, 0
	starG, starN := -1, 0
	for ni < len(name) {
		if gi < len(glob) {
			switch c := glob[gi]; {
			case c == '*':
				starG, starN = gi, ni
				gi++
				continue
			case byteEq(name[ni], c, fold):
				gi++
				ni++
				continue
			}
		}
		if starG < 0 {
			return false
		}
		starN++
		ni = starN
		gi = starG + 1
	}
	for gi < len(glob) && glob[gi] == '*' {
		gi++
	}
	return gi == len(glob)
}

func byteEq(c, canon byte, fold bool) bool {
	if fold && c >= 'a' && c <= 'z' {
		c -= 'a' - 'A'
	}
	return c == canon
}

// eqFold compares a path segment (ASCII, or already canonical) with a
// canonical literal.
func eqFold(seg, canon string) bool {
	if len(seg) != len(canon) {
		return false
	}
	for i := 0; i < len(seg); i++ {
		if !byteEq(seg[i], canon[i], true) {
			return false
		}
	}
	return true
}

// Case-insensitive matching.
//
// With case_insensitive = true the policy assumes a case-folding lower file
// system (ext4/f2fs casefold, as Android's emulated storage uses), where
// "android/DATA/com.foo" names the same directory as "Android/data/com.foo".
// Comparisons then use a canonical form: every rune is replaced by the
// smallest rune of its Unicode simple-folding orbit (so 'k', 'K' and U+212A
// KELVIN SIGN all become 'K'), and default-ignorable code points (zero-width
// spaces, joiners, variation selectors...) are dropped, since some
// case-folding file systems ignore them and Android once had to close exactly
// that bypass. ASCII paths are compared in place without allocating; a path
// with non-ASCII bytes is converted once per decision.

// canonLit returns the canonical form of a pattern literal or package name.
func canonLit(s string, fold bool) string {
	if !fold {
		return s
	}
	return canon(s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// canon returns the canonical folded form of s (see above).
func canon(s string) string {
	if isASCII(s) {
		return strings.ToUpper(s)
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 'a' && c <= 'z' {
				c -= 'a' - 'A'
			}
			b.WriteByte(c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		if isDefaultIgnorable(r) {
			continue
		}
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

// foldRune returns the smallest rune of r's simple case-folding orbit.
func foldRune(r rune) rune {
	if r == utf8.RuneError {
		return r
	}
	min := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < min {
			min = f
		}
	}
	return min
}

// isDefaultIgnorable reports whether r has the Unicode property
// Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15).
func isDefaultIgnorable(r rune) bool {
	switch {
	case r < 0xAD:
		return false
	case r == 0x00AD, r == 0x034F, r == 0x061C,
		r >= 0x115F && r <= 0x1160,
		r >= 0x17B4 && r <= 0x17B5,
		r >= 0x180B && r <= 0x180F,
		r >= 0x200B && r <= 0x200F,
		r >= 0x202A && r <= 0x202E,
		r >= 0x2060 && r <= 0x206F,
		r == 0x3164,
		r >= 0xFE00 && r <= 0xFE0F,
		r == 0xFEFF, r == 0xFFA0,
		r >= 0xFFF0 && r <= 0xFFF8,
		r >= 0x1BCA0 && r <= 0x1BCA3,
		r >= 0x1D173 && r <= 0x1D17A,
		r >= 0xE0000 && r <= 0xE0FFF:
		return true
	}
	return false
}

// pathInfo is what one scan of a path finds out.
type pathInfo struct {
	ok    bool   // clean and relative (see validPath)
	ascii bool   // no byte >= 0x80
	nseg  int    // number of segments (0 for the root)
	first string // first segment
}

// scanPath checks and measures path in one pass.
func scanPath(path string) pathInfo {
	if path == "" {
		return pathInfo{ok: true, ascii: true}
	}
	in := pathInfo{ascii: true, nseg: 1}
	start := 0 // of the current segment
	firstEnd := -1
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c == '/':
			if badSeg(path[start:i]) {
				return pathInfo{}
			}
			if firstEnd < 0 {
				firstEnd = i
			}
			in.nseg++
			start = i + 1
		case c == 0:
			return pathInfo{}
		case c >= utf8.RuneSelf:
			in.ascii = false
		}
	}
	if badSeg(path[start:]) {
		return pathInfo{}
	}
	if firstEnd < 0 {
		firstEnd = len(path)
	}
	in.ok, in.first = true, path[:firstEnd]
	return in
}

func badSeg(s string) bool {
	return s == "" || s == "." || s == ".."
}

// validPath reports whether path is clean and relative: no leading or
// trailing '/', no empty, "." or ".." segment, no NUL. "" (the root) is valid.
func validPath(path string) bool { return scanPath(path).ok }

// lastSegment returns the final segment of a clean path.
func lastSegment(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[i+1:]
	}
	return path
}
