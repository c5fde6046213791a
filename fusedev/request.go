package fusedev

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// outWords holds an out header and the largest fixed reply (StatxOut), or
// an EntryOut followed by an OpenOut (CREATE).
const outWords = (abi.SizeOutHeader + abi.SizeStatxOut) / 8

// request is one request being handled.
type request struct {
	s     *Server
	conn  *Conn
	hdr   abi.InHeader
	start time.Time
	buf   *[]byte // owns in and ext
	in    []byte  // arguments after the header, extensions excluded
	ext   []byte  // request extensions (7.38)
	ctx   reqContext
	pub   Request

	out     [outWords]uint64 // out header, then the fixed reply
	outLen  int              // bytes of fixed reply after the header
	data    []byte           // variable reply data after the fixed reply
	dataBuf *[]byte          // pooled buffer behind data, if any
}

// outAs returns the fixed reply area as a *T. T must fit (checked at the
// call sites by the size of the largest reply).
func outAs[T any](r *request) *T {
	return (*T)(unsafe.Pointer(&r.out[abi.SizeOutHeader/8]))
}

var errMalformed = errors.New("malformed request")

// malformed logs a protocol violation and answers EIO.
func (r *request) malformed(err error) error {
	r.s.log.WithFields(logrus.Fields{"op": r.hdr.Opcode, "unique": r.hdr.Unique}).WithError(err).Error("fuse: malformed request")
	return fmt.Errorf("%w: %v", errMalformed, err)
}

func (r *request) serve() {
	s := r.s
	r.pub = Request{Opcode: r.hdr.Opcode, Unique: r.hdr.Unique, NodeID: r.hdr.NodeID,
		Caller: Caller{UID: r.hdr.UID, GID: r.hdr.GID, PID: r.hdr.PID}}
	if len(r.ext) > 0 {
		r.pub.SuppGroups = parseSuppGroups(r.ext)
	}

	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				s.log.WithFields(logrus.Fields{"op": r.hdr.Opcode, "unique": r.hdr.Unique, "node": r.hdr.NodeID}).
					Errorf("fuse: handler panicked: %v\n%s", p, debug.Stack())
				err = syscall.EIO
			}
		}()
		err = r.run()
	}()
	errno := s.errnoOf(r, err)
	if errno != 0 {
		r.outLen, r.data = 0, nil
	}
	if errno == syscall.EINTR && r.ctx.handedOver() {
		// Stopped waiting for a handover: the kernel sends the request
		// again to the successor, which answers it.
	} else {
		r.reply(errno)
		if r.pub.after != nil {
			r.pub.after()
		}
	}

	s.stats.record(r.hdr.Opcode, time.Since(r.start), errno != 0)
	s.mu.Lock()
	delete(s.inflight, r.hdr.Unique)
	s.mu.Unlock()
	s.pool.put(r.dataBuf)
	s.pool.put(r.buf)
	<-s.slots
}

// maxErrno bounds the errnos the kernel accepts in a reply: it refuses a
// write whose error is at or below -ERESTARTSYS (512) with EINVAL, and the
// request then never completes.
const maxErrno = 511

// errnoOf turns a handler's error into the errno the kernel sees.
func (s *Server) errnoOf(r *request, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.As(err, &e) && e <= maxErrno:
		return e
	case errors.As(err, &e):
		s.log.WithFields(logrus.Fields{"op": r.hdr.Opcode, "node": r.hdr.NodeID}).WithError(err).
			Errorf("fuse: handler returned errno %d, which the kernel cannot take; answering EIO", uintptr(e))
		return syscall.EIO
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, errMalformed):
		return syscall.EIO
	}
	s.log.WithFields(logrus.Fields{"op": r.hdr.Opcode, "node": r.hdr.NodeID}).WithError(err).Error("fuse: handler failed")
	return syscall.EIO
}

