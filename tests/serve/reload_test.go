package serve

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/tests/harness"
)

// Two versions of a policy file: apps may read shared/ or may not.
const (
	openPolicy = `version = 1
name = "open"
[default]
allow.any = ["apps"]
`
	closedPolicy = `version = 1
name = "closed"
[default]
allow.any = ["apps"]
[[rule]]
name = "no-shared"
path = "shared/**"
allow.view = []
`
)

// A reload (SIGHUP, then ctl reload) changes the policy of the live mount,
// and a caller running as another uid sees it at once; reload is refused
// to other uids but those in the admin group.
func TestServeReloadPolicy(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower/shared", "mp")
	s.write("lower/shared/a.txt", "shared data")
	pol := s.write("policy.toml", openPolicy)
	s.write(filepath.Base(s.cfg), s.control(`admin_group = "4242"`)+s.mountSection("m", "lower", "mp", pol))
	d, n := s.start([]string{"mp"})
	file := s.path("mp/shared/a.txt")
	if got, err := readAs(t, app1, file); err != nil || got != "shared data" {
		t.Fatalf("under the open policy app1 reads %q, %v", got, err)
	}

	// SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1.
	s.write("policy.toml", closedPolicy)
	from := n.len()
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	i := n.waitFor(from, "RELOADING=1", 10*time.Second)
	if msg := n.all()[i]; !strings.Contains(msg, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING message %q has no MONOTONIC_USEC", msg)
	}
	s.waitReady(d, n, i+1)
	if _, err := readAs(t, app1, file); errnoOf(err) != syscall.EACCES {
		t.Fatalf("after the reload to the closed policy app1 reads: %v, want EACCES", err)
	}
	if got, err := readAs(t, harness.Root(), file); err != nil || got != "shared data" {
		t.Errorf("root (trusted) reads %q, %v", got, err)
	}
	var ms []mountStatus
	s.ctlJSON("mounts", &ms)
	if len(ms) != 1 || ms[0].PolicyName != "closed" {
		t.Errorf("mounts after reload: %+v", ms)
	}

	// ctl reload as root: back to open, visible at once.
	s.write("policy.toml", openPolicy)
	r := s.ctl(harness.Root(), "reload").MustSucceed(t)
	var res struct {
		OK              bool     `json:"ok"`
		PoliciesChanged []string `json:"policies_changed"`
	}
	if err := json.Unmarshal(r.Stdout, &res); err != nil || !res.OK || len(res.PoliciesChanged) != 1 || res.PoliciesChanged[0] != "m" {
		t.Errorf("ctl reload answered %s (%v)", r.Stdout, err)
	}
	if got, err := readAs(t, app1, file); err != nil || got != "shared data" {
		t.Errorf("after ctl reload to the open policy app1 reads %q, %v", got, err)
	}

	// Not root and not in the admin group: refused, nothing changes.
	s.write("policy.toml", closedPolicy)
	r = s.ctl(app1, "reload")
	if r.ExitCode != 1 || !strings.Contains(string(r.Stderr), "reload needs root or the admin group (you are uid 10001)") {
		t.Errorf("ctl reload as uid 10001: %v", r)
	}
	if _, err := readAs(t, app1, file); err != nil {
		t.Errorf("after a refused reload app1 reads: %v (the policy changed)", err)
	}
	// A member of the admin group (gid 4242) may.
	s.ctl(harness.Cred{UID: 10003, GID: 10003, Groups: []uint32{4242}}, "reload").MustSucceed(t)
	if _, err := readAs(t, app1, file); errnoOf(err) != syscall.EACCES {
		t.Errorf("after the admin group's reload app1 reads: %v, want EACCES", err)
	}
	var st status
	s.ctlJSON("status", &st)
	if st.ReloadsOK != 3 || st.ReloadsFailed != 0 || st.LastReload == nil || !strings.Contains(st.LastReload.Trigger, "uid 10003") {
		t.Errorf("status after three reloads: %+v", st)
	}
}

