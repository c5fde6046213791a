package cusevm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/tests/vm/vmenv"
)

// roleEnv makes the test binary play a role in a child process instead of
// running tests: see TestMain.
const roleEnv = "FUSEGATE_CUSE_ROLE"

func TestMain(m *testing.M) {
	role := os.Getenv(roleEnv)
	if role == "" {
		os.Exit(m.Run())
	}
	if err := playRole(role, os.Getenv("FUSEGATE_CUSE_ARG")); err != nil {
		fmt.Fprintf(os.Stderr, "role %s: %v\n", role, err)
		if errno, ok := err.(syscall.Errno); ok {
			os.Exit(100 + int(errno))
		}
		os.Exit(1)
	}
	os.Exit(0)
}

// child runs the test binary in a role; arg is the role's argument.
func child(t *testing.T, role, arg string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"="+role, "FUSEGATE_CUSE_ARG="+arg)
	cmd.Stderr = &logWriter{t: t, prefix: role + ": "}
	return cmd
}

// fusegate returns the fusegate binary the harness put in the payload.
func fusegate(t *testing.T) string {
	t.Helper()
	if vmenv.Shape() == "" {
		t.Skip(`runs inside the minimal qemu guest (this kernel has no CUSE): CGO_ENABLED=0 go test -exec "$PWD/tests/cuse/exec-vm" ./tests/cuse/`)
	}
	vmenv.Require(t, vmenv.Minimal)
	p := vmenv.Payload("fusegate")
	if p == "" {
		t.Fatal("no fusegate in the guest's payload: run these tests with tests/cuse/exec-vm, which builds it")
	}
	return p
}

// logWriter sends a child's output to the test log, line by line.
type logWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// device is a running `fusegate device` child.
type device struct {
	t    *testing.T
	name string
	path string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process exited
	err  error         // its exit, once done is closed

	mu    sync.Mutex
	lines []map[string]any // guarded by mu; its JSON log lines
	fresh *sync.Cond       // signalled on each line
}

// startDevice starts `fusegate device --name NAME ARGS...` and waits until it
// logs "device ready".
func startDevice(t *testing.T, name string, args ...string) *device {
	t.Helper()
	d, err := launchDevice(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.waitLog("device ready", 15*time.Second); err != nil {
		t.Fatalf("device %s: %v", name, err)
	}
	return d
}

// launchDevice starts the process without waiting for it to be ready.
func launchDevice(t *testing.T, name string, args ...string) (*device, error) {
	t.Helper()
	bin := fusegate(t)
	cmd := exec.Command(bin, append([]string{"device", "--log-format", "json", "--name", name}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	d := &device{t: t, name: name, path: "/dev/" + name, cmd: cmd, done: make(chan struct{})}
	d.fresh = sync.NewCond(&d.mu)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go d.readLog(stderr)
	t.Cleanup(func() {
		select {
		case <-d.done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			t.Errorf("device %s did not exit within 10s of SIGTERM; killing it", name)
			cmd.Process.Kill()
			<-d.done
		}
	})
	return d, nil
}

func (d *device) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		d.t.Log("fusegate: " + line)
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			m = map[string]any{"msg": line}
		}
		d.mu.Lock()
		d.lines = append(d.lines, m)
		d.fresh.Broadcast()
		d.mu.Unlock()
	}
	d.err = d.cmd.Wait()
	close(d.done)
	d.mu.Lock()
	d.fresh.Broadcast()
	d.mu.Unlock()
}

// waitLog waits for a log line with the given msg after the first skip lines.
func (d *device) waitLogAfter(skip int, msg string, timeout time.Duration) (map[string]any, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		d.mu.Lock()
		d.fresh.Broadcast()
		d.mu.Unlock()
	})
	defer timer.Stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := skip; ; {
		for ; i < len(d.lines); i++ {
			if d.lines[i]["msg"] == msg {
				return d.lines[i], nil
			}
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("exited (%v) without logging %q", d.err, msg)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %q log line within %v", msg, timeout)
		}
		d.fresh.Wait()
	}
}

func (d *device) waitLog(msg string, timeout time.Duration) (map[string]any, error) {
	return d.waitLogAfter(0, msg, timeout)
}

// stats asks the device for its counters (SIGUSR1) and returns them.
func (d *device) stats() map[string]float64 {
	d.t.Helper()
	d.mu.Lock()
	n := len(d.lines)
	d.mu.Unlock()
	if err := d.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		d.t.Fatal(err)
	}
	line, err := d.waitLogAfter(n, "device stats", 10*time.Second)
	if err != nil {
		d.t.Fatalf("device %s stats: %v", d.name, err)
	}
	st := map[string]float64{}
	for k, v := range line {
		if f, ok := v.(float64); ok {
			st[k] = f
		}
	}
	return st
}

// stop sends SIGTERM and waits for the process; it returns the exit status.
func (d *device) stop() error {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return d.err
	case <-time.After(10 * time.Second):
		d.t.Fatalf("device %s did not exit within 10s of SIGTERM", d.name)
		return nil
	}
}

// wait waits for the process to exit by itself.
func (d *device) wait(timeout time.Duration) error {
	d.t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		d.t.Fatalf("device %s still running after %v", d.name, timeout)
		return nil
	}
}

// output returns everything the device logged, one line each.
func (d *device) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var b strings.Builder
	for _, l := range d.lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// openDev opens the node with raw syscalls (no Go netpoller), closed at cleanup.
func openDev(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// writeAll writes b to fd.
func writeAll(t *testing.T, fd int, b []byte) {
	t.Helper()
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		b = b[n:]
	}
}

// sysDev reads the device number the kernel registered for name.
func sysDev(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/class/cuse", strings.ReplaceAll(name, "/", "!"), "dev"))
	if err != nil {
		t.Fatalf("sysfs entry of %s: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

// within runs f in a goroutine and fails the test if it takes longer than d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %v", what, d)
	}
}
