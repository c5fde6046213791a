package serve

import (
	"bufio"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/tests/harness"
)

// Malformed control requests get an error answer each; the daemon goes on.
func TestServeMalformedControl(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower", "mp")
	s.write(filepath.Base(s.cfg), s.control("")+s.mountSection("m", "lower", "mp", "none"))
	s.start([]string{"mp"})

	c, err := net.Dial("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	ask := func(line string) (ok bool, errText string) {
		t.Helper()
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			t.Fatalf("write %q: %v", line, err)
		}
		answer, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("answer to %q: %v", line, err)
		}
		var resp struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(answer), &resp); err != nil {
			t.Fatalf("answer to %q is not JSON: %q", line, answer)
		}
		return resp.OK, resp.Error
	}
	for _, tc := range []struct{ req, want string }{
		{`garbage`, "malformed request"},
		{`{"method": 42}`, "malformed request"},
		{`{"method": "status", "extra": true}`, "malformed request"},
		{`{"method": "shutdown"}`, `unknown method "shutdown" (have devices, metrics, mounts, reload, status)`},
		{`{}`, `unknown method ""`},
		{`{"method": "status", "params": {"verbose": true}}`, "takes no params"},
		{`{"method": "reload", "params": [1]}`, "takes no params"},
		{`[1, 2, 3]`, "malformed request"},
	} {
		ok, msg := ask(tc.req)
		if ok || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: ok=%v error %q, want %q", tc.req, ok, msg, tc.want)
		}
	}
	if ok, msg := ask(`{"method": "status"}`); !ok {
		t.Errorf("status on the same connection after bad requests: %s", msg)
	}
	// A line longer than the limit is answered and the connection closed.
	c.Write([]byte(strings.Repeat("x", 100<<10) + "\n"))
	if answer, _ := r.ReadString('\n'); !strings.Contains(answer, "request longer than") {
		t.Errorf("answer to a 100 KiB line: %q", answer)
	}
	// The daemon still answers, and its mount is still served.
	s.ctl(harness.Root(), "status").MustSucceed(t)
	if _, err := readAs(t, harness.Root(), s.path("mp")); err == nil || errnoOf(err) != syscall.EISDIR {
		// reading a directory: EISDIR proves the mount answers
		t.Errorf("reading the mount's root: %v, want EISDIR", err)
	}
	// ctl itself refuses unknown methods before connecting.
	if r := s.ctl(harness.Root(), "shutdown"); r.ExitCode != 2 {
		t.Errorf("ctl shutdown: %v, want exit 2", r)
	}
}

// The watchdog: WATCHDOG=1 flows while the serving loop makes progress and
// stops once it is wedged (the test-only switch) and a request is stuck in
// it; the status says why. SIGTERM still stops the daemon.
func TestServeWatchdog(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower", "mp")
	s.write(filepath.Base(s.cfg), strings.Replace(s.control(""), `watchdog_stall = "1s"`, `watchdog_stall = "300ms"`, 1)+
		s.mountSection("m", "lower", "mp", "none"))
	d, n := s.start([]string{"mp"}, "WATCHDOG_USEC=300000", "FUSEGATE_TEST_ONLY_WEDGE=1")
	if !strings.Contains(d.Logs(), "TEST ONLY") {
		t.Errorf("the test-only switch is not announced:\n%s", d.Logs())
	}
	from := n.len()
	n.waitFor(from, "WATCHDOG=1", 5*time.Second)
	n.waitFor(n.len(), "WATCHDOG=1", 5*time.Second)

	if err := d.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	d.WaitLog("serving loop wedged", 10*time.Second)
	// A request the wedged loop reads and never answers (from a child:
	// it hangs until the daemon is gone).
	stuck := exec.Command("stat", s.path("mp/never-answered"))
	stuck.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := stuck.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stuck.Process.Kill(); stuck.Wait() })
	d.WaitLog("not petting systemd's watchdog", 10*time.Second)
	i := n.waitFor(from, "STUCK", 5*time.Second)
	if msg := n.all()[i]; !strings.Contains(msg, "mount m: reader") {
		t.Errorf("status when stuck: %q", msg)
	}
	// No WATCHDOG=1 any more (give it three intervals).
	before := n.count("WATCHDOG=1")
	time.Sleep(time.Second)
	if after := n.count("WATCHDOG=1"); after != before {
		t.Errorf("%d WATCHDOG=1 sent while a serving loop is stuck", after-before)
	}
	var st status
	s.ctlJSON("status", &st)
	if !strings.Contains(st.Summary, "STUCK") {
		t.Errorf("status summary while stuck: %q", st.Summary)
	}
	if st := d.Stop(syscall.SIGTERM); st.ExitCode() != 0 {
		t.Errorf("exit after SIGTERM with a wedged loop: %v", st)
	}
}

// Without the test-only variable SIGUSR2 wedges nothing and does not end
// the daemon: it is ignored, with a warning.
func TestServeWedgeNeedsTheVariable(t *testing.T) {
	s := newSetup(t)
	s.mkdirs("lower", "mp")
	s.write(filepath.Base(s.cfg), s.control("")+s.mountSection("m", "lower", "mp", "none"))
	d, _ := s.start([]string{"mp"}, "FUSEGATE_TEST_ONLY_WEDGE=")
	if strings.Contains(d.Logs(), "TEST ONLY") {
		t.Errorf("test-only switch announced without the variable:\n%s", d.Logs())
	}
	d.Signal(syscall.SIGUSR2)
	d.WaitLog("SIGUSR2 ignored", 10*time.Second)
	for i := 0; i < 3; i++ {
		if _, err := readAs(t, app1, s.path("mp/nothing-"+string(rune('a'+i)))); errnoOf(err) != syscall.ENOENT {
			t.Errorf("lookup after SIGUSR2: %v, want ENOENT (served)", err)
		}
	}
	time.Sleep(1500 * time.Millisecond) // past watchdog_stall: nothing may be stuck
	var st status
	s.ctlJSON("status", &st)
	if strings.Contains(st.Summary, "STUCK") || strings.Contains(d.Logs(), "wedged") {
		t.Errorf("SIGUSR2 wedged a loop without the variable: %q\n%s", st.Summary, d.Logs())
	}
}
