package main

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/fusegate/fusegate/fusedev"
)

// These tests call run in this process, so they must never reach a real
// mount: every case fails before mounting or only reads mountinfo. Mounting
// is tested through the built binary under tests/.

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		code, out, errs := runCLI(args...)
		if code != exitOK || errs != "" || !strings.Contains(out, "Usage: fusegate COMMAND") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", args, code, out, errs)
		}
		for _, n := range commandNames() {
			line := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(n) + ` +` + regexp.QuoteMeta(commands[n].summary) + `$`)
			if !line.MatchString(out) {
				t.Errorf("%q: usage does not list %q with its summary %q:\n%s", args, n, commands[n].summary, out)
			}
		}
	}
	code, out, errs := runCLI()
	if code != exitUsage || out != "" || !strings.Contains(errs, "Usage: fusegate COMMAND") {
		t.Errorf("no arguments: exit %d, stdout %q, stderr %q; want 2 and the usage on stderr", code, out, errs)
	}
}

func TestUnknownCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"frobnicate"}, `fusegate: unknown command "frobnicate"`},
		{[]string{"frobnicate", "--help"}, `fusegate: unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, `fusegate: unknown command "frobnicate"`},
		{[]string{"help", "mount", "umount"}, `fusegate help: want at most one COMMAND`},
	} {
		code, out, errs := runCLI(tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errs, tc.msg) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errs, tc.msg)
		}
	}
}

// optionLine matches an option in the flag package's help: "  -name" or
// "  -name PLACEHOLDER", the usage on the next line or after a tab.
var optionLine = regexp.MustCompile(`^  -([A-Za-z0-9][-A-Za-z0-9]*)(?: ([A-Za-z]+))?(?:\t|$)`)

// sampleValue returns a value the parser accepts for an option listed with
// the placeholder ph (flags validated when parsed need a real one).
func sampleValue(name, ph string) string {
	switch {
	case name == "o":
		return "ro"
	case ph == "int" || ph == "uint":
		return "1"
	case ph == "duration":
		return "1s"
	case ph == "float":
		return "1.5"
	case ph == "NUMBER" || ph == "BYTES":
		return "4096"
	case ph == "OCTAL":
		return "0660"
	case ph == "UID[:GID]":
		return "0:0"
	}
	return "x"
}

// TestHelpEveryCommand checks each command's help: exit 0, on stdout, the
// same for "help NAME", "NAME --help" and "NAME -h", a synopsis naming the
// command, the common logging options, and only options the parser accepts.
func TestHelpEveryCommand(t *testing.T) {
	for _, name := range commandNames() {
		t.Run(name, func(t *testing.T) {
			code, help, errs := runCLI(name, "--help")
			if code != exitOK || errs != "" {
				t.Fatalf("--help: exit %d, stderr %q; want 0 and nothing on stderr", code, errs)
			}
			for _, args := range [][]string{{name, "-h"}, {"help", name}} {
				if code, out, _ := runCLI(args...); code != exitOK || out != help {
					t.Errorf("%q: exit %d, output differs from '%s --help':\n%s", args, code, name, out)
				}
			}
			first, _, _ := strings.Cut(help, "\n")
			if !strings.HasPrefix(first+" ", "Usage: fusegate "+name+" ") || strings.HasSuffix(first, " ") {
				t.Errorf("first line %q, want \"Usage: fusegate %s ...\" without trailing space", first, name)
			}
			_, opts, ok := strings.Cut(help, "\nOptions:\n")
			if !ok {
				t.Fatalf("no Options section:\n%s", help)
			}
			var listed []string
			for _, line := range strings.Split(opts, "\n") {
				m := optionLine.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				listed = append(listed, m[1])
				// A listed option must parse: put it before --help, which
				// stops parsing successfully.
				args := []string{name, "-" + m[1]}
				if m[2] != "" {
					args = append(args, sampleValue(m[1], m[2]))
				}
				if code, _, errs := runCLI(append(args, "--help")...); code != exitOK {
					t.Errorf("help lists -%s but %q fails: exit %d: %s", m[1], args, code, errs)
				}
			}
			for _, common := range []string{"log-level", "log-format"} {
				if !slices.Contains(listed, common) {
					t.Errorf("help does not list -%s; listed %q", common, listed)
				}
			}
		})
	}
}

func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"mount", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"mount"}, "fusegate mount: nothing to mount: give --demo"},
		{[]string{"mount", "/x"}, "fusegate mount: nothing to mount: give --demo"},
		{[]string{"mount", "--demo"}, "fusegate mount: want exactly one MOUNTPOINT, got 0 arguments"},
		{[]string{"mount", "--demo", "/x", "/y"}, "fusegate mount: want exactly one MOUNTPOINT, got 2 arguments"},
		{[]string{"mount", "--demo", "--readers", "-1", "/x"}, "fusegate mount: --readers must not be negative"},
		{[]string{"mount", "--demo", "--readers", "many", "/x"}, `invalid value "many" for flag -readers`},
		{[]string{"mount", "--demo", "-o", "bogus", "/x"}, `unknown mount option "bogus"`},
		{[]string{"mount", "--demo", "-o", "ro,max_read=12", "/x"}, "max_read=12: want a number of bytes of at least 4096"},
		{[]string{"mount", "--demo", "-o", "fsname=", "/x"}, `unknown mount option "fsname="`},
		{[]string{"mount", "--demo", "-o"}, "flag needs an argument: -o"},
		{[]string{"mount", "--demo", "--log-level", "loud", "/x"}, `--log-level: "loud" is not a level`},
		{[]string{"mount", "--demo", "--log-format", "xml", "/x"}, `--log-format: "xml" is not text or json`},
		{[]string{"umount"}, "fusegate umount: want exactly one MOUNTPOINT, got 0 arguments"},
		{[]string{"umount", "/x", "/y"}, "fusegate umount: want exactly one MOUNTPOINT, got 2 arguments"},
		{[]string{"umount", "--bogus", "/x"}, "flag provided but not defined: -bogus"},
		{[]string{"version", "extra"}, "fusegate version: takes no arguments"},
		{[]string{"version", "--bogus"}, "flag provided but not defined: -bogus"},
	} {
		code, out, errs := runCLI(tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errs, tc.msg) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q on stderr", tc.args, code, out, errs, tc.msg)
			continue
		}
		// Parse errors point to the command's help.
		if !strings.HasPrefix(tc.msg, "--log-") {
			if hint := fmt.Sprintf("Run 'fusegate %s --help' for usage.", tc.args[0]); !strings.Contains(errs, hint) {
				t.Errorf("%q: stderr %q lacks %q", tc.args, errs, hint)
			}
		}
	}
}

// TestOptionsAfterArguments: options may follow the mount point, as with
// mount(8), and "--" ends them.
func TestOptionsAfterArguments(t *testing.T) {
	dir := t.TempDir() // nothing mounted there
	for _, args := range [][]string{
		{"umount", dir, "-z"},
		{"umount", dir, "--lazy", "--log-level", "debug"},
		{"umount", "--", dir},
	} {
		code, out, errs := runCLI(args...)
		if code != exitFail || out != "" || !strings.Contains(errs, dir+": no FUSE file system is mounted there") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1, not mounted", args, code, out, errs)
		}
	}
	code, _, errs := runCLI("umount", "--", "-z")
	if code != exitFail || !strings.Contains(errs, "-z: no FUSE file system is mounted there") {
		t.Errorf("umount -- -z: exit %d, stderr %q; want -z taken as the mount point", code, errs)
	}
}

func TestVersion(t *testing.T) {
	re := regexp.MustCompile(`^fusegate dev \(go1\.\d+\S*, FUSE protocol 7\.45\)\n$`)
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		code, out, errs := runCLI(args...)
		if code != exitOK || errs != "" || !re.MatchString(out) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 0 and a line matching %s", args, code, out, errs, re)
		}
	}
}

func TestParseMountOptions(t *testing.T) {
	var got fusedev.MountOptions
	if err := parseMountOptions("allow_other, default_permissions,ro,noexec,suid,dev,fsname=src,subtype=demo,max_read=8192,", &got); err != nil {
		t.Fatal(err)
	}
	want := fusedev.MountOptions{AllowOther: true, DefaultPermissions: true, ReadOnly: true, NoExec: true,
		Suid: true, Dev: true, FSName: "src", Subtype: "demo", MaxRead: 8192}
	if got != want {
		t.Errorf("parsed %+v, want %+v", got, want)
	}
	if err := parseMountOptions("rw,exec,nosuid,nodev", &got); err != nil {
		t.Fatal(err)
	}
	if got.ReadOnly || got.NoExec || got.Suid || got.Dev {
		t.Errorf("rw,exec,nosuid,nodev left %+v", got)
	}
	for _, bad := range []string{"ro=1", "allow_other=yes", "max_read=4095", "max_read=-1", "max_read", "subtype=", "uid=0"} {
		var m fusedev.MountOptions
		if err := parseMountOptions(bad, &m); err == nil {
			t.Errorf("%q parsed without error to %+v", bad, m)
		}
	}
}
