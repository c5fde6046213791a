// Package systemd is fusegate's small interface to the service manager:
// readiness and status notifications, the watchdog, reload and stop
// notifications, the file descriptor store that keeps /dev/fuse and
// /dev/cuse descriptors alive across a restart, and the descriptors systemd
// hands over at start (socket activation and the store's contents).
//
// Every call does nothing, successfully, when the process was not started
// by systemd (no NOTIFY_SOCKET), so callers need no special cases. The
// package must never block on the service manager or keep global state.
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notifier sends sd_notify messages. The zero value reads NOTIFY_SOCKET
// from the environment on each call.
type Notifier struct {
	// Socket overrides $NOTIFY_SOCKET (tests).
	Socket string
}

func (n *Notifier) socket() string {
	if n.Socket != "" {
		return n.Socket
	}
	return os.Getenv("NOTIFY_SOCKET")
}

// Enabled reports whether a service manager listens for notifications.
func (n *Notifier) Enabled() bool { return n.socket() != "" }

func (n *Notifier) send(state string) error {
	if n.Socket == "" {
		_, err := daemon.SdNotify(false, state)
		return err
	}
	return sendmsg(n.Socket, state, nil)
}

// Ready reports that start-up finished, with a one-line status.
func (n *Notifier) Ready(status string) error {
	return n.send("READY=1\nSTATUS=" + oneLine(status))
}

// Status sets the one-line status shown by systemctl status.
func (n *Notifier) Status(status string) error { return n.send("STATUS=" + oneLine(status)) }

// Watchdog pets the watchdog. Call it only while the service is healthy.
func (n *Notifier) Watchdog() error { return n.send("WATCHDOG=1") }

// Reloading reports that a reload started; call Ready when it is done.
func (n *Notifier) Reloading() error {
	return n.send("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec())
}

// Stopping reports that the service is shutting down.
func (n *Notifier) Stopping() error { return n.send("STOPPING=1") }

// StoreFDs hands files to systemd's file descriptor store under name, so
// they outlive this process and come back through Inherited after a
// restart (the unit needs FileDescriptorStoreMax=). The files stay open
// here too.
func (n *Notifier) StoreFDs(name string, files ...*os.File) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	sock := n.socket()
	if sock == "" || len(files) == 0 {
		return nil
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	return sendmsg(sock, "FDSTORE=1\nFDNAME="+name, unix.UnixRights(fds...))
}

// RemoveFDs drops the store's descriptors named name.
func (n *Notifier) RemoveFDs(name string) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	return n.send("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// checkFDName enforces sd_pid_notify's rules for FDNAME: at most 255
// printable ASCII characters, no colon.
func checkFDName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("fd store name %q: want 1 to 255 characters", name)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("fd store name %q: only printable ASCII without ':' or spaces", name)
		}
	}
	return nil
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// sendmsg sends one datagram to the notify socket from an unconnected
// socket: Go's WriteMsgUnix refuses a connected unixgram socket, and
// sd_notify's own implementation sends unconnected too.
func sendmsg(socket, state string, oob []byte) error {
	addr := &unix.SockaddrUnix{Name: socket}
	if strings.HasPrefix(socket, "@") {
		addr.Name = "\x00" + socket[1:]
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	defer unix.Close(fd)
	for {
		err = unix.Sendmsg(fd, []byte(state), oob, addr, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("notify %s: %w", socket, err)
	}
	return nil
}

// WatchdogInterval returns how often systemd expects WATCHDOG=1 for this
// process ($WATCHDOG_USEC, if $WATCHDOG_PID is this process or unset), or
// false when the watchdog is off.
func WatchdogInterval() (time.Duration, bool) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

// Inherited holds the descriptors systemd passed at start, by name
// (LISTEN_FDNAMES): socket-activated sockets and the fd store's contents.
type Inherited struct {
	files map[string][]*os.File
}

// TakeInherited collects the passed descriptors once and clears the
// LISTEN_* variables so children do not see them. Without systemd it
// returns an empty set.
func TakeInherited() *Inherited {
	in := &Inherited{files: map[string][]*os.File{}}
	for _, f := range activation.Files(true) {
		in.files[f.Name()] = append(in.files[f.Name()], f)
	}
	return in
}

// Take removes and returns the descriptors stored under name.
func (in *Inherited) Take(name string) []*os.File {
	fs := in.files[name]
	delete(in.files, name)
	return fs
}

// Names lists the names of the descriptors not yet taken.
func (in *Inherited) Names() []string {
	names := make([]string, 0, len(in.files))
	for n := range in.files {
		names = append(names, n)
	}
	return names
}

// Listener takes the socket named name (the unit's FileDescriptorName=, by
// default the socket unit's name) as a net.Listener.
func (in *Inherited) Listener(name string) (net.Listener, error) {
	fs := in.Take(name)
	if len(fs) == 0 {
		return nil, ErrNotPassed
	}
	for _, extra := range fs[1:] {
		extra.Close()
	}
	l, err := net.FileListener(fs[0])
	fs[0].Close()
	if err != nil {
		return nil, fmt.Errorf("socket %q from systemd: %w", name, err)
	}
	return l, nil
}

// CloseRest closes every descriptor not taken.
func (in *Inherited) CloseRest() {
	for name, fs := range in.files {
		for _, f := range fs {
			f.Close()
		}
		delete(in.files, name)
	}
}

// ErrNotPassed means systemd passed no descriptor of that name.
var ErrNotPassed = errors.New("not passed by systemd")
