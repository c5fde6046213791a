package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DefaultTimeout bounds a child started by Run, RunAs, Fusegate or a Caller
// when its Cmd sets none. Generous: this machine is small and shared.
const DefaultTimeout = 60 * time.Second

// Cmd is a command to run to completion in a child process.
type Cmd struct {
	Argv    []string
	Cred    *Cred         // nil: the test process's own identity
	Dir     string        // working directory; default "/" (reachable by any uid)
	Env     []string      // added to the test process's environment
	Stdin   []byte        // nil: /dev/null
	Timeout time.Duration // default DefaultTimeout; the child is killed then
}

// Result is what a finished child left.
type Result struct {
	Argv     []string
	Cred     *Cred
	Stdout   []byte
	Stderr   []byte
	ExitCode int   // -1 when killed by a signal or never started
	Err      error // nil when the child exited 0; else why not
	Duration time.Duration
}

// Failed reports whether the child did not exit 0.
func (r Result) Failed() bool { return r.Err != nil }

// String describes the run for a failure message: the command, how it
// ended and its output.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q", r.Argv)
	if r.Cred != nil {
		fmt.Fprintf(&b, " as %v", *r.Cred)
	}
	if r.Err != nil {
		fmt.Fprintf(&b, ": %v", r.Err)
	} else {
		b.WriteString(": exit 0")
	}
	if len(r.Stdout) > 0 {
		fmt.Fprintf(&b, "\n--- stdout\n%s", clip(r.Stdout))
	}
	if len(r.Stderr) > 0 {
		fmt.Fprintf(&b, "\n--- stderr\n%s", clip(r.Stderr))
	}
	return b.String()
}

// clip keeps the end of long output, where the reason usually is.
func clip(b []byte) string {
	const max = 8 << 10
	if len(b) > max {
		return fmt.Sprintf("[%d bytes cut]...%s", len(b)-max, b[len(b)-max:])
	}
	return string(b)
}

// MustSucceed fails t with the command's output unless it exited 0.
func (r Result) MustSucceed(t testing.TB) Result {
	t.Helper()
	if r.Failed() {
		t.Fatalf("command failed: %v", r)
	}
	return r
}

// Run runs c to completion and returns what it left; it fails t only when
// the child cannot be started, and skips t when c.Cred needs root the test
// process lacks. The child runs in its own process group, all of which is
// killed on timeout.
func Run(t testing.TB, c Cmd) Result {
	t.Helper()
	if len(c.Argv) == 0 {
		t.Fatal("harness.Run: empty Argv")
	}
	cmd, ctx, cancel := command(t, c)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	start := time.Now()
	err := cmd.Run()
	r := Result{Argv: c.Argv, Cred: c.Cred, Stdout: stdout.Bytes(), Stderr: stderr.Bytes(),
		ExitCode: -1, Duration: time.Since(start)}
	if cmd.ProcessState != nil {
		r.ExitCode = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && cmd.ProcessState != nil:
		r.Err = err
		if ctx.Err() != nil {
			r.Err = fmt.Errorf("%w: killed at the %v timeout", err, timeoutOf(c))
		}
	default:
		if cmd.ProcessState == nil {
			t.Fatalf("cannot start %q: %v", c.Argv, err)
		}
		r.Err = err
	}
	return r
}

func timeoutOf(c Cmd) time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// command prepares c as an exec.Cmd in its own process group, killed (with
// its group) at the timeout or if the test process dies.
func command(t testing.TB, c Cmd) (*exec.Cmd, context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeoutOf(c))
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Dir = c.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Env = append(append(os.Environ(), noRaceExitSleep()), c.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: sysCred(t, c.Cred),
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd, ctx, cancel
}

// noRaceExitSleep returns the GORACE setting that keeps a race-enabled
// child (fusegate, the helper) from sleeping 1 s at exit, the race
// detector's default, keeping any other GORACE options.
func noRaceExitSleep() string {
	return "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

// RunAs runs argv as cred to completion (see Run).
func RunAs(t testing.TB, cred Cred, argv ...string) Result {
	t.Helper()
	return Run(t, Cmd{Argv: argv, Cred: &cred})
}

// Fusegate runs the fusegate binary with args to completion, as the test
// process (see Run). For a long-running fusegate use StartDaemon.
func Fusegate(t testing.TB, args ...string) Result {
	t.Helper()
	return Run(t, Cmd{Argv: append([]string{Bin(t)}, args...)})
}