// Bad input at reload: each is rejected with a clear reason, and the
// running mount keeps serving with its policy.
func TestServeReloadRejects(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower/shared", "mp", "other")
	s.write("lower/shared/a.txt", "x")
	pol := s.write("policy.toml", closedPolicy)
	good := s.control("") + s.mountSection("m", "lower", "mp", pol)
	s.write(filepath.Base(s.cfg), good)
	d, _ := s.start([]string{"mp"})
	info := d.WaitMounted(s.path("mp"))

	for _, tc := range badInputs(s, pol) {
		t.Run(tc.name, func(t *testing.T) {
			s.write(filepath.Base(s.cfg), tc.config)
			if tc.policy != "" {
				s.write("policy.toml", tc.policy)
			}
			t.Cleanup(func() { s.write("policy.toml", closedPolicy) })
			r := s.ctl(harness.Root(), "reload")
			if r.ExitCode != 1 || !strings.Contains(string(r.Stderr), "configuration rejected, nothing changed") ||
				!strings.Contains(string(r.Stderr), tc.want) {
				t.Errorf("ctl reload: %v\nwant exit 1 and %q", r, tc.want)
			}
			// Still the same mount, still the closed policy.
			if got, ok, _ := fusedev.FindMount(s.path("mp")); !ok || got.ConnID() != info.ConnID() {
				t.Errorf("the mount changed: %+v, %v", got, ok)
			}
			if _, err := readAs(t, app1, s.path("mp/shared/a.txt")); errnoOf(err) != syscall.EACCES {
				t.Errorf("after a rejected reload app1 reads: %v, want EACCES (the old policy)", err)
			}
		})
	}
	var st status
	s.ctlJSON("status", &st)
	if st.ReloadsFailed != uint64(len(badInputs(s, pol))) || st.ReloadsOK != 0 || st.State != "running" ||
		st.LastReload == nil || st.LastReload.OK || st.LastReload.Error == "" {
		t.Errorf("status after rejected reloads: %+v", st)
	}
	// A good configuration again is taken.
	s.write(filepath.Base(s.cfg), good)
	s.ctl(harness.Root(), "reload").MustSucceed(t)
}

type badInput struct {
	name   string
	config string
	policy string // written to policy.toml when set
	want   string // in the error
}

// badInputs are invalid configurations and policies, each with a piece of
// the error it must give.
func badInputs(s *setup, pol string) []badInput {
	head := s.control("")
	mount := s.mountSection("m", "lower", "mp", pol)
	return []badInput{
		{name: "syntax", config: head + "\n[[mount]\nname = \"m\"\n", want: s.cfg + ":"},
		{name: "unknown-field", config: head + mount + "colour = \"blue\"\n", want: "colour"},
		{name: "unknown-section", config: head + mount + "\n[mounts]\nx = 1\n", want: "mounts"},
		{name: "wrong-version", config: strings.Replace(head, "version = 1", "version = 2", 1) + mount, want: "version 2 is not supported"},
		{name: "unreachable-source", config: head + s.mountSection("m", "no/such/dir", "mp", pol), want: "does not exist"},
		{name: "relative-path", config: head + strings.Replace(mount, s.path("lower"), "lower", 1), want: "is not an absolute path"},
		{name: "duplicate-mountpoint", config: head + mount + s.mountSection("m2", "other", "mp", pol), want: "is also the mount point of mount[0]"},
		{name: "duplicate-mount-name", config: head + mount + s.mountSection("m", "other", "other", pol), want: `"m" is also the name of mount[0]`},
		{name: "duplicate-device", config: head + mount + "\n[[device]]\nname = \"d\"\nkind = \"loopback\"\n\n[[device]]\nname = \"d\"\nkind = \"loopback\"\n", want: `"d" is also the name of device[0]`},
		{name: "nested-mount", config: head + mount + s.mountSection("inner", "other", "mp/inner", pol), want: "inside mount[0]'s mount point"},
		{name: "bad-device-kind", config: head + mount + "\n[[device]]\nname = \"d\"\nkind = \"tty\"\n", want: `"tty": want loopback or socket`},
		{name: "unknown-owner", config: head + mount + "\n[[device]]\nname = \"d\"\nkind = \"loopback\"\nowner = \"no-such-user-fusegate\"\n", want: "no-such-user-fusegate"},
		{name: "bad-mount-option", config: head + strings.Replace(mount, `"allow_other"`, `"allow_other", "turbo"`, 1), want: `unknown mount option "turbo"`},
		{name: "bad-policy", config: head + mount, policy: "version = 1\n[default]\nallow.view = [\"role:nope\"]\n", want: "nope"},
		{name: "policy-unknown-key", config: head + mount, policy: openPolicy + "frobnicate = true\n", want: "frobnicate"},
		{name: "missing-policy", config: head + s.mountSection("m", "lower", "mp", s.path("no-policy.toml")), want: "no-policy.toml"},
		{name: "empty", config: "", want: "version"},
	}
}

