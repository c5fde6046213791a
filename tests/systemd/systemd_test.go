// Package systemd tests fusegate's units under a real systemd (252, PID 1)
// in the qemu guest of tests/vm (go test -exec tests/vm/exec-systemd, with
// FUSEGATE_VM_PAYLOAD naming a static fusegate): make install, socket
// activation, READY only once mounts and devices are live, CUSE, the
// passthrough fallback of Debian 12's 6.1 kernel, reload of a policy on
// the live mount, the watchdog killing a wedged daemon, stop, and the
// README's commands by hand. On the host every test skips.
//
// The tests share one guest and run in file order; each brings the units
// to the state it needs.
package systemd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/tests/vm/vmenv"
)

const (
	media   = "/run/fusegate/media"
	lower   = "/var/lib/fusegate/media"
	loopDev = "/dev/fusegate-loop"
	sock    = "/run/fusegate/control.sock"
	confDir = "/etc/fusegate"
	conf    = "/etc/fusegate/fusegate.toml"
	bin     = "/usr/local/bin/fusegate"
	dropIn  = "/etc/systemd/system/fusegate.service.d"
)

// run runs a command with a deadline and returns its trimmed combined output.
func run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s\n--- journal of fusegate:\n%s", name, strings.Join(args, " "), err, out, journal(t))
	}
	return out
}

// journal returns the end of fusegate's journal, for failure messages.
func journal(t testing.TB) string {
	out, _ := exec.Command("journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-n", "60",
		"-u", "fusegate.service", "-u", "fusegate.socket").CombinedOutput()
	return string(out)
}

// prop returns a property of a unit (systemctl show -p).
func prop(t testing.TB, unit, name string) string {
	t.Helper()
	return mustRun(t, "systemctl", "show", "-p", name, "--value", unit)
}

func waitUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v\n--- journal of fusegate:\n%s", what, timeout, journal(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func active(t testing.TB, unit string) string {
	out, _ := run(t, "systemctl", "is-active", unit)
	return out
}

var installOnce struct {
	sync.Once
	err error
}

// install installs fusegate with the Makefile (the payload's binary) and
// starts it as the README says, once per guest.
func install(t testing.TB) {
	t.Helper()
	vmenv.Require(t, vmenv.Systemd)
	installOnce.Do(func() {
		payload := vmenv.Payload("fusegate")
		if payload == "" {
			installOnce.err = fmt.Errorf("no fusegate in the payload: run with FUSEGATE_VM_PAYLOAD=$PWD/bin/fusegate (static)")
			return
		}
		out, err := run(t, "make", "-C", "testdata/repo", "install-files", "BIN="+payload)
		if err != nil {
			installOnce.err = fmt.Errorf("make install-files: %v\n%s", err, out)
			return
		}
		out, err = run(t, "systemctl", "enable", "--now", "fusegate.socket", "fusegate.service")
		if err != nil {
			installOnce.err = fmt.Errorf("systemctl enable --now: %v\n%s\n%s", err, out, journal(t))
		}
	})
	if installOnce.err != nil {
		t.Fatal(installOnce.err)
	}
}

// ensureRunning starts the units if a test left them stopped.
func ensureRunning(t testing.TB) {
	t.Helper()
	install(t)
	if active(t, "fusegate.service") != "active" {
		mustRun(t, "systemctl", "start", "fusegate.socket", "fusegate.service")
	}
}

// ctl runs fusegate ctl and decodes its JSON answer into v.
func ctl(t testing.TB, method string, v any) {
	t.Helper()
	out := mustRun(t, bin, "ctl", method)
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("ctl %s: %v\n%s", method, err, out)
		}
	}
}

// live reports whether the FUSE mount at mp answers statfs(2) (from this
// process, which does not serve it), within a few seconds.
func live(mp string) error {
	if _, ok, err := fusedev.FindMount(mp); err != nil || !ok {
		return fmt.Errorf("%s: not mounted (%v)", mp, err)
	}
	done := make(chan error, 1)
	go func() {
		var st syscall.Statfs_t
		done <- syscall.Statfs(mp, &st)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s: statfs hangs", mp)
	}
}

