package fusedev_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

// An INTERRUPT for a request whose handler runs cancels its context; the
// handler's context.Canceled becomes EINTR.
func TestInterruptDuringHandler(t *testing.T) {
	b := newBlocker()
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		return b.wait(ctx, r)
	}}
	k := startInit(t, fs, fusedev.Options{})
	u := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	b.waitStarted(t, u)
	k.Interrupt(u)
	if r := k.Reply(u); r.Errno != syscall.EINTR {
		t.Fatalf("interrupted GETATTR answered %v, want EINTR", r.Errno)
	}
	if sent, answers := k.Interrupts(u); sent != 1 || len(answers) != 0 {
		t.Errorf("%d INTERRUPTs sent, answers %v; want 1 and none (a delivered interrupt is not answered)", sent, answers)
	}
}

// An INTERRUPT read before its request (another reader has the request but
// has not registered it yet) is answered EAGAIN; the kernel queues it again,
// and the resent one cancels the handler.
func TestInterruptBeforeHandler(t *testing.T) {
	b := newBlocker()
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		return b.wait(ctx, r)
	}}
	k := startInit(t, fs, fusedev.Options{Readers: 1})
	u, send := k.Prepare(fusetest.Req{Op: abi.OpGetattr, Node: 1, Args: [][]byte{fusetest.Arg(abi.GetattrIn{})}})
	k.Interrupt(u)
	deadline := time.Now().Add(k.Timeout())
	for {
		if _, answers := k.Interrupts(u); answers[syscall.EAGAIN] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("INTERRUPT for an unknown request not answered EAGAIN")
		}
		time.Sleep(time.Millisecond)
	}
	send()
	if r := k.Reply(u); r.Errno != syscall.EINTR {
		t.Fatalf("GETATTR answered %v, want EINTR from the resent INTERRUPT", r.Errno)
	}
	sent, answers := k.Interrupts(u)
	if sent < 2 || answers[syscall.EAGAIN] < 1 {
		t.Errorf("%d INTERRUPTs sent, answers %v; want a resend after EAGAIN", sent, answers)
	}
}

// An INTERRUPT for a request already answered changes nothing.
func TestInterruptAfterReply(t *testing.T) {
	k := startInit(t, &hookFS{}, fusedev.Options{})
	u := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	if r := k.Reply(u); r.Errno != 0 {
		t.Fatal(r.Errno)
	}
	k.Interrupt(u)
	if _, errno := k.Getattr(1); errno != 0 {
		t.Fatal(errno)
	}
	if k.Replies(u) != 1 {
		t.Errorf("%d replies to the request", k.Replies(u))
	}
}

// A request waiting for a free slot (MaxInflight) can be interrupted.
func TestInterruptWhileQueued(t *testing.T) {
	b := newBlocker()
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		return b.wait(ctx, r)
	}}
	k := startInit(t, fs, fusedev.Options{Readers: 2, MaxInflight: 1})
	first := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	b.waitStarted(t, first)
	second := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	k.Interrupt(second)
	time.Sleep(20 * time.Millisecond)
	close(b.release)
	if r := k.Reply(first); r.Errno != 0 {
		t.Errorf("first: %v", r.Errno)
	}
	if r := k.Reply(second); r.Errno != syscall.EINTR {
		t.Errorf("queued request interrupted while waiting for a slot answered %v, want EINTR", r.Errno)
	}
	if _, answers := k.Interrupts(second); answers[syscall.EAGAIN] > 10 {
		t.Errorf("the INTERRUPT bounced %d times while its request was queued", answers[syscall.EAGAIN])
	}
}

