package harness

import (
	"bytes"
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
)

// DaemonOptions say how StartDaemon runs fusegate. The zero value runs it
// as the test process, in "/", with the test process's environment.
type DaemonOptions struct {
	Cred *Cred    // nil: the test process's own identity
	Env  []string // added to the test process's environment
	Dir  string   // working directory; default "/"
	// Mountpoints the daemon will serve. At cleanup any of them still
	// mounted is detached (lazy unmount), and Daemon.WaitMounted accepts
	// only these.
	Mountpoints []string
	// StopTimeout bounds Stop's wait for the exit (default 30 s).
	StopTimeout time.Duration
}

// Daemon is a fusegate process started by StartDaemon, with its output
// captured. It runs in its own process group and dies with the test
// process. Its methods may be called from any goroutine.
type Daemon struct {
	t    testing.TB
	args []string
	cred Cred
	opts DaemonOptions
	cmd  *exec.Cmd
	out  output

	done  chan struct{}    // closed when the process has exited
	state *os.ProcessState // set before done is closed
	err   error            // Wait's error, set before done is closed
}

// StartDaemon starts fusegate with args (for example "mount", "--demo",
// mp) and returns at once. At the end of the test a daemon still running is
// killed with SIGKILL (with its process group), leftover mounts are
// detached, and, if the test failed, its output is logged.
func StartDaemon(t testing.TB, opts DaemonOptions, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{t: t, args: args, opts: opts, done: make(chan struct{}), cred: Self()}
	if opts.Cred != nil {
		d.cred = *opts.Cred
	}
	d.opts.Mountpoints = nil // absolute copies
	for _, mp := range opts.Mountpoints {
		abs, err := filepath.Abs(mp)
		if err != nil {
			t.Fatal(err)
		}
		d.opts.Mountpoints = append(d.opts.Mountpoints, abs)
	}
	if d.opts.StopTimeout <= 0 {
		d.opts.StopTimeout = 30 * time.Second
	}
	cmd := exec.Command(Bin(t), args...)
	cmd.Dir = opts.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Env = append(append(os.Environ(), noRaceExitSleep()), opts.Env...)
	cmd.Stdout = stream{&d.out, &d.out.stdout}
	cmd.Stderr = stream{&d.out, &d.out.stderr}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: sysCred(t, opts.Cred),
	}
	// A child the daemon leaves behind may hold the output pipes open.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fusegate %q: %v", args, err)
	}
	d.cmd = cmd
	go func() {
		d.err = cmd.Wait()
		d.state = cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(d.cleanup)
	return d
}

func (d *Daemon) cleanup() {
	t := d.t
	if !d.Exited() {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		if _, err := d.Wait(10 * time.Second); err != nil {
			t.Errorf("harness: fusegate %q: %v", d.args, err)
		}
	}
	if left := d.Leftovers(); len(left) > 0 {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	}
	for _, mp := range d.opts.Mountpoints {
		if _, ok, _ := fusedev.FindMount(mp); ok {
			if err := fusedev.Unmount(mp, fusedev.UnmountOptions{Lazy: true}); err != nil {
				t.Errorf("harness: cannot detach the leftover mount %s: %v", mp, err)
			}
		}
	}
	if t.Failed() {
		t.Logf("fusegate %q as %v (%s); its output:\n%s", d.args, d.cred, d.describeState(), d.Logs())
	}
}

func (d *Daemon) describeState() string {
	if !d.Exited() {
		return "running"
	}
	return d.state.String()
}

// Pid returns the daemon's process id (also its process group id).
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Cred returns the identity the daemon runs with.
func (d *Daemon) Cred() Cred { return d.cred }

// Signal sends sig to the daemon process (not its group).
func (d *Daemon) Signal(sig syscall.Signal) error {
	if d.Exited() {
		return os.ErrProcessDone
	}
	return syscall.Kill(d.cmd.Process.Pid, sig)
}

// Done is closed when the daemon has exited.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Exited reports whether the daemon has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the daemon to exit and returns how it ended.
// It returns an error only on timeout; a non-zero exit is in the state.
func (d *Daemon) Wait(timeout time.Duration) (*os.ProcessState, error) {
	select {
	case <-d.done:
		return d.state, nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("still running after %v", timeout)
	}
}

// Stop sends sig and waits (DaemonOptions.StopTimeout) for the exit. A
// daemon that does not exit in time fails the test and is killed. The
// state (never nil) says how it ended: ExitCode() 0 for a clean exit, -1
// for death by a signal.
func (d *Daemon) Stop(sig syscall.Signal) *os.ProcessState {
	d.t.Helper()
	if err := d.Signal(sig); err != nil && !d.Exited() {
		d.t.Fatalf("signal %v to fusegate: %v", sig, err)
	}
	st, err := d.Wait(d.opts.StopTimeout)
	if err != nil {
		d.t.Errorf("fusegate %q did not exit after %v: %v; killing it", d.args, sig, err)
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		if st, err = d.Wait(10 * time.Second); err != nil {
			d.t.Fatalf("fusegate %q survived SIGKILL: %v", d.args, err)
		}
	}
	return st
}

// Logs returns everything the daemon wrote so far, stdout and stderr
// interleaved in the order written.
func (d *Daemon) Logs() string { return d.out.get(&d.out.all) }

// Stdout returns what the daemon wrote on stdout so far.
func (d *Daemon) Stdout() string { return d.out.get(&d.out.stdout) }

// Stderr returns what the daemon wrote on stderr so far (its log).
func (d *Daemon) Stderr() string { return d.out.get(&d.out.stderr) }

// WaitLog waits up to timeout for the daemon's output to contain substr,
// failing the test if it does not or if the daemon exits first.
func (d *Daemon) WaitLog(substr string, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(d.Logs(), substr) {
		if d.Exited() && !strings.Contains(d.Logs(), substr) {
			d.t.Fatalf("fusegate exited (%v) before logging %q; output:\n%s", d.state, substr, d.Logs())
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("fusegate did not log %q within %v; output:\n%s", substr, timeout, d.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitMounted waits until the daemon's FUSE mount at mp (one of
// DaemonOptions.Mountpoints) is live: listed in /proc/self/mountinfo and
// answering statfs(2) and stat(2) from a child running as the daemon's user
// (see WaitMounted). It fails the
// test if the daemon exits first or the mount is not live within a minute.
func (d *Daemon) WaitMounted(mp string) fusedev.MountInfo {
	d.t.Helper()
	abs, err := filepath.Abs(mp)
	if err != nil {
		d.t.Fatal(err)
	}
	known := false
	for _, m := range d.opts.Mountpoints {
		known = known || m == abs
	}
	if !known {
		d.t.Fatalf("harness: %s is not in DaemonOptions.Mountpoints %q: it would not be cleaned up", abs, d.opts.Mountpoints)
	}
	return waitMounted(d.t, abs, d.cred, time.Minute, d)
}

// Leftovers returns the processes still in the daemon's process group
// other than the daemon itself: children it started and did not reap.
// After the daemon exited it should be empty.
func (d *Daemon) Leftovers() []int {
	pgid := d.cmd.Process.Pid
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pgid {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// output collects a child's stdout and stderr, separately and interleaved.
type output struct {
	mu                  sync.Mutex
	all, stdout, stderr bytes.Buffer // guarded by mu
}

func (o *output) get(b *bytes.Buffer) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return b.String()
}

// stream is one of output's streams as an io.Writer.
type stream struct {
	o   *output
	own *bytes.Buffer // guarded by o.mu
}

func (s stream) Write(p []byte) (int, error) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.own.Write(p)
	return s.o.all.Write(p)
}
