package cuse

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

// start serves dev through a fake kernel and answers CUSE_INIT.
func start(t *testing.T, dev Device, opts Options) (*fusetest.Kernel, *Server) {
	t.Helper()
	if opts.Name == "" {
		opts.Name = "fake0"
	}
	s, err := New(dev, opts)
	if err != nil {
		t.Fatal(err)
	}
	k := fusetest.Start(t, &adapter{s: s}, s.fusedevOptions())
	r := k.CuseInit(7, 38, abi.CuseUnrestrictedIoctl)
	if r.Errno != 0 {
		t.Fatalf("CUSE_INIT: %v", r.Errno)
	}
	return k, s
}

// open sends OPEN and returns the file handle.
func open(t *testing.T, k *fusetest.Kernel, flags uint32) uint64 {
	t.Helper()
	out, errno := k.Open(0, flags)
	if errno != 0 {
		t.Fatalf("OPEN: %v", errno)
	}
	return out.Fh
}

// read sends READ with the file's current flags and offset.
func read(k *fusetest.Kernel, fh uint64, size uint32, flags uint32, off uint64) uint64 {
	return k.Send(abi.OpRead, 0, fusetest.Arg(abi.ReadIn{Fh: fh, Size: size, Flags: flags, Offset: off}))
}

func write(k *fusetest.Kernel, fh uint64, data []byte, flags uint32) uint64 {
	return k.Send(abi.OpWrite, 0, fusetest.Arg(abi.WriteIn{Fh: fh, Size: uint32(len(data)), Flags: flags}), data)
}

// pipeDev is a small in-package device: a one-slot mailbox, with an ioctl
// that follows a pointer, for the Server's own tests (the loopback package
// has its own).
type pipeDev struct {
	mu    sync.Mutex
	data  []byte
	sig   chan struct{}
	files []*File
	log   []string // ioctl side effects, in order
}