func isCharDev(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// asUser runs a command as an app uid (setpriv, no supplementary groups).
func asUser(t *testing.T, uid int, args ...string) (string, error) {
	t.Helper()
	id := strconv.Itoa(uid)
	return run(t, "setpriv", append([]string{"--reuid", id, "--regid", id, "--clear-groups", "--"}, args...)...)
}

func TestSystemdInstall(t *testing.T) {
	install(t)
	for _, f := range []string{bin, "/etc/systemd/system/fusegate.service", "/etc/systemd/system/fusegate.socket",
		"/usr/lib/sysusers.d/fusegate.conf", "/usr/lib/modules-load.d/fusegate.conf", conf, "/usr/local/share/doc/fusegate/README.md"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("make install-files: %v", err)
		}
	}
	if out, err := run(t, "getent", "group", "fusegate"); err != nil {
		t.Errorf("group fusegate (sysusers): %v %s", err, out)
	}
	if out, err := run(t, "systemd-analyze", "verify", "/etc/systemd/system/fusegate.service", "/etc/systemd/system/fusegate.socket"); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, u := range []string{"fusegate.socket", "fusegate.service"} {
		if got := active(t, u); got != "active" {
			t.Errorf("%s is %q after enable --now", u, got)
		}
		if got, _ := run(t, "systemctl", "is-enabled", u); got != "enabled" {
			t.Errorf("%s is %q, want enabled", u, got)
		}
	}
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
		t.Errorf("%s: mode %v, want a socket 0660", sock, st.Mode())
	}
	if out := mustRun(t, "stat", "-c", "%G", sock); out != "fusegate" {
		t.Errorf("%s group %q, want fusegate", sock, out)
	}
}

// systemctl start returns when the daemon sent READY=1: by then its mount
// answers and its device exists.
func TestSystemdReadyOnlyWhenLive(t *testing.T) {
	ensureRunning(t)
	mustRun(t, "systemctl", "restart", "fusegate.service")
	// Nothing waited for: checked right after READY=1.
	if err := live(media); err != nil {
		t.Errorf("right after systemctl restart: %v", err)
	}
	if !isCharDev(loopDev) {
		t.Errorf("right after systemctl restart: %s is not a character device", loopDev)
	}
	if s := prop(t, "fusegate.service", "StatusText"); !strings.HasPrefix(s, "1/1 mounts, 1/1 devices serving") {
		t.Errorf("StatusText %q", s)
	}
	// The daemon's own log puts "mounted" and "device ready" before
	// systemd's "Started".
	out := mustRun(t, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "fusegate.service", "--since", "-60s")
	i := strings.LastIndex(out, "Started fusegate")
	if i < 0 || !strings.Contains(out[:i], "msg=mounted") || !strings.Contains(out[:i], "msg=\"device ready\"") {
		t.Errorf("journal does not show mount and device ready before Started:\n%s", out)
	}
	// The hardened unit has a mount namespace of its own; the daemon
	// mounts in PID 1's (where this test runs) and says so.
	if !strings.Contains(out, "mounting in PID 1's") || strings.Contains(out, "cannot look at PID 1's mount namespace") {
		t.Errorf("journal does not show the daemon mounting in PID 1's namespace:\n%s", out)
	}
	if got := prop(t, "fusegate.service", "NRestarts"); got != "0" {
		t.Errorf("NRestarts %s", got)
	}
}

// Connecting to the socket starts the service.
func TestSystemdSocketActivation(t *testing.T) {
	ensureRunning(t)
	mustRun(t, "systemctl", "stop", "fusegate.service")
	if got := active(t, "fusegate.service"); got != "inactive" {
		t.Fatalf("fusegate.service is %q after stop", got)
	}
	if got := active(t, "fusegate.socket"); got != "active" {
		t.Fatalf("fusegate.socket is %q", got)
	}
	if _, ok, _ := fusedev.FindMount(media); ok {
		t.Errorf("%s still mounted with the service stopped", media)
	}
	var st struct {
		State   string `json:"state"`
		PID     int    `json:"pid"`
		Summary string `json:"summary"`
	}
	ctl(t, "status", &st) // connects: systemd starts fusegate.service
	if st.State != "starting" && st.State != "running" {
		t.Errorf("status through the socket: %+v", st)
	}
	waitUntil(t, "fusegate.service active after a connection", 60*time.Second, func() bool {
		return active(t, "fusegate.service") == "active"
	})
	ctl(t, "status", &st)
	if st.State != "running" || strconv.Itoa(st.PID) != prop(t, "fusegate.service", "MainPID") {
		t.Errorf("status: %+v, MainPID %s", st, prop(t, "fusegate.service", "MainPID"))
	}
	if err := live(media); err != nil {
		t.Error(err)
	}
}

