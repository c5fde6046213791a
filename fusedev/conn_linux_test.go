package fusedev_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// A write on a closed Conn fails; it must not reach whatever file reuses
// the descriptor number.
func TestConnWriteAfterClose(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	c, err := fusedev.NewConnFD(fds[1], "test")
	if err != nil {
		t.Fatal(err)
	}
	num := c.Fd()
	c.Close()
	// The lowest free number is the one just closed (unless another test
	// goroutine took it; then there is nothing to prove).
	path := filepath.Join(t.TempDir(), "victim")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if int(f.Fd()) != num {
		t.Skipf("descriptor %d was not reused (got %d); nothing to check", num, f.Fd())
	}
	hdr := abi.OutHeader{Len: abi.SizeOutHeader, Unique: 2}
	werr := c.Write([][]byte{abi.Bytes(&hdr)})
	if !errors.Is(werr, fusedev.ErrClosed) {
		t.Errorf("Write on a closed Conn: %v, want ErrClosed", werr)
	}
	if st, _ := f.Stat(); st.Size() != 0 {
		t.Errorf("Write on a closed Conn wrote %d bytes into the file that reused its descriptor", st.Size())
	}
}

// Read on a socketpair whose peer closed reports ErrClosed; SetReadDeadline
// wakes a pending Read.
func TestConnReadEnds(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fusedev.NewConnFD(fds[1], "test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Clone(); err == nil {
		t.Error("Clone of a socketpair succeeded")
	}
	buf := make([]byte, 64)
	if err := c.SetReadDeadline(timeNowPlus(5)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past its deadline: %v", err)
	}
	c.SetReadDeadline(timeZero())
	unix.Close(fds[0])
	if _, err := c.Read(buf); !errors.Is(err, fusedev.ErrClosed) {
		t.Errorf("Read after the peer closed: %v, want ErrClosed", err)
	}
}

func TestConnReadAfterClose(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	c, err := fusedev.NewConnFD(fds[1], "test")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 64))
		done <- err
	}()
	c.Close()
	if err := <-done; !errors.Is(err, fusedev.ErrClosed) {
		t.Errorf("Read interrupted by Close: %v, want ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, fusedev.ErrClosed) {
		t.Errorf("Read on a closed Conn: %v, want ErrClosed", err)
	}
}