func (d *pipeDev) Open(ctx context.Context, f *File) (Handle, error) {
	if f.OpenFlags()&unix.O_TRUNC != 0 {
		return nil, syscall.EROFS // a refusal the test can see
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sig == nil {
		d.sig = make(chan struct{})
	}
	d.files = append(d.files, f)
	return &pipeHandle{d: d, f: f}, nil
}

type pipeHandle struct {
	d *pipeDev
	f *File
}

func (h *pipeHandle) Read(ctx context.Context, op Op, dest []byte) (int, error) {
	d := h.d
	for {
		d.mu.Lock()
		if len(d.data) > 0 {
			n := copy(dest, d.data)
			d.data = d.data[n:]
			d.mu.Unlock()
			return n, nil
		}
		if op.Nonblock() {
			d.mu.Unlock()
			return 0, syscall.EAGAIN
		}
		if op.Offset > 0 {
			d.mu.Unlock()
			return 0, nil
		}
		ch := d.sig
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (h *pipeHandle) Write(ctx context.Context, op Op, data []byte) (int, error) {
	d := h.d
	d.mu.Lock()
	d.data = append(d.data, data...)
	close(d.sig)
	d.sig = make(chan struct{})
	files := append([]*File(nil), d.files...)
	d.mu.Unlock()
	for _, f := range files {
		f.Wake()
	}
	return len(data), nil
}

func (h *pipeHandle) Release(ctx context.Context) error { return nil }

func (h *pipeHandle) Poll(ctx context.Context, op Op, events Events) (Events, error) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	ev := PollOut
	if len(h.d.data) > 0 {
		ev |= PollIn
	}
	return ev & events, nil
}

// sumCmd takes struct { buf uint64; len uint32; sum uint32 } at arg: it reads
// len bytes at buf and writes their byte sum back into the struct.
var sumCmd = Ioc(IocRead|IocWrite, 'T', 1, 16)

// bigCmd asks for n one-byte regions, n in arg.
var bigCmd = Ioc(IocNone, 'T', 2, 0)

func (h *pipeHandle) Ioctl(ctx context.Context, op Op, req *IoctlRequest) (int32, error) {
	switch req.Cmd {
	case sumCmd:
		arg, err1 := req.In(req.ArgRegion())
		back, err2 := req.Out(req.ArgRegion())
		if err := errors.Join(err1, err2); err != nil {
			if errors.Is(err, ErrIoctlRetry) {
				return 0, ErrIoctlRetry
			}
			return 0, err
		}
		buf := binary.LittleEndian.Uint64(arg)
		n := int(binary.LittleEndian.Uint32(arg[8:]))
		data, err := req.In(Region{Addr: buf, Len: n})
		if err != nil {
			return 0, err
		}
		var sum uint32
		for _, b := range data {
			sum += uint32(b)
		}
		copy(back, arg)
		binary.LittleEndian.PutUint32(back[12:], sum)
		h.d.mu.Lock()
		h.d.log = append(h.d.log, "sum")
		h.d.mu.Unlock()
		return int32(n), nil
	case bigCmd:
		// Ask for everything before looking at errors; returning nil with
		// regions missing still asks for them.
		for i := uint64(0); i < req.Arg; i++ {
			if _, err := req.In(Region{Addr: 0x1000 + i, Len: 1}); err != nil && !errors.Is(err, ErrIoctlRetry) {
				return 0, err
			}
		}
		return 0, nil
	}
	return 0, syscall.ENOTTY
}

func TestCuseInitReplyBytes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  Options
		flags uint32
		want  []byte // cuse_init_out after major/minor, then device info
	}{
		{
			name: "dynamic", opts: Options{Name: "loop0"}, flags: abi.CuseUnrestrictedIoctl,
		},
		{
			name: "fixed number, small io, restricted", flags: abi.CuseUnrestrictedIoctl,
			opts: Options{Name: "net/tap9", Major: 240, Minor: 7, MaxRead: 8192, MaxWrite: 4096, RestrictIoctl: true},
		},
		{
			name: "kernel offers no unrestricted ioctls", opts: Options{Name: "x", MaxRead: 1}, flags: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(&pipeDev{}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			k := fusetest.Start(t, &adapter{s: s}, s.fusedevOptions())
			u := k.Send(abi.OpCuseInit, 0, fusetest.Arg(abi.CuseInitIn{Major: 7, Minor: 38, Flags: tc.flags}))
			r := k.Reply(u)

			// Built by hand from the kernel header's layout, not from abi.
			le := binary.LittleEndian
			info := append([]byte("DEVNAME="+tc.opts.Name), 0)
			want := le.AppendUint32(nil, uint32(16+72+len(info)))
			want = le.AppendUint32(want, 0) // error
			want = le.AppendUint64(want, u)
			unrestricted := uint32(0)
			if !tc.opts.RestrictIoctl {
				unrestricted = tc.flags & 1
			}
			maxRead, maxWrite := uint32(131072), uint32(131072)
			if tc.opts.MaxRead != 0 {
				maxRead = max(tc.opts.MaxRead, 4096)
			}
			if tc.opts.MaxWrite != 0 {
				maxWrite = max(tc.opts.MaxWrite, 4096)
			}
			for _, v := range []uint32{7, 38, 0, unrestricted, maxRead, maxWrite, tc.opts.Major, tc.opts.Minor} {
				want = le.AppendUint32(want, v)
			}
			want = append(want, make([]byte, 40)...) // spare[10]
			want = append(want, info...)
			if !bytes.Equal(r.Raw, want) {
				t.Fatalf("CUSE_INIT reply\n got % x\nwant % x", r.Raw, want)
			}
			neg := s.Negotiated()
			if neg == nil || !neg.Cuse || neg.MaxRead != maxRead || neg.MaxWrite != maxWrite || neg.CuseFlags != unrestricted {
				t.Fatalf("Negotiated = %+v", neg)
			}
		})
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"loop0", "net/tun", "a.b_c-d+e:f", "X"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/abs", "a//b", "../x", "a/./b", "sp ace", "nul\x00", "é", string(make([]byte, 129))} {
		if err := CheckName(bad); err == nil {
			t.Errorf("CheckName(%q) accepted", bad)
		}
	}
	if _, err := New(&pipeDev{}, Options{Name: "bad name"}); err == nil {
		t.Error("New accepted a bad name")
	}
	if _, err := New(nil, Options{Name: "x"}); err == nil {
		t.Error("New accepted a nil device")
	}
	if _, err := New(&pipeDev{}, Options{Name: "x", Mode: 0o4755}); err == nil {
		t.Error("New accepted a setuid mode")
	}
}

