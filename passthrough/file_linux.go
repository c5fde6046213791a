package passthrough

import (
	"context"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/policy"
	"github.com/fusegate/fusegate/policy/redact"
)

// handle is an open file or directory: a real descriptor of the lower
// inode, opened with the caller's identity and flags.
type handle struct {
	n      *node
	fd     int
	dir    bool
	pt     bool       // counted in n.io.ptOpens (kernel passthrough is set up)
	cached bool       // counted in n.io.cachedOpens (the kernel page cache is used)
	rd     *redaction // a redacted open (counted in n.io.redacted): reads zero its ranges
	wrote  atomic.Bool
	ds     *dirStream // directories
	flags  uint32     // open(2) flags, to reopen it after a restart
	slot   uint32     // restart state record + 1 (state_linux.go)
	// refs counts the handle table's reference and the calls using fd: a
	// RELEASE may come while a call the kernel gave up on (its caller was
	// interrupted) still runs, and must not close fd under it. The last
	// reference closes (putHandle).
	refs atomic.Int32
}

func (h *handle) close() {
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
	if h.ds != nil {
		h.ds.free()
	}
}

func (fs *FS) addHandle(h *handle) uint64 {
	fs.openRef(h.n)
	h.refs.Store(1)
	fs.hmu.Lock()
	fh := fs.nextFh
	fs.nextFh++
	fs.handles[fh] = h
	fs.hmu.Unlock()
	fs.st.openHandle(fs, fh, h)
	return fh
}

// handle returns the open handle fh, or nil; give it back with putHandle.
func (fs *FS) handle(fh uint64) *handle {
	fs.hmu.RLock()
	h := fs.handles[fh]
	if h != nil {
		h.refs.Add(1)
	}
	fs.hmu.RUnlock()
	return h
}

// putHandle drops a reference to h; the last one closes its descriptor.
func (fs *FS) putHandle(h *handle) {
	if h.refs.Add(-1) == 0 {
		h.close()
	}
}

// takeHandle removes fh from the table and returns it with the table's
// reference (for RELEASE; give it back with putHandle).
func (fs *FS) takeHandle(fh uint64) *handle {
	fs.hmu.Lock()
	h := fs.handles[fh]
	delete(fs.handles, fh)
	fs.hmu.Unlock()
	return h
}

// fileHandle returns the open file fh; give it back with putHandle.
func (fs *FS) fileHandle(fh uint64) (*handle, error) {
	h := fs.handle(fh)
	if h == nil {
		return nil, syscall.EBADF
	}
	if h.dir {
		fs.putHandle(h)
		return nil, syscall.EBADF
	}
	return h, nil
}

// openFlags are the flags a lower file is opened with for an open(2) with
// flags f: creation flags are the kernel's business, the path is a magic
// link (never O_NOFOLLOW), and the daemon's reads and writes go through
// the lower page cache (no O_DIRECT: the daemon's buffers are not aligned;
// passthrough opens are given the caller's O_DIRECT by the kernel).
func openFlags(f uint32) int {
	return int(f)&^(unix.O_CREAT|unix.O_EXCL|unix.O_NOCTTY|unix.O_NOFOLLOW|unix.O_DIRECT) | unix.O_CLOEXEC
}

