package passthrough

import (
	"context"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// handle is an open file or directory: a real descriptor of the lower
// inode, opened with the caller's identity and flags.
type handle struct {
	n      *node
	fd     int
	dir    bool
	pt     bool // counted in n.io.ptOpens (kernel passthrough is set up)
	cached bool // counted in n.io.cachedOpens (the kernel page cache is used)
	wrote  atomic.Bool
	ds     *dirStream // directories
	flags  uint32     // open(2) flags, to reopen it after a restart
	slot   uint32     // restart state record + 1 (state_linux.go)
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
	fs.hmu.Lock()
	fh := fs.nextFh
	fs.nextFh++
	fs.handles[fh] = h
	fs.hmu.Unlock()
	fs.st.openHandle(fs, fh, h)
	return fh
}

// handle returns the open handle fh, or nil.
func (fs *FS) handle(fh uint64) *handle {
	fs.hmu.RLock()
	h := fs.handles[fh]
	fs.hmu.RUnlock()
	return h
}

func (fs *FS) takeHandle(fh uint64) *handle {
	fs.hmu.Lock()
	h := fs.handles[fh]
	delete(fs.handles, fh)
	fs.hmu.Unlock()
	return h
}

func (fs *FS) fileHandle(fh uint64) (*handle, error) {
	h := fs.handle(fh)
	if h == nil || h.dir {
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
	if err := fs.gateOpen(ctx, r, n, "", in.Flags); err != nil {
		return err
	}
	as := fs.become(&r.Caller)
	fd, err := fs.openat(unix.AT_FDCWD, procPath(nfd), openFlags(in.Flags), 0)
	fs.done(as)
	if err != nil {
		return err
	}
	h := &handle{n: n, fd: fd, flags: in.Flags}
	fs.setupIO(ctx, r, h, in.Flags, false, out)
	out.Fh = fs.addHandle(h)
	return nil
}

// Create creates and opens a regular file as the caller.
func (fs *FS) Create(ctx context.Context, r *fusedev.Request, in *abi.CreateIn, name string, entry *abi.EntryOut, out *abi.OpenOut) error {
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	if err := validName(name); err != nil {
		return err
	}
	if err := fs.gateOpen(ctx, r, p, name, in.Flags); err != nil {
		return err
	}
	// O_NOFOLLOW: a symlink that appeared under the name since the kernel
	// looked it up is not followed out of the tree.
	flags := int(in.Flags)&^(unix.O_NOCTTY|unix.O_DIRECT) | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC
	it := fs.st.begin(r)
	if it.done || it.uncertain {
		// A predecessor created it (or may have): open what is there.
		if it.err != nil {
			return it.err
		}
		flags &^= unix.O_EXCL | unix.O_TRUNC
	}
	as := fs.become(&r.Caller)
	fd, err := fs.openat(pfd, name, flags, in.Mode&07777)
	fs.done(as)
	it.finish(err)
	if err != nil {
		return err
	}
	return fs.opened(ctx, r, p, name, fd, in.Flags, entry, out)
}

// Tmpfile creates an unnamed file in the directory (O_TMPFILE) as the caller.
func (fs *FS) Tmpfile(ctx context.Context, r *fusedev.Request, in *abi.CreateIn, entry *abi.EntryOut, out *abi.OpenOut) error {
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	if err := fs.gateOpen(ctx, r, p, "", in.Flags); err != nil {
		return err
	}
	flags := int(in.Flags)&^(unix.O_CREAT|unix.O_NOCTTY|unix.O_DIRECT|unix.O_NOFOLLOW) | unix.O_TMPFILE | unix.O_CLOEXEC
	as := fs.become(&r.Caller)
	fd, err := fs.openat(pfd, ".", flags, in.Mode&07777)
	fs.done(as)
	if err != nil {
		return err
	}
	return fs.opened(ctx, r, p, "", fd, in.Flags, entry, out)
}

// opened finishes CREATE and TMPFILE: fd is the new open file.
func (fs *FS) opened(ctx context.Context, r *fusedev.Request, p *node, name string, fd int, flags uint32, entry *abi.EntryOut, out *abi.OpenOut) error {
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
	fs.fillEntry(ctx, &r.Caller, p, name, n, &st, entry)
	h := &handle{n: n, fd: fd, flags: flags}
	fs.setupIO(ctx, r, h, flags, true, out)
	out.Fh = fs.addHandle(h)
	return nil
}

// setupIO chooses how an open of a regular file does its I/O, in an order
// that never makes the kernel refuse the open (fs/fuse/iomode.c):
//
//   - kernel passthrough when it is available, the hook allows it and no
//     open of the inode uses the page cache; the inode's backing id is
//     registered at its first such open and shared by the others;
//   - otherwise, while the inode has passthrough opens, FOPEN_PASSTHROUGH
//     with FOPEN_DIRECT_IO: the kernel sends reads and writes to the daemon
//     (mmap still uses the backing file);
//   - otherwise the page cache, kept across opens while the lower file did
//     not change (FOPEN_KEEP_CACHE).
func (fs *FS) setupIO(ctx context.Context, r *fusedev.Request, h *handle, flags uint32, create bool, out *abi.OpenOut) {
	n := h.n
	io := &n.io
	if fs.pt.enabled() && !fs.mustKillPriv(r, h, flags) && fs.allowPT(ctx, r, n, flags, create) {
		io.mu.Lock()
		if io.cachedOpens == 0 {
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
			if io.backing != 0 {
				io.ptOpens++
				io.stampOK = false // the page cache is bypassed from now on
				h.pt = true
				out.OpenFlags = abi.FopenPassthrough | fs.noflush()
				out.BackingID = io.backing
				io.mu.Unlock()
				fs.stats.ptOpens.Add(1)
				return
			}
		}
		io.mu.Unlock()
	}
	fs.stats.daemonOpens.Add(1)
	io.mu.Lock()
	defer io.mu.Unlock()
	if io.ptOpens > 0 {
		io.ptOpens++
		h.pt = true
		out.OpenFlags = abi.FopenPassthrough | abi.FopenDirectIO
		out.BackingID = io.backing
		return
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
	off := int64(in.Offset)
	got := 0
	for got < len(dest) {
		n, err := unix.Pread(h.fd, dest[got:], off+int64(got))
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

// Write writes to the lower file (opens not in kernel passthrough).
func (fs *FS) Write(ctx context.Context, r *fusedev.Request, in *abi.WriteIn, data []byte) (uint32, error) {
	h, err := fs.fileHandle(in.Fh)
	if err != nil {
		return 0, err
	}
	if in.WriteFlags&abi.WriteKillSuidgid != 0 {
		// The writer lacks CAP_FSETID: write as the writer, so the lower
		// file system clears set-id bits and capabilities itself.
		as := fs.become(&r.Caller)
		defer fs.done(as)
	}
	off := int64(in.Offset)
	done := 0
	for done < len(data) {
		n, err := unix.Pwrite(h.fd, data[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if done > 0 {
				break
			}
			return 0, err
		}
		done += n
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
	h.close()
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
	if err := fs.gate(ctx, r, h.n, ""); err != nil {
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
	hout, err := fs.fileHandle(in.FhOut)
	if err != nil {
		return 0, err
	}
	if err := fs.gate(ctx, r, hout.n, ""); err != nil {
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