func TestOpenReadWriteRelease(t *testing.T) {
	d := &pipeDev{}
	k, s := start(t, d, Options{})
	if _, errno := k.Open(0, unix.O_RDWR|unix.O_TRUNC); errno != syscall.EROFS {
		t.Fatalf("OPEN refused by the device: errno %v, want EROFS", errno)
	}
	fh := open(t, k, unix.O_RDWR)
	fh2 := open(t, k, unix.O_RDONLY)
	if fh == fh2 {
		t.Fatalf("two opens got the same handle %d", fh)
	}
	if n, errno := k.Write(0, fh, 0, []byte("hello")); errno != 0 || n != 5 {
		t.Fatalf("WRITE = %d, %v", n, errno)
	}
	got, errno := k.Read(0, fh2, 0, 3)
	if errno != 0 || string(got) != "hel" {
		t.Fatalf("READ = %q, %v", got, errno)
	}
	got, errno = k.Read(0, fh, 0, 100)
	if errno != 0 || string(got) != "lo" {
		t.Fatalf("READ = %q, %v", got, errno)
	}
	// A request for a handle the kernel never got.
	if _, errno := k.Read(0, 999, 0, 1); errno != syscall.EBADF {
		t.Fatalf("READ of an unknown handle: %v, want EBADF", errno)
	}
	// No Flusher, no Fsyncer: ENOSYS, so the kernel stops asking.
	if errno := k.Flush(0, fh, 0); errno != syscall.ENOSYS {
		t.Fatalf("FLUSH: %v", errno)
	}
	if errno := k.Fsync(0, fh, 0); errno != syscall.ENOSYS {
		t.Fatalf("FSYNC: %v", errno)
	}
	if errno := k.Release(0, fh); errno != 0 {
		t.Fatalf("RELEASE: %v", errno)
	}
	st := s.Stats()
	if st.Opens != 2 || st.OpenNow != 1 || st.BytesWritten != 5 || st.BytesRead != 5 || st.Reads != 2 || st.Writes != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Other FUSE operations are not for devices.
	if r := k.Do(abi.OpGetattr, 0, fusetest.Arg(abi.GetattrIn{})); r.Errno != syscall.ENOSYS {
		t.Fatalf("GETATTR: %v", r.Errno)
	}
}

func TestNonblockAndContinuation(t *testing.T) {
	k, _ := start(t, &pipeDev{}, Options{})
	fh := open(t, k, unix.O_RDWR|unix.O_NONBLOCK)
	if r := k.Reply(read(k, fh, 10, unix.O_RDWR|unix.O_NONBLOCK, 0)); r.Errno != syscall.EAGAIN {
		t.Fatalf("nonblocking READ of an empty device: %v, want EAGAIN", r.Errno)
	}
	// fcntl(F_SETFL) cleared O_NONBLOCK: the flags in READ win over open's.
	u := read(k, fh, 10, unix.O_RDWR, 0)
	k.ExpectNoReply(u, 50*time.Millisecond)
	k.Reply(write(k, fh, []byte("x"), unix.O_RDWR))
	if r := k.Reply(u); r.Errno != 0 || string(r.Payload) != "x" {
		t.Fatalf("blocked READ woke with %q, %v", r.Payload, r.Errno)
	}
	// A later chunk of the same read(2) must not block.
	if r := k.Reply(read(k, fh, 10, unix.O_RDWR, 131072)); r.Errno != 0 || len(r.Payload) != 0 {
		t.Fatalf("continuation READ: %q, %v", r.Payload, r.Errno)
	}
}

func TestInterruptCancelsBlockedRead(t *testing.T) {
	k, s := start(t, &pipeDev{}, Options{})
	fh := open(t, k, unix.O_RDONLY)
	u := read(k, fh, 10, unix.O_RDONLY, 0)
	k.ExpectNoReply(u, 50*time.Millisecond)
	k.Interrupt(u)
	r := k.Reply(u)
	if r.Errno != syscall.EINTR {
		t.Fatalf("interrupted READ: %v, want EINTR", r.Errno)
	}
	if st := s.Stats(); st.Interrupted != 1 || st.Reads != 0 {
		t.Fatalf("stats %+v", st)
	}
	// The device still serves.
	k.Reply(write(k, fh, []byte("ok"), unix.O_RDWR))
	if got, errno := k.Read(0, fh, 0, 10); errno != 0 || string(got) != "ok" {
		t.Fatalf("READ after interrupt: %q, %v", got, errno)
	}
}

