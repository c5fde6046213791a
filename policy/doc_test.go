package policy

import (
	"os"
	"strings"
	"testing"
)

// TestDocExample parses the complete example of docs/POLICY.md, so that the
// documentation cannot drift from the format.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/POLICY.md")
	if err != nil {
		t.Skipf("docs/POLICY.md not readable: %v", err)
	}
	const start = "## A complete example\n\n```toml\n"
	s := string(doc)
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatal("no complete example in docs/POLICY.md")
	}
	s = s[i+len(start):]
	j := strings.Index(s, "```")
	if j < 0 {
		t.Fatal("unterminated example")
	}
	p, err := Parse("POLICY.md example", []byte(s[:j]))
	if err != nil {
		t.Fatalf("the documented example does not parse: %v", err)
	}
	e := NewEngine(p, Options{})
	for _, tc := range []struct {
		c     Caller
		op    Op
		obj   Object
		allow bool
	}{
		{Caller{UID: 10080}, OpRead, file("Android/data/org.example.mail/x", 10060), true},   // backup role reads
		{Caller{UID: 10080}, OpWrite, file("Android/data/org.example.mail/x", 10060), false}, // but does not write
		{Caller{UID: 10060}, OpWrite, file("Android/data/org.example.docs/x", 10060), true},  // shared uid
		{Caller{UID: 10123}, OpCreate, absent("Pictures/Screenshots/a.jpg"), false},          // camera only
		{Caller{UID: 10050}, OpCreate, absent("Pictures/Screenshots/a.jpg"), true},
		{Caller{UID: 0}, OpWrite, file("Firmware/x.bin", 0), false},                 // read-only
		{Caller{UID: 1000}, OpLookup, dir(".fusegate", 0), true},                    // trusted desktop user
		{Caller{UID: 10500, Groups: []uint32{990}}, OpDelete, dir("DCIM", 0), true}, // trusted group
		{Caller{UID: 10150}, OpLookup, dir(".fusegate", 0), false},
	} {
		if d := e.Decide(t.Context(), tc.c, tc.op, tc.obj); d.Allowed != tc.allow {
			_, tr := e.Explain(tc.c, tc.op, tc.obj)
			t.Errorf("%+v %s %q: %+v, want allowed=%v\n%s", tc.c, tc.op, tc.obj.Path, d, tc.allow, strings.Join(tr, "\n"))
		}
	}
}
