package systemd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen makes a notify socket like systemd's and returns a function that
// reads one message with the descriptors it carries.
func listen(t *testing.T) (string, func() (string, []int)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	return path, func() (string, []int) {
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(4*8))
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		var fds []int
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err == nil {
				fds = append(fds, got...)
			}
		}
		return string(buf[:n]), fds
	}
}

func TestNotifications(t *testing.T) {
	path, recv := listen(t)
	n := &Notifier{Socket: path}
	if !n.Enabled() {
		t.Fatal("not enabled with a socket")
	}
	for _, c := range []struct {
		send func() error
		want string
	}{
		{func() error { return n.Ready("2 mounts\nlive") }, "READY=1\nSTATUS=2 mounts live"},
		{func() error { return n.Status("ok") }, "STATUS=ok"},
		{n.Watchdog, "WATCHDOG=1"},
		{n.Stopping, "STOPPING=1"},
		{func() error { return n.RemoveFDs("mount-0") }, "FDSTOREREMOVE=1\nFDNAME=mount-0"},
	} {
		if err := c.send(); err != nil {
			t.Fatal(err)
		}
		if got, _ := recv(); got != c.want {
			t.Errorf("sent %q, want %q", got, c.want)
		}
	}
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	got, _ := recv()
	if !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("reloading sent %q", got)
	}
}

func TestStoreFDs(t *testing.T) {
	path, recv := listen(t)
	n := &Notifier{Socket: path}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := n.StoreFDs("mount-data", r, w); err != nil {
		t.Fatal(err)
	}
	msg, fds := recv()
	if msg != "FDSTORE=1\nFDNAME=mount-data" || len(fds) != 2 {
		t.Fatalf("got %q with %d fds", msg, len(fds))
	}
	// The received descriptors are the same pipe: data written to ours
	// comes out of theirs.
	w.Write([]byte("x"))
	buf := make([]byte, 1)
	if n, err := unix.Read(fds[0], buf); err != nil || n != 1 || buf[0] != 'x' {
		t.Fatalf("stored read end does not read the pipe: %d %v", n, err)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	for _, bad := range []string{"", "a:b", "with space", strings.Repeat("x", 256)} {
		if err := n.StoreFDs(bad, r); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	var n Notifier
	if n.Enabled() {
		t.Fatal("enabled without NOTIFY_SOCKET")
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	for _, err := range []error{n.Ready("x"), n.Watchdog(), n.Reloading(), n.Stopping(), n.StoreFDs("x", r)} {
		if err != nil {
			t.Errorf("without systemd: %v", err)
		}
	}
	if _, ok := WatchdogInterval(); ok {
		t.Error("watchdog on without WATCHDOG_USEC")
	}
	in := TakeInherited()
	if len(in.Names()) != 0 {
		t.Errorf("inherited %v without LISTEN_FDS", in.Names())
	}
	if _, err := in.Listener("ctl"); err != ErrNotPassed {
		t.Errorf("listener: %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "3000000")
	t.Setenv("WATCHDOG_PID", "")
	d, ok := WatchdogInterval()
	if !ok || d != 3*time.Second {
		t.Fatalf("got %v %v", d, ok)
	}
	t.Setenv("WATCHDOG_PID", "1") // another process's watchdog
	if _, ok := WatchdogInterval(); ok {
		t.Error("watchdog meant for pid 1 taken")
	}
}
