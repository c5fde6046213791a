package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --policy: bad combinations are usage errors, a bad policy file fails
// before anything is mounted, with the file's own error.
func TestMountPolicyArguments(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("version = 2\n"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"mount", "--policy", "default", "--demo", "/x"}, exitUsage, "--policy applies to a SOURCE mirror, not --demo"},
		{[]string{"mount", "--policy", "default", "-o", "entry_timeout=5", dir, "/x"}, exitUsage, "do not go with --policy: the policy sets the cache timeouts"},
		{[]string{"mount", "--policy", bad, dir, "/x"}, exitFail, "bad.toml:1:"},
		{[]string{"mount", "--policy", filepath.Join(dir, "missing.toml"), dir, "/x"}, exitFail, "missing.toml"},
	} {
		code, out, errs := runCLI(tc.args...)
		if code != tc.code || out != "" || !strings.Contains(errs, tc.msg) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, code, out, errs, tc.code, tc.msg)
		}
	}
}
