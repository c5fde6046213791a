package sockdev_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/cuse/sockdev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

// driver is the test's end of one bridged open.
type driver struct {
	t *testing.T
	c net.Conn
}

func (d *driver) frame() sockdev.Frame {
	d.t.Helper()
	d.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := sockdev.ReadFrame(d.c, nil)
	if err != nil {
		d.t.Fatalf("driver: reading a frame: %v", err)
	}
	return f
}

func (d *driver) send(typ byte, payload []byte) {
	d.t.Helper()
	if _, err := d.c.Write(sockdev.AppendFrame(nil, typ, payload)); err != nil {
		d.t.Fatalf("driver: %v", err)
	}
}

func setup(t *testing.T) (*fusetest.Kernel, *cuse.Server, net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "drv.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dev, err := sockdev.New(sockdev.Options{Socket: path, Buffer: 4096})
	if err != nil {
		t.Fatal(err)
	}
	s, err := cuse.New(dev, cuse.Options{Name: "sock-test"})
	if err != nil {
		t.Fatal(err)
	}
	fs, opts := s.FileSystem()
	k := fusetest.Start(t, fs, opts)
	if r := k.CuseInit(7, 38, abi.CuseUnrestrictedIoctl); r.Errno != 0 {
		t.Fatalf("CUSE_INIT: %v", r.Errno)
	}
	return k, s, ln, path
}

// openBridged opens the device and accepts the driver's connection.
func openBridged(t *testing.T, k *fusetest.Kernel, ln net.Listener, flags uint32) (uint64, *driver) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	out, errno := k.Open(0, flags)
	if errno != 0 {
		t.Fatalf("OPEN: %v", errno)
	}
	c := <-accepted
	if c == nil {
		t.Fatal("driver accepted nothing")
	}
	t.Cleanup(func() { c.Close() })
	d := &driver{t: t, c: c}
	f := d.frame()
	m, err := sockdev.ParseOpen(f.Payload)
	if f.Type != sockdev.TypeOpen || err != nil || m.Flags != flags || m.UID != fusetest.DefaultCaller().UID || m.PID != fusetest.DefaultCaller().PID {
		t.Fatalf("first frame %q %+v, %v", f.Type, m, err)
	}
	return out.Fh, d
}