func TestHandlerPanic(t *testing.T) {
	var n atomic.Int32
	fs := &hookFS{getattr: func(context.Context, *fusedev.Request, *abi.GetattrIn, *abi.AttrOut) error {
		if n.Add(1) == 1 {
			panic("handler bug")
		}
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{})
	if _, errno := k.Getattr(1); errno != syscall.EIO {
		t.Errorf("panicking handler answered %v, want EIO", errno)
	}
	if _, errno := k.Getattr(1); errno != 0 {
		t.Errorf("after a panic: %v", errno)
	}
}

// Errors a handler returns reach the kernel as an errno it accepts.
func TestHandlerErrors(t *testing.T) {
	var next error
	var mu sync.Mutex
	fs := &hookFS{getattr: func(context.Context, *fusedev.Request, *abi.GetattrIn, *abi.AttrOut) error {
		mu.Lock()
		defer mu.Unlock()
		return next
	}}
	k := startInit(t, fs, fusedev.Options{})
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{syscall.ENOENT, syscall.ENOENT},
		{fmt.Errorf("lookup %q: %w", "x", syscall.EACCES), syscall.EACCES},
		{errors.New("plain error"), syscall.EIO},
		{context.Canceled, syscall.EINTR},
		{syscall.Errno(600), syscall.EIO},     // ≥ 512 makes the kernel refuse the reply
		{syscall.Errno(1 << 40), syscall.EIO}, // would wrap in the int32 error field
	} {
		mu.Lock()
		next = c.err
		mu.Unlock()
		if _, errno := k.Getattr(1); errno != c.want {
			t.Errorf("handler error %v answered %v, want %v", c.err, errno, c.want)
		}
	}
}

