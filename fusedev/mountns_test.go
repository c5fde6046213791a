package fusedev

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMountNamespace runs a child in a private mount namespace (as systemd
// does for PrivateTmp=) that mounts a tmpfs through MountNamespace into
// this process's namespace: the mount must be visible here, and the
// child's own namespace must not have received a plain private mount.
func TestMountNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces")
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "t")
	os.Mkdir(target, 0o755)
	// The child: unshare a mount namespace (like a hardened service), then
	// mount a tmpfs in the parent's namespace through /proc/<ppid>/ns/mnt.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FUSEDEV_NS_CHILD=1", "FUSEDEV_NS_TARGET="+target,
		"FUSEDEV_NS_HOST=/proc/"+strconv.Itoa(os.Getpid())+"/ns/mnt")
	cmd.SysProcAttr = &unix.SysProcAttr{Unshareflags: unix.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("mount made through the namespace is not visible here (type %#x, %v)\n%s", st.Type, err, out)
	}
	if !strings.Contains(string(out), "child ok") {
		t.Fatalf("child output:\n%s", out)
	}
}

// init is the child's side: it runs before any test when the parent sets
// FUSEDEV_NS_CHILD, mounts a tmpfs through MountNamespace and exits.
func init() {
	if os.Getenv("FUSEDEV_NS_CHILD") == "" {
		return
	}
	ns := MountNamespace{Path: os.Getenv("FUSEDEV_NS_HOST")}
	if ns.Same() {
		fmt.Println("child shares the parent's mount namespace")
		os.Exit(1)
	}
	target := os.Getenv("FUSEDEV_NS_TARGET")
	if err := ns.do(func() error { return unix.Mount("fusedev-ns-test", target, "tmpfs", 0, "size=1m") }); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	// The child's own (private) namespace did not get the mount.
	var st unix.Statfs_t
	if unix.Statfs(target, &st) == nil && st.Type == unix.TMPFS_MAGIC {
		fmt.Println("mount leaked into the child's private namespace")
		os.Exit(1)
	}
	fmt.Println("child ok")
	os.Exit(0)
}