// reply writes the one reply of the request.
func (r *request) reply(errno syscall.Errno) {
	total := abi.SizeOutHeader + r.outLen + len(r.data)
	hdr := (*abi.OutHeader)(unsafe.Pointer(&r.out[0]))
	*hdr = abi.OutHeader{Len: uint32(total), Error: -int32(errno), Unique: r.hdr.Unique}
	head := unsafe.Slice((*byte)(unsafe.Pointer(&r.out[0])), abi.SizeOutHeader+r.outLen)
	var err error
	if len(r.data) > 0 {
		err = r.conn.Write([][]byte{head, r.data})
	} else {
		err = r.conn.Write([][]byte{head})
	}
	if err != nil && err != syscall.ENOENT {
		r.s.log.WithFields(logrus.Fields{"op": r.hdr.Opcode, "unique": r.hdr.Unique, "len": total}).
			WithError(err).Error("fuse: writing reply failed")
	}
}

// dataOf returns a pooled buffer of n bytes for reply data.
func (r *request) dataOf(n int) []byte {
	r.dataBuf = r.s.pool.get(n)
	return *r.dataBuf
}

func parseSuppGroups(ext []byte) []uint32 {
	for len(ext) >= abi.SizeExtHeader {
		var eh abi.ExtHeader
		abi.Decode(ext, &eh)
		if eh.Size < abi.SizeExtHeader || int(eh.Size) > len(ext) {
			return nil
		}
		body := ext[abi.SizeExtHeader:eh.Size]
		if eh.Type == abi.ExtGroups {
			var sg abi.SuppGroups
			if abi.Decode(body, &sg) != nil || uint64(sg.NrGroups)*4 > uint64(len(body)-abi.SizeSuppGroups) {
				return nil
			}
			groups := make([]uint32, sg.NrGroups)
			for i := range groups {
				b := body[abi.SizeSuppGroups+4*i:]
				groups[i] = uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
			}
			return groups
		}
		ext = ext[abi.Align8(int(eh.Size)):]
	}
	return nil
}

// twoNames splits "old\0new\0".
func twoNames(b []byte) (string, string, error) {
	a, rest, err := abi.Name(b)
	if err != nil {
		return "", "", err
	}
	c, _, err := abi.Name(rest)
	return a, c, err
}

