package foundation

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/tests/harness"
)

// mountpointFor returns a fresh mount point that cred may mount on, after
// checking what mounting as cred needs.
func mountpointFor(t *testing.T, cred harness.Cred) string {
	t.Helper()
	harness.RequireRoot(t)
	harness.RequireFUSE(t)
	if cred.UID == 0 {
		return t.TempDir()
	}
	harness.RequireFusermount3(t)
	return harness.UserDir(t, cred)
}

// killDaemon SIGKILLs a serving daemon and checks it left a stale mount.
func killDaemon(t *testing.T, d *harness.Daemon, mp string) {
	t.Helper()
	st := d.Stop(syscall.SIGKILL)
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("fusegate after SIGKILL: %v", st)
	}
	if !harness.Mounted(t, mp) {
		t.Fatalf("no stale mount left at %s after SIGKILL", mp)
	}
	// stat(2) of the root may still be answered from the attribute cache;
	// these always ask the server, which is gone.
	c := harness.NewCaller(t, d.Cred())
	_, err := c.ReadDir(mp)
	wantErrno(t, "readdir of the stale mount", err, syscall.ENOTCONN)
	_, err = c.Statfs(mp)
	wantErrno(t, "statfs of the stale mount", err, syscall.ENOTCONN)
}

// TestStaleMount kills a serving daemon with SIGKILL, which leaves a mount
// answering ENOTCONN, and clears it with 'fusegate umount' or by mounting
// again on the same mount point, as root and as an unprivileged user.
func TestStaleMount(t *testing.T) {
	for _, who := range []struct {
		name string
		cred harness.Cred
	}{{"root", harness.Root()}, {"user", harness.Nobody()}} {
		t.Run(who.name+"/umount", func(t *testing.T) {
			mp := mountpointFor(t, who.cred)
			killDaemon(t, startDemo(t, who.cred, mp), mp)

			r := harness.Run(t, harness.Cmd{Argv: []string{harness.Bin(t), "umount", mp}, Cred: &who.cred})
			r.MustSucceed(t)
			if left := harness.MountsAt(t, mp); len(left) > 0 {
				t.Fatalf("still mounted at %s after 'fusegate umount': %+v", mp, left)
			}
			if st, err := harness.NewCaller(t, who.cred).Stat(mp); err != nil || !st.IsDir {
				t.Errorf("stat %s after umount: %+v, %v; want the plain directory", mp, st, err)
			}
		})
		t.Run(who.name+"/mount-again", func(t *testing.T) {
			mp := mountpointFor(t, who.cred)
			killDaemon(t, startDemo(t, who.cred, mp), mp)

			d := startDemo(t, who.cred, mp)
			if !strings.Contains(d.Logs(), "clearing a stale FUSE mount") {
				t.Errorf("the second fusegate did not report clearing the stale mount; output:\n%s", d.Logs())
			}
			checkMountEntry(t, mp, who.cred) // exactly one mount: the stale one is gone
			got, err := harness.NewCaller(t, who.cred).ReadFile(filepath.Join(mp, "hello.txt"), 0)
			if err != nil || string(got) != "Hello from fusegate.\n" {
				t.Errorf("read hello.txt from the new mount = %q, %v", got, err)
			}
			stopClean(t, d, mp)
		})
	}
}

// TestUmountLiveMount: 'fusegate umount' on a served mount unmounts it and
// the serving fusegate exits 0.
func TestUmountLiveMount(t *testing.T) {
	mp := mountpointFor(t, harness.Root())
	d := startDemo(t, harness.Root(), mp)
	harness.Fusegate(t, "umount", mp).MustSucceed(t)
	st, err := d.Wait(30 * time.Second)
	if err != nil || st.ExitCode() != 0 {
		t.Fatalf("serving fusegate after 'fusegate umount': %v, %v; want exit 0; output:\n%s", st, err, d.Logs())
	}
	if left := harness.MountsAt(t, mp); len(left) > 0 {
		t.Errorf("still mounted at %s: %+v", mp, left)
	}
	if left := d.Leftovers(); len(left) > 0 {
		t.Errorf("processes left in fusegate's process group: %v", left)
	}
}

// TestMountRefusesLiveMount: a second 'fusegate mount' on a served mount
// point fails with a clear message and leaves the served mount alone.
func TestMountRefusesLiveMount(t *testing.T) {
	mp := mountpointFor(t, harness.Root())
	d := startDemo(t, harness.Root(), mp)
	r := harness.Fusegate(t, "mount", "--demo", mp)
	if r.ExitCode != 1 || !strings.Contains(string(r.Stderr), "is already a FUSE mount") {
		t.Errorf("second mount: %v; want exit 1 saying it is already a FUSE mount", r)
	}
	if n := len(harness.MountsAt(t, mp)); n != 1 {
		t.Errorf("%d mounts at %s, want the one served", n, mp)
	}
	if got, err := harness.NewCaller(t, harness.Root()).ReadFile(filepath.Join(mp, "hello.txt"), 0); err != nil || len(got) == 0 {
		t.Errorf("the served mount stopped answering: %q, %v", got, err)
	}
	stopClean(t, d, mp)
}

// TestUmountNotMounted: 'fusegate umount' on a plain directory fails with
// exit status 1 and says why.
func TestUmountNotMounted(t *testing.T) {
	dir := t.TempDir()
	r := harness.Fusegate(t, "umount", dir)
	if r.ExitCode != 1 || !strings.Contains(string(r.Stderr), "no FUSE file system is mounted there") {
		t.Errorf("umount of a plain directory: %v; want exit 1 saying nothing is mounted", r)
	}
}
