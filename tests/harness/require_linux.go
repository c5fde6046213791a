package harness

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Feature names for Missing and EnvRequire.
const (
	FeatureRoot        = "root"
	FeatureFUSE        = "fuse"
	FeatureFusermount3 = "fusermount3"
	FeatureFusectl     = "fusectl"
)

// Missing reports that feature is absent on this machine: it skips t with
// the reason, or fails it when EnvRequire names the feature (or "all"),
// because that machine is supposed to have it. Packages use it to build
// their own Require helpers.
func Missing(t testing.TB, feature, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if required(feature) {
		t.Fatalf("%s is required here (%s=%s) but missing: %s", feature, EnvRequire, os.Getenv(EnvRequire), reason)
	}
	t.Skipf("skipped: needs %s: %s", feature, reason)
}

func required(feature string) bool {
	list := strings.Split(os.Getenv(EnvRequire), ",")
	for i := range list {
		list[i] = strings.TrimSpace(list[i])
	}
	return slices.Contains(list, feature) || slices.Contains(list, "all")
}

// RequireRoot needs the test process to run as root (mount(2), other users'
// credentials).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, FeatureRoot, "runs as root; this process has uid %d", os.Geteuid())
	}
}

// RequireFUSE needs /dev/fuse to open read-write for this process.
func RequireFUSE(t testing.TB) {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		Missing(t, FeatureFUSE, "open /dev/fuse: %v", err)
	}
	unix.Close(fd)
}

// RequireFusermount3 needs what an unprivileged user needs to mount:
// fusermount3 in PATH, installed setuid root (Debian package fuse3), and
// /dev/fuse readable and writable by everyone, since fusermount3 opens it
// as the calling user (udev makes it 0666; scripts/test does too).
func RequireFusermount3(t testing.TB) {
	t.Helper()
	p, err := exec.LookPath("fusermount3")
	if err != nil {
		Missing(t, FeatureFusermount3, "no fusermount3 in PATH (Debian package fuse3)")
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		Missing(t, FeatureFusermount3, "%s: %v", p, err)
	}
	if st.Uid != 0 || st.Mode&unix.S_ISUID == 0 {
		Missing(t, FeatureFusermount3, "%s is not setuid root (mode %o, owner %d)", p, st.Mode&0o7777, st.Uid)
	}
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		Missing(t, FeatureFusermount3, "/dev/fuse: %v", err)
	}
	if st.Mode&0o006 != 0o006 {
		Missing(t, FeatureFusermount3, "/dev/fuse is mode %o: other users cannot open it (chmod 0666 /dev/fuse)", st.Mode&0o777)
	}
}

// RequireFusectl needs the fusectl file system mounted at
// /sys/fs/fuse/connections (where a connection is aborted). scripts/test
// mounts it; the harness never does.
func RequireFusectl(t testing.TB) {
	t.Helper()
	const dir, magic = "/sys/fs/fuse/connections", 0x65735543
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		Missing(t, FeatureFusectl, "%s: %v", dir, err)
	}
	if st.Type != magic {
		Missing(t, FeatureFusectl, "fusectl is not mounted on %s (mount -t fusectl fusectl %s)", dir, dir)
	}
}