func openRetry(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// openat opens for a handle; when the daemon is out of descriptors it
// closes cached node descriptors and tries once more.
func (fs *FS) openat(dirfd int, path string, flags int, mode uint32) (int, error) {
	for try := 0; ; try++ {
		fd, err := unix.Openat(dirfd, path, flags, mode)
		switch {
		case err == unix.EINTR:
			continue
		case (err == unix.EMFILE || err == unix.ENFILE) && try == 0:
			fs.fdc.shrink(fs)
			continue
		}
		return fd, err
	}
}

// Open opens a regular file as the caller and chooses its I/O mode.
func (fs *FS) Open(ctx context.Context, r *fusedev.Request, in *abi.OpenIn, out *abi.OpenOut) error {
	n, nfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	var st unix.Statx_t
	t := target{n: n, fd: nfd}
	if fs.ps.pol.Load() != nil {
		t.st, t.fd = t.attrs(&st), -1
	}
	d, err := fs.admit(ctx, r, t, reqArgs{openFlags: in.Flags})
	if err != nil {
		return err
	}
	mode := fs.ioModeFor(ctx, &d, n, "", t.st)
	as := fs.become(&r.Caller)
	fd, err := fs.openat(unix.AT_FDCWD, procPath(nfd), openFlags(in.Flags), 0)
	fs.done(as)
	if err != nil {
		return err
	}
	h := &handle{n: n, fd: fd, flags: in.Flags}
	if err := fs.setupIO(ctx, r, h, in.Flags, false, mode, d.Redact, out); err != nil {
		unix.Close(fd)
		return err
	}
	out.Fh = fs.addHandle(h)
	return nil
}

// ioModeFor is the I/O mode of an open the policy allowed with d (ioAny
// without a policy); the file is name in n (n itself when name is ""),
// with attributes st.
func (fs *FS) ioModeFor(ctx context.Context, d *policy.Decision, n *node, name string, st *unix.Statx_t) ioMode {
	e := fs.ps.pol.Load()
	if e == nil || !decided(d) || st == nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return ioAny
	}
	return e.ioModeOf(ctx, d, objectOf(policyPath(fs.pathOf(n, name)), st))
}

// Create creates and opens a regular file as the caller. Under a policy, a
// name that exists is decided as an open of it; a free one as a creation,
// made with O_EXCL so that a file appearing meanwhile is not opened on the
// strength of a creation decision.
func (fs *FS) Create(ctx context.Context, r *fusedev.Request, in *abi.CreateIn, name string, entry *abi.EntryOut, out *abi.OpenOut) error {
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	if err := validName(name); err != nil {
		return err
	}
	defer fs.entryLock()()
	it := fs.st.begin(r)
	if it.done && it.err != nil {
		return it.err // a predecessor did it, and failed
	}
	// A predecessor created it (or may have): open what is there,
	// decided as the creation it was.
	redo := it.done || it.uncertain
	for try := 0; ; try++ {
		// O_NOFOLLOW: a symlink that appeared under the name since the
		// kernel looked it up is not followed out of the tree.
		flags := int(in.Flags)&^(unix.O_NOCTTY|unix.O_DIRECT) | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC
		var st unix.Statx_t
		t := target{n: p, name: name, fd: pfd}
		x := reqArgs{openFlags: in.Flags}
		if fs.ps.pol.Load() != nil {
			t.st, t.fd = t.attrs(&st), -1
			if redo {
				t.st = nil
			}
			x.exists = t.st != nil
			switch {
			case redo:
			case x.exists:
				// Opened, not created, as decided.
				flags &^= unix.O_CREAT
			default:
				flags |= unix.O_EXCL
			}
		}
		if redo {
			flags &^= unix.O_EXCL | unix.O_TRUNC
		}
		d, err := fs.admit(ctx, r, t, x)
		if err != nil {
			it.finish(err)
			return err
		}
		if x.exists && in.Flags&unix.O_EXCL != 0 {
			it.finish(syscall.EEXIST)
			return syscall.EEXIST
		}
		mode := fs.ioModeFor(ctx, &d, p, name, t.st)
		as := fs.become(&r.Caller)
		fd, err := fs.openat(pfd, name, flags, in.Mode&07777)
		fs.done(as)
		if decided(&d) && try < 3 && (err == unix.EEXIST && !x.exists && !redo && in.Flags&unix.O_EXCL == 0 || err == unix.ENOENT && x.exists) {
			// Created or removed by someone else meanwhile: decide
			// again on what is there now.
			continue
		}
		it.finish(err)
		if err != nil {
			return err
		}
		if mode == ioAny && !x.exists && decided(&d) {
			// A new file: is it one that others would read redacted?
			var nst unix.Statx_t
			if statxFd(fd, &nst) == nil {
				mode = fs.ioModeFor(ctx, &d, p, name, &nst)
			}
		}
		return fs.opened(ctx, r, p, name, fd, in.Flags, &d, mode, entry, out)
	}
}