// run decodes the request, calls the file system and leaves the reply in
// r.out/r.outLen and r.data.
func (r *request) run() error {
	s, fs, ctx, req, in := r.s, r.s.fs, &r.ctx, &r.pub, r.in
	neg := s.Negotiated()
	switch r.hdr.Opcode {
	case abi.OpLookup:
		name, _, err := abi.Name(in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut
		return fs.Lookup(ctx, req, name, outAs[abi.EntryOut](r))

	case abi.OpGetattr:
		var a abi.GetattrIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeAttrOut
		return fs.Getattr(ctx, req, &a, outAs[abi.AttrOut](r))

	case abi.OpSetattr:
		var a abi.SetattrIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeAttrOut
		return fs.Setattr(ctx, req, &a, outAs[abi.AttrOut](r))

	case abi.OpReadlink:
		target, err := fs.Readlink(ctx, req)
		if err != nil {
			return err
		}
		if len(target) >= abi.PathMax {
			return syscall.ENAMETOOLONG // the kernel reads at most a page
		}
		r.data = []byte(target)
		return nil

	case abi.OpSymlink:
		name, rest, err := abi.Name(in)
		if err != nil {
			return r.malformed(err)
		}
		target, _, err := abi.CString(rest, abi.PathMax-1)
		if err != nil || target == "" {
			return r.malformed(fmt.Errorf("symlink target: %v", err))
		}
		r.outLen = abi.SizeEntryOut
		return fs.Symlink(ctx, req, target, name, outAs[abi.EntryOut](r))

	case abi.OpMknod:
		var a abi.MknodIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		name, _, err := abi.Name(in[abi.SizeMknodIn:])
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut
		return fs.Mknod(ctx, req, &a, name, outAs[abi.EntryOut](r))

	case abi.OpMkdir:
		var a abi.MkdirIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		name, _, err := abi.Name(in[abi.SizeMkdirIn:])
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut
		return fs.Mkdir(ctx, req, &a, name, outAs[abi.EntryOut](r))

	case abi.OpUnlink, abi.OpRmdir:
		name, _, err := abi.Name(in)
		if err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpUnlink {
			return fs.Unlink(ctx, req, name)
		}
		return fs.Rmdir(ctx, req, name)

	case abi.OpRename:
		var a abi.RenameIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		oldName, newName, err := twoNames(in[abi.SizeRenameIn:])
		if err != nil {
			return r.malformed(err)
		}
		return fs.Rename(ctx, req, &abi.Rename2In{Newdir: a.Newdir}, oldName, newName)

	case abi.OpRename2:
		var a abi.Rename2In
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		oldName, newName, err := twoNames(in[abi.SizeRename2In:])
		if err != nil {
			return r.malformed(err)
		}
		return fs.Rename(ctx, req, &a, oldName, newName)

	case abi.OpLink:
		var a abi.LinkIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		name, _, err := abi.Name(in[abi.SizeLinkIn:])
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut
		return fs.Link(ctx, req, &a, name, outAs[abi.EntryOut](r))

	case abi.OpOpen, abi.OpOpendir:
		var a abi.OpenIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeOpenOut
		if r.hdr.Opcode == abi.OpOpen {
			return fs.Open(ctx, req, &a, outAs[abi.OpenOut](r))
		}
		return fs.Opendir(ctx, req, &a, outAs[abi.OpenOut](r))

	case abi.OpRead:
		var a abi.ReadIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		size := int(min(a.Size, maxRead(neg)))
		data, err := fs.Read(ctx, req, &a, r.dataOf(size))
		if err != nil {
			return err
		}
		if len(data) > size {
			s.log.WithFields(logrus.Fields{"asked": a.Size, "got": len(data)}).Error("fuse: READ handler returned more than asked; truncated")
			data = data[:size]
		}
		r.data = data
		return nil

	case abi.OpWrite:
		var a abi.WriteIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		data := in[abi.SizeWriteIn:]
		if uint64(a.Size) > uint64(len(data)) {
			return r.malformed(fmt.Errorf("WRITE of %d bytes carries %d", a.Size, len(data)))
		}
		n, err := fs.Write(ctx, req, &a, data[:a.Size])
		if err != nil {
			return err
		}
		*outAs[abi.WriteOut](r) = abi.WriteOut{Size: n}
		r.outLen = abi.SizeWriteOut
		return nil

	case abi.OpStatfs:
		r.outLen = abi.SizeStatfsOut
		return fs.Statfs(ctx, req, outAs[abi.StatfsOut](r))

	case abi.OpRelease, abi.OpReleasedir:
		var a abi.ReleaseIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpRelease {
			return fs.Release(ctx, req, &a)
		}
		return fs.Releasedir(ctx, req, &a)

	case abi.OpFsync, abi.OpFsyncdir:
		var a abi.FsyncIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpFsync {
			return fs.Fsync(ctx, req, &a)
		}
		return fs.Fsyncdir(ctx, req, &a)

	case abi.OpSetxattr:
		size := abi.CompatSetxattrInSize
		if neg.Flags.Has(abi.InitSetxattrExt) {
			size = abi.SizeSetxattrIn
		}
		var a abi.SetxattrIn
		if err := abi.DecodeSized(in, size, &a); err != nil {
			return r.malformed(err)
		}
		name, rest, err := abi.CString(in[size:], 255)
		if err != nil || name == "" {
			return r.malformed(fmt.Errorf("xattr name: %v", err))
		}
		if uint64(a.Size) > uint64(len(rest)) {
			return r.malformed(fmt.Errorf("SETXATTR value of %d bytes carries %d", a.Size, len(rest)))
		}
		return fs.Setxattr(ctx, req, &a, name, rest[:a.Size])

	case abi.OpGetxattr, abi.OpListxattr:
		var a abi.GetxattrIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		var name string
		if r.hdr.Opcode == abi.OpGetxattr {
			var err error
			name, _, err = abi.CString(in[abi.SizeGetxattrIn:], 255)
			if err != nil || name == "" {
				return r.malformed(fmt.Errorf("xattr name: %v", err))
			}
		}
		var dest []byte
		if a.Size > 0 {
			dest = r.dataOf(int(min(a.Size, 1<<16)))
		}
		var n int
		var err error
		if r.hdr.Opcode == abi.OpGetxattr {
			n, err = fs.Getxattr(ctx, req, name, dest)
		} else {
			n, err = fs.Listxattr(ctx, req, dest)
		}
		if err != nil {
			return err
		}
		if a.Size == 0 {
			*outAs[abi.GetxattrOut](r) = abi.GetxattrOut{Size: uint32(n)}
			r.outLen = abi.SizeGetxattrOut
			return nil
		}
		if n > len(dest) {
			return syscall.ERANGE
		}
		r.data = dest[:n]
		return nil

	case abi.OpRemovexattr:
		name, _, err := abi.CString(in, 255)
		if err != nil || name == "" {
			return r.malformed(fmt.Errorf("xattr name: %v", err))
		}
		return fs.Removexattr(ctx, req, name)

	case abi.OpFlush:
		var a abi.FlushIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		return fs.Flush(ctx, req, &a)

	case abi.OpReaddir, abi.OpReaddirplus:
		var a abi.ReadIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		size := int(min(a.Size, max(neg.MaxWrite, 64*1024)))
		dl := DirList{buf: r.dataOf(size)[:0], plus: r.hdr.Opcode == abi.OpReaddirplus}
		dl.buf = dl.buf[:0:size]
		var err error
		if dl.plus {
			err = fs.Readdirplus(ctx, req, &a, &dl)
		} else {
			err = fs.Readdir(ctx, req, &a, &dl)
		}
		if err != nil {
			return err
		}
		r.data = dl.buf
		return nil

	case abi.OpGetlk:
		var a abi.LkIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeLkOut
		return fs.Getlk(ctx, req, &a, outAs[abi.LkOut](r))

	case abi.OpSetlk, abi.OpSetlkw:
		var a abi.LkIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpSetlk {
			return fs.Setlk(ctx, req, &a)
		}
		return fs.Setlkw(ctx, req, &a)

	case abi.OpAccess:
		var a abi.AccessIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		return fs.Access(ctx, req, &a)

	case abi.OpCreate:
		var a abi.CreateIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		name, _, err := abi.Name(in[abi.SizeCreateIn:])
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut + abi.SizeOpenOut
		entry, open := outAs[abi.EntryOut](r), (*abi.OpenOut)(unsafe.Add(unsafe.Pointer(outAs[abi.EntryOut](r)), abi.SizeEntryOut))
		return fs.Create(ctx, req, &a, name, entry, open)

	case abi.OpTmpfile:
		var a abi.CreateIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut + abi.SizeOpenOut
		entry, open := outAs[abi.EntryOut](r), (*abi.OpenOut)(unsafe.Add(unsafe.Pointer(outAs[abi.EntryOut](r)), abi.SizeEntryOut))
		return fs.Tmpfile(ctx, req, &a, entry, open)

	case abi.OpBmap:
		var a abi.BmapIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeBmapOut
		return fs.Bmap(ctx, req, &a, outAs[abi.BmapOut](r))

	case abi.OpDestroy:
		s.destroy()
		return nil

	case abi.OpIoctl:
		var a abi.IoctlIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		data := in[abi.SizeIoctlIn:]
		if uint64(a.InSize) > uint64(len(data)) {
			return r.malformed(fmt.Errorf("IOCTL in_size %d, carries %d", a.InSize, len(data)))
		}
		var out IoctlOut
		if err := fs.Ioctl(ctx, req, &a, data[:a.InSize], &out); err != nil {
			return err
		}
		return r.ioctlReply(&a, &out, maxRead(neg))

	case abi.OpPoll:
		var a abi.PollIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizePollOut
		return fs.Poll(ctx, req, &a, outAs[abi.PollOut](r))

	case abi.OpFallocate:
		var a abi.FallocateIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		return fs.Fallocate(ctx, req, &a)

	case abi.OpLseek:
		var a abi.LseekIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeLseekOut
		return fs.Lseek(ctx, req, &a, outAs[abi.LseekOut](r))

	case abi.OpCopyFileRange, abi.OpCopyFileRange64:
		var a abi.CopyFileRangeIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpCopyFileRange && a.Len > 1<<32-1 {
			a.Len = 1<<32 - 4096 // the 32-bit reply cannot say more
		}
		n, err := fs.CopyFileRange(ctx, req, &a)
		if err != nil {
			return err
		}
		if r.hdr.Opcode == abi.OpCopyFileRange {
			*outAs[abi.WriteOut](r) = abi.WriteOut{Size: uint32(min(n, 1<<32-1))}
			r.outLen = abi.SizeWriteOut
		} else {
			*outAs[abi.CopyFileRangeOut](r) = abi.CopyFileRangeOut{BytesCopied: n}
			r.outLen = abi.SizeCopyFileRangeOut
		}
		return nil

	case abi.OpSyncfs:
		return fs.Syncfs(ctx, req)

	case abi.OpStatx:
		var a abi.StatxIn
		if err := abi.Decode(in, &a); err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeStatxOut
		return fs.Statx(ctx, req, &a, outAs[abi.StatxOut](r))

	case abi.OpSetupmapping, abi.OpRemovemapping:
		return syscall.ENOSYS // DAX mappings exist only for virtio-fs

	case abi.OpInit, abi.OpCuseInit:
		return r.malformed(errors.New("second INIT on an initialised connection"))
	}
	s.log.WithFields(logrus.Fields{"op": r.hdr.Opcode, "unique": r.hdr.Unique}).Debug("fuse: unknown opcode")
	return syscall.ENOSYS
}

// maxRead is the largest READ the kernel may send: max_pages pages (its
// default of 32 without InitMaxPages), or max_read on CUSE. Larger sizes
// are a malformed request; the handler gets a buffer of at most this.
func maxRead(neg *Negotiated) uint32 {
	pages := uint32(neg.MaxPages)
	if pages == 0 {
		pages = defaultMaxPages
	}
	return max(neg.MaxWrite, neg.MaxRead, pages*pageSize)
}

// ioctlReply encodes an IOCTL answer: the fixed part, then either the iovec
// arrays of a retry or the output data.
func (r *request) ioctlReply(in *abi.IoctlIn, out *IoctlOut, limit uint32) error {
	o := outAs[abi.IoctlOut](r)
	r.outLen = abi.SizeIoctlOut
	if out.Retry {
		if in.Flags&abi.IoctlUnrestricted == 0 {
			return r.malformed(errors.New("ioctl retry asked for a restricted ioctl"))
		}
		n := len(out.InIovs) + len(out.OutIovs)
		if n > abi.IoctlMaxIov {
			return syscall.ENOMEM
		}
		*o = abi.IoctlOut{Flags: abi.IoctlRetry, InIovs: uint32(len(out.InIovs)), OutIovs: uint32(len(out.OutIovs))}
		buf := r.dataOf(n * abi.SizeIoctlIovec)
		off := 0
		for _, v := range append(append([]abi.IoctlIovec(nil), out.InIovs...), out.OutIovs...) {
			copy(buf[off:], abi.Bytes(&v))
			off += abi.SizeIoctlIovec
		}
		r.data = buf[:off]
		return nil
	}
	if len(out.Data) > int(min(in.OutSize, limit)) {
		return r.malformed(fmt.Errorf("ioctl handler returned %d bytes, out_size %d", len(out.Data), in.OutSize))
	}
	*o = abi.IoctlOut{Result: out.Result}
	r.data = out.Data
	return nil
}

// reqContext is a request's context: cancelled by INTERRUPT or shutdown.
// It is much cheaper than context.WithCancel, which matters at one per
// request.
type reqContext struct {
	parent context.Context
	mu     sync.Mutex
	done   chan struct{} // guarded by mu; made on first use
	err    error         // guarded by mu
	handed bool          // guarded by mu; cancelled by a handover (not by INTERRUPT)
}

func (c *reqContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *reqContext) Value(key any) any           { return c.parent.Value(key) }

func (c *reqContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

func (c *reqContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *reqContext) cancel() { c.cancelFor(false) }

// handedOver reports whether a handover cancelled the request (and nothing
// else before it).
func (c *reqContext) handedOver() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handed
}

func (c *reqContext) cancelFor(handover bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.handed = handover
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
}