// Requests are read by several readers and handled concurrently, each
// answered exactly once.
func TestConcurrentRequests(t *testing.T) {
	var cur, peak atomic.Int32
	fs := &hookFS{getattr: func(_ context.Context, r *fusedev.Request, _ *abi.GetattrIn, out *abi.AttrOut) error {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(200 * time.Microsecond)
		out.Attr.Ino = r.NodeID
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{Readers: 4, MaxInflight: 8})
	const senders, each = 4, 100
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var us []uint64
			for i := 0; i < each; i++ {
				node := uint64(s*each + i + 2)
				u, err := k.TrySend(fusetest.Req{Op: abi.OpGetattr, Node: node, Args: [][]byte{fusetest.Arg(abi.GetattrIn{})}})
				if err != nil {
					errs <- err
					return
				}
				us = append(us, u)
			}
			for i, u := range us {
				r, err := k.WaitReply(u, k.Timeout())
				if err != nil {
					errs <- err
					continue
				}
				out, err := fusetest.Decode[abi.AttrOut](r)
				if err != nil || out.Attr.Ino != uint64(s*each+i+2) {
					errs <- fmt.Errorf("reply to node %d: %v ino %d", s*each+i+2, err, out.Attr.Ino)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := peak.Load(); p < 2 || p > 8 {
		t.Errorf("peak concurrency %d, want between 2 and MaxInflight 8", p)
	}
	waitIdle(t, k)
	for _, st := range k.Server().Stats() {
		if st.Op == abi.OpGetattr && st.Count != senders*each {
			t.Errorf("Stats counts %d GETATTRs, want %d", st.Count, senders*each)
		}
	}
}

// Every opcode, even with nonsense arguments, gets exactly one reply; the
// three that get none get none.
func TestOneReplyPerOpcode(t *testing.T) {
	k := startInit(t, &hookFS{}, fusedev.Options{})
	body := make([]byte, 512) // zeros: big enough for every struct, names empty
	var us []uint64
	ops := map[uint64]abi.Opcode{}
	for op := abi.Opcode(1); op <= abi.OpMax+2; op++ {
		if op == abi.OpInterrupt {
			continue // INTERRUPT is answered only with EAGAIN (TestInterrupt*)
		}
		u := k.Send(op, 1, body)
		us = append(us, u)
		ops[u] = op
	}
	for _, u := range us {
		if ops[u].NoReply() {
			continue
		}
		k.Reply(u)
	}
	waitIdle(t, k)
	time.Sleep(10 * time.Millisecond)
	for _, u := range us {
		want := 1
		if ops[u].NoReply() {
			want = 0
		}
		if got := k.Replies(u); got != want {
			t.Errorf("%v: %d replies, want %d", ops[u], got, want)
		}
	}
}

func TestForget(t *testing.T) {
	fs := &hookFS{}
	k := startInit(t, fs, fusedev.Options{Readers: 1})
	f1 := k.Forget(10, 3)
	f2 := k.BatchForget([]abi.ForgetOne{{NodeID: 11, Nlookup: 1}, {NodeID: 12, Nlookup: 2}})
	f3 := k.BatchForget(nil)
	if _, errno := k.Getattr(1); errno != 0 { // read after the forgets by the one reader
		t.Fatal(errno)
	}
	for _, u := range []uint64{f1, f2, f3} {
		k.ExpectNoReply(u, 10*time.Millisecond)
	}
	want := []abi.ForgetOne{{NodeID: 10, Nlookup: 3}, {NodeID: 11, Nlookup: 1}, {NodeID: 12, Nlookup: 2}}
	if got := fs.forgotten(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("forgotten %v, want %v", got, want)
	}
	waitIdle(t, k)
	counts := map[abi.Opcode]uint64{}
	for _, st := range k.Server().Stats() {
		counts[st.Op] = st.Count
	}
	if counts[abi.OpForget] != 1 || counts[abi.OpBatchForget] != 2 {
		t.Errorf("Stats: FORGET %d, BATCH_FORGET %d", counts[abi.OpForget], counts[abi.OpBatchForget])
	}
}

func TestReaddir(t *testing.T) {
	names := []string{"a", "bb", "exactly8", "ninechars", "x23456789012345678901234"}
	fill := func(in *abi.ReadIn, out *fusedev.DirList) {
		for i := int(in.Offset); i < len(names); i++ {
			if out.Plus() {
				e := out.AddPlus(names[i], uint64(100+i), syscall.DT_REG, uint64(i+1))
				if e == nil {
					return
				}
				e.NodeID, e.Attr.Ino, e.Attr.Size = uint64(100+i), uint64(100+i), uint64(i)
			} else if !out.Add(names[i], uint64(100+i), syscall.DT_REG, uint64(i+1)) {
				return
			}
		}
	}
	fs := &hookFS{
		readdir: func(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
			if out.Plus() {
				return errors.New("READDIR got a plus list")
			}
			fill(in, out)
			return nil
		},
		readdirplus: func(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
			if !out.Plus() {
				return errors.New("READDIRPLUS got a plain list")
			}
			fill(in, out)
			return nil
		},
	}
	k := startInit(t, fs, fusedev.Options{})

	ents, errno := k.Readdir(1, 0, 0, 4096)
	if errno != 0 || len(ents) != len(names) {
		t.Fatalf("READDIR: %v, %d entries", errno, len(ents))
	}
	for i, e := range ents {
		if e.Name != names[i] || e.Ino != uint64(100+i) || e.Off != uint64(i+1) || e.Type != syscall.DT_REG {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	// A size that fits two entries (32 bytes each for names of up to 8).
	if ents, _ := k.Readdir(1, 0, 0, 64+31); len(ents) != 2 {
		t.Errorf("READDIR of 95 bytes returned %d entries, want 2", len(ents))
	}
	if ents, _ := k.Readdir(1, 0, 3, 4096); len(ents) != 2 || ents[0].Name != "ninechars" {
		t.Errorf("READDIR from offset 3: %+v", ents)
	}
	if ents, errno := k.Readdir(1, 0, 0, 0); errno != 0 || len(ents) != 0 {
		t.Errorf("READDIR of 0 bytes: %v %+v", errno, ents)
	}

	plus, errno := k.Readdirplus(1, 0, 0, 4096)
	if errno != 0 || len(plus) != len(names) {
		t.Fatalf("READDIRPLUS: %v, %d entries", errno, len(plus))
	}
	for i, e := range plus {
		if e.Name != names[i] || e.Entry.NodeID != uint64(100+i) || e.Entry.Attr.Size != uint64(i) || e.Off != uint64(i+1) {
			t.Errorf("plus entry %d: %+v", i, e)
		}
	}
	if plus, _ := k.Readdirplus(1, 0, 0, 2*160); len(plus) != 2 {
		t.Errorf("READDIRPLUS of 320 bytes returned %d entries, want 2", len(plus))
	}
}

func TestDirListLimits(t *testing.T) {
	got := make(chan []bool, 1)
	fs := &hookFS{readdir: func(_ context.Context, _ *fusedev.Request, _ *abi.ReadIn, out *fusedev.DirList) error {
		got <- []bool{out.Add("", 1, 0, 1), out.Add(string(make([]byte, abi.NameMax+1)), 1, 0, 1), out.Add("ok", 1, 0, 1)}
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{})
	ents, _ := k.Readdir(1, 0, 0, 4096)
	if len(ents) != 1 || ents[0].Name != "ok" {
		t.Errorf("entries %+v", ents)
	}
	if g := <-got; fmt.Sprint(g) != "[false false true]" {
		t.Errorf("Add results %v: empty and oversized names must be refused", g)
	}
}

func TestIoctl(t *testing.T) {
	var mode atomic.Int32
	fs := &hookFS{ioctl: func(_ context.Context, _ *fusedev.Request, in *abi.IoctlIn, data []byte, out *fusedev.IoctlOut) error {
		switch mode.Load() {
		case 0: // ask for the struct at arg, then its buffer
			out.Retry = true
			out.InIovs = []abi.IoctlIovec{{Base: in.Arg, Len: 16}}
			out.OutIovs = []abi.IoctlIovec{{Base: in.Arg, Len: 16}, {Base: 0x7000, Len: 4096}}
		case 1: // answer with data
			out.Result = 42
			out.Data = append([]byte("echo:"), data...)
		case 2: // more data than out_size
			out.Data = make([]byte, in.OutSize+1)
		case 3: // too many iovecs
			out.Retry = true
			out.InIovs = make([]abi.IoctlIovec, abi.IoctlMaxIov)
			out.OutIovs = make([]abi.IoctlIovec, 1)
		}
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{})
	in := abi.IoctlIn{Fh: 1, Cmd: 0xc0105500, Arg: 0x1000, Flags: abi.IoctlUnrestricted, OutSize: 64}

	r, errno := k.Ioctl(1, in, nil)
	if errno != 0 || r.Out.Flags != abi.IoctlRetry || len(r.InIovs) != 1 || len(r.OutIovs) != 2 {
		t.Fatalf("retry: %v %+v", errno, r)
	}
	if r.InIovs[0] != (abi.IoctlIovec{Base: 0x1000, Len: 16}) || r.OutIovs[1] != (abi.IoctlIovec{Base: 0x7000, Len: 4096}) {
		t.Errorf("retry iovecs %+v %+v", r.InIovs, r.OutIovs)
	}
	restricted := in
	restricted.Flags = 0
	if _, errno := k.Ioctl(1, restricted, nil); errno != syscall.EIO {
		t.Errorf("retry of a restricted ioctl answered %v, want EIO", errno)
	}

	mode.Store(1)
	r, errno = k.Ioctl(1, in, []byte("hi"))
	if errno != 0 || r.Out.Result != 42 || string(r.Data) != "echo:hi" || r.Out.Flags != 0 {
		t.Errorf("data: %v %+v %q", errno, r.Out, r.Data)
	}
	mode.Store(2)
	if _, errno := k.Ioctl(1, in, nil); errno != syscall.EIO {
		t.Errorf("reply beyond out_size answered %v, want EIO", errno)
	}
	mode.Store(3)
	if _, errno := k.Ioctl(1, in, nil); errno != syscall.ENOMEM {
		t.Errorf("%d iovecs answered %v, want ENOMEM", abi.IoctlMaxIov+1, errno)
	}
}

func TestReadWrite(t *testing.T) {
	fs := &hookFS{
		read: func(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
			if len(dest) != int(in.Size) {
				return nil, fmt.Errorf("dest of %d bytes for a READ of %d", len(dest), in.Size)
			}
			for i := range dest {
				dest[i] = byte(in.Offset + uint64(i))
			}
			return dest, nil
		},
		write: func(_ context.Context, _ *fusedev.Request, in *abi.WriteIn, data []byte) (uint32, error) {
			for i, b := range data {
				if b != byte(i) {
					return 0, syscall.EBADMSG
				}
			}
			return uint32(len(data)), nil
		},
	}
	for _, c := range []struct {
		name    string
		opts    fusedev.Options
		flags   abi.InitFlags
		maxRead uint32 // what the kernel may ask for
	}{
		{"1 MiB", fusedev.Options{}, abi.InitKnown, 1 << 20},
		// Without MAX_PAGES the kernel may still read 32 pages at once.
		{"small max_write without MAX_PAGES", fusedev.Options{MaxWrite: 4096}, abi.InitKnown &^ abi.InitMaxPages, 128 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := fusetest.Start(t, fs, c.opts)
			k.Init(7, 45, c.flags)
			data, errno := k.Read(2, 1, 7, c.maxRead)
			if errno != 0 || len(data) != int(c.maxRead) {
				t.Fatalf("READ of %d: %v, %d bytes", c.maxRead, errno, len(data))
			}
			for i, b := range data {
				if b != byte(7+i) {
					t.Fatalf("byte %d is %d", i, b)
				}
			}
			w := make([]byte, k.Server().Negotiated().MaxWrite)
			for i := range w {
				w[i] = byte(i)
			}
			if n, errno := k.Write(2, 1, 0, w); errno != 0 || n != uint32(len(w)) {
				t.Errorf("WRITE of %d: %v, %d", len(w), errno, n)
			}
		})
	}
}

func TestStats(t *testing.T) {
	fs := &hookFS{lookup: func(_ context.Context, _ *fusedev.Request, name string, _ *abi.EntryOut) error {
		if name == "missing" {
			return syscall.ENOENT
		}
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{})
	for i := 0; i < 3; i++ {
		k.Getattr(1)
	}
	k.Lookup(1, "here")
	k.Lookup(1, "missing")
	k.Lookup(1, "missing")
	k.Do(99, 1)
	waitIdle(t, k)
	got := map[abi.Opcode]fusedev.OpStats{}
	for _, st := range k.Server().Stats() {
		got[st.Op] = st
	}
	check := func(op abi.Opcode, count, errs uint64) {
		t.Helper()
		st := got[op]
		var inBuckets uint64
		for _, b := range st.Buckets {
			inBuckets += b
		}
		if st.Count != count || st.Errors != errs || inBuckets != count {
			t.Errorf("%v: count %d errors %d buckets %d; want %d, %d, %d", op, st.Count, st.Errors, inBuckets, count, errs, count)
		}
	}
	check(abi.OpGetattr, 3, 0)
	check(abi.OpLookup, 3, 2)
	check(0, 1, 1) // unknown opcodes share one slot
	if _, ok := got[abi.OpInit]; ok {
		t.Log("INIT counted in Stats")
	}
}

// Wedge stops the readers; Check notices; closing the connection still ends Serve.
func TestCheckWedge(t *testing.T) {
	k := startInit(t, &hookFS{}, fusedev.Options{Readers: 2})
	s := k.Server()
	time.Sleep(30 * time.Millisecond)
	if err := s.Check(10 * time.Millisecond); err != nil {
		t.Fatalf("idle readers reported stuck: %v", err)
	}
	if _, errno := k.Getattr(1); errno != 0 {
		t.Fatal(errno)
	}
	s.Wedge()
	u := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	k.ExpectNoReply(u, 50*time.Millisecond)
	if err := s.Check(20 * time.Millisecond); err == nil {
		t.Fatal("Check found nothing wrong with a wedged reader")
	}
	k.Close()
	if err := k.ServeErr(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// Closing the kernel end (an unmount) ends Serve with nil and cancels the
// handlers still running.
func TestServeReturnsOnClose(t *testing.T) {
	b := newBlocker()
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		return b.wait(ctx, r)
	}}
	k := startInit(t, fs, fusedev.Options{})
	u := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	b.waitStarted(t, u)
	k.Close()
	if err := k.ServeErr(); err != nil {
		t.Errorf("Serve after the kernel end closed: %v", err)
	}
	if n := fs.destroys.Load(); n != 1 {
		t.Errorf("Destroy called %d times, want 1", n)
	}
}

// Cancelling Serve's context stops reading, lets requests in flight finish
// and answer, and leaves the connection open for another server.
func TestGracefulStop(t *testing.T) {
	b := newBlocker()
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		if r.NodeID == 2 {
			return b.wait(ctx, r)
		}
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{Readers: 2})
	neg := *k.Server().Negotiated()
	slow := k.Send(abi.OpGetattr, 2, fusetest.Arg(abi.GetattrIn{}))
	b.waitStarted(t, slow)
	k.Cancel()
	select {
	case <-k.ServeDone():
		t.Fatal("Serve returned with a request in flight")
	case <-time.After(30 * time.Millisecond):
	}
	close(b.release)
	if r := k.Reply(slow); r.Errno != 0 {
		t.Errorf("in-flight request answered %v after a graceful stop, want success", r.Errno)
	}
	if err := k.ServeErr(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Nobody reads now; the request waits for the next server.
	later := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	k.ExpectNoReply(later, 20*time.Millisecond)
	fs2 := &hookFS{}
	k.Restart(fs2, fusedev.Options{Resume: &neg})
	k.ExpectNotification(abi.NotifyResend)
	if r := k.Reply(later); r.Errno != 0 {
		t.Errorf("request answered %v by the resumed server", r.Errno)
	}
}

// A handler that ignores the stop is cancelled after ShutdownGrace.
func TestGracefulStopTimeout(t *testing.T) {
	b := newBlocker()
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		return b.wait(ctx, r)
	}}
	k := startInit(t, fs, fusedev.Options{ShutdownGrace: 20 * time.Millisecond})
	u := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	b.waitStarted(t, u)
	start := time.Now()
	k.Cancel()
	if r := k.Reply(u); r.Errno != syscall.EINTR {
		t.Errorf("request past the grace answered %v, want EINTR", r.Errno)
	}
	if err := k.ServeErr(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("cancelled after %v, before the grace", d)
	}
}

// Supplementary groups from the FUSE_EXT_GROUPS extension reach the handler.
func TestSuppGroupsExtension(t *testing.T) {
	got := make(chan []uint32, 1)
	fs := &hookFS{mkdir: func(_ context.Context, r *fusedev.Request, _ *abi.MkdirIn, _ string, _ *abi.EntryOut) error {
		got <- append([]uint32(nil), r.SuppGroups...)
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{})
	ext := fusetest.Arg(abi.ExtHeader{Size: abi.SizeExtHeader + 4 + 8, Type: abi.ExtGroups})
	ext = append(ext, fusetest.Arg(abi.SuppGroups{NrGroups: 2})...)
	ext = append(ext, 7, 0, 0, 0, 9, 0, 0, 0)
	// A security context extension first, to be skipped.
	sec := fusetest.Arg(abi.ExtHeader{Size: 16, Type: 0})
	sec = append(sec, make([]byte, 8)...)
	u := k.SendReq(fusetest.Req{Op: abi.OpMkdir, Node: 1, Ext: append(sec, ext...),
		Args: [][]byte{fusetest.Arg(abi.MkdirIn{Mode: 0o755}), fusetest.CString("d")}})
	if r := k.Reply(u); r.Errno != 0 {
		t.Fatal(r.Errno)
	}
	if g := <-got; fmt.Sprint(g) != "[7 9]" {
		t.Errorf("SuppGroups %v, want [7 9]", g)
	}
}

// Replies stay within what the kernel can take even when a request asks for
// more than it could (a bad size field) and the handler returns too much.
func TestReplyBounds(t *testing.T) {
	fs := &hookFS{
		read: func(_ context.Context, _ *fusedev.Request, _ *abi.ReadIn, dest []byte) ([]byte, error) {
			return make([]byte, len(dest)+10), nil
		},
		ioctl: func(_ context.Context, _ *fusedev.Request, _ *abi.IoctlIn, _ []byte, out *fusedev.IoctlOut) error {
			out.Data = make([]byte, 2<<20)
			return nil
		},
	}
	k := startInit(t, fs, fusedev.Options{})
	data, errno := k.Read(2, 1, 0, 1<<30)
	if errno != 0 || len(data) != 1<<20 {
		t.Errorf("READ of 1 GiB with a greedy handler: %v, %d bytes; want max_write (1 MiB)", errno, len(data))
	}
	if _, errno := k.Ioctl(1, abi.IoctlIn{OutSize: 1 << 30}, nil); errno != syscall.EIO {
		t.Errorf("IOCTL answered with 2 MiB: %v, want EIO", errno)
	}
}

type longLink struct{ fusedev.NotImplemented }

func (longLink) Readlink(context.Context, *fusedev.Request) (string, error) {
	return strings.Repeat("l", abi.PathMax), nil
}

func TestReadlinkTooLong(t *testing.T) {
	k := startInit(t, &longLink{}, fusedev.Options{})
	if _, errno := k.Readlink(2); errno != syscall.ENAMETOOLONG {
		t.Errorf("READLINK of a %d-byte target: %v, want ENAMETOOLONG", abi.PathMax, errno)
	}
}

// A stop after Handover answers what finishes within HandoverGrace, leaves
// a request still waiting unanswered (the kernel resends it to the
// successor), and does not destroy the file system. A request interrupted
// by the kernel before the handover is still answered EINTR.
func TestHandover(t *testing.T) {
	b := newBlocker()
	afters := make(chan uint64, 4)
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		r.AfterReply(func() { afters <- r.NodeID })
		if r.NodeID >= 2 {
			return b.wait(ctx, r)
		}
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{HandoverGrace: 30 * time.Millisecond})
	if _, errno := k.Getattr(1); errno != 0 {
		t.Fatal(errno)
	}
	if got := <-afters; got != 1 {
		t.Errorf("AfterReply ran for node %d", got)
	}
	waiting := k.Send(abi.OpGetattr, 2, fusetest.Arg(abi.GetattrIn{}))
	b.waitStarted(t, waiting)
	intr := k.Send(abi.OpGetattr, 3, fusetest.Arg(abi.GetattrIn{}))
	b.waitStarted(t, intr)
	k.Interrupt(intr)
	if r := k.Reply(intr); r.Errno != syscall.EINTR {
		t.Errorf("interrupted request answered %v, want EINTR", r.Errno)
	}
	<-afters
	k.Server().Handover()
	k.Cancel()
	if err := k.ServeErr(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	k.ExpectNoReply(waiting, 50*time.Millisecond)
	if n := fs.destroys.Load(); n != 0 {
		t.Errorf("Destroy called %d times at a handover", n)
	}
	select {
	case n := <-afters:
		t.Errorf("AfterReply ran for the request left unanswered (node %d)", n)
	default:
	}
	if got := len(k.Server().Conns()); got < 1 {
		t.Errorf("Conns() = %d descriptors", got)
	}
}

// On a connection without FUSE_NOTIFY_RESEND (before 7.40) a request left
// unanswered at a handover would never be answered: it gets EINTR instead.
func TestHandoverWithoutResend(t *testing.T) {
	b := newBlocker()
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		return b.wait(ctx, r)
	}}
	neg := &fusedev.Negotiated{Major: 7, Minor: 38, KernelMinor: 38, Flags: fusedev.DefaultFlags, MaxWrite: 1 << 20, MaxPages: 256}
	k := fusetest.Start(t, fs, fusedev.Options{Resume: neg, HandoverGrace: 30 * time.Millisecond})
	<-k.Server().Ready()
	waiting := k.Send(abi.OpGetattr, 2, fusetest.Arg(abi.GetattrIn{}))
	b.waitStarted(t, waiting)
	k.Server().Handover()
	k.Cancel()
	if err := k.ServeErr(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if r := k.Reply(waiting); r.Errno != syscall.EINTR {
		t.Errorf("request waiting at the handover answered %v, want EINTR", r.Errno)
	}
}

// Requests resent by the kernel after FUSE_NOTIFY_RESEND say so.
func TestResent(t *testing.T) {
	resent := make(chan bool, 1)
	fs := &hookFS{getattr: func(ctx context.Context, r *fusedev.Request, _ *abi.GetattrIn, _ *abi.AttrOut) error {
		resent <- r.Resent()
		return nil
	}}
	k := startInit(t, fs, fusedev.Options{})
	u := k.SendReq(fusetest.Req{Op: abi.OpGetattr, Node: 1, Unique: 8 | abi.UniqueResend, Args: [][]byte{fusetest.Arg(abi.GetattrIn{})}})
	if r := k.Reply(u); r.Errno != 0 {
		t.Fatal(r.Errno)
	}
	if !<-resent {
		t.Error("Resent() false for a unique with the resend bit")
	}
}
