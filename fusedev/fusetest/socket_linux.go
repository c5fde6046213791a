package fusetest

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketpair returns a connected SOCK_SEQPACKET pair whose buffers can hold
// messages of msgMax bytes. A unix datagram larger than the sender's
// SO_SNDBUF fails with EMSGSIZE, so both send buffers are raised (with
// SO_SNDBUFFORCE as root, else as far as net.core.wmem_max allows).
func socketpair(msgMax int) (kernel, server int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("socketpair: %w", err)
	}
	want := 2*msgMax + 64<<10
	for _, fd := range fds {
		for _, opt := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt[0], want) != nil {
				unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt[1], want)
			}
		}
		got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
		if err == nil && got < msgMax+4096 {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return -1, -1, fmt.Errorf("socket send buffer is %d bytes, messages need %d: run as root or raise net.core.wmem_max, or use a smaller Options.MaxWrite", got, msgMax)
		}
	}
	return fds[0], fds[1], nil
}

// kernelEnd is the fake kernel's end of the socketpair, polled by the runtime.
type kernelEnd struct {
	f  *os.File
	rc syscall.RawConn
}

func newKernelEnd(fd int) (*kernelEnd, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "fusetest-kernel")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &kernelEnd{f: f, rc: rc}, nil
}

var errPeerClosed = errors.New("server end closed")

// recv reads one message; truncated reports a message longer than buf.
func (e *kernelEnd) recv(buf []byte) (n int, truncated bool, err error) {
	var rerr error
	var flags int
	perr := e.rc.Read(func(fd uintptr) bool {
		for {
			n, _, flags, _, rerr = unix.Recvmsg(int(fd), buf, nil, unix.MSG_TRUNC)
			switch rerr {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			return true
		}
	})
	if perr != nil {
		return 0, false, perr
	}
	if rerr != nil {
		return 0, false, rerr
	}
	if n == 0 {
		return 0, false, errPeerClosed
	}
	return min(n, len(buf)), flags&unix.MSG_TRUNC != 0, nil
}

// send writes one message.
func (e *kernelEnd) send(msg []byte) error {
	_, err := e.f.Write(msg)
	return err
}

func (e *kernelEnd) close() error { return e.f.Close() }
