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
func requireResend(t testing.TB) {
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
	m0 := monotonic()
	restart()
	took := time.Since(t0)
	time.Sleep(700 * time.Millisecond)
	res, err := child.Stop()
	if err != nil {
		t.Fatal(err)
	}
	from := time.Duration(res.MaxStallMono - m0)
	t.Logf("%s round %d (restart took %v): %s  longest stall: from %+dms to %+dms\n%s", name, round, took.Round(time.Millisecond),
		load.Report(name, res), from.Milliseconds(), (from + res.MaxStall).Milliseconds(), timeline(t, m0))
	if res.Failed > 0 {
		t.Errorf("%s round %d: %d client operations failed", name, round, res.Failed)
	}
	if res.MaxStall > maxStall {
		// The goal is far below (docs/benchmarks/restart.md); this only
		// catches a client that waited for something that never came.
		t.Errorf("%s round %d: a client operation waited %v", name, round, res.MaxStall)
	}
	if res.DeviceBytes == 0 || res.FileBytes == 0 {
		t.Errorf("%s round %d: the client moved %d file and %d device bytes", name, round, res.FileBytes, res.DeviceBytes)
	}
	return res.MaxStall
}

// maxStall is the longest client stall a round accepts.
const maxStall = 15 * time.Second

// monotonic reads CLOCK_MONOTONIC, the clock of the journal's
// short-monotonic timestamps, in nanoseconds.
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// timelineEvents are the journal entries of a restart worth a line, and
// the name given to each.
var timelineEvents = []struct{ match, name string }{
	{"signal=SIGTERM", "old daemon: SIGTERM"},
	{"handed over", "old daemon: handed over"},
	{"Main process exited", "systemd: main process exited"},
	{"Deactivated successfully", "systemd: old daemon gone"},
	{"Scheduled restart job", "systemd: restart job scheduled"},
	{"Starting fusegate", "systemd: starting the new daemon"},
	{"mount namespace of its own", "new daemon: first log line"},
	{"resumed the mount", "new daemon: mount resumed"},
	{"resumed the device", "new daemon: device resumed"},
	{"Started fusegate", "systemd: READY=1 received"},
}

// timeline lists, in milliseconds from m0 (CLOCK_MONOTONIC, ns), the
// journal entries of fusegate.service that say where a restart's time
// went (when journald received them).
func timeline(t *testing.T, m0 int64) string {
	out, _ := run(t, "journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-u", "fusegate.service")
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		mono, ok := monoOf(l)
		if !ok {
			continue
		}
		at := mono - time.Duration(m0)
		if at < -50*time.Millisecond || at > 5*time.Second {
			continue
		}
		for _, e := range timelineEvents {
			if strings.Contains(l, e.match) {
				fmt.Fprintf(&b, "  %+6dms %s\n", at.Milliseconds(), e.name)
				break
			}
		}
	}
	return b.String()
}