// Bad input at start: a clear error, exit 1, nothing mounted.
func TestServeStartRejects(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower/shared", "mp", "other")
	pol := s.write("policy.toml", closedPolicy)
	for _, tc := range append(badInputs(s, pol), badInput{name: "missing-config", want: "no such file"}) {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s.cfg
			if tc.name == "missing-config" {
				cfg = s.path("missing.toml")
			} else {
				s.write(filepath.Base(s.cfg), tc.config)
			}
			if tc.policy != "" {
				s.write("policy.toml", tc.policy)
			}
			t.Cleanup(func() { s.write("policy.toml", closedPolicy) })
			r := harness.Run(t, harness.Cmd{Argv: []string{harness.Bin(t), "serve", "--config", cfg}, Timeout: 30 * time.Second})
			if r.ExitCode != 1 || !strings.Contains(string(r.Stderr), tc.want) {
				t.Errorf("serve: %v\nwant exit 1 and %q", r, tc.want)
			}
			if harness.Mounted(t, s.path("mp")) {
				fusedev.Unmount(s.path("mp"), fusedev.UnmountOptions{Lazy: true})
				t.Error("something was mounted")
			}
		})
	}
	// Arguments.
	for _, args := range [][]string{{"serve", "extra"}, {"serve", "--config"}, {"serve", "--config="}, {"serve", "--bogus"}} {
		if r := harness.Fusegate(t, args...); r.ExitCode != 2 {
			t.Errorf("%q: %v, want exit 2", args, r)
		}
	}
}

// A second daemon on the same control socket refuses to start.
func TestServeSocketInUse(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower", "mp", "lower2", "mp2")
	s.write(filepath.Base(s.cfg), s.control("")+s.mountSection("m", "lower", "mp", "none"))
	s.start([]string{"mp"})
	s.write("second.toml", s.control("")+s.mountSection("m", "lower2", "mp2", "none"))
	r := harness.Run(t, harness.Cmd{Argv: []string{harness.Bin(t), "serve", "--config", s.path("second.toml")}, Timeout: 30 * time.Second})
	if r.ExitCode != 1 || !strings.Contains(string(r.Stderr), "another process is listening") {
		t.Errorf("a second serve on the same socket: %v", r)
	}
	if harness.Mounted(t, s.path("mp2")) {
		fusedev.Unmount(s.path("mp2"), fusedev.UnmountOptions{Lazy: true})
		t.Error("the second daemon mounted")
	}
}

// Reload starts, stops and replaces mounts whose configuration changed and
// leaves the others untouched (same kernel connection); a mount unmounted
// from outside is mounted again by the next reload.
func TestServeReloadMounts(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("a", "b", "c", "mpA", "mpB", "mpB2", "mpC")
	head := s.control("")
	sec := func(name, mp string) string { return s.mountSection(name, name, mp, "none") }
	s.write(filepath.Base(s.cfg), head+sec("a", "mpA")+sec("b", "mpB"))
	d, _ := s.start([]string{"mpA", "mpB", "mpB2", "mpC"})
	a := d.WaitMounted(s.path("mpA"))

	s.write(filepath.Base(s.cfg), head+sec("a", "mpA")+sec("b", "mpB2")+sec("c", "mpC"))
	s.ctl(harness.Root(), "reload").MustSucceed(t)
	var st status
	s.ctlJSON("status", &st)
	lr := st.LastReload
	if lr == nil || fmt.Sprint(lr.Unchanged) != "[mount a]" || fmt.Sprint(lr.Replaced) != "[mount b]" || fmt.Sprint(lr.Started) != "[mount c]" {
		t.Errorf("last reload: %+v", lr)
	}
	if got := d.WaitMounted(s.path("mpA")); got.ConnID() != a.ConnID() {
		t.Errorf("mount a was replaced: connection %d, was %d", got.ConnID(), a.ConnID())
	}
	if harness.Mounted(t, s.path("mpB")) {
		t.Error("b is still mounted at its old mount point")
	}
	d.WaitMounted(s.path("mpB2"))
	d.WaitMounted(s.path("mpC"))

	// Unmounted from outside: the daemon notices; a reload mounts it again.
	if err := fusedev.Unmount(s.path("mpC"), fusedev.UnmountOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ms []mountStatus
		s.ctlJSON("mounts", &ms)
		if len(ms) == 3 && ms[2].Name == "c" && ms[2].State == "unmounted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount c not reported unmounted: %+v", ms)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.write(filepath.Base(s.cfg), head+sec("b", "mpB2")+sec("c", "mpC"))
	s.ctl(harness.Root(), "reload").MustSucceed(t)
	s.ctlJSON("status", &st)
	if lr := st.LastReload; fmt.Sprint(lr.Stopped) != "[mount a]" || fmt.Sprint(lr.Replaced) != "[mount c]" || fmt.Sprint(lr.Unchanged) != "[mount b]" {
		t.Errorf("second reload: %+v", lr)
	}
	d.WaitMounted(s.path("mpC"))
	if harness.Mounted(t, s.path("mpA")) {
		t.Error("a is still mounted after its removal")
	}
	if st := d.Stop(syscall.SIGTERM); st.ExitCode() != 0 {
		t.Errorf("exit: %v", st)
	}
	for _, mp := range []string{"mpB2", "mpC"} {
		if harness.Mounted(t, s.path(mp)) {
			t.Errorf("%s still mounted after SIGTERM", mp)
		}
	}
}
