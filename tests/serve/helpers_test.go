package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// An app uid under the default policy (>= 10000: not trusted) and another.
var (
	app1 = harness.Cred{UID: 10001, GID: 10001}
	app2 = harness.Cred{UID: 10002, GID: 10002}
)

// notifySocket is a fake systemd notify socket: a unixgram socket the
// daemon sends READY=1, STATUS=, WATCHDOG=1... to.
type notifySocket struct {
	t    *testing.T
	path string
	conn *net.UnixConn

	mu   sync.Mutex
	msgs []string // guarded by mu; every datagram, in order
	cond *sync.Cond
}

func newNotifySocket(t *testing.T, dir string) *notifySocket {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{t: t, path: path, conn: conn}
	n.cond = sync.NewCond(&n.mu)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.cond.Broadcast()
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// env is what makes the daemon talk to this socket.
func (n *notifySocket) env() string { return "NOTIFY_SOCKET=" + n.path }

// count returns how many messages contain substr.
func (n *notifySocket) count(substr string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if strings.Contains(m, substr) {
			c++
		}
	}
	return c
}

// all returns every message so far.
func (n *notifySocket) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// waitFor waits until the i-th or a later message (counting from 0)
// contains substr, and returns the index of the first such message.
func (n *notifySocket) waitFor(from int, substr string, timeout time.Duration) int {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n.mu.Lock()
		for i := from; i < len(n.msgs); i++ {
			if strings.Contains(n.msgs[i], substr) {
				n.mu.Unlock()
				return i
			}
		}
		n.mu.Unlock()
		if time.Now().After(deadline) {
			n.t.Fatalf("no %q from the daemon within %v (after message %d); got %q", substr, timeout, from, n.all())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// len returns the number of messages so far.
func (n *notifySocket) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.msgs)
}

// setup is a test's directory layout: a base directory any uid can reach,
// holding the lower directories, the mount points, the configuration and the
// control socket.
type setup struct {
	t    *testing.T
	dir  string
	sock string
	cfg  string
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	harness.RequireRoot(t)
	harness.RequireFUSE(t)
	dir, err := os.MkdirTemp("", "fusegate-serve-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &setup{t: t, dir: dir, sock: filepath.Join(dir, "control.sock"), cfg: filepath.Join(dir, "fusegate.toml")}
}

// path returns a path in the setup's directory.
func (s *setup) path(name string) string { return filepath.Join(s.dir, name) }

// mkdirs makes directories (mode 0755) in the setup's directory.
func (s *setup) mkdirs(names ...string) {
	s.t.Helper()
	for _, n := range names {
		if err := os.MkdirAll(s.path(n), 0o755); err != nil {
			s.t.Fatal(err)
		}
	}
}

// write writes a file in the setup's directory.
func (s *setup) write(name, text string) string {
	s.t.Helper()
	p := s.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// control is the [control] section every test configuration starts with:
// the socket in the setup's directory, reachable by any uid (so tests can
// check what other uids may and may not do), and short timings.
func (s *setup) control(extra string) string {
	return fmt.Sprintf("version = 1\n\n[control]\nsocket = %q\nmode = \"0666\"\n%s\n[daemon]\nwatchdog_stall = \"1s\"\nshutdown_grace = \"1s\"\n", s.sock, extra)
}

// mountSection is one [[mount]] of the setup's directories.
func (s *setup) mountSection(name, source, mp, policy string) string {
	return fmt.Sprintf("\n[[mount]]\nname = %q\nsource = %q\nmountpoint = %q\npolicy = %q\noptions = [\"allow_other\"]\n",
		name, s.path(source), s.path(mp), policy)
}

// start starts `fusegate serve --config` on the setup's configuration with
// a fake notify socket and waits for READY=1.
func (s *setup) start(mountpoints []string, env ...string) (*harness.Daemon, *notifySocket) {
	s.t.Helper()
	n := newNotifySocket(s.t, s.dir)
	var mps []string
	for _, mp := range mountpoints {
		mps = append(mps, s.path(mp))
	}
	d := harness.StartDaemon(s.t, harness.DaemonOptions{Mountpoints: mps, Env: append([]string{n.env()}, env...)},
		"serve", "--config", s.cfg)
	s.waitReady(d, n, 0)
	return d, n
}

// waitReady waits for a READY=1 at or after message from, failing if the
// daemon exits first.
func (s *setup) waitReady(d *harness.Daemon, n *notifySocket, from int) int {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n.mu.Lock()
		for i := from; i < len(n.msgs); i++ {
			if strings.Contains(n.msgs[i], "READY=1") {
				n.mu.Unlock()
				return i
			}
		}
		n.mu.Unlock()
		if d.Exited() {
			s.t.Fatalf("fusegate serve exited before READY=1; output:\n%s", d.Logs())
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no READY=1 within a minute; messages %q; output:\n%s", n.all(), d.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ctl runs `fusegate ctl --socket S method` as cred.
func (s *setup) ctl(cred harness.Cred, method string) harness.Result {
	s.t.Helper()
	return harness.Run(s.t, harness.Cmd{Argv: []string{harness.Bin(s.t), "ctl", "--socket", s.sock, method}, Cred: &cred})
}

// ctlJSON runs ctl as root, requires success and decodes its output.
func (s *setup) ctlJSON(method string, v any) {
	s.t.Helper()
	r := s.ctl(harness.Root(), method)
	r.MustSucceed(s.t)
	if err := json.Unmarshal(r.Stdout, v); err != nil {
		s.t.Fatalf("ctl %s: %v\n%s", method, err, r.Stdout)
	}
}

// status is what the tests read of `ctl status`.
type status struct {
	PID           int      `json:"pid"`
	State         string   `json:"state"`
	Summary       string   `json:"summary"`
	Config        string   `json:"config"`
	Mounts        []string `json:"mounts"`
	Devices       []string `json:"devices"`
	ReloadsOK     uint64   `json:"reloads_ok"`
	ReloadsFailed uint64   `json:"reloads_failed"`
	LastReload    *struct {
		OK              bool     `json:"ok"`
		Error           string   `json:"error"`
		Trigger         string   `json:"trigger"`
		PoliciesChanged []string `json:"policies_changed"`
		Started         []string `json:"started"`
		Stopped         []string `json:"stopped"`
		Replaced        []string `json:"replaced"`
		Unchanged       []string `json:"unchanged"`
	} `json:"last_reload"`
}

type mountStatus struct {
	Name        string `json:"name"`
	Source      string `json:"source"`
	Mountpoint  string `json:"mountpoint"`
	State       string `json:"state"`
	Error       string `json:"error"`
	Policy      string `json:"policy"`
	PolicyName  string `json:"policy_name"`
	Protocol    string `json:"protocol"`
	Requests    uint64 `json:"requests"`
	Denials     uint64 `json:"policy_denials"`
	Passthrough struct {
		Mode     string `json:"mode"`
		Active   bool   `json:"active"`
		Fallback string `json:"fallback"`
	} `json:"passthrough"`
}

// readAs reads a file as cred and returns its content or the errno.
func readAs(t *testing.T, cred harness.Cred, path string) (string, error) {
	t.Helper()
	data, err := harness.NewCaller(t, cred).ReadFile(path, 0)
	return string(data), err
}

// errnoOf returns the errno of a Caller error (0 for nil).
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	if err != nil {
		return syscall.Errno(^uintptr(0))
	}
	return 0
}
