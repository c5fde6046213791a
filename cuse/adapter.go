package cuse

import (
	"context"
	"errors"
	"syscall"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// adapter is the fusedev.FileSystem of a CUSE connection: it keeps the file
// table and calls the Device's handles. Everything but the character device
// operations answers ENOSYS.
type adapter struct {
	fusedev.NotImplemented
	s *Server
}

var _ fusedev.FileSystem = (*adapter)(nil)

// Init runs once CUSE_INIT is negotiated, before the reply is sent.
func (a *adapter) Init(ctx context.Context, srv *fusedev.Server) error {
	a.s.fsrv.Store(srv)
	return nil
}

// Destroy runs when serving ends: the kernel dropped the files still open
// with the connection, so they are released here.
func (a *adapter) Destroy() {
	if !a.s.handedOver.Load() {
		a.s.releaseAll()
	}
}

func op(r *fusedev.Request, f *File, flags uint32) Op {
	return Op{File: f, Caller: r.Caller, Flags: int(flags), Unique: r.Unique &^ abi.UniqueResend, Resent: r.Resent(), req: r}
}

func (a *adapter) Open(ctx context.Context, r *fusedev.Request, in *abi.OpenIn, out *abi.OpenOut) error {
	s := a.s
	f := &File{id: s.nextFh.Add(1), flags: int(in.Flags), caller: r.Caller, srv: s}
	h, err := s.dev.Open(ctx, f)
	if err != nil {
		return err
	}
	if h == nil {
		s.log.Error("cuse: Device.Open returned no Handle and no error")
		return syscall.EIO
	}
	f.handle = h
	s.mu.Lock()
	s.files[f.id] = f
	s.mu.Unlock()
	s.st.opened(f)
	s.stats.opens.Add(1)
	s.stats.openNow.Add(1)
	// The kernel treats the device as a stream itself (nonseekable_open);
	// its I/O on CUSE is always direct.
	*out = abi.OpenOut{Fh: f.id}
	return nil
}

func (a *adapter) Read(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
	s := a.s
	f, err := s.file(in.Fh)
	if err != nil {
		return nil, err
	}
	o := op(r, f, in.Flags)
	o.Offset = int64(in.Offset)
	n, err := f.handle.Read(ctx, o, dest)
	if err != nil {
		return nil, s.countErr(ctx, err)
	}
	if n < 0 || n > len(dest) {
		s.log.WithField("n", n).Error("cuse: Read returned a count outside its buffer")
		return nil, syscall.EIO
	}
	s.stats.reads.Add(1)
	s.stats.bytesRead.Add(uint64(n))
	return dest[:n], nil
}

func (a *adapter) Write(ctx context.Context, r *fusedev.Request, in *abi.WriteIn, data []byte) (uint32, error) {
	s := a.s
	f, err := s.file(in.Fh)
	if err != nil {
		return 0, err
	}
	o := op(r, f, in.Flags)
	o.Offset = int64(in.Offset)
	n, err := f.handle.Write(ctx, o, data)
	if err != nil {
		return 0, s.countErr(ctx, err)
	}
	if n < 0 || n > len(data) {
		s.log.WithField("n", n).Error("cuse: Write returned a count outside its data")
		return 0, syscall.EIO
	}
	s.stats.writes.Add(1)
	s.stats.bytesWritten.Add(uint64(n))
	return uint32(n), nil
}

func (a *adapter) Release(ctx context.Context, r *fusedev.Request, in *abi.ReleaseIn) error {
	s := a.s
	s.mu.Lock()
	f := s.files[in.Fh]
	delete(s.files, in.Fh)
	s.mu.Unlock()
	if f == nil {
		return nil // released at shutdown already, or never opened
	}
	s.st.released(f)
	s.stats.openNow.Add(-1)
	if err := f.handle.Release(ctx); err != nil {
		s.log.WithError(err).WithField("fh", in.Fh).Debug("cuse: Release failed")
	}
	return nil // close(2) has nothing to report
}

func (a *adapter) Flush(ctx context.Context, r *fusedev.Request, in *abi.FlushIn) error {
	f, err := a.s.file(in.Fh)
	if err != nil {
		return err
	}
	fl, ok := f.handle.(Flusher)
	if !ok {
		return syscall.ENOSYS // the kernel stops sending FLUSH
	}
	return fl.Flush(ctx, op(r, f, uint32(f.flags)))
}

func (a *adapter) Fsync(ctx context.Context, r *fusedev.Request, in *abi.FsyncIn) error {
	f, err := a.s.file(in.Fh)
	if err != nil {
		return err
	}
	fs, ok := f.handle.(Fsyncer)
	if !ok {
		return syscall.ENOSYS // the kernel stops sending FSYNC
	}
	mode := SyncAll
	if in.FsyncFlags&abi.FsyncFdatasync != 0 {
		mode = SyncData
	}
	return fs.Fsync(ctx, op(r, f, uint32(f.flags)), mode)
}

func (a *adapter) Poll(ctx context.Context, r *fusedev.Request, in *abi.PollIn, out *abi.PollOut) error {
	s := a.s
	f, err := s.file(in.Fh)
	if err != nil {
		return err
	}
	p, ok := f.handle.(Poller)
	if !ok {
		return syscall.ENOSYS // the kernel then reports the file always ready
	}
	s.stats.polls.Add(1)
	if in.Flags&abi.PollScheduleNotify != 0 {
		// Arm before asking the handle, so that a change racing with the
		// answer below is followed by a wake-up.
		f.kh.Store(in.Kh)
		f.hasKh.Store(true)
		f.armed.Store(true)
		s.st.pollHandle(f, in.Kh)
	}
	ev, err := p.Poll(ctx, op(r, f, uint32(f.flags)), Events(in.Events))
	if err != nil {
		return err
	}
	*out = abi.PollOut{Revents: uint32(ev)}
	return nil
}

func (a *adapter) Ioctl(ctx context.Context, r *fusedev.Request, in *abi.IoctlIn, data []byte, out *fusedev.IoctlOut) error {
	s := a.s
	f, err := s.file(in.Fh)
	if err != nil {
		return err
	}
	h, ok := f.handle.(Ioctler)
	if !ok {
		return syscall.ENOTTY
	}
	// The file keeps a spare request between ioctls (two atomic swaps,
	// cheaper than the pool); concurrent ioctls on one file use the pool.
	req := f.ioctlReq.Swap(nil)
	if req == nil {
		req = s.ioctlPool.Get().(*IoctlRequest)
	}
	defer func() {
		if !f.ioctlReq.CompareAndSwap(nil, req) {
			s.ioctlPool.Put(req)
		}
	}()
	req.reset(in, data)
	req.alloc = out.Buffer // the reply data is built in the server's buffer
	res, err := h.Ioctl(ctx, op(r, f, uint32(f.flags)), req)
	if req.missing && (err == nil || errors.Is(err, ErrIoctlRetry)) {
		s.stats.ioctlRetries.Add(1)
		out.Retry = true
		out.InIovs = req.iovecs(req.inRegs)
		out.OutIovs = req.iovecs(req.outRegs)
		return nil
	}
	if errors.Is(err, ErrIoctlRetry) {
		s.log.WithField("cmd", req.Cmd).Error("cuse: Ioctl returned ErrIoctlRetry but asked for nothing new")
		return syscall.EIO
	}
	if err != nil {
		return s.countErr(ctx, err)
	}
	if res < 0 {
		s.log.WithFields(map[string]any{"cmd": req.Cmd, "result": res}).Error("cuse: Ioctl returned a negative result without an error")
		return syscall.EIO
	}
	s.stats.ioctls.Add(1)
	out.Result = res
	out.Data = req.output()
	return nil
}