// Tmpfile creates an unnamed file in the directory (O_TMPFILE) as the
// caller. Under a policy it answers EOPNOTSUPP (open(2) returns it, and
// callers fall back to named files, each decided): an unnamed file has no
// path to decide on. Not ENOSYS: the kernel would stop sending TMPFILE for
// the connection's lifetime, also after a reload to no policy.
func (fs *FS) Tmpfile(ctx context.Context, r *fusedev.Request, in *abi.CreateIn, entry *abi.EntryOut, out *abi.OpenOut) error {
	if fs.ps.pol.Load() != nil {
		return syscall.EOPNOTSUPP
	}
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	d, err := fs.admit(ctx, r, target{n: p, fd: -1}, reqArgs{openFlags: in.Flags})
	if err != nil {
		return err
	}
	flags := int(in.Flags)&^(unix.O_CREAT|unix.O_NOCTTY|unix.O_DIRECT|unix.O_NOFOLLOW) | unix.O_TMPFILE | unix.O_CLOEXEC
	as := fs.become(&r.Caller)
	fd, err := fs.openat(pfd, ".", flags, in.Mode&07777)
	fs.done(as)
	if err != nil {
		return err
	}
	return fs.opened(ctx, r, p, "", fd, in.Flags, &d, ioAny, entry, out)
}