// The loopback CUSE device: what is written is read back; the counters
// show it.
func TestSystemdCUSEDevice(t *testing.T) {
	ensureRunning(t)
	f, err := os.OpenFile(loopDev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("through /dev/cuse and back")
	if _, err := f.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := f.Read(buf); err != nil || !bytes.Equal(buf, msg) {
		t.Errorf("read back %q, %v", buf, err)
	}
	f.Close()
	if st, _ := os.Stat(loopDev); st.Mode().Perm() != 0o666 {
		t.Errorf("%s mode %v, want 0666 (the default configuration's)", loopDev, st.Mode().Perm())
	}
	var devs []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Stats struct {
			Opens        uint64 `json:"opens"`
			BytesWritten uint64 `json:"bytes_written"`
			BytesRead    uint64 `json:"bytes_read"`
		} `json:"stats"`
	}
	ctl(t, "devices", &devs)
	if len(devs) != 1 || devs[0].State != "running" || devs[0].Stats.Opens < 1 || devs[0].Stats.BytesWritten < uint64(len(msg)) ||
		devs[0].Stats.BytesRead < uint64(len(msg)) {
		t.Errorf("devices: %+v", devs)
	}
	metrics := mustRun(t, bin, "ctl", "metrics")
	if !strings.Contains(metrics, `fusegate_device_bytes_total{device="fusegate-loop",direction="write"}`) ||
		!strings.Contains(metrics, `fusegate_device_opens_total{device="fusegate-loop"}`) {
		t.Errorf("metrics lack the device's counters:\n%s", metrics)
	}
}