func TestPollNotification(t *testing.T) {
	k, s := start(t, &pipeDev{}, Options{})
	fh := open(t, k, unix.O_RDWR)
	const kh = 0xabcdef
	out, errno := k.Poll(0, abi.PollIn{Fh: fh, Kh: kh, Flags: abi.PollScheduleNotify, Events: uint32(PollIn | PollOut)})
	if errno != 0 || Events(out.Revents) != PollOut {
		t.Fatalf("POLL of an empty device: %#x, %v; want POLLOUT", out.Revents, errno)
	}
	// A write makes it readable: the poller is woken with its kh.
	k.Reply(write(k, fh, []byte("x"), unix.O_RDWR))
	n := k.ExpectNotification(abi.NotifyPoll)
	var w abi.NotifyPollWakeupOut
	if err := abi.Decode(n.Payload, &w); err != nil || w.Kh != kh {
		t.Fatalf("poll wake-up %+v, %v; want kh %#x", w, err, kh)
	}
	// One wake-up per POLL: a second change before the next POLL is silent.
	k.Reply(write(k, fh, []byte("y"), unix.O_RDWR))
	k.ExpectQuiet(50 * time.Millisecond)
	out, _ = k.Poll(0, abi.PollIn{Fh: fh, Kh: kh, Flags: abi.PollScheduleNotify, Events: uint32(PollIn)})
	if Events(out.Revents) != PollIn {
		t.Fatalf("POLL with data: %#x", out.Revents)
	}
	// A POLL without SCHEDULE_NOTIFY (a poller that does not wait) arms nothing.
	k.Reply(write(k, fh, []byte("z"), unix.O_RDWR)) // wakes the armed one above
	k.ExpectNotification(abi.NotifyPoll)
	k.Poll(0, abi.PollIn{Fh: fh, Kh: kh, Events: uint32(PollIn)})
	k.Reply(write(k, fh, []byte("w"), unix.O_RDWR))
	k.ExpectQuiet(50 * time.Millisecond)
	if st := s.Stats(); st.Polls != 3 || st.Wakeups != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPollWithoutPoller(t *testing.T) {
	k, _ := start(t, plainDev{}, Options{})
	fh := open(t, k, unix.O_RDWR)
	if _, errno := k.Poll(0, abi.PollIn{Fh: fh, Kh: 1, Flags: abi.PollScheduleNotify, Events: 1}); errno != syscall.ENOSYS {
		t.Fatalf("POLL of a handle without Poll: %v, want ENOSYS", errno)
	}
	if out, errno := k.Ioctl(0, abi.IoctlIn{Fh: fh, Cmd: 1, Flags: abi.IoctlUnrestricted}, nil); errno != syscall.ENOTTY {
		t.Fatalf("IOCTL of a handle without Ioctl: %+v, %v; want ENOTTY", out, errno)
	}
}

// plainDev implements only the required methods.
type plainDev struct{}

func (plainDev) Open(ctx context.Context, f *File) (Handle, error) { return plainDev{}, nil }
func (plainDev) Read(ctx context.Context, op Op, dest []byte) (int, error) {
	return 0, nil
}
func (plainDev) Write(ctx context.Context, op Op, data []byte) (int, error) {
	return len(data), nil
}
func (plainDev) Release(ctx context.Context) error { return nil }

func iov(addr uint64, n int) abi.IoctlIovec { return abi.IoctlIovec{Base: addr, Len: uint64(n)} }

func TestIoctlRetryEmbeddedPointer(t *testing.T) {
	d := &pipeDev{}
	k, s := start(t, d, Options{})
	fh := open(t, k, unix.O_RDWR)
	const arg, buf = 0x7f0000001000, 0x7f0000002000
	payload := []byte("embedded pointer")
	argIn := binary.LittleEndian.AppendUint64(nil, buf)
	argIn = binary.LittleEndian.AppendUint32(argIn, uint32(len(payload)))
	argIn = binary.LittleEndian.AppendUint32(argIn, 0)
	base := abi.IoctlIn{Fh: fh, Flags: abi.IoctlUnrestricted, Cmd: uint32(sumCmd), Arg: arg}

	// Round 1: the kernel copies nothing; the handler asks for the struct,
	// in and out at once.
	r, errno := k.Ioctl(0, base, nil)
	if errno != 0 || r.Out.Flags&abi.IoctlRetry == 0 {
		t.Fatalf("round 1: %+v, %v; want a retry", r, errno)
	}
	wantIovs(t, "round 1 in", r.InIovs, iov(arg, 16))
	wantIovs(t, "round 1 out", r.OutIovs, iov(arg, 16))

	// Round 2: the struct is there; the handler follows its pointer.
	in2 := base
	in2.OutSize = 16
	r, errno = k.Ioctl(0, in2, argIn)
	if errno != 0 || r.Out.Flags&abi.IoctlRetry == 0 {
		t.Fatalf("round 2: %+v, %v; want a retry", r, errno)
	}
	wantIovs(t, "round 2 in", r.InIovs, iov(arg, 16), iov(buf, len(payload)))
	wantIovs(t, "round 2 out", r.OutIovs, iov(arg, 16))
	if len(d.log) != 0 {
		t.Fatalf("the handler acted before it had its data: %v", d.log)
	}

	// Round 3: everything is there: the answer goes to the out iovecs.
	in3 := base
	in3.OutSize = 16
	r, errno = k.Ioctl(0, in3, append(append([]byte(nil), argIn...), payload...))
	if errno != 0 || r.Out.Flags&abi.IoctlRetry != 0 {
		t.Fatalf("round 3: %+v, %v; want the answer", r, errno)
	}
	var sum uint32
	for _, b := range payload {
		sum += uint32(b)
	}
	want := append(append([]byte(nil), argIn[:12]...), binary.LittleEndian.AppendUint32(nil, sum)...)
	if r.Out.Result != int32(len(payload)) || !bytes.Equal(r.Data, want) {
		t.Fatalf("round 3: result %d data % x; want %d, % x", r.Out.Result, r.Data, len(payload), want)
	}
	if len(d.log) != 1 {
		t.Fatalf("side effects %v, want exactly one", d.log)
	}
	if st := s.Stats(); st.Ioctls != 1 || st.IoctlRetries != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func wantIovs(t *testing.T, what string, got []abi.IoctlIovec, want ...abi.IoctlIovec) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: iovecs %+v, want %+v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: iovecs %+v, want %+v", what, got, want)
		}
	}
}

