package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/tests/restart/load"
)

// Restart without unmount under systemd 252 (tests/vm, the bookworm-
// backports 6.12 guest: FUSE_NOTIFY_RESEND and passthrough; scripts/test
// runs TestRestart* there and TestSystemd* in the 6.1 guest). A client in a
// child process loops over files on the mount (write, read back with
// checksums, stat, rename, files held open through kernel passthrough,
// listings) and streams sequence-numbered bytes through the loopback CUSE
// device while systemd restarts the daemon (systemctl restart, and SIGKILL
// with Restart=on-failure). No client operation may fail, no byte may be
// lost or repeated; the longest stall is logged per round.

func TestMain(m *testing.M) {
	load.MaybeChild()
	os.Exit(m.Run())
}

// requireResend skips on kernels without FUSE_NOTIFY_RESEND (before 6.9).
func requireResend(t *testing.T) {
	t.Helper()
	var u unix.Utsname
	unix.Uname(&u)
	rel := unix.ByteSliceToString(u.Release[:])
	var maj, min int
	fmt.Sscanf(rel, "%d.%d", &maj, &min)
	if maj < 6 || maj == 6 && min < 9 {
		t.Skipf("kernel %s has no FUSE_NOTIFY_RESEND (6.9+): run with FUSEGATE_VM_KERNEL=backports", rel)
	}
}

func devRdev(t *testing.T, path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return st.Rdev
}

// underLoad runs the client around one restart done by restart, and
// returns the longest stall the client saw.
func underLoad(t *testing.T, round int, name string, restart func()) time.Duration {
	t.Helper()
	child, err := load.Start(load.Options{Dir: fmt.Sprintf("%s/restart-%s-%d", media, name, round), Device: loopDev})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	t0 := time.Now()
	restart()
	took := time.Since(t0)
	time.Sleep(700 * time.Millisecond)
	res, err := child.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s round %d (restart took %v): %s", name, round, took.Round(time.Millisecond), load.Report(name, res))
	if res.Failed > 0 {
		t.Errorf("%s round %d: %d client operations failed", name, round, res.Failed)
	}
	if res.DeviceBytes == 0 || res.FileBytes == 0 {
		t.Errorf("%s round %d: the client moved %d file and %d device bytes", name, round, res.FileBytes, res.DeviceBytes)
	}
	return res.MaxStall
}

// tmpfsLower puts the lower directory on a tmpfs: the guest's root is an
// overlay, whose files the kernel refuses as passthrough backing files
// with max_stack_depth 1 (ELOOP), so the opens held across restarts would
// not use passthrough.
func tmpfsLower(t *testing.T) {
	t.Helper()
	if out, _ := run(t, "findmnt", "-n", "-o", "FSTYPE", lower); out == "tmpfs" {
		return
	}
	mustRun(t, "systemctl", "stop", "fusegate.service")
	mustRun(t, "mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", lower)
	mustRun(t, "systemctl", "start", "fusegate.service")
}

func restartRounds(t *testing.T, name string, restart func(pid string)) {
	ensureRunning(t)
	requireResend(t)
	tmpfsLower(t)
	var ms []struct {
		Passthrough struct {
			Active bool `json:"active"`
		} `json:"passthrough"`
	}
	ctl(t, "mounts", &ms)
	if len(ms) != 1 || !ms[0].Passthrough.Active {
		t.Errorf("kernel passthrough not active on 6.12: %+v", ms)
	}
	before, _, _ := fusedev.FindMount(media)
	rdev := devRdev(t, loopDev)
	since := fmt.Sprintf("@%d", time.Now().Unix())
	var stalls []string
	var longest time.Duration
	for round := 0; round < 3; round++ {
		pid := prop(t, "fusegate.service", "MainPID")
		d := underLoad(t, round, name, func() { restart(pid) })
		stalls = append(stalls, d.Round(time.Millisecond).String())
		longest = max(longest, d)
		if got := prop(t, "fusegate.service", "MainPID"); got == pid || active(t, "fusegate.service") != "active" {
			t.Fatalf("round %d: fusegate.service %s, MainPID %s (was %s)", round, active(t, "fusegate.service"), got, pid)
		}
	}
	t.Logf("%s: longest client stall per round: %s (longest %v)", name, strings.Join(stalls, ", "), longest.Round(time.Millisecond))
	if after, ok, _ := fusedev.FindMount(media); !ok || after.ConnID() != before.ConnID() {
		t.Errorf("the mount was replaced (connection %d, was %d)", after.ConnID(), before.ConnID())
	}
	if got := devRdev(t, loopDev); got != rdev {
		t.Errorf("%s is device %d now, was %d", loopDev, got, rdev)
	}
	if st, _ := os.Stat(loopDev); st == nil || st.Mode().Perm() != 0o666 {
		t.Errorf("%s lost its mode: %v", loopDev, st)
	}
	out := mustRun(t, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "fusegate.service", "--since", since)
	for _, want := range []string{"resumed the mount", "resumed the device"} {
		if !strings.Contains(out, want) {
			t.Errorf("journal lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "clearing a stale FUSE mount") || strings.Contains(out, "msg=mounted") {
		t.Errorf("the mount was made anew:\n%s", out)
	}
}

// systemctl restart: the daemon asks systemd, learns a restart job is
// stopping it, hands over; the next one resumes.
func TestRestartSystemctl(t *testing.T) {
	restartRounds(t, "systemctl-restart", func(string) {
		mustRun(t, "systemctl", "restart", "fusegate.service")
	})
	out := mustRun(t, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "fusegate.service", "--since", "-60s")
	if !strings.Contains(out, `systemd job \"restart\"`) || !strings.Contains(out, "handed over") {
		t.Errorf("journal does not show a hand-over for the restart job:\n%s", out)
	}
}

// kill -9: systemd restarts the daemon (Restart=on-failure) with the fd
// store it kept; the state memfd is as current as the last reply.
func TestRestartKill(t *testing.T) {
	restartRounds(t, "kill-9", func(pid string) {
		p, _ := strconv.Atoi(pid)
		syscall.Kill(p, syscall.SIGKILL)
		waitUntil(t, "systemd restarts the killed daemon", 60*time.Second, func() bool {
			got := prop(t, "fusegate.service", "MainPID")
			return got != pid && got != "0" && active(t, "fusegate.service") == "active"
		})
	})
}

// systemctl stop is no restart: the mount is unmounted, the device
// removed, and the next start mounts afresh.
func TestRestartStopIsForGood(t *testing.T) {
	ensureRunning(t)
	mustRun(t, "systemctl", "stop", "fusegate.service")
	if _, ok, _ := fusedev.FindMount(media); ok {
		t.Errorf("%s still mounted after stop", media)
	}
	if _, err := os.Stat(loopDev); err == nil {
		t.Errorf("%s still exists after stop", loopDev)
	}
	out := mustRun(t, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "fusegate.service", "--since", "-30s")
	if !strings.Contains(out, `systemd job \"stop\"`) || !strings.Contains(out, "stopping for good") {
		t.Errorf("journal:\n%s", out)
	}
	mustRun(t, "systemctl", "start", "fusegate.service")
	out = mustRun(t, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "fusegate.service", "--since", "-10s")
	if !strings.Contains(out, "msg=mounted") || strings.Contains(out, "resumed the mount") {
		t.Errorf("the start after a stop did not mount afresh:\n%s", out)
	}
	if err := live(media); err != nil {
		t.Error(err)
	}
}
