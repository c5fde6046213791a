package policy

import (
	"context"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add(DefaultFile())
	f.Add([]byte(testPolicy))
	f.Add([]byte("version = 1\n[[rule]]\npath = \"a/{x}/**/*.jpg\"\nallow.any = [\"{x}\"]\ndeny = \"ENOENT\"\n"))
	f.Add([]byte("version = 1\n[[app]]\nname = \"a\"\nuids = [\"10000-10005\", 10007]\npackages = [\"p\"]\n"))
	f.Add([]byte("version = 1\n[default]\nallow = { any = [\"apps\"], delete = [] }\nredact = [\"location\"]\n"))
	f.Add([]byte("version = 2\n"))
	f.Add([]byte("version = 1\ncase_insensitive = true\n[[rule]]\npaths = [\"**/x\", \"**/**/y\"]\nhidden = true\n"))
	ctx := context.Background()
	callers := []Caller{{UID: 0}, {UID: 10000}, {UID: 10050, GID: 3000}, {UID: 10123, Groups: []uint32{1, 2}}}
	paths := []string{"", "a", "Android/data/com.cam/x.jpg", "a/b/c/d", "DCIM/\u212a/x.JPG", "x/y"}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.toml", data)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "fuzz.toml") {
				t.Fatalf("error without the file name: %q", msg)
			}
			return
		}
		e := NewEngine(p, Options{})
		for _, c := range callers {
			for _, path := range paths {
				for op := Op(0); op <= numOps; op++ {
					obj := Object{Path: path, Owner: 10050, Exists: op != OpCreate}
					d := e.Decide(ctx, c, op, obj)
					ed, _ := e.Explain(c, op, obj)
					if d != ed {
						t.Fatalf("Decide %+v != Explain %+v", d, ed)
					}
					if d.Allowed && d.Errno != 0 {
						t.Fatalf("allowed with errno: %+v", d)
					}
					if d.Redact != 0 && d.Passthrough {
						t.Fatalf("redacted passthrough: %+v", d)
					}
				}
			}
			p.IsAppPrivate("Android/data/x")
		}
	})
}

// refMatch is a slow, obviously correct matcher: recursion over segments.
func refMatch(toks []token, segs []string, fold bool) bool {
	if len(toks) == 0 {
		return len(segs) == 0
	}
	if toks[0].kind == tokAny {
		if refMatch(toks[1:], segs, fold) {
			return true
		}
		return len(segs) > 0 && refMatch(toks, segs[1:], fold)
	}
	if len(segs) == 0 || !refSeg(&toks[0], segs[0], fold) {
		return false
	}
	return refMatch(toks[1:], segs[1:], fold)
}

func refSeg(t *token, seg string, fold bool) bool {
	if fold {
		seg = canon(seg)
	}
	switch t.kind {
	case tokLiteral:
		return seg == t.lit
	case tokGlob:
		return refGlob(t.lit, seg)
	}
	return true
}

func refGlob(g, s string) bool {
	if g == "" {
		return s == ""
	}
	if g[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if refGlob(g[1:], s[i:]) {
				return true
			}
		}
		return false
	}
	return s != "" && s[0] == g[0] && refGlob(g[1:], s[1:])
}

func FuzzMatch(f *testing.F) {
	f.Add("Android/data/{pkg}/**", "Android/data/com.a/x", false)
	f.Add("**/*.jpg", "DCIM/a/b.JPG", true)
	f.Add("a/**/b/**/c", "a/x/b/y/b/c", false)
	f.Add("**", "", false)
	f.Add("", "", true)
	f.Add("*/{x}/**/z*", "q/w/e/zz", false)
	f.Add("a*b*c", "aXbYbc", true)
	f.Fuzz(func(t *testing.T, pat, path string, fold bool) {
		if len(pat) > 64 || len(path) > 128 {
			return
		}
		var names []string
		p, err := compilePattern(pat, fold, &names)
		if err != nil {
			return
		}
		in := scanPath(path)
		if !in.ok {
			return
		}
		mpath := path
		if fold && !in.ascii {
			mpath = canon(path)
			in = scanPath(mpath)
		}
		var caps capSet
		got := !p.quickReject(in.nseg, in.first, fold) && p.match(mpath, fold, &caps)
		var segs []string
		if mpath != "" {
			segs = strings.Split(mpath, "/")
		}
		if want := refMatch(p.toks, segs, fold); got != want {
			t.Fatalf("pattern %q path %q (fold %v): match %v, reference %v", pat, mpath, fold, got, want)
		}
		if !got {
			return
		}
		// The captures must be a consistent assignment: replacing each
		// capture by its value still matches.
		toks := append([]token(nil), p.toks...)
		for i := range toks {
			if toks[i].kind == tokCapture {
				v := caps[toks[i].cap]
				if fold {
					v = canon(v)
				}
				if strings.Contains(v, "*") {
					toks[i] = token{kind: tokStar}
					continue
				}
				toks[i] = token{kind: tokLiteral, lit: v}
			}
		}
		if !refMatch(toks, segs, fold) {
			t.Fatalf("pattern %q path %q: captures %q are not a valid assignment", pat, mpath, caps)
		}
	})
}