// Debian 12's 6.1 has no FUSE passthrough: passthrough=auto falls back to
// serving reads and writes in the daemon, and says so.
func TestSystemdPassthroughFallback(t *testing.T) {
	ensureRunning(t)
	var ms []struct {
		Name        string `json:"name"`
		State       string `json:"state"`
		Protocol    string `json:"protocol"`
		Passthrough struct {
			Mode     string `json:"mode"`
			Active   bool   `json:"active"`
			Fallback string `json:"fallback"`
		} `json:"passthrough"`
	}
	ctl(t, "mounts", &ms)
	if len(ms) != 1 || ms[0].State != "running" || ms[0].Passthrough.Mode != "auto" || ms[0].Passthrough.Active ||
		!strings.Contains(ms[0].Passthrough.Fallback, "kernel") {
		t.Errorf("mounts: %+v", ms)
	}
	t.Logf("negotiated protocol %s, passthrough: %s", ms[0].Protocol, ms[0].Passthrough.Fallback)
	// Reads and writes work through the daemon.
	data := []byte("written through the mount")
	if err := os.WriteFile(media+"/DCIM-check.txt", data, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(lower + "/DCIM-check.txt")
	if got, err := os.ReadFile(lower + "/DCIM-check.txt"); err != nil || !bytes.Equal(got, data) {
		t.Errorf("lower file: %q, %v", got, err)
	}
	if got, err := os.ReadFile(media + "/DCIM-check.txt"); err != nil || !bytes.Equal(got, data) {
		t.Errorf("read through the mount: %q, %v", got, err)
	}
}

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

// writeConfig writes the default configuration with edits applied
// (old, new pairs).
func writeConfig(t *testing.T, edits ...string) {
	t.Helper()
	text := mustRun(t, bin, "config", "default") + "\n"
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(text, edits[i]) {
			t.Fatalf("default configuration has no %q", edits[i])
		}
		text = strings.Replace(text, edits[i], edits[i+1], 1)
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func restoreConfig(t *testing.T) {
	writeConfig(t)
	os.RemoveAll(dropIn)
	run(t, "systemctl", "daemon-reload")
}

// systemctl reload changes the policy on the live mount; an invalid
// configuration makes it fail and changes nothing.
func TestSystemdReloadPolicy(t *testing.T) {
	ensureRunning(t)
	t.Cleanup(func() {
		restoreConfig(t)
		run(t, "systemctl", "reload", "fusegate.service")
	})
	before, _, _ := fusedev.FindMount(media)
	pid := prop(t, "fusegate.service", "MainPID")
	os.MkdirAll(lower+"/shared", 0o755)
	os.WriteFile(lower+"/shared/a.txt", []byte("shared data\n"), 0o644)
	pol := confDir + "/policy.toml"
	os.WriteFile(pol, []byte(openPolicy), 0o644)
	writeConfig(t, `policy = "default"`, fmt.Sprintf("policy = %q", pol))
	mustRun(t, "systemctl", "reload", "fusegate.service")
	if out, err := asUser(t, 10001, "cat", media+"/shared/a.txt"); err != nil || out != "shared data" {
		t.Fatalf("uid 10001 under the open policy: %q, %v", out, err)
	}

	os.WriteFile(pol, []byte(closedPolicy), 0o644)
	mustRun(t, "systemctl", "reload", "fusegate.service")
	if out, err := asUser(t, 10001, "cat", media+"/shared/a.txt"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("uid 10001 right after the reload to the closed policy: %q, %v; want Permission denied", out, err)
	}
	if out, err := run(t, "cat", media+"/shared/a.txt"); err != nil {
		t.Errorf("root (trusted) under the closed policy: %q, %v", out, err)
	}

	// An invalid configuration: systemctl reload fails, nothing changes.
	good, _ := os.ReadFile(conf)
	os.WriteFile(conf, append(append([]byte(nil), good...), []byte("\n[[mount]]\nname = \"broken\"\nsource = \"/nonexistent/x\"\nmountpoint = \"/run/fusegate/broken\"\n")...), 0o644)
	if out, err := run(t, "systemctl", "reload", "fusegate.service"); err == nil {
		t.Errorf("systemctl reload of an invalid configuration succeeded: %s", out)
	}
	if got := active(t, "fusegate.service"); got != "active" {
		t.Errorf("fusegate.service is %q after a rejected reload", got)
	}
	var st struct {
		LastReload struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"last_reload"`
	}
	ctl(t, "status", &st)
	if st.LastReload.OK || !strings.Contains(st.LastReload.Error, "/nonexistent/x does not exist") {
		t.Errorf("last reload: %+v", st.LastReload)
	}
	if out, err := asUser(t, 10001, "cat", media+"/shared/a.txt"); err == nil {
		t.Errorf("after the rejected reload uid 10001 reads %q: the policy changed", out)
	}
	// Same daemon, same mount all along: only the policy changed.
	if got := prop(t, "fusegate.service", "MainPID"); got != pid {
		t.Errorf("MainPID %s, was %s", got, pid)
	}
	if after, _, _ := fusedev.FindMount(media); after.ConnID() != before.ConnID() {
		t.Errorf("the mount was replaced (connection %d, was %d)", after.ConnID(), before.ConnID())
	}
}

// A wedged serving loop stops the watchdog pings; systemd kills the daemon
// and restarts it (the fd store kept). On 6.1, which cannot resend the
// requests the killed daemon read (the stat below), the new one does not
// resume what it left: it ends that connection, which fails the stuck
// stat, and mounts afresh (docs/RESTART.md).
func TestSystemdWatchdog(t *testing.T) {
	ensureRunning(t)
	t.Cleanup(func() {
		restoreConfig(t)
		run(t, "systemctl", "restart", "fusegate.service")
	})
	writeConfig(t, "version = 1\n", "version = 1\n\n[daemon]\nwatchdog_stall = \"1s\"\n")
	os.MkdirAll(dropIn, 0o755)
	os.WriteFile(filepath.Join(dropIn, "test-wedge.conf"), []byte("[Service]\nWatchdogSec=3s\nEnvironment=FUSEGATE_TEST_ONLY_WEDGE=1\n"), 0o644)
	mustRun(t, "systemctl", "daemon-reload")
	mustRun(t, "systemctl", "restart", "fusegate.service")
	pid := prop(t, "fusegate.service", "MainPID")
	restarts, _ := strconv.Atoi(prop(t, "fusegate.service", "NRestarts"))
	// Healthy: pinged, not killed, for a few watchdog intervals.
	time.Sleep(4 * time.Second)
	if got := prop(t, "fusegate.service", "MainPID"); got != pid {
		t.Fatalf("a healthy daemon was restarted (MainPID %s, was %s)", got, pid)
	}

	mustRun(t, "systemctl", "kill", "--kill-who=main", "--signal=SIGUSR2", "fusegate.service")
	time.Sleep(200 * time.Millisecond)
	stuck := exec.Command("stat", media+"/wedge-me")
	stuck.Start() // hangs in the wedged daemon until its connection ends
	stuckDone := make(chan error, 1)
	go func() { stuckDone <- stuck.Wait() }()
	t.Cleanup(func() {
		stuck.Process.Kill()
		select {
		case <-stuckDone:
		case <-time.After(10 * time.Second): // in D state: leave it
		}
	})

	waitUntil(t, "the watchdog kills and systemd restarts the wedged daemon", 60*time.Second, func() bool {
		n, _ := strconv.Atoi(prop(t, "fusegate.service", "NRestarts"))
		return n > restarts && active(t, "fusegate.service") == "active"
	})
	if got := prop(t, "fusegate.service", "MainPID"); got == pid {
		t.Errorf("MainPID unchanged (%s)", got)
	}
	out := mustRun(t, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "fusegate.service", "--since", "-90s")
	for _, want := range []string{"not petting systemd's watchdog", "Watchdog timeout", "ended without handing over", "msg=mounted"} {
		if !strings.Contains(out, want) {
			t.Errorf("journal lacks %q:\n%s", want, out)
		}
	}
	if err := live(media); err != nil {
		t.Errorf("after the restart: %v", err)
	}
	select {
	case err := <-stuckDone:
		if err == nil {
			t.Error("the stat the wedged daemon never answered succeeded")
		}
		stuckDone <- err // for the cleanup
	case <-time.After(20 * time.Second):
		t.Error("the stat the wedged daemon never answered still waits after the restart")
	}
}

// systemctl stop: unmounted, device removed, a clean result.
func TestSystemdStop(t *testing.T) {
	ensureRunning(t)
	mustRun(t, "systemctl", "stop", "fusegate.service")
	if _, ok, _ := fusedev.FindMount(media); ok {
		t.Errorf("%s still mounted after stop", media)
	}
	if _, err := os.Stat(loopDev); err == nil {
		t.Errorf("%s still exists after stop", loopDev)
	}
	if got := prop(t, "fusegate.service", "Result"); got != "success" {
		t.Errorf("Result=%s", got)
	}
	out := mustRun(t, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "fusegate.service", "--since", "-30s")
	if !strings.Contains(out, "stopped: devices removed, mounts unmounted") {
		t.Errorf("journal:\n%s", out)
	}
}

// The README's run command and the commands it shows next, by hand (the
// units stopped): the embedded default, its mount and device, the policy
// at work, the status.
func TestSystemdReadmeByHand(t *testing.T) {
	install(t)
	run(t, "systemctl", "stop", "fusegate.service", "fusegate.socket")
	t.Cleanup(func() { run(t, "systemctl", "start", "fusegate.socket", "fusegate.service") })

	out := &syncBuffer{}
	d := exec.Command(bin, "serve")
	d.Stdout, d.Stderr = out, out
	d.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			d.Process.Kill()
			<-exited
		}
	})
	waitUntil(t, "fusegate serve prints where its mount and device are", 60*time.Second, func() bool {
		return strings.Contains(out.String(), "control socket")
	})
	printed := out.String()
	for _, want := range []string{lower + " -> " + media, "policy android-scoped-storage", loopDev, sock} {
		if !strings.Contains(printed, want) {
			t.Errorf("start-up output lacks %q:\n%s", want, printed)
		}
	}

	// What the README shows next.
	ctlOut := mustRun(t, bin, "ctl", "status")
	if !strings.Contains(ctlOut, `"state": "running"`) || !strings.Contains(ctlOut, "1/1 mounts, 1/1 devices serving") {
		t.Errorf("ctl status:\n%s", ctlOut)
	}
	mustRun(t, "ls", "-la", media)
	mustRun(t, "mkdir", "-p", media+"/Android/data/uid10001", media+"/Android/data/uid10002")
	mustRun(t, "chown", "10001:10001", media+"/Android/data/uid10001")
	mustRun(t, "chown", "10002:10002", media+"/Android/data/uid10002")
	mustRun(t, "sh", "-c", "echo 'only for app 10001' > "+media+"/Android/data/uid10001/note.txt")
	if got, err := asUser(t, 10001, "cat", media+"/Android/data/uid10001/note.txt"); err != nil || got != "only for app 10001" {
		t.Errorf("the owning app reads: %q, %v", got, err)
	}
	if got, err := asUser(t, 10002, "cat", media+"/Android/data/uid10001/note.txt"); err == nil || !strings.Contains(got, "No such file or directory") {
		t.Errorf("another app reads: %q, %v; want No such file or directory", got, err)
	}
	if got, err := asUser(t, 10002, "ls", media+"/Android/data/uid10001"); err == nil || !strings.Contains(got, "No such file or directory") {
		t.Errorf("another app lists: %q, %v; want No such file or directory", got, err)
	}
	if got, err := asUser(t, 10002, "mkdir", media+"/Android/data/uid10002/cache"); err != nil {
		t.Errorf("an app makes a directory in its own space: %q, %v", got, err)
	}
	metrics := mustRun(t, bin, "ctl", "metrics")
	if !strings.Contains(metrics, `fusegate_policy_denials_total{mount="media",rule="rule[2] app-data"}`) {
		t.Errorf("metrics lack the app-data denials:\n%s", metrics)
	}

	d.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("fusegate serve after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("fusegate serve did not stop on SIGTERM\n%s", out.String())
	}
	if _, ok, _ := fusedev.FindMount(media); ok {
		t.Errorf("%s still mounted", media)
	}
	os.RemoveAll(lower + "/Android")
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
