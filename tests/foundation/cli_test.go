package foundation

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/fusegate/fusegate/tests/harness"
)

// TestVersion runs the built binary's version command.
func TestVersion(t *testing.T) {
	re := regexp.MustCompile(`^fusegate \S+ \(go1\.\d+\S*, FUSE protocol 7\.\d+\)\n$`)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := harness.Fusegate(t, args...).MustSucceed(t)
		if !re.Match(r.Stdout) || len(r.Stderr) > 0 {
			t.Errorf("fusegate %s: stdout %q, stderr %q; want one line matching %s", args[0], r.Stdout, r.Stderr, re)
		}
	}
}

// TestUsageErrors checks the binary's exit status 2 and message for bad
// usage, and that a bad mount command mounts nothing.
func TestUsageErrors(t *testing.T) {
	mp := t.TempDir()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "Usage: fusegate COMMAND"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"mount", "--demo", "--bogus", mp}, "flag provided but not defined: -bogus"},
		{[]string{"mount", mp}, "nothing to mount: give --demo"},
		{[]string{"mount", "--demo", "-o", "nosuchopt", mp}, `unknown mount option "nosuchopt"`},
	} {
		r := harness.Fusegate(t, tc.args...)
		if r.ExitCode != 2 || !strings.Contains(string(r.Stderr), tc.msg) {
			t.Errorf("fusegate %q: %v; want exit 2 and %q on stderr", tc.args, r, tc.msg)
		}
	}
	if harness.Mounted(t, mp) {
		t.Errorf("a failed mount command left a mount at %s", mp)
	}
}

// TestLogFormatJSON: with --log-format json every line the daemon logs is
// one JSON object, and the mount's life shows in them.
func TestLogFormatJSON(t *testing.T) {
	mp := mountpointFor(t, harness.Root())
	d := startDemo(t, harness.Root(), mp, "--log-format", "json")
	stopClean(t, d, mp)

	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(d.Stderr()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON (%v): %q", err, line)
		}
		for _, k := range []string{"level", "msg", "time"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("log line lacks %q: %q", k, line)
			}
		}
		msg, _ := rec["msg"].(string)
		msgs = append(msgs, msg)
		if msg == "mounted" && rec["mountpoint"] != mp {
			t.Errorf("'mounted' names mountpoint %v, want %s", rec["mountpoint"], mp)
		}
		if msg == "unmounting" && rec["signal"] != "SIGTERM" {
			t.Errorf("'unmounting' names signal %v, want SIGTERM", rec["signal"])
		}
	}
	for _, want := range []string{"mounted", "unmounting", "unmounted"} {
		found := false
		for _, m := range msgs {
			found = found || m == want
		}
		if !found {
			t.Errorf("no %q in the JSON log: %q", want, msgs)
		}
	}
}

// TestLogFormatText: the default log format is logrus's key=value text.
func TestLogFormatText(t *testing.T) {
	mp := mountpointFor(t, harness.Root())
	d := startDemo(t, harness.Root(), mp)
	stopClean(t, d, mp)
	if !strings.Contains(d.Stderr(), "level=info msg=mounted mountpoint="+mp) {
		t.Errorf("text log lacks the mount line; got:\n%s", d.Stderr())
	}
}
