package smoke

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fusegate/fusegate/tests/vm/vmenv"
)

// run runs a command with a deadline and returns its trimmed combined output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// mustRun is run that fails the test on error.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func TestSystemdPID1(t *testing.T) {
	vmenv.Require(t, vmenv.Systemd)
	b, err := os.ReadFile("/proc/1/comm")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "systemd" {
		t.Fatalf("PID 1 is %q, want systemd", got)
	}
	if r := release(t); !strings.HasPrefix(r, "6.1.") {
		t.Fatalf("kernel release %q, want Debian 12's 6.1.x", r)
	}
}

func TestSystemdState(t *testing.T) {
	vmenv.Require(t, vmenv.Systemd)
	// The boot job of fusegate-vm.target waits for the test unit, so the system is
	// "starting" while tests run; is-system-running exits non-zero for that.
	state, _ := run(t, "systemctl", "is-system-running")
	switch state {
	case "starting", "running", "degraded":
		t.Logf("system state: %s", state)
	default:
		t.Fatalf("systemctl is-system-running = %q", state)
	}
	if got, _ := run(t, "systemctl", "is-active", "fusegate-vm-test.service"); got != "activating" {
		t.Errorf("fusegate-vm-test.service is %q, want activating (this test runs in it)", got)
	}
	if got, _ := run(t, "systemctl", "is-active", "basic.target"); got != "active" {
		t.Errorf("basic.target is %q, want active", got)
	}
}

func TestSystemdModprobeCUSE(t *testing.T) {
	vmenv.Require(t, vmenv.Systemd)
	mustRun(t, "modprobe", "cuse")
	if _, err := os.Stat("/sys/module/cuse"); err != nil {
		t.Fatalf("cuse not loaded after modprobe: %v", err)
	}
	openCharDev(t, "/dev/cuse")
	openCharDev(t, "/dev/fuse")
}

func TestSystemdRunTransient(t *testing.T) {
	vmenv.Require(t, vmenv.Systemd)
	flag := fmt.Sprintf("/run/fusegate-smoke-transient-%d", os.Getpid())
	mustRun(t, "systemd-run", "--wait", "--collect", "--quiet",
		"--unit", fmt.Sprintf("fusegate-smoke-transient-%d", os.Getpid()),
		"/bin/sh", "-c", "echo $INVOCATION_ID > "+flag)
	b, err := os.ReadFile(flag)
	if err != nil || len(strings.TrimSpace(string(b))) != 32 {
		t.Fatalf("transient unit left %q, %v; want its invocation id", b, err)
	}
	if out, err := run(t, "systemd-run", "--wait", "--collect", "--quiet", "/bin/false"); err == nil {
		t.Errorf("systemd-run /bin/false succeeded: %s", out)
	}
}

func TestSystemdDaemonReload(t *testing.T) {
	vmenv.Require(t, vmenv.Systemd)
	const unit = "fusegate-smoke-reload.service"
	flag := "/run/fusegate-smoke-reload"
	body := "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo reloaded > " + flag + "'\n"
	if err := os.WriteFile("/etc/systemd/system/"+unit, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/etc/systemd/system/" + unit) })
	mustRun(t, "systemctl", "daemon-reload")
	mustRun(t, "systemctl", "start", unit)
	if b, err := os.ReadFile(flag); err != nil || strings.TrimSpace(string(b)) != "reloaded" {
		t.Fatalf("%s left %q, %v", unit, b, err)
	}
}

func TestSystemdEtcFromTestdata(t *testing.T) {
	vmenv.Require(t, vmenv.Systemd)
	// testdata/vm-etc/systemd/system/fusegate-smoke-boot.service, wanted by
	// fusegate-vm.target and ordered before the test unit.
	if b, err := os.ReadFile("/run/fusegate-smoke-boot"); err != nil || strings.TrimSpace(string(b)) != "booted" {
		t.Fatalf("unit from testdata/vm-etc did not run at boot: %q, %v", b, err)
	}
	if got, _ := run(t, "systemctl", "is-active", "fusegate-smoke-boot.service"); got != "active" {
		t.Errorf("fusegate-smoke-boot.service is %q, want active", got)
	}
}

func TestSystemdJournal(t *testing.T) {
	vmenv.Require(t, vmenv.Systemd)
	tag := fmt.Sprintf("fusegate-smoke-%d", os.Getpid())
	mustRun(t, "systemd-cat", "-t", tag, "echo", "hello journal")
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := run(t, "journalctl", "-b", "--no-pager", "-o", "cat", "-t", tag)
		if strings.Contains(out, "hello journal") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("journalctl -t %s: %q, want the line sent by systemd-cat", tag, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSystemdEnvironment(t *testing.T) {
	vmenv.Require(t, vmenv.Systemd)
	checkEnvironment(t)
	if _, err := os.Stat("/.dockerenv"); err == nil {
		t.Error("/.dockerenv exists in the guest")
	}
	if _, err := os.Stat("/vmio/marker"); err != nil {
		t.Errorf("run share /vmio: %v", err)
	}
}