// opened finishes CREATE and TMPFILE: fd is the new open file.
func (fs *FS) opened(ctx context.Context, r *fusedev.Request, p *node, name string, fd int, flags uint32, d *policy.Decision, mode ioMode, entry *abi.EntryOut, out *abi.OpenOut) error {
	var st unix.Statx_t
	if err := statxFd(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	pfd, err := openRetry(procPath(fd), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return err
	}
	n := fs.adopt(p, name, pfd, &st)
	h := &handle{n: n, fd: fd, flags: flags}
	if err := fs.setupIO(ctx, r, h, flags, true, mode, d.Redact, out); err != nil {
		// The entry is not answered: drop the reference adopt took.
		unix.Close(fd)
		fs.Forget(n.id, 1)
		return err
	}
	fs.fillEntry(ctx, &r.Caller, p, name, n, &st, d, entry)
	out.Fh = fs.addHandle(h)
	return nil
}

// setupIO chooses how an open of a regular file does its I/O, in an order
// that never makes the kernel refuse the open (fs/fuse/iomode.c):
//
//   - kernel passthrough when it is available, the hook and the policy
//     allow it (mode ioAny) and no open of the inode uses the page cache or
//     is redacted; the inode's backing id is registered at its first such
//     open and shared by the others;
//   - otherwise, while the inode has passthrough opens, FOPEN_PASSTHROUGH
//     with FOPEN_DIRECT_IO: the kernel sends reads and writes to the daemon
//     (mmap still uses the backing file);
//   - for redacted opens (ioRedact) and opens of files others read redacted
//     (ioDirect), FOPEN_DIRECT_IO without passthrough and without the page
//     cache (see below);
//   - otherwise the page cache, kept across opens while the lower file did
//     not change (FOPEN_KEEP_CACHE).
//
// A redacted open must never be FOPEN_PASSTHROUGH (its mmap would map the
// backing file, unredacted) and must not share the inode's page cache with
// unredacted opens, so it is refused (EBUSY) while the inode has
// passthrough or page-cache opens, which only opens made before a policy
// change can be: under one policy every open of a file that some caller
// reads redacted is ioDirect or ioRedact, and while a redacted open exists
// every other open of the inode is made ioDirect too.
func (fs *FS) setupIO(ctx context.Context, r *fusedev.Request, h *handle, flags uint32, create bool, mode ioMode, red policy.Redaction, out *abi.OpenOut) error {
	n := h.n
	io := &n.io
	if mode == ioRedact || mode == ioDirect {
		return fs.setupDirect(h, flags, mode, red, out)
	}
	if mode == ioAny && fs.pt.enabled() && !fs.mustKillPriv(r, h, flags) && fs.allowPT(ctx, r, n, flags, create) {
		io.mu.Lock()
		if io.cachedOpens == 0 && io.redacted == 0 {
			if io.backing == 0 {
				srv := fs.srv.Load()
				if srv != nil {
					id, err := srv.Conn().BackingOpen(h.fd)
					if err != nil {
						io.mu.Unlock()
						fs.backingFailed(err, func() string { return fs.pathOf(n, "") })
						io.mu.Lock()
					} else {
						io.backing = id
						fs.st.backing(n, id)
						fs.stats.backingIDs.Add(1)
						fs.stats.backingOpen.Add(1)
					}
				}
			}
			if io.backing != 0 && io.redacted == 0 {
				io.ptOpens++
				io.stampOK = false // the page cache is bypassed from now on
				h.pt = true
				out.OpenFlags = abi.FopenPassthrough | fs.noflush()
				out.BackingID = io.backing
				io.mu.Unlock()
				fs.stats.ptOpens.Add(1)
				return nil
			}
		}
		io.mu.Unlock()
	}
	io.mu.Lock()
	if io.redacted > 0 {
		io.mu.Unlock()
		return fs.setupDirect(h, flags, ioDirect, 0, out)
	}
	defer io.mu.Unlock()
	fs.stats.daemonOpens.Add(1)
	if io.ptOpens > 0 {
		io.ptOpens++
		h.pt = true
		out.OpenFlags = abi.FopenPassthrough | abi.FopenDirectIO
		out.BackingID = io.backing
		return nil
	}
	io.cachedOpens++
	h.cached = true
	var st unix.Statx_t
	if statxFd(h.fd, &st) == nil {
		s := stampOf(&st)
		if io.stampOK && io.stamp == s {
			out.OpenFlags |= abi.FopenKeepCache
		}
		io.stamp, io.stampOK = s, true
	}
	if flags&unix.O_ACCMODE == unix.O_RDONLY {
		out.OpenFlags |= fs.noflush()
	}
	return nil
}

// setupDirect sets up a redacted open (ioRedact, with the redactions red)
// or an unredacted one of a redactable file (ioDirect): FOPEN_DIRECT_IO, no
// FOPEN_PASSTHROUGH, no FOPEN_KEEP_CACHE. Their reads and writes go to the
// daemon and bypass the page cache; only a MAP_PRIVATE mmap of them fills
// it, through its own handle (the kernel has no flag to refuse that).
func (fs *FS) setupDirect(h *handle, flags uint32, mode ioMode, red policy.Redaction, out *abi.OpenOut) error {
	io := &h.n.io
	io.mu.Lock()
	defer io.mu.Unlock()
	if mode == ioRedact {
		if io.ptOpens > 0 || io.cachedOpens > 0 {
			return syscall.EBUSY
		}
		io.redacted++
		h.rd = &redaction{what: red}
		fs.stats.redactedOpens.Add(1)
	} else if io.ptOpens > 0 {
		// Unredacted, and the inode is in passthrough mode (opens made
		// before the policy changed): join it, served by the daemon.
		io.ptOpens++
		h.pt = true
		out.OpenFlags = abi.FopenPassthrough | abi.FopenDirectIO
		out.BackingID = io.backing
		fs.stats.daemonOpens.Add(1)
		return nil
	} else {
		fs.stats.directOpens.Add(1)
	}
	fs.stats.daemonOpens.Add(1)
	// Whatever a MAP_PRIVATE mapping of this open puts in the page cache
	// must not be kept for a later cached open.
	io.stampOK = false
	out.OpenFlags = abi.FopenDirectIO
	if flags&unix.O_ACCMODE == unix.O_RDONLY {
		out.OpenFlags |= fs.noflush()
	}
	return nil
}

// mustKillPriv reports whether writes through this open must clear set-id
// bits or file capabilities (a writable open, by a caller other than root,
// of a file that has them): such writes must reach the daemon.
func (fs *FS) mustKillPriv(r *fusedev.Request, h *handle, flags uint32) bool {
	if flags&unix.O_ACCMODE == unix.O_RDONLY || r.UID == 0 {
		return false
	}
	var st unix.Statx_t
	if statxFd(h.fd, &st) != nil {
		return true
	}
	if st.Mode&unix.S_ISUID != 0 || st.Mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		return true
	}
	sz, err := unix.Fgetxattr(h.fd, "security.capability", nil)
	return err == nil && sz > 0
}

