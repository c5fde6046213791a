package loopback_test

import (
	"bytes"
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/cuse/loopback"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

func start(t *testing.T, capacity int) (*fusetest.Kernel, *cuse.Server) {
	t.Helper()
	s, err := cuse.New(loopback.New(loopback.Options{Capacity: capacity}), cuse.Options{Name: "loop-test"})
	if err != nil {
		t.Fatal(err)
	}
	fs, opts := s.FileSystem()
	k := fusetest.Start(t, fs, opts)
	if r := k.CuseInit(7, 38, abi.CuseUnrestrictedIoctl); r.Errno != 0 {
		t.Fatalf("CUSE_INIT: %v", r.Errno)
	}
	return k, s
}

func open(t *testing.T, k *fusetest.Kernel) uint64 {
	t.Helper()
	out, errno := k.Open(0, unix.O_RDWR)
	if errno != 0 {
		t.Fatalf("OPEN: %v", errno)
	}
	return out.Fh
}

func readReq(k *fusetest.Kernel, fh uint64, size, flags uint32, off uint64) uint64 {
	return k.Send(abi.OpRead, 0, fusetest.Arg(abi.ReadIn{Fh: fh, Size: size, Flags: flags, Offset: off}))
}

func writeReq(k *fusetest.Kernel, fh uint64, data []byte, flags uint32) uint64 {
	return k.Send(abi.OpWrite, 0, fusetest.Arg(abi.WriteIn{Fh: fh, Size: uint32(len(data)), Flags: flags}), data)
}

func written(t *testing.T, r fusetest.Reply) uint32 {
	t.Helper()
	out, err := fusetest.Decode[abi.WriteOut](r)
	if err != nil || r.Errno != 0 {
		t.Fatalf("WRITE reply: %v, errno %v", err, r.Errno)
	}
	return out.Size
}

func TestPipeSemantics(t *testing.T) {
	k, _ := start(t, 8)
	w, rd := open(t, k), open(t, k)
	const nb = unix.O_RDWR | unix.O_NONBLOCK

	// Nonblocking: a full pipe takes what fits, then refuses.
	if n := written(t, k.Reply(writeReq(k, w, []byte("0123456789"), nb))); n != 8 {
		t.Fatalf("nonblocking write into 8 free bytes took %d", n)
	}
	if r := k.Reply(writeReq(k, w, []byte("x"), nb)); r.Errno != syscall.EAGAIN {
		t.Fatalf("nonblocking write into a full pipe: %v", r.Errno)
	}
	// Reads come back in order, across the ring's end.
	if got, _ := k.Read(0, rd, 0, 5); string(got) != "01234" {
		t.Fatalf("read %q", got)
	}
	if n := written(t, k.Reply(writeReq(k, w, []byte("abcde"), nb))); n != 5 {
		t.Fatalf("write after a read took %d", n)
	}
	if got, _ := k.Read(0, rd, 0, 100); string(got) != "567abcde" {
		t.Fatalf("read %q", got)
	}
	if r := k.Reply(readReq(k, rd, 10, nb, 0)); r.Errno != syscall.EAGAIN {
		t.Fatalf("nonblocking read of an empty pipe: %v", r.Errno)
	}
	// A continuation chunk of a read(2) returns what is there, even nothing.
	if r := k.Reply(readReq(k, rd, 10, unix.O_RDWR, 128<<10)); r.Errno != 0 || len(r.Payload) != 0 {
		t.Fatalf("continuation read: %q, %v", r.Payload, r.Errno)
	}

	// Blocking: a write larger than the pipe completes as a reader drains it.
	u := writeReq(k, w, []byte("ABCDEFGHIJKLMNOP"), unix.O_RDWR)
	k.ExpectNoReply(u, 30*time.Millisecond)
	var got []byte
	for len(got) < 16 {
		b, errno := k.Read(0, rd, 0, 3)
		if errno != 0 {
			t.Fatalf("read: %v", errno)
		}
		got = append(got, b...)
	}
	if string(got) != "ABCDEFGHIJKLMNOP" || written(t, k.Reply(u)) != 16 {
		t.Fatalf("blocking write through a small pipe delivered %q", got)
	}
}

func TestBlockedWriterInterrupted(t *testing.T) {
	k, s := start(t, 4)
	fh := open(t, k)
	written(t, k.Reply(writeReq(k, fh, []byte("full"), unix.O_RDWR)))
	u := writeReq(k, fh, []byte("more"), unix.O_RDWR)
	k.ExpectNoReply(u, 30*time.Millisecond)
	k.Interrupt(u)
	if r := k.Reply(u); r.Errno != syscall.EINTR {
		t.Fatalf("interrupted writer: %v, want EINTR", r.Errno)
	}
	if s.Stats().Interrupted != 1 {
		t.Fatalf("stats %+v", s.Stats())
	}
}

func TestPollWakesReaderAndWriter(t *testing.T) {
	k, _ := start(t, 4)
	a, b := open(t, k), open(t, k)
	poll := func(fh, kh uint64, ev cuse.Events) cuse.Events {
		out, errno := k.Poll(0, abi.PollIn{Fh: fh, Kh: kh, Flags: abi.PollScheduleNotify, Events: uint32(ev)})
		if errno != 0 {
			t.Fatalf("POLL: %v", errno)
		}
		return cuse.Events(out.Revents)
	}
	if ev := poll(a, 1, cuse.PollIn); ev != 0 {
		t.Fatalf("empty pipe readable: %#x", ev)
	}
	written(t, k.Reply(writeReq(k, b, []byte("abcd"), unix.O_RDWR))) // fills it
	n := k.ExpectNotification(abi.NotifyPoll)
	if kh := binary.LittleEndian.Uint64(n.Payload); kh != 1 {
		t.Fatalf("woke kh %d, want the reader's 1", kh)
	}
	if ev := poll(b, 2, cuse.PollOut|cuse.PollIn); ev != cuse.PollIn {
		t.Fatalf("full pipe: %#x, want POLLIN only", ev)
	}
	k.Read(0, a, 0, 1)
	n = k.ExpectNotification(abi.NotifyPoll)
	if kh := binary.LittleEndian.Uint64(n.Payload); kh != 2 {
		t.Fatalf("woke kh %d, want the writer's 2", kh)
	}
}

func TestIoctls(t *testing.T) {
	k, s := start(t, 64)
	fh := open(t, k)
	written(t, k.Reply(writeReq(k, fh, []byte("peekaboo"), unix.O_RDWR)))
	unr := uint32(abi.IoctlUnrestricted)

	// IocStat: one retry for the out region, then the answer.
	const arg = 0x10000
	in := abi.IoctlIn{Fh: fh, Flags: unr, Cmd: uint32(loopback.IocStat), Arg: arg}
	r, errno := k.Ioctl(0, in, nil)
	if errno != 0 || len(r.OutIovs) != 1 || r.OutIovs[0] != (abi.IoctlIovec{Base: arg, Len: 16}) {
		t.Fatalf("IocStat round 1: %+v %v", r, errno)
	}
	in.OutSize = 16
	r, _ = k.Ioctl(0, in, nil)
	if binary.LittleEndian.Uint64(r.Data) != 8 || binary.LittleEndian.Uint64(r.Data[8:]) != 64 {
		t.Fatalf("IocStat: % x", r.Data)
	}

	// FIONREAD has no size in its number: only the retry protocol serves it.
	in = abi.IoctlIn{Fh: fh, Flags: unr, Cmd: uint32(loopback.FIONREAD), Arg: arg, OutSize: 4}
	r, _ = k.Ioctl(0, in, nil)
	if r.Out.Flags&abi.IoctlRetry != 0 || binary.LittleEndian.Uint32(r.Data) != 8 {
		t.Fatalf("FIONREAD: %+v", r)
	}

	// IocPeek: struct in and out, then the buffer it points to.
	const buf = 0x20000
	peek := binary.LittleEndian.AppendUint64(nil, buf)
	peek = binary.LittleEndian.AppendUint32(peek, 5)
	peek = binary.LittleEndian.AppendUint32(peek, 0)
	in = abi.IoctlIn{Fh: fh, Flags: unr, Cmd: uint32(loopback.IocPeek), Arg: arg}
	r, _ = k.Ioctl(0, in, nil)
	if len(r.InIovs) != 1 || len(r.OutIovs) != 1 {
		t.Fatalf("IocPeek round 1: %+v", r)
	}
	in.OutSize = 16
	r, _ = k.Ioctl(0, in, peek)
	if len(r.InIovs) != 1 || len(r.OutIovs) != 2 || r.OutIovs[1] != (abi.IoctlIovec{Base: buf, Len: 5}) {
		t.Fatalf("IocPeek round 2: %+v", r)
	}
	in.OutSize = 21
	r, _ = k.Ioctl(0, in, peek)
	if r.Out.Result != 5 || !bytes.Equal(r.Data[16:], []byte("peeka")) || binary.LittleEndian.Uint32(r.Data[12:]) != 5 {
		t.Fatalf("IocPeek: result %d, % x", r.Out.Result, r.Data)
	}
	// Peek consumed nothing; reset empties.
	r, _ = k.Ioctl(0, abi.IoctlIn{Fh: fh, Flags: unr, Cmd: uint32(loopback.IocReset)}, nil)
	if r.Out.Result != 8 {
		t.Fatalf("IocReset result %d, want 8", r.Out.Result)
	}
	if st := s.Stats(); st.Ioctls != 4 || st.IoctlRetries != 3 {
		t.Fatalf("stats %+v", st)
	}
}
