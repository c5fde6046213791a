// Package restart tests restart without unmount on this machine's kernel,
// without systemd: a supervisor in the test (supervisor_linux_test.go)
// keeps the descriptors the daemon stores, as systemd's fd store does, and
// starts the daemon again with them after a hand-over (SIGUSR1 + SIGTERM)
// or a SIGKILL, while a client (tests/restart/load) writes, reads back and
// stats files on the mount and keeps files open through passthrough. No
// client operation may fail, no byte may differ. CUSE and systemd itself
// are tested in the qemu guest (tests/systemd, TestRestart*).
package restart

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/tests/harness"
	"github.com/fusegate/fusegate/tests/restart/load"
)

func TestMain(m *testing.M) {
	load.MaybeChild()
	harness.Main(m)
}

type env struct {
	dir, lower, mp, cfg string
	passthrough         string
}

func lineWith(text, substr string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

func newEnv(t *testing.T, passthrough string) *env {
	harness.RequireRoot(t)
	harness.RequireFUSE(t)
	dir, err := os.MkdirTemp("", "fusegate-restart-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{dir: dir, lower: filepath.Join(dir, "lower"), mp: filepath.Join(dir, "mp"), cfg: filepath.Join(dir, "fusegate.toml"), passthrough: passthrough}
	os.MkdirAll(e.lower, 0o755)
	os.MkdirAll(e.mp, 0o755)
	cfg := fmt.Sprintf(`version = 1

[control]
socket = %q

[daemon]
shutdown_grace = "2s"

[[mount]]
name = "media"
source = %q
mountpoint = %q
policy = "default"
passthrough = %q
options = ["allow_other"]
`, filepath.Join(dir, "control.sock"), e.lower, e.mp, passthrough)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, ok, _ := fusedev.FindMount(e.mp); ok {
			// Abort first: clients stuck on a daemon that never came back
			// would keep this process from exiting.
			fusedev.Abort(e.mp)
			fusedev.Unmount(e.mp, fusedev.UnmountOptions{Lazy: true})
		}
	})
	return e
}

// restartUnderLoad restarts the daemon rounds times in the given way while
// the client runs, and returns the longest client stall of each round.
func restartUnderLoad(t *testing.T, sup *supervisor, e *env, rounds int, how string) []time.Duration {
	t.Helper()
	var stalls []time.Duration
	child, err := load.Start(load.Options{Dir: filepath.Join(e.mp, "load-"+how)})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < rounds; i++ {
		t0 := time.Now()
		switch how {
		case "handover":
			sup.stop(syscall.SIGTERM, true)
		case "kill":
			sup.stop(syscall.SIGKILL, false)
		}
		down := time.Since(t0)
		sup.start()
		gap := time.Since(t0)
		// The log comes through a pipe, maybe after READY=1.
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(sup.current(), "resumed the mount"); {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the new daemon did not resume the mount:\n%s", i, sup.current())
			}
			time.Sleep(5 * time.Millisecond)
		}
		if e.passthrough == "auto" && !strings.Contains(sup.current(), "backing_ids=0 ") && i == 0 {
			t.Logf("resumed with backing ids adopted: %s", lineWith(sup.current(), "resumed the mount"))
		}
		t.Logf("%s round %d: old daemon gone after %v, new one ready after %v", how, i, down.Round(time.Microsecond), gap.Round(time.Microsecond))
		time.Sleep(400 * time.Millisecond)
	}
	res, err := child.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(load.Report(how, res))
	if res.Failed > 0 {
		t.Errorf("%s: %d client operations failed", how, res.Failed)
	}
	if res.Ops < 100 || res.FileBytes == 0 {
		t.Errorf("%s: the client did little: %s", how, res)
	}
	stalls = append(stalls, res.MaxStall)
	return stalls
}

// The daemon hands its mount over and is killed, again and again, under a
// client that must not notice anything but a pause.
func TestRestartUnderLoad(t *testing.T) {
	e := newEnv(t, "auto")
	sup := newSupervisor(t, e.dir, "serve", "--config", e.cfg)
	sup.start()
	time.Sleep(100 * time.Millisecond) // the log comes through a pipe
	if !strings.Contains(sup.current(), "kernel passthrough enabled") {
		harness.Missing(t, "passthrough", "the daemon did not enable kernel passthrough:\n%s", sup.current())
	}
	st := sup.stored()
	for _, name := range []string{"fuse/media", "fuse/media/state"} {
		if st[name] != 1 {
			t.Fatalf("fd store after start: %v; want one %s", st, name)
		}
	}
	before, _, _ := fusedev.FindMount(e.mp)

	var all []string
	for _, how := range []string{"handover", "kill"} {
		for run := 0; run < 3; run++ {
			stalls := restartUnderLoad(t, sup, e, 2, how)
			for _, s := range stalls {
				all = append(all, fmt.Sprintf("%s %v", how, s.Round(time.Millisecond)))
			}
		}
	}
	sort.Strings(all)
	t.Logf("longest client stall per run (2 restarts each): %s", strings.Join(all, ", "))
	if report := os.Getenv("FUSEGATE_RESTART_REPORT"); report != "" {
		os.WriteFile(report, []byte(strings.Join(all, "\n")+"\n"), 0o644)
	}

	// Same mount, same connection, all along.
	after, ok, _ := fusedev.FindMount(e.mp)
	if !ok || after.ConnID() != before.ConnID() {
		t.Errorf("the mount changed: %+v, was %+v", after, before)
	}
	if st := sup.stored(); st["fuse/media"] != 1 || st["fuse/media/state"] != 1 {
		t.Errorf("fd store after the restarts: %v (one connection and one state, not one per start)", st)
	}
	// A stop that is not a restart unmounts and empties the store.
	sup.stop(syscall.SIGTERM, false)
	if _, ok, _ := fusedev.FindMount(e.mp); ok {
		t.Errorf("still mounted after a stop for good")
	}
	if st := sup.stored(); len(st) != 0 {
		t.Errorf("fd store after a stop for good: %v", st)
	}
}

// Without kernel passthrough the daemon serves reads and writes of open
// files itself: those handles are restored too.
func TestRestartDaemonIO(t *testing.T) {
	e := newEnv(t, "off")
	sup := newSupervisor(t, e.dir, "serve", "--config", e.cfg)
	sup.start()
	restartUnderLoad(t, sup, e, 2, "handover")
	restartUnderLoad(t, sup, e, 2, "kill")
	sup.stop(syscall.SIGTERM, false)
}