func TestIoctlLimitsAndRestricted(t *testing.T) {
	k, _ := start(t, &pipeDev{}, Options{})
	fh := open(t, k, unix.O_RDWR)
	in := abi.IoctlIn{Fh: fh, Flags: abi.IoctlUnrestricted, Cmd: uint32(bigCmd), Arg: IoctlMaxRegions}
	r, errno := k.Ioctl(0, in, nil)
	if errno != 0 || len(r.InIovs) != IoctlMaxRegions {
		t.Fatalf("%d regions: %d iovecs, %v", IoctlMaxRegions, len(r.InIovs), errno)
	}
	in.Arg = IoctlMaxRegions + 1
	if _, errno := k.Ioctl(0, in, nil); errno != syscall.ENOMEM {
		t.Fatalf("%d regions: %v, want ENOMEM", in.Arg, errno)
	}
	// A 32-bit caller cannot have memory above 4 GiB.
	arg32 := abi.IoctlIn{Fh: fh, Flags: abi.IoctlUnrestricted | abi.Ioctl32Bit | abi.IoctlCompat, Cmd: uint32(sumCmd), Arg: 1 << 33}
	if _, errno := k.Ioctl(0, arg32, nil); errno != syscall.EFAULT {
		t.Fatalf("32-bit caller, 64-bit pointer: %v, want EFAULT", errno)
	}
	// Restricted (no UNRESTRICTED flag): the kernel copied what the number
	// encodes, and asking for more fails instead of retrying.
	argIn := binary.LittleEndian.AppendUint64(nil, 0x5000)
	argIn = binary.LittleEndian.AppendUint64(argIn, 4)
	restricted := abi.IoctlIn{Fh: fh, Cmd: uint32(sumCmd), Arg: 0x4000, OutSize: 16}
	if _, errno := k.Ioctl(0, restricted, argIn); errno != syscall.EINVAL {
		t.Fatalf("restricted ioctl needing more: %v, want EINVAL", errno)
	}
	if _, errno := k.Ioctl(0, abi.IoctlIn{Fh: fh, Cmd: 0x1234, Flags: abi.IoctlUnrestricted}, nil); errno != syscall.ENOTTY {
		t.Fatalf("unknown ioctl: %v, want ENOTTY", errno)
	}
}

