package fusedev

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// MountNamespace names the mount namespace in which Mount and Unmount act.
// The zero value is the process's own namespace.
//
// A systemd service hardened with PrivateTmp=, ProtectHome= or
// ProtectSystem= runs in a mount namespace of its own whose mounts do not
// propagate to the rest of the system. Setting Path to "/proc/1/ns/mnt"
// makes fusegate mount in the host's namespace instead (needs
// CAP_SYS_ADMIN and CAP_SYS_CHROOT); the mount then propagates back into
// the service's namespace like any host mount.
type MountNamespace struct {
	Path string
}

// do runs f on a fresh OS thread that has joined the namespace. The thread
// first unshares its fs_struct (setns into a mount namespace refuses a
// thread sharing it, as every thread of a Go process does) and is never
// handed back to the Go scheduler, so no other goroutine runs in the other
// namespace.
func (ns MountNamespace) do(f func() error) error {
	if ns.Path == "" {
		return f()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no UnlockOSThread: the thread exits with the goroutine
		nsfd, err := unix.Open(ns.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("mount namespace %s: %w", ns.Path, err)
			return
		}
		defer unix.Close(nsfd)
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			done <- fmt.Errorf("unshare fs_struct: %w", err)
			return
		}
		if err := unix.Setns(nsfd, unix.CLONE_NEWNS); err != nil {
			done <- fmt.Errorf("enter mount namespace %s: %w", ns.Path, err)
			return
		}
		done <- f()
	}()
	return <-done
}

// Same reports whether the namespace is the process's own.
func (ns MountNamespace) Same() bool {
	if ns.Path == "" {
		return true
	}
	var a, b unix.Stat_t
	if unix.Stat(ns.Path, &a) != nil || unix.Stat("/proc/self/ns/mnt", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// HostNamespace returns the namespace of PID 1 when this process runs in a
// different one (a hardened systemd service), else the zero value.
func HostNamespace() MountNamespace {
	ns := MountNamespace{Path: "/proc/1/ns/mnt"}
	if _, err := os.Stat(ns.Path); err != nil || ns.Same() {
		return MountNamespace{}
	}
	return ns
}
