package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("version = 1\n[[rule]]\npath = \"DCIM/**\"\ndeny = \"EWHAT\"\n"), 0o644)
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("version = 1\n"), 0o644)
	gids := filepath.Join(dir, "gids.toml")
	os.WriteFile(gids, []byte("version = 1\n[trust]\ngids = [990]\n[[rule]]\nname = \"closed\"\npath = \"**\"\ndeny = \"EPERM\"\n"), 0o644)

	for _, c := range []struct {
		args     []string
		code     int
		out, err string // substrings
	}{
		{[]string{"policy", "check", good}, 0, "good.toml: ok", ""},
		{[]string{"policy", "check", bad, good}, 1, "good.toml: ok", "bad.toml:4:8: rule[0].deny: bad errno \"EWHAT\""},
		{[]string{"policy", "check"}, 2, "", "want at least one FILE"},
		{[]string{"policy", "default"}, 0, "version = 1", ""},
		{[]string{"policy", "explain", "default", "--uid", "10001", "read", "Android/data/uid10002/f"}, 0,
			"denied: no such file or directory\n  rule:         rule[2] app-data", ""},
		{[]string{"policy", "explain", "default", "--uid", "10002", "read", "Android/data/uid10002/f"}, 0,
			"allowed", ""},
		{[]string{"policy", "explain", "default", "--uid", "10001", "--owner", "10002", "write", "DCIM/x.jpg"}, 0,
			"denied: permission denied", ""},
		{[]string{"policy", "explain", gids, "--uid", "10001", "--dir", "readdir", "DCIM"}, 0,
			"denied: operation not permitted\n  rule:         rule[0] closed", ""},
		{[]string{"policy", "explain", gids, "--uid", "10001", "--gid", "990", "--dir", "readdir", "DCIM"}, 0,
			"allowed\n  rule:         rule[0] closed\n  trusted:      yes", ""},
		{[]string{"policy", "explain", "default", "read", "DCIM"}, 2, "", "needs --uid"},
		{[]string{"policy", "explain", "default", "--uid", "1", "fly", "DCIM"}, 2, "", "unknown OP"},
		{[]string{"policy", "explain", "default", "--uid", "1", "--owner", "x", "read", "DCIM"}, 2, "", "not a uid"},
		{[]string{"policy", "explain", filepath.Join(dir, "missing.toml"), "--uid", "1", "read", "x"}, 1, "", "missing.toml"},
		{[]string{"policy", "frob"}, 2, "", "unknown subcommand"},
		{[]string{"policy", "--help"}, 0, "explain FILE --uid N", ""},
	} {
		code, out, errs := runCLI(c.args...)
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errs, c.err) {
			t.Errorf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s", c.args, code, c.code, out, errs)
		}
	}
}
