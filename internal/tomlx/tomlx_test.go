package tomlx

import (
	"errors"
	"strings"
	"testing"
)

type rule struct {
	Path  string              `toml:"path"`
	Allow map[string][]string `toml:"allow"`
	Sub   []struct {
		X int `toml:"x"`
	} `toml:"sub"`
}

type file struct {
	Version int                  `toml:"version"`
	Trust   struct{ UIDs []any } `toml:"trust"`
	Rule    []rule               `toml:"rule"`
}

const doc = `version = 1

[trust]
UIDs = [1, "10-20",
  3]

[[rule]]
path = "a"
allow.read = ["x", "y"]

[[rule]]
path = "b"
allow = { write = ["z"] }

[[rule.sub]]
x = 1

[[rule.sub]]
x = 2
`

func TestPositions(t *testing.T) {
	var f file
	d, err := Decode("p.toml", []byte(doc), &f)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Rule) != 2 || len(f.Rule[1].Sub) != 2 {
		t.Fatalf("decoded %+v", f)
	}
	for field, want := range map[string]Pos{
		"version":               {1, 11},
		"trust":                 {3, 2},
		"trust.UIDs":            {4, 1},
		"trust.UIDs[1]":         {4, 12},
		"trust.UIDs[2]":         {5, 3},
		"rule[0]":               {7, 3},
		"rule[0].path":          {8, 8},
		"rule[0].allow.read":    {9, 1},
		"rule[0].allow.read[1]": {9, 20},
		"rule[1].path":          {12, 8},
		"rule[1].allow":         {13, 9},
		"rule[1].allow.write":   {13, 11},
		"rule[1].sub[0].x":      {16, 5},
		"rule[1].sub[1]":        {18, 3},
		"rule[1].sub[1].x":      {19, 5},
	} {
		if got := d.Pos(field); got != want {
			t.Errorf("Pos(%q) = %v, want %v", field, got, want)
		}
	}
	if d.Has("rule[2]") || d.Pos("nope") != (Pos{}) {
		t.Error("undefined fields must be absent")
	}
	e := d.Errorf("rule[1].allow.read", "bad %s", "thing")
	if got, want := e.Error(), "p.toml:13:9: rule[1].allow.read: bad thing"; got != want {
		t.Errorf("Errorf = %q, want %q (falls back to the enclosing table)", got, want)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"syntax", "version = \n", []string{"p.toml:1:11: ", "start of value"}},
		{"unknown", "version = 1\n[[rule]]\npath = 'a'\n[[rule]]\nbogus = 2\nalso = 3\n",
			[]string{"p.toml:5:1: rule[1].bogus: unknown field", "p.toml:6:1: rule[1].also: unknown field"}},
		{"type", "version = 'one'\n", []string{"p.toml:1:11: version: cannot decode TOML string"}},
		{"duplicate", "version = 1\nversion = 2\n", []string{"p.toml:2:1: ", "already defined"}},
		{"nested", "[[rule]]\n[[rule]]\n[[rule.sub]]\nx = 'no'\n", []string{"p.toml:4:5: rule[1].sub[0].x: cannot decode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f file
			_, err := Decode("p.toml", []byte(tc.in), &f)
			if err == nil {
				t.Fatal("no error")
			}
			var le *Error
			if !errors.As(err, &le) {
				t.Fatalf("error %T is not a *Error: %v", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(doc))
	f.Add([]byte("a = [1, [2, {b = 3}]]\n[x.y]\nz = 1\n[[x.w]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var f file
		d, err := Decode("f", data, &f)
		if err == nil {
			d.Pos("rule[0].path")
			_ = d.Errorf("rule[0].allow.x[3]", "x").Error()
			return
		}
		_ = err.Error()
	})
}
