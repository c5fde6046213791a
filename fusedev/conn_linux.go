package fusedev

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// ErrClosed is returned by Conn.Read once the connection is gone: the file
// system was unmounted (ENODEV), the connection was aborted, or the peer of
// a socketpair closed its end; and by Read and Write on a closed Conn.
var ErrClosed = errors.New("fuse connection closed")

// Conn is one descriptor that carries FUSE messages.
//
// On a character device (/dev/fuse, /dev/cuse, a clone) a reader first
// spins: it polls with non-blocking reads, yielding the CPU between them
// (see spinYields). When nothing comes it waits, in one of two ways chosen
// when the Conn is made:
//
//   - With GOMAXPROCS > 1 it blocks in read(2) on its thread: the kernel
//     wakes exactly one blocked reader per request, and the Go scheduler is
//     not involved, which makes a round trip several times cheaper than
//     waiting in the netpoller. To wake blocked readers (SetReadDeadline,
//     Close) the Conn puts the file in O_NONBLOCK mode and sends SIGURG to
//     their threads: the kernel restarts the interrupted read (Go's
//     handlers use SA_RESTART), the restarted read sees O_NONBLOCK and
//     returns EAGAIN. SIGURG is the signal the Go runtime itself uses for
//     preemption and tolerates spuriously; a program that subscribes to
//     SIGURG with os/signal will see these.
//   - With GOMAXPROCS 1 it waits in Go's netpoller (the file stays
//     non-blocking). A thread blocked in a system call makes the runtime's
//     sysmon take its P away within 20 µs when there is no other P, and
//     sysmon then ticks every 20 µs for a millisecond or more: on a one-CPU
//     machine every tick is a context switch (docs/benchmarks/cuse.md).
//
// On anything else (a SOCK_SEQPACKET socketpair in tests) reads wait in
// Go's netpoller without spinning. Writes go straight to the descriptor
// either way (the kernel keeps each write whole).
type Conn struct {
	f      *os.File
	rc     syscall.RawConn
	fd     int
	closed atomic.Bool // Close was called
	// raw counts the raw system calls in progress on fd (hold): the spin's
	// reads and the writes, which take no reference on f's descriptor.
	// Close waits for them, so none can reach a file that reused fd.
	raw atomic.Int32

	spin     bool // a character device: readers spin before they wait
	blocking bool // readers wait in read(2), not in the netpoller
	// deadline is the read deadline in Unix nanoseconds, 0 for none, for
	// spinning and blocking readers (the netpoller keeps its own).
	deadline atomic.Int64

	mu       sync.Mutex
	timer    *time.Timer   // guarded by mu; expires the deadline
	expired  bool          // guarded by mu; readers are to leave (deadline passed, Close)
	nonblock bool          // guarded by mu; the file is in O_NONBLOCK mode
	spinning bool          // guarded by mu; a reader polls with non-blocking reads
	spinDone chan struct{} // guarded by mu; closed when that reader stops polling
	waiters  map[int]int   // guarded by mu; thread id -> readers blocked in read(2) on it
}

// NewConn takes ownership of f, an open /dev/fuse, /dev/cuse or
// SOCK_SEQPACKET descriptor: it moves the descriptor into a Conn and
// closes f.
func NewConn(f *os.File) (*Conn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), derr)
	}
	name := f.Name()
	f.Close()
	return NewConnFD(nfd, name)
}

// NewConnFD takes ownership of the raw descriptor fd. A character device
// is put in blocking mode when GOMAXPROCS > 1 (see Conn); anything else
// in non-blocking mode, registered with Go's poller.
func NewConnFD(fd int, name string) (*Conn, error) {
	return newConnFD(fd, name, waitAuto)
}

// How readers of a character device wait (tests choose; see Conn).
const (
	waitAuto = iota
	waitBlocking
	waitPoller
)

func newConnFD(fd int, name string, wait int) (*Conn, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", name, err)
	}
	chr := st.Mode&unix.S_IFMT == unix.S_IFCHR
	if wait == waitAuto {
		wait = waitBlocking
		if runtime.GOMAXPROCS(0) == 1 {
			wait = waitPoller
		}
	}
	blocking := chr && wait == waitBlocking
	if err := unix.SetNonblock(fd, !blocking); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set %s non-blocking: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name) // polled by the runtime if non-blocking
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Conn{f: f, rc: rc, fd: fd, spin: chr, blocking: blocking}, nil
}