func (fs *FS) allowPT(ctx context.Context, r *fusedev.Request, n *node, flags uint32, create bool) bool {
	if fs.opts.AllowPassthrough == nil {
		return true
	}
	return fs.opts.AllowPassthrough(ctx, &OpenInfo{Caller: r.Caller, Flags: flags, Create: create, fs: fs, n: n})
}

// Read reads from the lower file (opens not in kernel passthrough).
func (fs *FS) Read(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
	h, err := fs.fileHandle(in.Fh)
	if err != nil {
		return nil, err
	}
	defer fs.putHandle(h)
	if h.rd != nil {
		return fs.readRedacted(h, int64(in.Offset), dest)
	}
	return readFull(h.fd, int64(in.Offset), dest)
}

// readFull reads dest at off from fd, short only at the end of the file
// (or on an error after some bytes).
func readFull(fd int, off int64, dest []byte) ([]byte, error) {
	got := 0
	for got < len(dest) {
		n, err := unix.Pread(fd, dest[got:], off+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if got > 0 {
				break
			}
			return nil, err
		}
		if n == 0 {
			break
		}
		got += n
	}
	return dest[:got], nil
}

// readRedacted reads through a redacted open: the bytes with the redacted
// ranges zeroed. The ranges are those of the file as it is before and
// after the read (a writer changing the metadata meanwhile makes it read
// again), so a read never mixes new bytes with old ranges.
func (fs *FS) readRedacted(h *handle, off int64, dest []byte) ([]byte, error) {
	for try := 0; ; try++ {
		rs, s, err := h.rd.rangesFor(h.fd)
		if err != nil {
			return nil, err
		}
		data, err := readFull(h.fd, off, dest)
		if err != nil {
			return nil, err
		}
		var st unix.Statx_t
		if err := statxFd(h.fd, &st); err != nil {
			return nil, err
		}
		if stampOf(&st) != s {
			if try < 3 {
				continue
			}
			return nil, syscall.EAGAIN
		}
		redact.Apply(data, off, rs)
		return data, nil
	}
}

