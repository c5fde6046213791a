package fusedev

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// The dispatch benchmarks run one request at a time through the path a
// reader takes after read(2) returns: dispatch, the hand-off timer, the
// handler, the reply (written to /dev/null) and the bookkeeping. They
// measure the engine's own cost per request, which dominates in slow
// environments (a one-CPU emulated guest, docs/benchmarks/cuse.md).
//
//	go test -run '^$' -bench Dispatch -benchmem ./fusedev

type benchFS struct{ NotImplemented }

func (benchFS) Getattr(_ context.Context, r *Request, _ *abi.GetattrIn, out *abi.AttrOut) error {
	out.Attr = abi.Attr{Ino: r.NodeID, Mode: syscall.S_IFREG | 0o644, Nlink: 1}
	return nil
}

func (benchFS) Read(_ context.Context, _ *Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
	if in.Fh == 0 {
		return nil, syscall.EAGAIN // an empty non-blocking device
	}
	return dest[:in.Size], nil
}

func (benchFS) Ioctl(_ context.Context, _ *Request, in *abi.IoctlIn, _ []byte, out *IoctlOut) error {
	if in.Arg == 0 {
		out.Retry = true
		out.OutIovs = []abi.IoctlIovec{{Base: 0x1000, Len: 16}}
		return nil
	}
	out.Data = make([]byte, 16)
	return nil
}

func benchDispatch(b *testing.B, op abi.Opcode, arg []byte) {
	f, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		b.Skip(err)
	}
	c, err := NewConn(f)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s := NewServer(c, benchFS{}, Options{Resume: &Negotiated{Major: 7, Minor: abi.KernelMinorVersion, MaxWrite: 1 << 20, MaxPages: 256}})
	s.neg.Store(s.opts.Resume)
	// One reader slot and its goroutine's state, as Serve and loop make them.
	sl := &readSlot{s: s, c: c, lc: &loopCtl{stop: make(chan struct{}), errs: make(chan error, 1)}}
	sl.lc.stopped.Store(true) // a hand-off (a stall of the benchmark) starts no reader
	sl.timer = time.AfterFunc(time.Hour, sl.expired)
	sl.timer.Stop()
	defer sl.timer.Stop()
	g := &loopG{handed: make(chan struct{})}
	g.rd.init(c)
	sl.owner.Store(g)
	s.readers = []*readSlot{sl}
	h := abi.InHeader{Len: uint32(abi.SizeInHeader + len(arg)), Opcode: op, NodeID: 1, UID: 1000, GID: 1000, PID: 42}
	n := abi.SizeInHeader + len(arg)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if g.bp == nil {
			g.bp = s.pool.get(s.bufSize)
		}
		h.Unique = uint64(2 + 2*i)
		copy(*g.bp, abi.Bytes(&h))
		copy((*g.bp)[abi.SizeInHeader:], arg)
		if !s.handle(sl, g, n, s.clock()) {
			// Handed off after a stall (a busy machine): carry on as the
			// new goroutine would.
			g = &loopG{handed: make(chan struct{}), rd: g.rd}
			sl.owner.Store(g)
		}
	}
}

func BenchmarkDispatchGetattr(b *testing.B) {
	benchDispatch(b, abi.OpGetattr, abi.Bytes(&abi.GetattrIn{}))
}

func BenchmarkDispatchReadEAGAIN(b *testing.B) {
	benchDispatch(b, abi.OpRead, abi.Bytes(&abi.ReadIn{Size: 16}))
}

func BenchmarkDispatchRead4K(b *testing.B) {
	benchDispatch(b, abi.OpRead, abi.Bytes(&abi.ReadIn{Fh: 1, Size: 4096}))
}

func BenchmarkDispatchIoctlRetry(b *testing.B) {
	benchDispatch(b, abi.OpIoctl, abi.Bytes(&abi.IoctlIn{Cmd: 0x80104501, OutSize: 16, Flags: abi.IoctlUnrestricted}))
}

func BenchmarkDispatchIoctl(b *testing.B) {
	benchDispatch(b, abi.OpIoctl, abi.Bytes(&abi.IoctlIn{Cmd: 0x80104501, Arg: 0x1000, OutSize: 16, Flags: abi.IoctlUnrestricted}))
}
