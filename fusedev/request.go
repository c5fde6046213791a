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

// request is one request being handled. A loop goroutine reuses its
// request objects for the requests it serves inline (see reset); one handed
// off to another goroutine is dropped after its reply.
type request struct {
	s      *Server
	conn   *Conn
	hdr    abi.InHeader
	start  time.Duration // Server.clock() when it was read
	small  []byte        // the request, copied when it is small (cap smallRequest)
	big    *[]byte       // the read buffer, taken by a large request
	in     []byte        // arguments after the header, extensions excluded
	ext    []byte        // request extensions (7.38)
	ctx    reqContext
	pub    Request
	ioctl  IoctlOut
	w      msgWriter
	arg    [16]uint64       // the decoded fixed arguments (argOf)
	dataFn func(int) []byte // dataOf, made once

	out     [outWords]uint64 // out header, then the fixed reply
	outLen  int              // bytes of fixed reply after the header
	data    []byte           // variable reply data after the fixed reply
	dataBuf *[]byte          // pooled buffer for data, kept while the object is reused
}

func (s *Server) newRequest() *request {
	r := &request{s: s, small: make([]byte, smallRequest)}
	r.ctx.parent = context.Background()
	r.w.init()
	r.dataFn = r.dataOf
	return r
}

// reset prepares r for the request with header h, read at start from c.
// The context is reset under its lock: an INTERRUPT may be looking at r
// (ctx.cancelIf).
func (r *request) reset(c *Conn, h *abi.InHeader, start time.Duration) {
	r.conn, r.hdr, r.start = c, *h, start
	r.in, r.ext, r.big = nil, nil, nil
	r.pub = Request{}
	r.ioctl = IoctlOut{buf: r.dataFn}
	r.out = [outWords]uint64{}
	r.outLen, r.data = 0, nil
	r.ctx.mu.Lock()
	r.ctx.unique, r.ctx.err, r.ctx.done, r.ctx.handed = h.Unique, nil, nil, false
	r.ctx.mu.Unlock()
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
	if errno == syscall.EINTR && r.ctx.handedOver() && s.canResend() {
		// Stopped waiting for a handover: the kernel sends the request
		// again to the successor, which answers it. (Without
		// FUSE_NOTIFY_RESEND it would never be answered: EINTR then.)
	} else if err := r.reply(errno); err == nil && r.pub.after != nil {
		// Only a reply the kernel took: ENOENT means the request is gone
		// (the connection aborted) or back in the kernel's queue (a
		// FUSE_NOTIFY_RESEND), and then it comes again.
		r.pub.after()
	}

	s.stats.record(r.hdr.Opcode, s.clock()-r.start, errno != 0)
	r.data = nil
	s.release()
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
	if e, ok := err.(syscall.Errno); ok && e <= maxErrno {
		return e // the common case, without errors.As
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

// reply writes the one reply of the request; it returns the write's error
// (ENOENT: the kernel no longer waits for it; not logged).
func (r *request) reply(errno syscall.Errno) error {
	total := abi.SizeOutHeader + r.outLen + len(r.data)
	hdr := (*abi.OutHeader)(unsafe.Pointer(&r.out[0]))
	*hdr = abi.OutHeader{Len: uint32(total), Error: -int32(errno), Unique: r.hdr.Unique}
	head := unsafe.Slice((*byte)(unsafe.Pointer(&r.out[0])), abi.SizeOutHeader+r.outLen)
	err := r.conn.writeMsg(&r.w, head, r.data)
	if err != nil && err != syscall.ENOENT {
		r.s.log.WithFields(logrus.Fields{"op": r.hdr.Opcode, "unique": r.hdr.Unique, "len": total}).
			WithError(err).Error("fuse: writing reply failed")
	}
	return err
}

// dataOf returns a buffer of n bytes for reply data: the request object's
// own, from the pool the first time or when it is too small.
func (r *request) dataOf(n int) []byte {
	if r.dataBuf == nil || cap(*r.dataBuf) < n {
		r.s.pool.put(r.dataBuf)
		r.dataBuf = r.s.pool.get(n)
	}
	*r.dataBuf = (*r.dataBuf)[:n]
	return *r.dataBuf
}

// drop returns the buffers of a request object that will not be reused.
func (r *request) drop() {
	r.s.pool.put(r.big)
	r.s.pool.put(r.dataBuf)
	r.big, r.dataBuf = nil, nil
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
		a, err := argOf[abi.GetattrIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeAttrOut
		return fs.Getattr(ctx, req, a, outAs[abi.AttrOut](r))

	case abi.OpSetattr:
		a, err := argOf[abi.SetattrIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeAttrOut
		return fs.Setattr(ctx, req, a, outAs[abi.AttrOut](r))

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
		a, err := argOf[abi.MknodIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		name, _, err := abi.Name(in[abi.SizeMknodIn:])
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut
		return fs.Mknod(ctx, req, a, name, outAs[abi.EntryOut](r))

	case abi.OpMkdir:
		a, err := argOf[abi.MkdirIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		name, _, err := abi.Name(in[abi.SizeMkdirIn:])
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut
		return fs.Mkdir(ctx, req, a, name, outAs[abi.EntryOut](r))

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
		a, err := argOf[abi.RenameIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		oldName, newName, err := twoNames(in[abi.SizeRenameIn:])
		if err != nil {
			return r.malformed(err)
		}
		return fs.Rename(ctx, req, &abi.Rename2In{Newdir: a.Newdir}, oldName, newName)

	case abi.OpRename2:
		a, err := argOf[abi.Rename2In](r, in)
		if err != nil {
			return r.malformed(err)
		}
		oldName, newName, err := twoNames(in[abi.SizeRename2In:])
		if err != nil {
			return r.malformed(err)
		}
		return fs.Rename(ctx, req, a, oldName, newName)

	case abi.OpLink:
		a, err := argOf[abi.LinkIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		name, _, err := abi.Name(in[abi.SizeLinkIn:])
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut
		return fs.Link(ctx, req, a, name, outAs[abi.EntryOut](r))

	case abi.OpOpen, abi.OpOpendir:
		a, err := argOf[abi.OpenIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeOpenOut
		if r.hdr.Opcode == abi.OpOpen {
			return fs.Open(ctx, req, a, outAs[abi.OpenOut](r))
		}
		return fs.Opendir(ctx, req, a, outAs[abi.OpenOut](r))

	case abi.OpRead:
		a, err := argOf[abi.ReadIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		size := int(min(a.Size, maxRead(neg)))
		data, err := fs.Read(ctx, req, a, r.dataOf(size))
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
		a, err := argOf[abi.WriteIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		data := in[abi.SizeWriteIn:]
		if uint64(a.Size) > uint64(len(data)) {
			return r.malformed(fmt.Errorf("WRITE of %d bytes carries %d", a.Size, len(data)))
		}
		n, err := fs.Write(ctx, req, a, data[:a.Size])
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
		a, err := argOf[abi.ReleaseIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpRelease {
			return fs.Release(ctx, req, a)
		}
		return fs.Releasedir(ctx, req, a)

	case abi.OpFsync, abi.OpFsyncdir:
		a, err := argOf[abi.FsyncIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpFsync {
			return fs.Fsync(ctx, req, a)
		}
		return fs.Fsyncdir(ctx, req, a)

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
		a, err := argOf[abi.GetxattrIn](r, in)
		if err != nil {
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
		a, err := argOf[abi.FlushIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		return fs.Flush(ctx, req, a)

	case abi.OpReaddir, abi.OpReaddirplus:
		a, err := argOf[abi.ReadIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		size := int(min(a.Size, max(neg.MaxWrite, 64*1024)))
		dl := DirList{buf: r.dataOf(size)[:0], plus: r.hdr.Opcode == abi.OpReaddirplus}
		dl.buf = dl.buf[:0:size]
		if dl.plus {
			err = fs.Readdirplus(ctx, req, a, &dl)
		} else {
			err = fs.Readdir(ctx, req, a, &dl)
		}
		if err != nil {
			return err
		}
		r.data = dl.buf
		return nil

	case abi.OpGetlk:
		a, err := argOf[abi.LkIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeLkOut
		return fs.Getlk(ctx, req, a, outAs[abi.LkOut](r))

	case abi.OpSetlk, abi.OpSetlkw:
		a, err := argOf[abi.LkIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpSetlk {
			return fs.Setlk(ctx, req, a)
		}
		return fs.Setlkw(ctx, req, a)

	case abi.OpAccess:
		a, err := argOf[abi.AccessIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		return fs.Access(ctx, req, a)

	case abi.OpCreate:
		a, err := argOf[abi.CreateIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		name, _, err := abi.Name(in[abi.SizeCreateIn:])
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut + abi.SizeOpenOut
		entry, open := outAs[abi.EntryOut](r), (*abi.OpenOut)(unsafe.Add(unsafe.Pointer(outAs[abi.EntryOut](r)), abi.SizeEntryOut))
		return fs.Create(ctx, req, a, name, entry, open)

	case abi.OpTmpfile:
		a, err := argOf[abi.CreateIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeEntryOut + abi.SizeOpenOut
		entry, open := outAs[abi.EntryOut](r), (*abi.OpenOut)(unsafe.Add(unsafe.Pointer(outAs[abi.EntryOut](r)), abi.SizeEntryOut))
		return fs.Tmpfile(ctx, req, a, entry, open)

	case abi.OpBmap:
		a, err := argOf[abi.BmapIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeBmapOut
		return fs.Bmap(ctx, req, a, outAs[abi.BmapOut](r))

	case abi.OpDestroy:
		s.destroy()
		return nil

	case abi.OpIoctl:
		a, err := argOf[abi.IoctlIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		data := in[abi.SizeIoctlIn:]
		if uint64(a.InSize) > uint64(len(data)) {
			return r.malformed(fmt.Errorf("IOCTL in_size %d, carries %d", a.InSize, len(data)))
		}
		out := &r.ioctl
		if err := fs.Ioctl(ctx, req, a, data[:a.InSize], out); err != nil {
			return err
		}
		return r.ioctlReply(a, out, maxRead(neg))

	case abi.OpPoll:
		a, err := argOf[abi.PollIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizePollOut
		return fs.Poll(ctx, req, a, outAs[abi.PollOut](r))

	case abi.OpFallocate:
		a, err := argOf[abi.FallocateIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		return fs.Fallocate(ctx, req, a)

	case abi.OpLseek:
		a, err := argOf[abi.LseekIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeLseekOut
		return fs.Lseek(ctx, req, a, outAs[abi.LseekOut](r))

	case abi.OpCopyFileRange, abi.OpCopyFileRange64:
		a, err := argOf[abi.CopyFileRangeIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		if r.hdr.Opcode == abi.OpCopyFileRange && a.Len > 1<<32-1 {
			a.Len = 1<<32 - 4096 // the 32-bit reply cannot say more
		}
		n, err := fs.CopyFileRange(ctx, req, a)
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
		a, err := argOf[abi.StatxIn](r, in)
		if err != nil {
			return r.malformed(err)
		}
		r.outLen = abi.SizeStatxOut
		return fs.Statx(ctx, req, a, outAs[abi.StatxOut](r))

	case abi.OpSetupmapping, abi.OpRemovemapping:
		return syscall.ENOSYS // DAX mappings exist only for virtio-fs

	case abi.OpInit, abi.OpCuseInit:
		return r.malformed(errors.New("second INIT on an initialised connection"))
	}
	s.log.WithFields(logrus.Fields{"op": r.hdr.Opcode, "unique": r.hdr.Unique}).Debug("fuse: unknown opcode")
	return syscall.ENOSYS
}

// argOf decodes a request's fixed argument struct into r's scratch space
// (no allocation: a struct of the handler's arguments escapes to the heap
// when it lives on the stack, being passed to an interface method).
func argOf[T any](r *request, in []byte) (*T, error) {
	var p *T
	if unsafe.Sizeof(*p) <= unsafe.Sizeof(r.arg) {
		p = (*T)(unsafe.Pointer(&r.arg))
	} else {
		p = new(T)
	}
	return p, abi.Decode(in, p)
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
		for _, vs := range [2][]abi.IoctlIovec{out.InIovs, out.OutIovs} {
			for i := range vs {
				off += copy(buf[off:], abi.Bytes(&vs[i]))
			}
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
	unique uint64        // guarded by mu; the request it belongs to now
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

// cancelIf cancels the context if it still belongs to request unique.
func (c *reqContext) cancelIf(unique uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unique != unique {
		return false
	}
	c.cancelLocked(false)
	return true
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
	c.cancelLocked(handover)
}

func (c *reqContext) cancelLocked(handover bool) {
	if c.err != nil {
		return
	}
	c.handed = handover
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
}