// Write writes to the lower file (opens not in kernel passthrough).
func (fs *FS) Write(ctx context.Context, r *fusedev.Request, in *abi.WriteIn, data []byte) (uint32, error) {
	h, err := fs.fileHandle(in.Fh)
	if err != nil {
		return 0, err
	}
	defer fs.putHandle(h)
	if in.WriteFlags&abi.WriteKillSuidgid != 0 {
		// The writer lacks CAP_FSETID: write as the writer, so the lower
		// file system clears set-id bits and capabilities itself.
		as := fs.become(&r.Caller)
		defer fs.done(as)
	}
	// An O_APPEND file appends wherever the offset says: a write done
	// twice (resent after a crash) would append twice. It is recorded
	// like the other non-idempotent requests (state_linux.go).
	var it *intent
	if h.flags&unix.O_APPEND != 0 {
		it = fs.st.begin(r)
		if it.done {
			return uint32(it.n), it.err
		}
	}
	off := int64(in.Offset)
	done := 0
	var werr error
	for done < len(data) {
		n, err := unix.Pwrite(h.fd, data[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if done == 0 {
				werr = err
			}
			break
		}
		done += n
	}
	if it != nil {
		it.finishWrite(done, werr)
	}
	if werr != nil {
		return 0, werr
	}
	h.wrote.Store(true)
	return uint32(done), nil
}

// noflush is FOPEN_NOFLUSH unless FLUSH is needed to drop a closing
// process's locks (LocksLower).
func (fs *FS) noflush() abi.OpenFlags {
	if fs.opts.Locks == LocksLower {
		return 0
	}
	return abi.FopenNoflush
}

// Flush is sent on every close(2) of a file: writes reached the lower
// file already; with LocksLower the closing process's POSIX locks go.
func (fs *FS) Flush(ctx context.Context, r *fusedev.Request, in *abi.FlushIn) error {
	if fs.opts.Locks == LocksLower {
		if h := fs.handle(in.Fh); h != nil {
			fs.dropOwner(h.n, in.LockOwner)
			fs.putHandle(h)
		}
	}
	return nil
}

// Release closes an open file; the last passthrough open of an inode
// releases its backing id.
func (fs *FS) Release(ctx context.Context, r *fusedev.Request, in *abi.ReleaseIn) error {
	h := fs.takeHandle(in.Fh)
	if h == nil || h.dir {
		return syscall.EBADF
	}
	fs.st.closeHandle(h)
	n := h.n
	io := &n.io
	var closeID int32
	io.mu.Lock()
	if h.rd != nil {
		io.redacted--
	}
	if h.pt {
		io.ptOpens--
		if io.ptOpens == 0 && io.backing != 0 {
			closeID, io.backing = io.backing, 0
			fs.st.backing(n, 0)
		}
	}
	if h.cached {
		io.cachedOpens--
		if h.wrote.Load() {
			// The page cache saw these writes: it is still good.
			var st unix.Statx_t
			if statxFd(h.fd, &st) == nil && io.stampOK {
				io.stamp = stampOf(&st)
			}
		}
	}
	io.mu.Unlock()
	fs.putHandle(h) // closes it, unless a call still uses it
	if closeID != 0 {
		if srv := fs.srv.Load(); srv != nil {
			if err := srv.Conn().BackingClose(closeID); err != nil {
				fs.log.WithError(err).WithField("backing_id", closeID).Warn("passthrough: closing a backing id failed")
			}
		}
		fs.stats.backingIDs.Add(-1)
	}
	fs.openUnref(n)
	return nil
}

// Fsync syncs the lower file.
func (fs *FS) Fsync(ctx context.Context, r *fusedev.Request, in *abi.FsyncIn) error {
	h := fs.handle(in.Fh)
	if h == nil {
		return syscall.EBADF
	}
	defer fs.putHandle(h)
	return fsync(h.fd, in.FsyncFlags)
}

func fsync(fd int, flags uint32) error {
	if flags&abi.FsyncFdatasync != 0 {
		return unix.Fdatasync(fd)
	}
	return unix.Fsync(fd)
}

// Fallocate allocates, punches holes in or zeroes a range of the lower file.
func (fs *FS) Fallocate(ctx context.Context, r *fusedev.Request, in *abi.FallocateIn) error {
	h, err := fs.fileHandle(in.Fh)
	if err != nil {
		return err
	}
	defer fs.putHandle(h)
	if _, err := fs.admit(ctx, r, target{n: h.n, fd: h.fd}, reqArgs{}); err != nil {
		return err
	}
	err = unix.Fallocate(h.fd, in.Mode, int64(in.Offset), int64(in.Length))
	if err == nil {
		h.wrote.Store(true)
	}
	return err
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the lower file.
func (fs *FS) Lseek(ctx context.Context, r *fusedev.Request, in *abi.LseekIn, out *abi.LseekOut) error {
	h, err := fs.fileHandle(in.Fh)
	if err != nil {
		return err
	}
	defer fs.putHandle(h)
	off, err := unix.Seek(h.fd, int64(in.Offset), int(in.Whence))
	if err != nil {
		return err
	}
	out.Offset = uint64(off)
	return nil
}

// CopyFileRange copies between two lower files in the kernel.
func (fs *FS) CopyFileRange(ctx context.Context, r *fusedev.Request, in *abi.CopyFileRangeIn) (uint64, error) {
	hin, err := fs.fileHandle(in.FhIn)
	if err != nil {
		return 0, err
	}
	defer fs.putHandle(hin)
	hout, err := fs.fileHandle(in.FhOut)
	if err != nil {
		return 0, err
	}
	defer fs.putHandle(hout)
	if hin.rd != nil {
		// The kernel would copy the lower bytes unredacted: make it
		// fall back to reading (redacted) and writing.
		return 0, syscall.EOPNOTSUPP
	}
	if _, err := fs.admit(ctx, r, target{n: hout.n, fd: hout.fd}, reqArgs{}); err != nil {
		return 0, err
	}
	offIn, offOut := int64(in.OffIn), int64(in.OffOut)
	n, err := unix.CopyFileRange(hin.fd, &offIn, hout.fd, &offOut, int(min(in.Len, 1<<30)), int(in.Flags))
	if err != nil {
		return 0, err
	}
	hout.wrote.Store(true)
	return uint64(n), nil
}
