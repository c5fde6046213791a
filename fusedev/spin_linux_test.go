package fusedev

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// These tests drive Conn's read path on real /dev/fuse mounts: readers that
// spin (non-blocking reads between sched_yield calls) before they block in
// read(2) or wait in the netpoller, woken by deadlines and Close at any
// point of that, and several readers sharing one descriptor while others
// spin. Each runs in both waiting modes, with GOMAXPROCS 1.

// modes runs f once per way of waiting, with GOMAXPROCS 1 (see oneP); the
// Conn is made for the mode by mountSpin.
func modes(t *testing.T, f func(t *testing.T, blocking bool)) {
	for _, blocking := range []bool{true, false} {
		name := "poller"
		if blocking {
			name = "blocking"
		}
		t.Run(name, func(t *testing.T) { f(t, blocking) })
	}
}

func requireRealFuse(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real-mount tests mount with mount(2) and need root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// oneP runs the test with GOMAXPROCS 1, as on a one-CPU machine: a read
// that blocked while holding its P (a raw system call on a blocking
// descriptor) would stall every other goroutine and the test would hang.
func oneP(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// mountSpin mounts a FUSE file system on a fresh directory, with a Conn
// whose readers block in read(2) or wait in the netpoller, and reads its
// INIT if asked (nothing else is queued afterwards). The mount goes at
// cleanup.
func mountSpin(t *testing.T, readInit, blocking bool) (string, *Conn) {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Mount(mp, MountOptions{FSName: "fusedev-spin-test"})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	wait := waitPoller
	if blocking {
		wait = waitBlocking
	}
	if c.blocking != blocking {
		// Mount chose the other mode (by GOMAXPROCS): remake the Conn.
		fd, err := unix.FcntlInt(uintptr(c.Fd()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if c, err = newConnFD(fd, "/dev/fuse", wait); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if _, ok, _ := FindMount(mp); ok {
			Unmount(mp, UnmountOptions{Lazy: true})
		}
		c.Close()
	})
	if readInit {
		if _, err := c.Read(make([]byte, 1<<20+4096)); err != nil {
			t.Fatal(err)
		}
	}
	return mp, c
}

// A deadline set at any moment of a reader's spin, or while it blocks,
// ends its Read; clearing it lets the next Read block again.
func TestReadDeadlineDuringSpin(t *testing.T) {
	requireRealFuse(t)
	oneP(t)
	modes(t, testReadDeadlineDuringSpin)
}

func testReadDeadlineDuringSpin(t *testing.T, blocking bool) {
	_, c := mountSpin(t, true, blocking)
	buf := make([]byte, 1<<20+4096)
	for i := 0; i < 300; i++ {
		done := make(chan error, 1)
		go func() {
			_, err := c.Read(buf)
			done <- err
		}()
		// Within the spin (tens of µs) or soon after it.
		time.Sleep(time.Duration(rand.IntN(120)) * time.Microsecond)
		c.SetReadDeadline(time.Now())
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("round %d: Read returned %v, want a deadline error", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: reader not woken by a deadline", i)
		}
		c.SetReadDeadline(time.Time{})
	}
	c.mu.Lock()
	spinning, waiters := c.spinning, len(c.waiters)
	c.mu.Unlock()
	if spinning || waiters != 0 {
		t.Errorf("idle Conn: spinning %v, %d threads registered as blocked", spinning, waiters)
	}
}

// Close at any moment of a reader's spin ends its Read with ErrClosed.
func TestCloseDuringSpin(t *testing.T) {
	requireRealFuse(t)
	oneP(t)
	modes(t, testCloseDuringSpin)
}

func testCloseDuringSpin(t *testing.T, blocking bool) {
	for i := 0; i < 20; i++ {
		_, c := mountSpin(t, true, blocking)
		done := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1<<20+4096))
			done <- err
		}()
		time.Sleep(time.Duration(rand.IntN(80)) * time.Microsecond)
		c.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("round %d: Read returned %v, want ErrClosed", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: reader not woken by Close", i)
		}
	}
}

// statFS is a root directory with a file whose attributes never stay
// cached, so every stat(2) of it reaches the server.
type statFS struct{ NotImplemented }

func (statFS) Lookup(_ context.Context, r *Request, name string, out *abi.EntryOut) error {
	if r.NodeID != abi.RootID || name != "f" {
		return syscall.ENOENT
	}
	out.NodeID, out.Generation, out.EntryValid = 2, 1, 3600
	out.Attr = abi.Attr{Ino: 2, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: 7}
	return nil
}

func (statFS) Getattr(_ context.Context, r *Request, _ *abi.GetattrIn, out *abi.AttrOut) error {
	switch r.NodeID {
	case abi.RootID:
		out.Attr = abi.Attr{Ino: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}
	case 2:
		out.Attr = abi.Attr{Ino: 2, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: 7}
	default:
		return syscall.ENOENT
	}
	return nil
}

// Several readers on one descriptor (as on a CUSE connection), spinning and
// blocking in turn while clients stat in parallel and deadlines come and go:
// every request is answered, and unmounting ends Serve.
func TestSharedDescriptorReaders(t *testing.T) {
	requireRealFuse(t)
	oneP(t)
	if _, err := exec.LookPath("stat"); err != nil {
		t.Skip("no stat in PATH")
	}
	modes(t, testSharedDescriptorReaders)
}

func testSharedDescriptorReaders(t *testing.T, blocking bool) {
	mp, c := mountSpin(t, false, blocking)
	srv := NewServer(c, statFS{}, Options{Readers: 3})
	srv.shareFD = true
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	select {
	case <-srv.Ready():
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no INIT from the kernel")
	}

	// Deadlines that expire at once and are cleared again, as a graceful
	// stop followed by a resume does, while requests flow.
	stopToggling := make(chan struct{})
	var toggler sync.WaitGroup
	toggler.Add(1)
	go func() {
		defer toggler.Done()
		for {
			select {
			case <-stopToggling:
				return
			case <-time.After(time.Duration(rand.IntN(3000)) * time.Microsecond):
			}
			c.SetReadDeadline(time.Now())
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			c.SetReadDeadline(time.Time{})
		}
	}()

	f := filepath.Join(mp, "f")
	args := []string{"-L", "-c", "%s"}
	for i := 0; i < 300; i++ {
		args = append(args, f)
	}
	var clients sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		clients.Add(1)
		go func() {
			defer clients.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "stat", args...).CombinedOutput()
			if err != nil {
				errs <- err
				return
			}
			if n := strings.Count(string(out), "7\n"); n != 300 {
				errs <- errors.New("stat printed " + string(out[:min(len(out), 200)]))
			}
		}()
	}
	clients.Wait()
	close(stopToggling)
	toggler.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("client: %v", err)
	}
	var getattrs uint64
	for _, st := range srv.Stats() {
		if st.Op == abi.OpGetattr {
			getattrs = st.Count
		}
	}
	if getattrs < 4*300 {
		t.Errorf("server answered %d GETATTRs, want at least %d", getattrs, 4*300)
	}

	if err := Unmount(mp, UnmountOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after unmount: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after unmount")
	}
}