func TestBridgeReadWritePoll(t *testing.T) {
	k, s, ln, _ := setup(t)
	fh, d := openBridged(t, k, ln, unix.O_RDWR)
	if n, errno := k.Write(0, fh, 0, []byte("hello")); errno != 0 || n != 5 {
		t.Fatalf("WRITE: %d, %v", n, errno)
	}
	if f := d.frame(); f.Type != sockdev.TypeWrite || string(f.Payload) != "hello" {
		t.Fatalf("driver got %q %q", f.Type, f.Payload)
	}
	// Nothing to read yet: nonblocking fails, a poller waits.
	r := k.Reply(k.Send(abi.OpRead, 0, fusetest.Arg(abi.ReadIn{Fh: fh, Size: 10, Flags: unix.O_NONBLOCK})))
	if r.Errno != syscall.EAGAIN {
		t.Fatalf("nonblocking READ: %v", r.Errno)
	}
	out, _ := k.Poll(0, abi.PollIn{Fh: fh, Kh: 7, Flags: abi.PollScheduleNotify, Events: uint32(cuse.PollIn | cuse.PollOut)})
	if cuse.Events(out.Revents) != cuse.PollOut {
		t.Fatalf("POLL: %#x", out.Revents)
	}
	d.send(sockdev.TypeData, []byte("HELLO"))
	k.ExpectNotification(abi.NotifyPoll)
	if got, errno := k.Read(0, fh, 0, 3); errno != 0 || string(got) != "HEL" {
		t.Fatalf("READ %q %v", got, errno)
	}
	if got, errno := k.Read(0, fh, 0, 30); errno != 0 || string(got) != "LO" {
		t.Fatalf("READ %q %v", got, errno)
	}
	// A blocked read is woken by data.
	u := k.Send(abi.OpRead, 0, fusetest.Arg(abi.ReadIn{Fh: fh, Size: 10}))
	k.ExpectNoReply(u, 30*time.Millisecond)
	d.send(sockdev.TypeData, []byte("late"))
	if r := k.Reply(u); r.Errno != 0 || string(r.Payload) != "late" {
		t.Fatalf("blocked READ: %q %v", r.Payload, r.Errno)
	}
	// Unknown frame types are skipped.
	d.send('?', []byte("future"))
	d.send(sockdev.TypeData, []byte("!"))
	if got, _ := k.Read(0, fh, 0, 30); string(got) != "!" {
		t.Fatalf("after an unknown frame: %q", got)
	}
	if st := s.Stats(); st.BytesWritten != 5 || st.BytesRead != 10 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBridgeIoctl(t *testing.T) {
	k, _, ln, _ := setup(t)
	fh, d := openBridged(t, k, ln, unix.O_RDWR)
	cmd := cuse.Ioc(cuse.IocRead|cuse.IocWrite, 'S', 1, 8)
	const arg = 0x9000
	in := abi.IoctlIn{Fh: fh, Flags: abi.IoctlUnrestricted, Cmd: uint32(cmd), Arg: arg}
	r, _ := k.Ioctl(0, in, nil) // asks for the struct, in and out
	if len(r.InIovs) != 1 || len(r.OutIovs) != 1 {
		t.Fatalf("round 1 %+v", r)
	}
	in.OutSize = 8
	done := make(chan fusetest.Reply, 1)
	u := k.Send(abi.OpIoctl, 0, fusetest.Arg(abi.IoctlIn{Fh: fh, Flags: abi.IoctlUnrestricted, Cmd: uint32(cmd), Arg: arg, InSize: 8, OutSize: 8}), []byte("12345678"))
	go func() { done <- k.Reply(u) }()

	f := d.frame()
	m, err := sockdev.ParseIoctl(f.Payload)
	if f.Type != sockdev.TypeIoctl || err != nil || m.Cmd != uint32(cmd) || m.Arg != arg || m.Dir != sockdev.DirIn|sockdev.DirOut || m.Size != 8 || string(m.Input) != "12345678" {
		t.Fatalf("driver got %q %+v %v", f.Type, m, err)
	}
	d.send(sockdev.TypeReply, sockdev.ReplyMsg{ID: m.ID, Result: 42, Output: []byte("abcdefghEXTRA")}.Bytes())
	reply := <-done
	io, err := fusetest.ParseIoctl(reply.Payload)
	if err != nil || io.Out.Result != 42 || string(io.Data) != "abcdefgh" {
		t.Fatalf("ioctl answer %+v %v", io, err)
	}

	// A driver's negative result is the errno.
	none := cuse.Ioc(cuse.IocNone, 'S', 2, 0)
	u = k.Send(abi.OpIoctl, 0, fusetest.Arg(abi.IoctlIn{Fh: fh, Flags: abi.IoctlUnrestricted, Cmd: uint32(none), Arg: 77}))
	f = d.frame()
	m, _ = sockdev.ParseIoctl(f.Payload)
	if m.Dir != 0 || m.Arg != 77 || len(m.Input) != 0 {
		t.Fatalf("value ioctl %+v", m)
	}
	d.send(sockdev.TypeReply, sockdev.ReplyMsg{ID: m.ID, Result: -int32(syscall.ENOTTY)}.Bytes())
	if r := k.Reply(u); r.Errno != syscall.ENOTTY {
		t.Fatalf("driver said -ENOTTY; got %v", r.Errno)
	}
}

func TestBridgeHangupAndRelease(t *testing.T) {
	k, _, ln, _ := setup(t)
	fh, d := openBridged(t, k, ln, unix.O_RDWR)
	d.send(sockdev.TypeData, []byte("last words"))
	d.c.Close()
	// Buffered data is still read, then EOF; writes fail; poll says HUP.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := k.Poll(0, abi.PollIn{Fh: fh, Events: uint32(cuse.PollIn | cuse.PollOut)})
		if cuse.Events(out.Revents)&cuse.PollHup != 0 {
			if cuse.Events(out.Revents)&cuse.PollOut != 0 {
				t.Fatalf("hung up but writable: %#x", out.Revents)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no POLLHUP after the driver hung up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, _ := k.Read(0, fh, 0, 100); string(got) != "last words" {
		t.Fatalf("READ %q", got)
	}
	if got, errno := k.Read(0, fh, 0, 100); errno != 0 || len(got) != 0 {
		t.Fatalf("READ at EOF %q %v", got, errno)
	}
	if _, errno := k.Write(0, fh, 0, []byte("x")); errno != syscall.EPIPE {
		t.Fatalf("WRITE after hangup: %v", errno)
	}

	// Release hands the queued writes to the driver, then closes.
	fh2, d2 := openBridged(t, k, ln, unix.O_WRONLY)
	k.Write(0, fh2, 0, []byte("bye"))
	k.Release(0, fh2)
	var got []byte
	for {
		d2.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := sockdev.ReadFrame(d2.c, nil)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("driver after release: %v", err)
		}
		got = append(got, f.Payload...)
	}
	if string(got) != "bye" {
		t.Fatalf("driver got %q before EOF", got)
	}
}

func TestBridgeNoDriverAndBadFrames(t *testing.T) {
	k, _, ln, path := setup(t)
	fh, d := openBridged(t, k, ln, unix.O_RDONLY)
	// A payload over MaxPayload ends the connection.
	var h [8]byte
	h[0] = sockdev.TypeData
	binary.LittleEndian.PutUint32(h[4:], sockdev.MaxPayload+1)
	d.c.Write(h[:])
	d.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("driver after a bad frame: %v, want EOF", err)
	}
	if got, errno := k.Read(0, fh, 0, 10); errno != 0 || len(got) != 0 {
		t.Fatalf("READ after a bad frame: %q %v, want EOF", got, errno)
	}
	// No driver listening: open fails with ENXIO.
	ln.Close()
	if _, errno := k.Open(0, unix.O_RDWR); errno != syscall.ENXIO {
		t.Fatalf("OPEN with no driver at %s: %v, want ENXIO", path, errno)
	}
}

func TestFrames(t *testing.T) {
	b := sockdev.AppendFrame(nil, sockdev.TypeWrite, []byte("ab"), []byte("c"))
	if !bytes.Equal(b, []byte{'W', 0, 0, 0, 3, 0, 0, 0, 'a', 'b', 'c'}) {
		t.Fatalf("frame % x", b)
	}
	f, err := sockdev.ReadFrame(bytes.NewReader(b), nil)
	if err != nil || f.Type != 'W' || string(f.Payload) != "abc" {
		t.Fatalf("ReadFrame %+v %v", f, err)
	}
	if _, err := sockdev.ReadFrame(bytes.NewReader([]byte{'W', 1, 0, 0, 0, 0, 0, 0}), nil); !errors.Is(err, sockdev.ErrFrame) {
		t.Fatalf("reserved bytes: %v", err)
	}
	if _, err := sockdev.ReadFrame(bytes.NewReader(b[:5]), nil); !errors.Is(err, sockdev.ErrFrame) {
		t.Fatalf("short header: %v", err)
	}
	if _, err := sockdev.ReadFrame(bytes.NewReader(b[:9]), nil); !errors.Is(err, sockdev.ErrFrame) {
		t.Fatalf("short payload: %v", err)
	}
	if _, err := sockdev.ReadFrame(bytes.NewReader(nil), nil); err != io.EOF {
		t.Fatalf("clean EOF: %v", err)
	}
	m := sockdev.IoctlMsg{ID: 1, Cmd: 2, Arg: 3, Dir: 1, Size: 2, Input: []byte("xy")}
	if got, err := sockdev.ParseIoctl(m.Bytes()); err != nil || got.ID != 1 || got.Cmd != 2 || got.Arg != 3 || string(got.Input) != "xy" {
		t.Fatalf("ioctl round trip %+v %v", got, err)
	}
	if _, err := sockdev.ParseReply([]byte{1}); !errors.Is(err, sockdev.ErrFrame) {
		t.Fatalf("short reply: %v", err)
	}
}
