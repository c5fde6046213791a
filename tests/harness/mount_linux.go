package harness

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
)

// MountEntry is one line of /proc/self/mountinfo.
type MountEntry struct {
	ID           int
	Mountpoint   string
	FSType       string // "fuse", "fuse.<subtype>", "tmpfs", ...
	Source       string
	Options      string // per-mount options: "ro,nosuid,nodev,relatime"
	SuperOptions string // super block options: "rw,user_id=0,group_id=0"
}

// Option returns the value of a per-mount or super block option ("" for a
// flag such as "nosuid") and whether it is set.
func (m MountEntry) Option(name string) (string, bool) {
	for _, list := range []string{m.Options, m.SuperOptions} {
		for _, o := range strings.Split(list, ",") {
			k, v, _ := strings.Cut(o, "=")
			if k == name {
				return v, true
			}
		}
	}
	return "", false
}

// MountsAt returns every mount at mp, of any type, in mountinfo order (the
// last one is on top). Nothing left at mp means an empty result.
func MountsAt(t testing.TB, mp string) []MountEntry {
	t.Helper()
	ms, err := fusedev.MountsAt(mp)
	if err != nil {
		t.Fatal(err)
	}
	var out []MountEntry
	for _, m := range ms {
		out = append(out, MountEntry{ID: m.ID, Mountpoint: m.Mountpoint, Options: m.Options,
			FSType: m.FSType, Source: m.Source, SuperOptions: m.SuperOptions})
	}
	return out
}

// Mounted reports whether a FUSE file system is mounted at mp, from
// /proc/self/mountinfo alone (fusedev.FindMount): it never touches the mount.
func Mounted(t testing.TB, mp string) bool {
	t.Helper()
	_, ok, err := fusedev.FindMount(mp)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// WaitMounted waits up to timeout until a FUSE mount at mp is listed in
// /proc/self/mountinfo and answers statfs(2) (as a FUSE file system) and
// stat(2) from a child running as cred. cred must be allowed on the mount:
// without allow_other only the mounting user is, and the kernel fakes
// statfs for others. A stale mount (ENOTCONN) does not count. Prefer
// Daemon.WaitMounted, which also stops waiting when the daemon dies.
func WaitMounted(t testing.TB, mp string, cred Cred, timeout time.Duration) fusedev.MountInfo {
	t.Helper()
	return waitMounted(t, mp, cred, timeout, nil)
}

// fuseSuperMagic is statfs's f_type on a FUSE mount.
const fuseSuperMagic = 0x65735546

func waitMounted(t testing.TB, mp string, cred Cred, timeout time.Duration, d *Daemon) fusedev.MountInfo {
	t.Helper()
	deadline := time.Now().Add(timeout)
	c := NewCaller(t, cred)
	last := "not in /proc/self/mountinfo"
	for {
		if d != nil && d.Exited() {
			t.Fatalf("fusegate exited (%v) before %s was mounted; output:\n%s", d.state, mp, d.Logs())
		}
		if _, ok, err := fusedev.FindMount(mp); err != nil {
			t.Fatal(err)
		} else if ok {
			// statfs always reaches the server (a stale mount's root may
			// still stat fine from the attribute cache), and its f_type
			// tells a FUSE mount from the directory under it, should the
			// mount go away meanwhile (a stale one being cleared).
			st, err := c.Statfs(mp)
			switch {
			case err == nil && st.Type != fuseSuperMagic:
				last = fmt.Sprintf("statfs: file system type %#x, not FUSE", st.Type)
			case err == nil:
				if _, err = c.Stat(mp); err == nil {
					info, ok, err := fusedev.FindMount(mp)
					if err != nil {
						t.Fatal(err)
					}
					if ok {
						return info
					}
					last = "gone from /proc/self/mountinfo after answering"
				}
			}
			if err != nil {
				last = "as " + cred.String() + ": " + err.Error()
				if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
					t.Fatalf("%s is mounted but %s", mp, last)
				}
			}
		}
		if time.Now().After(deadline) {
			logs := ""
			if d != nil {
				logs = "; fusegate output:\n" + d.Logs()
			}
			t.Fatalf("%s not live within %v: %s%s", mp, timeout, last, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitUnmounted waits up to timeout until no FUSE mount is listed at mp.
func WaitUnmounted(t testing.TB, mp string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for Mounted(t, mp) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still mounted after %v: %+v", mp, timeout, MountsAt(t, mp))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CleanupMount makes sure no FUSE mount is left at mp when the test ends,
// detaching any (lazy unmount). Daemon does it for its Mountpoints; use
// this for mounts made some other way.
func CleanupMount(t testing.TB, mp string) {
	t.Helper()
	t.Cleanup(func() {
		if _, ok, _ := fusedev.FindMount(mp); ok {
			if err := fusedev.Unmount(mp, fusedev.UnmountOptions{Lazy: true}); err != nil {
				t.Errorf("harness: cannot detach the leftover mount %s: %v", mp, err)
			}
		}
	})
}

// UserDir returns a new empty directory owned by cred, mode 0755, that cred
// can reach (t.TempDir's directories are private to root). It is removed at
// the end of the test. Create it before the daemon that mounts on it.
func UserDir(t testing.TB, cred Cred) string {
	t.Helper()
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	if len(name) > 64 {
		name = name[:64]
	}
	dir, err := os.MkdirTemp("", "fusegate-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("harness: remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(cred.UID), int(cred.GID)); err != nil {
		if errors.Is(err, syscall.EPERM) {
			Missing(t, FeatureRoot, "giving %s to %v needs root", dir, cred)
		}
		t.Fatal(err)
	}
	return dir
}
