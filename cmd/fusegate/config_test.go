package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("version = 1\n[[mount]]\nname = \"m\"\nsource = \""+dir+"/src\"\nmountpoint = \""+dir+"/mnt\"\ncreate = true\n"), 0o644)
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("version = 1\n[[device]]\nname = \"d\"\nkind = \"tape\"\n"), 0o644)
	absent := filepath.Join(dir, "absent.toml")
	os.WriteFile(absent, []byte("version = 1\n[[mount]]\nname = \"m\"\nsource = \"/no/such/dir/fg\"\nmountpoint = \"/mnt/fg\"\n"), 0o644)
	for _, c := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"config", "check", good}, 0, "good.toml: ok (1 mounts, 0 devices)", ""},
		{[]string{"config", "check", bad}, 1, "", "bad.toml:4:8: device[0].kind: \"tape\""},
		{[]string{"config", "check", absent}, 1, "", "mount[0].source: /no/such/dir/fg does not exist"},
		{[]string{"config", "check", "--offline", absent}, 0, "ok", ""},
		{[]string{"config", "check", filepath.Join(dir, "nope.toml")}, 1, "", "no such file"},
		{[]string{"config", "default"}, 0, "[[mount]]", ""},
		{[]string{"config"}, 2, "", "want a subcommand"},
		{[]string{"config", "--help"}, 0, "check FILE", ""},
	} {
		code, out, errs := runCLI(c.args...)
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errs, c.err) {
			t.Errorf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s", c.args, code, c.code, out, errs)
		}
	}
}
