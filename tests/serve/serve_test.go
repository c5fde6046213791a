// Package serve tests `fusegate serve` without systemd: the built binary
// runs as a child of the test (tests/harness), reports to a fake notify
// socket the test listens on, and is driven through its control socket and
// signals; file operations on its mounts run in other child processes,
// under app uids. CUSE needs the qemu guest (tests/systemd).
package serve

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/fusegate/fusegate/tests/harness"
)

// The default policy, with its built-in Android layout: trusted callers
// (root, uids below 10000) may do anything; app uids see only their own
// Android/data/<pkg>.
func TestServeLifecycle(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower/Android/data/uid10001", "lower/Android/data/uid10002", "mp")
	os.Chown(s.path("lower/Android/data/uid10001"), 10001, 10001)
	os.Chown(s.path("lower/Android/data/uid10002"), 10002, 10002)
	s.write("lower/Android/data/uid10002/secret.txt", "app2's")
	s.write("lower/DCIM/shared.txt", "for everyone")
	s.write(filepath.Base(s.cfg), s.control("")+s.mountSection("media", "lower", "mp", "default"))

	d, n := s.start([]string{"mp"})
	// READY=1 came only once the mount answered: it is listed and live now.
	if !harness.Mounted(t, s.path("mp")) {
		t.Fatalf("READY=1 before %s was mounted", s.path("mp"))
	}
	ready := n.waitFor(0, "READY=1", time.Second)
	if msg := n.all()[ready]; !strings.Contains(msg, "STATUS=1/1 mounts, 0/0 devices serving") {
		t.Errorf("READY message %q lacks the one-line status", msg)
	}
	if out := d.Stdout(); !strings.Contains(out, s.path("lower")+" -> "+s.path("mp")) || !strings.Contains(out, s.sock) {
		t.Errorf("start-up output does not say where the mount and socket are:\n%s", out)
	}

	// The policy at work, for callers other than the daemon.
	if got, err := readAs(t, app1, s.path("mp/DCIM/shared.txt")); err != nil || got != "for everyone" {
		t.Errorf("app1 reads shared media: %q, %v", got, err)
	}
	if _, err := readAs(t, app1, s.path("mp/Android/data/uid10002/secret.txt")); errnoOf(err) != syscall.ENOENT {
		t.Errorf("app1 reads app2's private file: %v, want ENOENT", err)
	}
	if got, err := readAs(t, app2, s.path("mp/Android/data/uid10002/secret.txt")); err != nil || got != "app2's" {
		t.Errorf("app2 reads its own file: %q, %v", got, err)
	}
	if err := harness.NewCaller(t, app1).WriteFile(s.path("mp/Android/data/uid10001/mine.txt"), []byte("x"), 0o600); err != nil {
		t.Errorf("app1 writes in its own directory: %v", err)
	}
	if err := harness.NewCaller(t, app1).Mkdir(s.path("mp/NotStandard"), 0o755); errnoOf(err) != syscall.EACCES {
		t.Errorf("app1 makes a top-level directory: %v, want EACCES", err)
	}

	// The control socket, read-only methods, for anyone who can reach it.
	var st status
	s.ctlJSON("status", &st)
	if st.State != "running" || st.PID != d.Pid() || len(st.Mounts) != 1 || !strings.Contains(st.Mounts[0], "media: running") {
		t.Errorf("status: %+v", st)
	}
	if r := s.ctl(app1, "status"); r.Failed() {
		t.Errorf("status as an app uid: %v", r)
	}
	var ms []mountStatus
	s.ctlJSON("mounts", &ms)
	if len(ms) != 1 || ms[0].Name != "media" || ms[0].State != "running" || ms[0].PolicyName != "android-scoped-storage" ||
		ms[0].Mountpoint != s.path("mp") || ms[0].Protocol == "" || ms[0].Requests == 0 || ms[0].Denials < 2 {
		t.Errorf("mounts: %+v", ms)
	}
	var devs []map[string]any
	s.ctlJSON("devices", &devs)
	if len(devs) != 0 {
		t.Errorf("devices: %v, want none", devs)
	}

	// Metrics parse as Prometheus text and count what happened.
	r := s.ctl(app1, "metrics").MustSucceed(t)
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(r.Stdout)))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, r.Stdout)
	}
	for _, name := range []string{"fusegate_requests_total", "fusegate_request_duration_seconds", "fusegate_policy_denials_total",
		"fusegate_policy_decisions_total", "fusegate_passthrough_opens_total", "fusegate_mount_up", "fusegate_info"} {
		if fams[name] == nil {
			t.Errorf("metrics lack %s", name)
		}
	}
	denied := 0.0
	for _, m := range fams["fusegate_policy_denials_total"].GetMetric() {
		denied += m.GetCounter().GetValue()
	}
	if denied < 2 {
		t.Errorf("fusegate_policy_denials_total sums to %v, want at least 2", denied)
	}
	opens := 0.0
	for _, name := range []string{"fusegate_passthrough_opens_total", "fusegate_daemon_io_opens_total"} {
		for _, m := range fams[name].GetMetric() {
			opens += m.GetCounter().GetValue()
		}
	}
	if opens < 2 {
		t.Errorf("passthrough + daemon opens: %v, want at least 2", opens)
	}

	// SIGTERM: STOPPING=1, unmounted, the socket it made removed, exit 0.
	from := n.len()
	if st := d.Stop(syscall.SIGTERM); st.ExitCode() != 0 {
		t.Fatalf("exit after SIGTERM: %v\n%s", st, d.Logs())
	}
	n.waitFor(from, "STOPPING=1", time.Second)
	if harness.Mounted(t, s.path("mp")) {
		t.Error("still mounted after SIGTERM")
	}
	if _, err := os.Lstat(s.sock); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
	if left := d.Leftovers(); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
}

// A busy mount (a process has its working directory there) is detached at
// SIGTERM and the daemon still exits within its shutdown grace.
func TestServeStopBusy(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower/dir", "mp")
	s.write(filepath.Base(s.cfg), s.control("")+s.mountSection("m", "lower", "mp", "none"))
	d, _ := s.start([]string{"mp"})
	// A process with its working directory inside the mount keeps it busy.
	busy := exec.Command("sleep", "60")
	busy.Dir = s.path("mp/dir")
	busy.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Process.Kill(); busy.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for !hasCwdIn(s.path("mp/dir")) {
		if time.Now().After(deadline) {
			t.Fatal("the busy process did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if st := d.Stop(syscall.SIGTERM); st.ExitCode() != 0 {
		t.Fatalf("exit after SIGTERM on a busy mount: %v\n%s", st, d.Logs())
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("stopping took %v with shutdown_grace 1s", took)
	}
	if harness.Mounted(t, s.path("mp")) {
		t.Error("still mounted after SIGTERM")
	}
	if !strings.Contains(d.Logs(), "detaching it lazily") {
		t.Errorf("no lazy detach logged:\n%s", d.Logs())
	}
}

// hasCwdIn reports whether some process has its working directory at dir
// (read from /proc without touching dir).
func hasCwdIn(dir string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if l, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && l == dir {
			return true
		}
	}
	return false
}
