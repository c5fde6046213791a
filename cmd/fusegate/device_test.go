package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func TestDeviceUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"device"}, "--name is required"},
		{[]string{"device", "--name", "x"}, "no kind"},
		{[]string{"device", "--name", "x", "--kind", "tty"}, `unknown kind "tty"`},
		{[]string{"device", "--name", "x", "--kind", "socket"}, "needs a socket path"},
		{[]string{"device", "--name", "a b", "--kind", "loopback"}, "not allowed"},
		{[]string{"device", "--name", "x", "--kind", "loopback", "--owner", "root"}, "not a number"},
		{[]string{"device", "--name", "x", "--kind", "loopback", "--mode", "rw"}, "octal"},
		{[]string{"device", "--name", "x", "--kind", "loopback", "--major", "-1"}, "not a number"},
		{[]string{"device", "--name", "x", "--kind", "loopback", "extra"}, "unexpected arguments"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errb); code != exitUsage {
			t.Errorf("%q: exit %d, want %d; stderr %s", tc.args, code, exitUsage, errb.String())
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: stderr %q lacks %q", tc.args, errb.String(), tc.want)
		}
	}
}

func TestDeviceWithoutCuse(t *testing.T) {
	if _, err := os.Stat("/dev/cuse"); err == nil {
		t.Skip("this machine has /dev/cuse; the error path is tested where it is missing")
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"device", "--name", "fgtest0", "--kind", "loopback"}, &out, &errb)
	if code != exitFail || !strings.Contains(errb.String(), "CUSE is not available") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