// monoOf reads the timestamp of a journal line in short-monotonic format
// ("[   37.834495] host ...").
func monoOf(l string) (time.Duration, bool) {
	i, j := strings.IndexByte(l, '['), strings.IndexByte(l, ']')
	if i < 0 || j < i {
		return 0, false
	}
	sec, err := strconv.ParseFloat(strings.TrimSpace(l[i+1:j]), 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(sec * 1e9), true
}

// tmpfsLower puts the lower directory on a tmpfs: the guest's root is an
// overlay, whose files the kernel refuses as passthrough backing files
// with max_stack_depth 1 (ELOOP), so the opens held across restarts would
// not use passthrough.
func tmpfsLower(t testing.TB) {
	t.Helper()
	if out, _ := run(t, "findmnt", "-n", "-o", "FSTYPE", lower); out == "tmpfs" {
		return
	}
	mustRun(t, "systemctl", "stop", "fusegate.service")
	mustRun(t, "mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", lower)
	mustRun(t, "systemctl", "start", "fusegate.service")
}

// restartRounds runs three rounds of restart (given the daemon's PID)
// under the client load; check, if not nil, looks at the journal of the
// process that was replaced.
func restartRounds(t *testing.T, name string, restart func(pid string), check func(oldPID string)) {
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
	var stalls []string
	var longest time.Duration
	for round := 0; round < 3; round++ {
		pid := prop(t, "fusegate.service", "MainPID")
		d := underLoad(t, round, name, func() { restart(pid) })
		stalls = append(stalls, d.Round(time.Millisecond).String())
		longest = max(longest, d)
		waitUntil(t, "fusegate.service active again", 30*time.Second, func() bool {
			return active(t, "fusegate.service") == "active"
		})
		next := prop(t, "fusegate.service", "MainPID")
		if next == pid {
			t.Fatalf("round %d: MainPID %s still", round, next)
		}
		// The successor resumed both, and made nothing anew.
		out := pidJournal(t, next, "resumed the mount", "resumed the device")
		if strings.Contains(out, "clearing a stale FUSE mount") || strings.Contains(out, "msg=mounted") || strings.Contains(out, "device ready") {
			t.Errorf("round %d: the mount or device was made anew:\n%s", round, out)
		}
		if check != nil {
			check(pid)
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
}

// pidJournal returns the journal of one process of fusegate.service, once
// it holds every string in want (journald may lag a little behind).
func pidJournal(t testing.TB, pid string, want ...string) string {
	t.Helper()
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for {
		out = mustRun(t, "journalctl", "-b", "--no-pager", "-o", "cat", "_PID="+pid)
		missing := ""
		for _, w := range want {
			if !strings.Contains(out, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return out
		}
		if time.Now().After(deadline) {
			t.Errorf("the journal of process %s lacks %q:\n%s", pid, missing, out)
			return out
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// systemctl restart: the daemon asks systemd, learns a restart job is
// stopping it, hands over; the next one resumes.
func TestRestartSystemctl(t *testing.T) {
	restartRounds(t, "systemctl-restart", func(string) {
		mustRun(t, "systemctl", "restart", "fusegate.service")
	}, func(old string) {
		pidJournal(t, old, `systemd job \"restart\"`, "handed over")
	})
}

// kill -9: systemd restarts the daemon (Restart=on-failure) with the fd
// store it kept; the state memfd is as current as the last reply.
func TestRestartKill(t *testing.T) {
	ensureRunning(t)
	procs := "/sys/fs/cgroup" + prop(t, "fusegate.service", "ControlGroup") + "/cgroup.procs"
	restartRounds(t, "kill-9", func(pid string) {
		p, _ := strconv.Atoi(pid)
		syscall.Kill(p, syscall.SIGKILL)
		// Until systemd started the next process. Read from cgroupfs: a
		// systemctl every few milliseconds would take the guest's one CPU
		// from systemd and the daemon, and lengthen the stall it measures.
		deadline := time.Now().Add(60 * time.Second)
		for {
			b, _ := os.ReadFile(procs)
			if f := strings.Fields(string(b)); len(f) > 0 && f[0] != pid {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("systemd did not start a new daemon within 60 s of the kill\n%s", journal(t))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}, nil)
}

// systemctl stop is no restart: the mount is unmounted, the device
// removed, and the next start mounts afresh.
func TestRestartStopIsForGood(t *testing.T) {
	ensureRunning(t)
	pid := prop(t, "fusegate.service", "MainPID")
	mustRun(t, "systemctl", "stop", "fusegate.service")
	if _, ok, _ := fusedev.FindMount(media); ok {
		t.Errorf("%s still mounted after stop", media)
	}
	if _, err := os.Stat(loopDev); err == nil {
		t.Errorf("%s still exists after stop", loopDev)
	}
	pidJournal(t, pid, `systemd job \"stop\"`, "stopping for good")
	mustRun(t, "systemctl", "start", "fusegate.service")
	out := pidJournal(t, prop(t, "fusegate.service", "MainPID"), "msg=mounted", "device ready")
	if strings.Contains(out, "resumed the") {
		t.Errorf("the start after a stop resumed instead of starting afresh:\n%s", out)
	}
	if err := live(media); err != nil {
		t.Error(err)
	}
}
