package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fusegate/fusegate/internal/tomlx"
)

func TestParseErrors(t *testing.T) {
	const head = "version = 1\nroles = [\"installer\"]\n" // lines 1-2
	for _, tc := range []struct {
		name string
		in   string
		want []string // substrings of the error, the first one names file:line[:col]: field
	}{
		{"syntax", "version = 1\n[[rule]\n", []string{"p.toml:2:7: ", "expected"}},
		{"bad value syntax", "version = 1\nname = \n", []string{"p.toml:2:8: "}},
		{"unknown top-level field", head + "colour = 1\n", []string{"p.toml:3:1: colour: unknown field"}},
		{"unknown rule field", head + "[[rule]]\npath = \"a\"\n[[rule]]\npath = \"b\"\nallowed = 1\n", []string{"p.toml:7:1: rule[1].allowed: unknown field"}},
		{"unknown allow key", head + "[[rule]]\npath = \"a\"\nallow.reed = [\"apps\"]\n", []string{"p.toml:5:1: rule[0].allow.reed: unknown field"}},
		{"wrong type", head + "[trust]\nbelow_uid = \"10000\"\n", []string{"p.toml:4:13: trust.below_uid: cannot decode TOML string"}},
		{"missing version", "name = \"x\"\n", []string{"p.toml:1: version: required"}},
		{"unknown version", "version = 2\n", []string{"p.toml:1:11: version: unsupported policy version 2"}},
		{"bad role name", "version = 1\nroles = [\"ok\", \"no spaces\"]\n", []string{"p.toml:2:16: roles[1]: bad role name"}},
		{"duplicate role", "version = 1\nroles = [\"a\", \"a\"]\n", []string{"p.toml:2:15: roles[1]: role \"a\" declared twice"}},
		{"bad uid range", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [10001, \"10010-10005\"]\n", []string{"p.toml:6:16: app[0].uids[1]: bad uid range \"10010-10005\": first uid above last"}},
		{"bad uid range syntax", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [\"ten\"]\n", []string{"p.toml:6:9: app[0].uids[0]: bad uid range \"ten\""}},
		{"negative uid", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [-1]\n", []string{"p.toml:6:9: app[0].uids[0]: -1 is not a uid"}},
		{"uid of wrong type", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [true]\n", []string{"p.toml:6:9: app[0].uids[0]: a uid must be an integer or a string"}},
		{"trusted app uid", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [1000]\n", []string{"p.toml:6:9: app[0].uids[0]: uid 1000 is trusted"}},
		{"app uid in trust.uids", head + "[trust]\nuids = [10005]\n[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [\"10000-10010\"]\n", []string{"p.toml:8:9: app[0].uids[0]: uid 10005 is trusted"}},
		{"duplicate app uids", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [\"10000-10010\"]\n[[app]]\nname = \"y\"\npackages = [\"q\"]\nuids = [10010]\n",
			[]string{"p.toml:10:9: app[1].uids[0]: uids 10010 overlap uids 10000-10010 of app \"x\""}},
		{"duplicate app name", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [10001]\n[[app]]\nname = \"x\"\npackages = [\"q\"]\nuids = [10002]\n", []string{"p.toml:8:8: app[1].name: app \"x\" defined twice"}},
		{"duplicate package", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [10001]\n[[app]]\nname = \"y\"\npackages = [\"p\"]\nuids = [10002]\n", []string{"p.toml:9:13: app[1].packages[0]: package \"p\" already belongs to app \"x\""}},
		{"duplicate package folded", "case_insensitive = true\n" + head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [10001]\n[[app]]\nname = \"y\"\npackages = [\"P\"]\nuids = [10002]\n", []string{"p.toml:10:13: app[1].packages[0]: package \"P\" already belongs to app \"x\""}},
		{"app without uids", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\n", []string{"p.toml:3:3: app[0]: uids: at least one"}},
		{"unknown role in app", head + "[[app]]\nname = \"x\"\npackages = [\"p\"]\nuids = [10001]\nroles = [\"installer\", \"wizard\"]\n", []string{"p.toml:7:23: app[0].roles[1]: unknown role \"wizard\""}},
		{"unknown app in group", head + "[[group]]\nname = \"g\"\napps = [\"ghost\"]\n", []string{"p.toml:5:9: group[0].apps[0]: unknown app \"ghost\""}},
		{"unknown role in group", head + "[[group]]\nname = \"g\"\nroles = [\"nope\"]\n", []string{"p.toml:5:10: group[0].roles[0]: unknown role \"nope\""}},
		{"bad unknown template", head + "[apps]\nunknown = \"app\"\n", []string{"p.toml:4:11: apps.unknown: bad name template \"app\""}},
		{"rule without path", head + "[[rule]]\ndeny = \"ENOENT\"\n", []string{"p.toml:3:3: rule[0]: path: required"}},
		{"path and paths", head + "[[rule]]\npath = \"a\"\npaths = [\"b\"]\n", []string{"p.toml:5:1: rule[0].paths: give either path or paths"}},
		{"bad pattern", head + "[[rule]]\npaths = [\"a\", \"/abs\"]\n", []string{"p.toml:4:15: rule[0].paths[1]: pattern \"/abs\": must be relative"}},
		{"bad pattern dotdot", head + "[[rule]]\npath = \"a/../b\"\n", []string{"p.toml:4:8: rule[0].path: pattern \"a/../b\": segment \"..\""}},
		{"bad pattern star", head + "[[rule]]\npath = \"a/b**\"\n", []string{"rule[0].path: pattern \"a/b**\": '**' must be a whole segment"}},
		{"bad capture", head + "[[rule]]\npath = \"a/{1x}\"\n", []string{"p.toml:4:8: rule[0].path: pattern \"a/{1x}\": capture"}},
		{"brace in segment", head + "[[rule]]\npath = \"a/x{pkg}\"\n", []string{"rule[0].path: pattern \"a/x{pkg}\": segment"}},
		{"duplicate capture", head + "[[rule]]\npath = \"{a}/{a}\"\n", []string{"rule[0].path: pattern \"{a}/{a}\": capture {a} appears twice"}},
		{"too many captures", head + "[[rule]]\npath = \"{a}/{b}/{c}/{d}/{e}\"\n", []string{"rule[0].path: pattern", "more than 4"}},
		{"bad errno", head + "[[rule]]\npath = \"a\"\ndeny = \"ENOPE\"\n", []string{"p.toml:5:8: rule[0].deny: bad errno \"ENOPE\""}},
		{"bad subject", head + "[[rule]]\npath = \"a\"\nallow.read = [\"everyone\"]\n", []string{"p.toml:5:15: rule[0].allow.read[0]: bad subject \"everyone\""}},
		{"unknown role in rule", head + "[[rule]]\npath = \"a\"\nallow.read = [\"apps\", \"role:admin\"]\n", []string{"p.toml:5:23: rule[0].allow.read[1]: unknown role \"admin\""}},
		{"unknown app in rule", head + "[[rule]]\npath = \"a\"\nallow.read = [\"app:ghost\"]\n", []string{"rule[0].allow.read[0]: unknown app \"ghost\""}},
		{"unknown group in rule", head + "[[rule]]\npath = \"a\"\nallow.read = [\"group:ghost\"]\n", []string{"rule[0].allow.read[0]: unknown group \"ghost\""}},
		{"unknown capture", head + "[[rule]]\npath = \"a/{pkg}\"\nallow.read = [\"{app}\"]\n", []string{"p.toml:5:15: rule[0].allow.read[0]: capture {app} is not in the rule's path"}},
		{"capture not in every pattern", head + "[[rule]]\npaths = [\"a/{pkg}\", \"b\"]\nallow.any = [\"{pkg}\"]\ndeny = \"ENOENT\"\n", []string{"rule[0].allow.any[0]: capture {pkg} is not in every pattern", "\"b\""}},
		{"capture in default", head + "[default]\nallow.read = [\"{pkg}\"]\n", []string{"default.allow.read[0]: capture {pkg} is not in the rule's path"}},
		{"bad duration", head + "[[rule]]\npath = \"a\"\nallow.view = [\"apps\"]\nentry_timeout = \"soon\"\n", []string{"p.toml:6:17: rule[0].entry_timeout: bad duration \"soon\""}},
		{"negative duration", head + "[default]\nattr_timeout = \"-1s\"\n", []string{"p.toml:4:16: default.attr_timeout: negative duration"}},
		{"cached private path", head + "[[rule]]\npath = \"a/{pkg}/**\"\nallow.any = [\"{pkg}\"]\nentry_timeout = \"1s\"\n", []string{"p.toml:6:17: rule[0].entry_timeout: must be 0"}},
		{"cached hidden path", head + "[[rule]]\npath = \"a\"\nhidden = true\nentry_timeout = \"1m\"\n", []string{"rule[0].entry_timeout: must be 0"}},
		{"hidden with allow", head + "[[rule]]\npath = \"a\"\nhidden = true\nallow.read = [\"apps\"]\n", []string{"p.toml:6:1: rule[0].allow: a hidden rule allows nothing"}},
		{"hidden with EACCES", head + "[[rule]]\npath = \"a\"\nhidden = true\ndeny = \"EACCES\"\n", []string{"p.toml:6:8: rule[0].deny: a hidden rule denies with ENOENT"}},
		{"read-only allowing writes", head + "[[rule]]\npath = \"a\"\nread_only = true\nallow.any = [\"apps\"]\n", []string{"p.toml:6:1: rule[0].allow.any: a read_only rule cannot allow write, create, mkdir, delete, rename_from, rename_to, setattr"}},
		{"unknown redaction", head + "[[rule]]\npath = \"a\"\nredact = [\"faces\"]\n", []string{"p.toml:5:11: rule[0].redact[0]: unknown redaction \"faces\""}},
		{"redact names without redact", head + "[[rule]]\npath = \"a\"\nredact_names = [\"*.jpg\"]\n", []string{"rule[0].redact: redact_names and redact_exempt need redact"}},
		{"bad redact glob", head + "[[rule]]\npath = \"a\"\nredact = [\"location\"]\nredact_names = [\"x/*.jpg\"]\n", []string{"p.toml:6:17: rule[0].redact_names[0]: bad file name glob"}},
		{"bad redact exempt", head + "[[rule]]\npath = \"a\"\nredact = [\"location\"]\nredact_exempt = [\"role:x\"]\n", []string{"p.toml:6:18: rule[0].redact_exempt[0]: unknown role \"x\""}},
		{"duplicate rule name", head + "[[rule]]\nname = \"r\"\npath = \"a\"\n[[rule]]\nname = \"r\"\npath = \"b\"\n", []string{"p.toml:7:8: rule[1].name: rule name \"r\" already used by rule[0]"}},
		{"path in default", head + "[default]\npath = \"a\"\n", []string{"p.toml:4:8: default.path: not allowed in [default]"}},
		{"bad trusted uid", head + "[trust]\nuids = [5000000000]\n", []string{"p.toml:4:9: trust.uids[0]: 5000000000 is not a uid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("p.toml", []byte(tc.in))
			if err == nil {
				t.Fatalf("no error; rules %v", p.Rules())
			}
			var le *tomlx.Error
			if !errors.As(err, &le) {
				t.Errorf("error %T is not a *tomlx.Error", err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n  %s\ndoes not contain\n  %s", msg, w)
				}
			}
			if !strings.HasPrefix(msg, "p.toml:") {
				t.Errorf("error %q does not start with the file name and line", msg)
			}
		})
	}
}

func TestParseReportsSeveralErrors(t *testing.T) {
	in := "version = 1\n[[rule]]\npath = \"/a\"\n[[rule]]\npath = \"b\"\ndeny = \"E\"\n"
	_, err := Parse("p.toml", []byte(in))
	var list tomlx.Errors
	if !errors.As(err, &list) || len(list) != 2 {
		t.Fatalf("want 2 errors, got %v", err)
	}
}

func TestParseLimits(t *testing.T) {
	big := make([]byte, MaxFileSize+1)
	if _, err := Parse("big.toml", big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.toml")
	if err := os.WriteFile(path, DefaultFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil || p.Source() != path {
		t.Fatalf("Load: %v", err)
	}
	if err := os.WriteFile(path, []byte("version = 1\n[[rule]]\npath = \"..\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":3:8: rule[0].path") {
		t.Errorf("Load of a bad file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestParseAccepts(t *testing.T) {
	// Forms that must parse: uid forms, inline allow table, op override of
	// group, empty list overriding any.
	in := `version = 1
roles = ["r"]
[trust]
below_uid = 0
root = false
daemon = false
[[app]]
name = "a"
uids = [0, "5", "100 - 200"]
packages = ["p"]
[[rule]]
path = "x/**/*.txt"
allow = { any = ["apps"], delete = [] }
`
	p, err := Parse("ok.toml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(p, Options{})
	if d := e.Decide(t.Context(), Caller{UID: 0}, OpDelete, file("x/y/z.txt", 0)); d.Allowed || d.Trusted {
		t.Errorf("root with root = false, below_uid = 0 must be an app: %+v", d)
	}
	if d := e.Decide(t.Context(), Caller{UID: 150}, OpWrite, file("x/a/b/c.txt", 0)); !d.Allowed {
		t.Errorf("any = apps: %+v", d)
	}
	if d := e.Decide(t.Context(), Caller{UID: 150}, OpWrite, file("x/a/b/c.md", 0)); d.Allowed {
		t.Errorf("default rule allows nothing: %+v", d)
	}
}