// Fd returns the descriptor. It stays owned by the Conn.
func (c *Conn) Fd() int { return c.fd }

// File returns the Conn's file, e.g. to hand it to systemd's fd store.
// Close the Conn, not the file.
func (c *Conn) File() *os.File { return c.f }

// Close closes the descriptor, waking readers blocked on it (they get
// ErrClosed). Closing the last descriptor of a mount's connection makes the
// mount report ENOTCONN until unmounted.
func (c *Conn) Close() error {
	c.closed.Store(true)
	if c.blocking {
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.setExpired(true)
		c.mu.Unlock()
	}
	for c.raw.Load() != 0 {
		// A spin (tens of µs at most) or a write is under way.
		time.Sleep(10 * time.Microsecond)
	}
	return c.f.Close()
}

// hold registers a raw system call on c.fd; false when the Conn is closed.
// Cheaper than RawConn.Control, which costs several calls, on every
// request. Pair with c.raw.Add(-1).
func (c *Conn) hold() bool {
	c.raw.Add(1)
	if c.closed.Load() { // Close sets closed, then waits for raw to drain
		c.raw.Add(-1)
		return false
	}
	return true
}

// pollErr maps the error of a RawConn operation: on a closed Conn the
// runtime says "use of closed file" (internal/poll's, which is not
// os.ErrClosed), reported here as ErrClosed.
func (c *Conn) pollErr(err error) error {
	if c.closed.Load() || errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}

// SetReadDeadline wakes pending and later Reads with os.ErrDeadlineExceeded
// at t; the zero time clears it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if !c.blocking {
		if t.IsZero() {
			c.deadline.Store(0)
		} else {
			c.deadline.Store(t.UnixNano())
		}
		return c.f.SetReadDeadline(t)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	switch {
	case t.IsZero():
		c.deadline.Store(0)
		c.setExpired(false)
	case !t.After(time.Now()):
		c.deadline.Store(t.UnixNano())
		c.setExpired(true)
	default:
		c.deadline.Store(t.UnixNano())
		c.setExpired(false)
		var timer *time.Timer
		timer = time.AfterFunc(time.Until(t), func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.timer == timer && !c.closed.Load() {
				c.setExpired(true)
			}
		})
		c.timer = timer
	}
	return nil
}

// setExpired records whether readers are to leave; on expiry it puts the
// file in O_NONBLOCK mode and wakes every reader blocked in read(2). The
// mode goes back to blocking when a reader next blocks. c.mu is held.
func (c *Conn) setExpired(on bool) {
	c.expired = on
	if !on {
		return
	}
	c.setNonblock(true)
	// O_NONBLOCK is set before the signal: a read that starts later returns
	// EAGAIN at once, one asleep is restarted by the signal and then does.
	pid := unix.Getpid()
	for tid := range c.waiters {
		unix.Tgkill(pid, tid, unix.SIGURG)
	}
}

// setNonblock switches the file's O_NONBLOCK flag. c.mu is held.
func (c *Conn) setNonblock(on bool) {
	if on != c.nonblock {
		c.rc.Control(func(fd uintptr) { unix.SetNonblock(int(fd), on) })
		c.nonblock = on
	}
}