func TestIoctlRequestRegions(t *testing.T) {
	var r IoctlRequest
	r.reset(&abi.IoctlIn{Cmd: uint32(sumCmd), Arg: 0x10, Flags: abi.IoctlUnrestricted, OutSize: 8}, []byte("abcdefgh"))
	if b, err := r.In(Region{Addr: 0x10, Len: 3}); err != nil || string(b) != "abc" {
		t.Fatalf("In = %q, %v", b, err)
	}
	if b, err := r.In(Region{Addr: 0x20, Len: 0}); err != nil || len(b) != 0 {
		t.Fatalf("In of nothing = %q, %v", b, err)
	}
	o, err := r.Out(Region{Addr: 0x30, Len: 8})
	if err != nil || len(o) != 8 {
		t.Fatalf("Out = %d bytes, %v", len(o), err)
	}
	copy(o, "12345678")
	if _, err := r.In(Region{Addr: 0x40, Len: 6}); !errors.Is(err, ErrIoctlRetry) {
		t.Fatalf("In beyond the data: %v, want ErrIoctlRetry", err)
	}
	// Once something is missing, later regions are recorded, not served.
	if _, err := r.In(Region{Addr: 0x50, Len: 1}); !errors.Is(err, ErrIoctlRetry) {
		t.Fatalf("In after a missing region: %v", err)
	}
	out := new(fusedev.IoctlOut)
	if got := r.iovecs(out, r.inRegs); len(got) != 3 || got[2].Base != 0x50 {
		t.Fatalf("in iovecs %+v", got)
	}
	// Beyond the request's own room for iovecs, they are allocated.
	if got := r.iovecs(out, r.inRegs[:2]); len(got) != 2 || got[0].Base != 0x10 || got[1].Base != 0x40 {
		t.Fatalf("in iovecs again %+v", got)
	}
	r.reset(&abi.IoctlIn{OutSize: 8, Flags: abi.IoctlUnrestricted}, nil)
	o, _ = r.Out(Region{Addr: 1, Len: 8})
	copy(o, "abcdefgh")
	r.Trim(3)
	if got := string(r.output()); got != "abc" {
		t.Fatalf("trimmed output %q", got)
	}
	if _, err := r.In(Region{Addr: 1, Len: -1}); err != syscall.EINVAL {
		t.Fatalf("negative length: %v", err)
	}
	r.reset(&abi.IoctlIn{Flags: abi.IoctlUnrestricted}, nil)
	if _, err := r.Out(Region{Addr: 1, Len: IoctlMaxBytes + 1}); err != syscall.ENOMEM {
		t.Fatalf("too large: %v", err)
	}
	if c := Ioc(IocRead|IocWrite, 0xC5, 2, 16); c.Dir() != 3 || c.Type() != 0xC5 || c.Nr() != 2 || c.Size() != 16 || uint32(c) != 0xc010c502 {
		t.Fatalf("Ioc = %v", c)
	}
}

func TestReleaseAtShutdown(t *testing.T) {
	var released sync.WaitGroup
	d := &countingDev{released: &released}
	k, s := start(t, d, Options{})
	released.Add(2)
	open(t, k, unix.O_RDONLY)
	open(t, k, unix.O_RDONLY)
	k.Close() // the kernel drops the connection with the files open
	done := make(chan struct{})
	go func() { released.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("files open at shutdown were not released")
	}
	if st := s.Stats(); st.OpenNow != 0 {
		t.Fatalf("open_now %d after shutdown", st.OpenNow)
	}
}

type countingDev struct{ released *sync.WaitGroup }

func (d *countingDev) Open(ctx context.Context, f *File) (Handle, error) {
	return &countingHandle{d}, nil
}

type countingHandle struct{ d *countingDev }

func (h *countingHandle) Read(ctx context.Context, op Op, dest []byte) (int, error) { return 0, nil }
func (h *countingHandle) Write(ctx context.Context, op Op, data []byte) (int, error) {
	return len(data), nil
}
func (h *countingHandle) Release(ctx context.Context) error { h.d.released.Done(); return nil }