// deadlinePassed reports whether the read deadline is over (spinning and
// blocking readers).
func (c *Conn) deadlinePassed() bool {
	d := c.deadline.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// Read reads one message into buf. It retries the kernel's transient errors
// (EINTR; ENOENT, a request aborted while being read) and maps the end of
// the connection to ErrClosed.
func (c *Conn) Read(buf []byte) (int, error) {
	rd := new(connReader)
	rd.init(c)
	return rd.read(buf)
}

// connReader is the state of one goroutine's reads of a Conn, made once and
// reused, so that reading allocates nothing (the closures handed to
// RawConn are made in init). One goroutine uses it at a time.
type connReader struct {
	c    *Conn
	buf  []byte
	n    int
	rerr error
	ok   bool // spin read something

	rawFn   func(fd uintptr)      // one non-blocking read
	pollFn  func(fd uintptr) bool // netpoller: one read, false on EAGAIN
	blockFn func(fd uintptr)      // one blocking read(2) through the scheduler
}

func (rd *connReader) init(c *Conn) {
	rd.c = c
	rd.rawFn = func(fd uintptr) { rd.n, rd.rerr = readRetry(rawRead, int(fd), rd.buf) }
	rd.pollFn = func(fd uintptr) bool {
		rd.rawFn(fd)
		return rd.rerr != unix.EAGAIN
	}
	// A blocking read(2) must go through the scheduler (unix.Read): made
	// with RawSyscall it would hold its P while the server idles, and with
	// one CPU nothing else (timers, signals, a GC's stop-the-world) could
	// run until the next request.
	rd.blockFn = func(fd uintptr) { rd.n, rd.rerr = readRetry(unix.Read, int(fd), rd.buf) }
}

// read reads one message into buf (see Conn.Read).
func (rd *connReader) read(buf []byte) (int, error) {
	c := rd.c
	rd.buf, rd.n, rd.rerr = buf, 0, nil
	defer func() { rd.buf = nil }()
	var err error
	if c.blocking {
		err = rd.readBlocking()
	} else {
		if c.spin {
			// The file is always non-blocking here: spin without c.mu.
			switch {
			case c.closed.Load():
				return 0, ErrClosed
			case c.deadlinePassed():
				return 0, os.ErrDeadlineExceeded
			}
			rd.ok = false
			if !c.hold() {
				return 0, ErrClosed
			}
			rd.spinLoop(uintptr(c.fd))
			c.raw.Add(-1)
		}
		if err == nil && !rd.ok {
			err = c.rc.Read(rd.pollFn)
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !c.closed.Load() {
			// /dev/fuse polls as EPOLLERR once the connection is gone, and
			// the runtime then fails the next wait with "not pollable"
			// without reading. Ask the descriptor itself (it says ENODEV).
			rd.rerr = unix.EAGAIN
			if cerr := c.rc.Control(rd.rawFn); cerr != nil {
				return 0, c.pollErr(cerr)
			}
			if rd.rerr != unix.EAGAIN {
				err = nil
			}
		}
	}
	if err != nil {
		return 0, c.pollErr(err)
	}
	switch rerr := rd.rerr; {
	case rerr == unix.ENODEV || rerr == unix.ECONNABORTED:
		return 0, ErrClosed
	case rerr == unix.ECONNRESET:
		return 0, ErrClosed // a socketpair peer closed with messages unread
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	case rd.n == 0 && c.hungUp():
		return 0, ErrClosed // a socketpair peer hung up
	}
	return rd.n, nil // n == 0: an empty message, which the caller drops
}

// readRetry reads once, retrying EINTR and ENOENT (a request aborted while
// being read).
func readRetry(read func(int, []byte) (int, error), fd int, buf []byte) (int, error) {
	for {
		n, err := read(fd, buf)
		if err != unix.EINTR && err != unix.ENOENT {
			return n, err
		}
	}
}

// Spinning: before a reader blocks in read(2) it polls the file for a while
// with non-blocking reads, yielding the CPU between them (sched_yield). On
// a machine where the peer shares the reader's CPU, the yield runs the
// process the last reply woke, which usually sends its next request before
// it runs out of work; the reader then finds it without having slept, and
// without the Go scheduler's bookkeeping of a blocking system call, which
// wakes the runtime's sysmon thread whenever the process was idle (two
// context switches and a futex per request on a one-CPU machine,
// docs/benchmarks/cuse.md). The poll is bounded by count and time, after
// which the reader blocks as before.
//
// Only non-blocking reads and sched_yield are made with RawSyscall here: a
// blocking Conn's file is O_NONBLOCK for as long as c.spinning is set (see
// readBlocking), any other Conn's always.
const (
	spinYields = 8                     // sched_yield calls at most
	spinTime   = 50 * time.Microsecond // and about this long
)

// readBlocking reads one message on a character device: first by spinning,
// then with a blocking read(2) on this goroutine's thread, until it returns
// something other than EAGAIN (a reader woken by setExpired sees EAGAIN),
// the deadline passes or the Conn is closed. It leaves the read's result in
// rd, or returns why it stopped without one.
func (rd *connReader) readBlocking() error {
	c := rd.c
	if c.closed.Load() {
		return ErrClosed
	}
	if c.deadlinePassed() {
		return os.ErrDeadlineExceeded
	}
	if ok, err := rd.spin(); ok || err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	for {
		if c.closed.Load() {
			return ErrClosed
		}
		if c.deadlinePassed() {
			return os.ErrDeadlineExceeded
		}
		c.mu.Lock()
		for c.spinning {
			// Another reader polls the file in O_NONBLOCK mode: wait for it
			// to stop (it soon does) rather than read and get EAGAIN.
			if c.spinDone == nil {
				c.spinDone = make(chan struct{})
			}
			ch := c.spinDone
			c.mu.Unlock()
			<-ch
			c.mu.Lock()
		}
		if c.expired {
			// Expired for a deadline already cleared or moved (the checks
			// above ran without c.mu): wait for the flag to settle.
			c.mu.Unlock()
			time.Sleep(time.Millisecond)
			continue
		}
		c.setNonblock(false)
		if c.waiters == nil {
			c.waiters = make(map[int]int)
		}
		c.waiters[tid]++
		c.mu.Unlock()
		err := c.rc.Control(rd.blockFn)
		c.mu.Lock()
		if c.waiters[tid]--; c.waiters[tid] == 0 {
			delete(c.waiters, tid)
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if rd.rerr != unix.EAGAIN {
			return nil
		}
		// Woken on purpose, or the file was switched to O_NONBLOCK between
		// the unlock and the read: look again.
	}
}

// spin polls the file with non-blocking reads and sched_yield (see
// spinYields). ok reports that it read something (into rd); err that the
// Conn was closed meanwhile.
func (rd *connReader) spin() (ok bool, err error) {
	c := rd.c
	c.mu.Lock()
	if c.spinning || c.expired {
		c.mu.Unlock()
		return false, nil
	}
	c.spinning = true
	c.setNonblock(true)
	c.mu.Unlock()
	rd.ok = false
	if c.hold() {
		rd.spinLoop(uintptr(c.fd))
		c.raw.Add(-1)
	} else {
		err = ErrClosed
	}
	c.mu.Lock()
	c.spinning = false
	if c.spinDone != nil {
		close(c.spinDone)
		c.spinDone = nil
	}
	c.mu.Unlock()
	return rd.ok, err
}

// spinLoop is spin's part on the descriptor: the file is O_NONBLOCK
// throughout (c.spinning is set, or the Conn is not blocking).
func (rd *connReader) spinLoop(fd uintptr) {
	c := rd.c
	var start time.Time
	for i := 0; ; i++ {
		rd.rawFn(fd)
		if rd.rerr != unix.EAGAIN {
			rd.ok = true
			return
		}
		if i == spinYields || c.closed.Load() {
			return
		}
		now := time.Now()
		if i == 0 {
			start = now
		} else if now.Sub(start) > spinTime {
			return
		}
		if d := c.deadline.Load(); d != 0 && now.UnixNano() >= d {
			return
		}
		schedYield()
	}
}

// hungUp tells a closed peer from an empty message: on a SOCK_SEQPACKET
// socket both read as 0 bytes, but only the first polls as hang-up.
func (c *Conn) hungUp() bool {
	hup := true
	c.rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		for {
			_, err := unix.Poll(p, 0)
			if err != unix.EINTR {
				hup = err != nil || p[0].Revents&(unix.POLLHUP|unix.POLLRDHUP|unix.POLLERR|unix.POLLNVAL) != 0
				return
			}
		}
	})
	return hup
}

// Write writes one message made of the given pieces with a single writev.
// The kernel answers ENOENT when the request was interrupted or aborted
// meanwhile: callers treat that as success. Errors from the descriptor are
// syscall.Errno values; a closed Conn gives ErrClosed.
//
// The write holds a reference on the descriptor (RawConn.Control), so a
// concurrent Close cannot let it reach a file that reused the number;
// unlike RawConn.Write it does not serialise writers, which the kernel
// does not need.
func (c *Conn) Write(iov [][]byte) error {
	w := new(msgWriter)
	w.init()
	w.iov = iov
	return c.write(w)
}

// msgWriter is reusable state for writing messages without allocating:
// its closure is made once, in init.
type msgWriter struct {
	iov  [][]byte
	two  [2][]byte // backing array for iov (writeMsg)
	werr error
	fn   func(fd uintptr)
}

func (w *msgWriter) init() {
	w.fn = func(fd uintptr) {
		for {
			_, w.werr = rawWritev(int(fd), w.iov)
			if w.werr != unix.EINTR {
				return
			}
		}
	}
}

// writeMsg writes head followed by data (which may be empty) as one message.
func (c *Conn) writeMsg(w *msgWriter, head, data []byte) error {
	w.two[0], w.two[1] = head, data
	w.iov = w.two[:]
	err := c.write(w)
	w.two[0], w.two[1], w.iov = nil, nil, nil
	return err
}

func (c *Conn) write(w *msgWriter) error {
	if !c.hold() {
		return ErrClosed
	}
	w.fn(uintptr(c.fd))
	c.raw.Add(-1)
	var err error
	if w.werr == unix.EAGAIN {
		// Only a socketpair with a full buffer says this; wait for room.
		err = c.rc.Write(func(fd uintptr) bool {
			w.fn(fd)
			return w.werr != unix.EAGAIN
		})
	}
	switch {
	case err != nil:
		return c.pollErr(err)
	case w.werr != nil:
		return w.werr
	}
	return nil
}

// rawRead, rawWritev and schedYield make their syscalls with RawSyscall,
// without telling the scheduler. Use them only where the call cannot block:
// a read of a non-blocking descriptor, a reply (the kernel consumes it at once;
// CUSE_INIT's reply, which creates the device, takes a few ms). Entering a
// syscall the usual way wakes the runtime's sysmon thread whenever it
// sleeps, which it does each time the server goes idle: two extra context
// switches per request, which in a one-CPU qemu guest under TCG tripled the
// time of a CUSE request (docs/benchmarks/cuse.md).
func rawRead(fd int, buf []byte) (int, error) {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	n, _, e := syscall.RawSyscall6(unix.SYS_READ, uintptr(fd), uintptr(p), uintptr(len(buf)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func schedYield() { syscall.RawSyscall6(unix.SYS_SCHED_YIELD, 0, 0, 0, 0, 0, 0) }

func rawWritev(fd int, iov [][]byte) (int, error) {
	var small [4]unix.Iovec
	vs := small[:0]
	for _, b := range iov {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		vs = append(vs, v)
	}
	var p unsafe.Pointer
	if len(vs) > 0 {
		p = unsafe.Pointer(&vs[0])
	}
	n, _, e := syscall.RawSyscall6(unix.SYS_WRITEV, uintptr(fd), uintptr(p), uintptr(len(vs)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Clone opens /dev/fuse again and attaches it to this connection with
// FUSE_DEV_IOC_CLONE, so another reader gets requests from its own fd.
func (c *Conn) Clone() (*Conn, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse for clone: %w", err)
	}
	src := uint32(c.fd)
	if err := ioctlPtr(fd, abi.DevIocClone, unsafe.Pointer(&src)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("FUSE_DEV_IOC_CLONE: %w", err)
	}
	return NewConnFD(fd, "/dev/fuse")
}

// BackingOpen registers fd as a passthrough backing file of this connection
// and returns its backing id (Linux 6.9+, CAP_SYS_ADMIN).
func (c *Conn) BackingOpen(fd int) (int32, error) {
	m := abi.BackingMap{Fd: int32(fd)}
	id, err := ioctlRet(c.fd, abi.DevIocBackingOpen, unsafe.Pointer(&m))
	if err != nil {
		return 0, err
	}
	return int32(id), nil
}

// BackingClose releases a backing id returned by BackingOpen.
func (c *Conn) BackingClose(id int32) error {
	v := uint32(id)
	return ioctlPtr(c.fd, abi.DevIocBackingClose, unsafe.Pointer(&v))
}

func ioctlPtr(fd int, req uint32, arg unsafe.Pointer) error {
	_, err := ioctlRet(fd, req, arg)
	return err
}

// ioctlRet keeps arg an unsafe.Pointer up to the syscall expression, so the
// pointee stays valid even if the goroutine's stack moves on the way.
func ioctlRet(fd int, req uint32, arg unsafe.Pointer) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}
