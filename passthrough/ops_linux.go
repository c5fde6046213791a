package passthrough

import (
	"context"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/policy"
)

// Lookup finds name in the directory r.NodeID.
func (fs *FS) Lookup(ctx context.Context, r *fusedev.Request, name string, out *abi.EntryOut) error {
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	switch name {
	case ".", "..":
		// Only sent for exported file systems; ".." at the root stays there.
		n := p
		if name == ".." {
			fs.treeMu.RLock()
			if p.parent != nil {
				n = p.parent
			}
			fs.treeMu.RUnlock()
		}
		fd, err := fs.pin(n)
		if err != nil {
			return err
		}
		defer fs.put(n)
		var st unix.Statx_t
		serr := statxFd(fd, &st)
		d, err := fs.admit(ctx, r, target{n: n, st: statOrNil(serr, &st), fd: -1}, reqArgs{})
		if err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		fs.ref(n)
		fs.fillEntry(ctx, &r.Caller, p, name, n, &st, &d, out)
		return nil
	}
	if err := validName(name); err != nil {
		return err
	}
	// The name's attributes, as the caller sees the lower directory, are
	// what the policy decides on.
	var st unix.Statx_t
	as := fs.become(&r.Caller)
	serr := statxAt(pfd, name, &st)
	fs.done(as)
	d, err := fs.admit(ctx, r, target{n: p, name: name, st: statOrNil(serr, &st), fd: -1}, reqArgs{})
	if err != nil {
		return err
	}
	if serr != nil {
		if serr == unix.ENOENT {
			// A negative entry is cached only where the policy
			// answers every caller alike (a timeout above zero).
			if t := fs.entryTimeouts(ctx, &r.Caller, p, name, nil, &d); t.Entry > 0 {
				*out = abi.EntryOut{}
				out.EntryValid, out.EntryValidNsec = ttl(t.Entry)
				return nil
			}
		}
		return serr
	}
	n, err := fs.find(p, pfd, name, &st)
	if err != nil {
		return err
	}
	fs.fillEntry(ctx, &r.Caller, p, name, n, &st, &d, out)
	return nil
}

// statOrNil is st when the stat that filled it succeeded, else nil (the
// object is taken as absent).
func statOrNil(err error, st *unix.Statx_t) *unix.Statx_t {
	if err != nil {
		return nil
	}
	return st
}

// find returns the node of the lower inode st (found as name in p) with one
// more lookup reference, opening a descriptor for an inode new to the table.
// st is updated when name turned out to refer to another inode meanwhile.
func (fs *FS) find(p *node, pfd int, name string, st *unix.Statx_t) (*node, error) {
	if self := fs.selfDev.Load(); self != 0 && devOf(st) == self {
		fs.log.WithField("path", fs.pathOf(p, name)).Warn("the lower tree contains this file system's own mount point; refusing to enter it")
		return nil, syscall.ELOOP
	}
	if n := fs.existing(keyOf(st), st); n != nil {
		fs.rename(n, p, name)
		return n, nil
	}
	// A new node gets no descriptor yet: the first operation that needs
	// one opens it by name and checks it is still the same inode.
	return fs.adopt(p, name, -1, st), nil
}

// openPath opens name in dirfd as an O_PATH descriptor, never following a
// final symlink.
func openPath(dirfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// entryOf answers the entry of name, just created in p; d is the decision
// that allowed it.
func (fs *FS) entryOf(ctx context.Context, c *fusedev.Caller, p *node, pfd int, name string, d *policy.Decision, out *abi.EntryOut) (*node, error) {
	var st unix.Statx_t
	if err := statxAt(pfd, name, &st); err != nil {
		return nil, err
	}
	n := fs.adopt(p, name, -1, &st)
	fs.fillEntry(ctx, c, p, name, n, &st, d, out)
	return n, nil
}

// Getattr answers the attributes of a node (of an open file's descriptor
// for fstat, which also works when every name of it is gone).
func (fs *FS) Getattr(ctx context.Context, r *fusedev.Request, in *abi.GetattrIn, out *abi.AttrOut) error {
	if in.GetattrFlags&abi.GetattrFh != 0 {
		if h := fs.handle(in.Fh); h != nil {
			if h.n.id == r.NodeID {
				defer fs.putHandle(h)
				return fs.getattr(ctx, r, h.n, h.fd, out)
			}
			fs.putHandle(h)
		}
	}
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	return fs.getattr(ctx, r, n, fd, out)
}

func (fs *FS) getattr(ctx context.Context, r *fusedev.Request, n *node, fd int, out *abi.AttrOut) error {
	var st unix.Statx_t
	serr := statxFd(fd, &st)
	d, err := fs.admit(ctx, r, target{n: n, st: statOrNil(serr, &st), fd: -1}, reqArgs{})
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	fs.fillAttrOut(n, &st, &d, out)
	return nil
}

// Statx answers FUSE_STATX (sent for fields beyond the basic stats, such
// as the birth time).
func (fs *FS) Statx(ctx context.Context, r *fusedev.Request, in *abi.StatxIn, out *abi.StatxOut) error {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	var st unix.Statx_t
	mask := int(in.SxMask) | statxMask
	serr := unix.Statx(fd, "", statxFlags|unix.AT_EMPTY_PATH, mask, &st)
	d, err := fs.admit(ctx, r, target{n: n, st: statOrNil(serr, &st), fd: -1}, reqArgs{})
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	out.AttrValid, out.AttrValidNsec = ttl(fs.attrTTL(n, &d))
	s := &out.Stat
	s.Mask = st.Mask
	s.Blksize = st.Blksize
	s.Attributes = st.Attributes
	s.Nlink = st.Nlink
	s.UID, s.GID = st.Uid, st.Gid
	s.Mode = st.Mode
	s.Ino = fs.inoOf(&st)
	s.Size = st.Size
	s.Blocks = st.Blocks
	s.AttributesMask = st.Attributes_mask
	s.Atime = abi.SxTime{Sec: st.Atime.Sec, Nsec: st.Atime.Nsec}
	s.Btime = abi.SxTime{Sec: st.Btime.Sec, Nsec: st.Btime.Nsec}
	s.Ctime = abi.SxTime{Sec: st.Ctime.Sec, Nsec: st.Ctime.Nsec}
	s.Mtime = abi.SxTime{Sec: st.Mtime.Sec, Nsec: st.Mtime.Nsec}
	s.RdevMajor, s.RdevMinor = st.Rdev_major, st.Rdev_minor
	s.DevMajor, s.DevMinor = st.Dev_major, st.Dev_minor
	return nil
}

// Setattr changes mode, owner, size and times, in that order, as the caller.
func (fs *FS) Setattr(ctx context.Context, r *fusedev.Request, in *abi.SetattrIn, out *abi.AttrOut) error {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	d, err := fs.admit(ctx, r, target{n: n, fd: fd}, reqArgs{setattrMask: in.Valid})
	if err != nil {
		return err
	}
	var h *handle
	if in.Valid&abi.FattrFh != 0 {
		if h = fs.handle(in.Fh); h != nil {
			defer fs.putHandle(h)
		}
	}
	as := fs.become(&r.Caller)
	err = fs.setattr(n, fd, h, in)
	fs.done(as)
	if err != nil {
		return err
	}
	var st unix.Statx_t
	if err := statxFd(fd, &st); err != nil {
		return err
	}
	fs.fillAttrOut(n, &st, &d, out)
	return nil
}

func (fs *FS) setattr(n *node, fd int, h *handle, in *abi.SetattrIn) error {
	v := in.Valid
	const changes = abi.FattrMode | abi.FattrUID | abi.FattrGID | abi.FattrSize |
		abi.FattrAtime | abi.FattrMtime | abi.FattrAtimeNow | abi.FattrMtimeNow
	if v&changes == 0 {
		// What the kernel sends when it wants set-id bits and file
		// capabilities cleared (a write or chown by a caller without
		// CAP_FSETID; with HANDLE_KILLPRIV_V2 it strips the mode it
		// would have set) and for chown(path, -1, -1), which changes
		// nothing but the ctime. A no-op chown on the lower file does
		// exactly that: it clears those bits and capabilities of a
		// non-directory and updates the ctime. It needs no permission
		// (the kernel checked the request), so it runs as the daemon.
		return fs.asDaemon(func() error {
			return unix.Fchownat(fd, "", -1, -1, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		})
	}
	if v&abi.FattrMode != 0 {
		mode := in.Mode & 07777
		if err := fchmod(fd, mode); err != nil {
			if err != unix.EPERM || !fs.killOnly(fd, mode) {
				return err
			}
			// The kernel clears set-id bits when a writer lacking
			// CAP_FSETID writes, with the writer's identity: that
			// is allowed to anyone who may write the file.
			if err := fs.asDaemon(func() error { return fchmod(fd, mode) }); err != nil {
				return err
			}
		}
	}
	if v&(abi.FattrUID|abi.FattrGID) != 0 {
		uid, gid := -1, -1
		if v&abi.FattrUID != 0 {
			uid = int(in.UID)
		}
		if v&abi.FattrGID != 0 {
			gid = int(in.GID)
		}
		if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if v&abi.FattrSize != 0 {
		var err error
		if h != nil && h.fd >= 0 && !h.dir {
			err = unix.Ftruncate(h.fd, int64(in.Size))
		} else if n.typ == unix.S_IFDIR {
			err = unix.EISDIR
		} else {
			err = unix.Truncate(procPath(fd), int64(in.Size))
		}
		if err != nil {
			return err
		}
		if h != nil {
			h.wrote.Store(true)
		}
	}
	if v&(abi.FattrAtime|abi.FattrMtime|abi.FattrAtimeNow|abi.FattrMtimeNow) != 0 {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		switch {
		case v&abi.FattrAtimeNow != 0:
			ts[0].Nsec = unix.UTIME_NOW
		case v&abi.FattrAtime != 0:
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
		switch {
		case v&abi.FattrMtimeNow != 0:
			ts[1].Nsec = unix.UTIME_NOW
		case v&abi.FattrMtime != 0:
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
		if err := unix.UtimesNanoAt(fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return nil
}

// killOnly reports whether changing n's mode to mode only clears set-id
// bits, and the caller (whose identity the thread has) may write n.
func (fs *FS) killOnly(fd int, mode uint32) bool {
	var st unix.Statx_t
	if statxFd(fd, &st) != nil {
		return false
	}
	cur := uint32(st.Mode) & 07777
	if cur == mode || cur&^(unix.S_ISUID|unix.S_ISGID) != mode&^(unix.S_ISUID|unix.S_ISGID) || mode&^cur != 0 {
		return false
	}
	return unix.Faccessat2(fd, "", unix.W_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS) == nil
}

// asDaemon runs f with the daemon's own identity on a thread that may be
// acting as a caller.
func (fs *FS) asDaemon(f func() error) error {
	cs := &fs.creds
	uid := setfsuid(cs.uid)
	gid := setfsgid(cs.gid)
	err := f()
	setfsgid(uint32(gid))
	setfsuid(uint32(uid))
	return err
}

// fchmod changes the mode of the inode behind an O_PATH descriptor
// (fchmodat2 with AT_EMPTY_PATH, Linux 6.6+; /proc/self/fd before).
func fchmod(fd int, mode uint32) error {
	empty := [1]byte{}
	_, _, e := unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(fd), uintptr(unsafe.Pointer(&empty[0])), uintptr(mode), unix.AT_EMPTY_PATH, 0, 0)
	switch e {
	case 0:
		return nil
	case unix.ENOSYS, unix.EINVAL:
		return unix.Chmod(procPath(fd), mode)
	}
	return e
}

// Readlink answers a symlink's target.
func (fs *FS) Readlink(ctx context.Context, r *fusedev.Request) (string, error) {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return "", err
	}
	defer fs.put(n)
	if _, err := fs.admit(ctx, r, target{n: n, fd: fd}, reqArgs{}); err != nil {
		return "", err
	}
	var buf [abi.PathMax]byte
	sz, err := unix.Readlinkat(fd, "", buf[:])
	if err != nil {
		return "", err
	}
	return string(buf[:sz]), nil
}

// Symlink creates a symlink as the caller.
func (fs *FS) Symlink(ctx context.Context, r *fusedev.Request, target, name string, out *abi.EntryOut) error {
	return fs.create(ctx, r, name, out, func(pfd int) error { return unix.Symlinkat(target, pfd, name) })
}

// Mknod creates a FIFO, socket, device node or regular file as the caller.
func (fs *FS) Mknod(ctx context.Context, r *fusedev.Request, in *abi.MknodIn, name string, out *abi.EntryOut) error {
	return fs.create(ctx, r, name, out, func(pfd int) error {
		return unix.Mknodat(pfd, name, in.Mode, int(decodeDev(in.Rdev)))
	})
}

// Mkdir creates a directory as the caller.
func (fs *FS) Mkdir(ctx context.Context, r *fusedev.Request, in *abi.MkdirIn, name string, out *abi.EntryOut) error {
	return fs.create(ctx, r, name, out, func(pfd int) error { return unix.Mkdirat(pfd, name, in.Mode) })
}

// create runs mk (which creates name in the parent) as the caller, then
// answers the new entry.
func (fs *FS) create(ctx context.Context, r *fusedev.Request, name string, out *abi.EntryOut, mk func(pfd int) error) error {
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	if err := validName(name); err != nil {
		return err
	}
	defer fs.entryLock()()
	t := target{n: p, name: name, fd: pfd}
	d, done, err := fs.once(r,
		func() (policy.Decision, error) { return fs.admit(ctx, r, t, reqArgs{}) },
		func() error { return mk(pfd) }, syscall.EEXIST)
	if done {
		d = fs.redone(ctx, r, t)
	}
	if err != nil {
		return err
	}
	_, err = fs.entryOf(ctx, &r.Caller, p, pfd, name, &d, out)
	return err
}

// once does r, a request that changes the tree, exactly once across a
// restart (its intent record, state_linux.go): admit decides it, then do
// makes the change as the caller; when a predecessor may have made it
// already, do's error already (EEXIST for what creates, ENOENT for what
// removes) is taken for that success. done reports that a predecessor did
// it: err is then the outcome it recorded, and nothing was decided.
func (fs *FS) once(r *fusedev.Request, admit func() (policy.Decision, error), do func() error, already syscall.Errno) (d policy.Decision, done bool, err error) {
	it := fs.st.begin(r)
	if it.done {
		return d, true, it.err
	}
	if d, err = admit(); err == nil {
		as := fs.become(&r.Caller)
		err = it.tolerate(do(), already)
		fs.done(as)
	}
	it.finish(err)
	return d, false, err
}

// Unlink removes a non-directory as the caller.
func (fs *FS) Unlink(ctx context.Context, r *fusedev.Request, name string) error {
	return fs.remove(ctx, r, name, 0)
}

// Rmdir removes a directory as the caller.
func (fs *FS) Rmdir(ctx context.Context, r *fusedev.Request, name string) error {
	return fs.remove(ctx, r, name, unix.AT_REMOVEDIR)
}

func (fs *FS) remove(ctx context.Context, r *fusedev.Request, name string, flags int) error {
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	if err := validName(name); err != nil {
		return err
	}
	_, _, err = fs.once(r,
		func() (policy.Decision, error) { return fs.admit(ctx, r, target{n: p, name: name, fd: pfd}, reqArgs{}) },
		func() error { return unix.Unlinkat(pfd, name, flags) }, syscall.ENOENT)
	return err
}

// Rename renames as the caller (flags: RENAME_NOREPLACE, RENAME_EXCHANGE,
// RENAME_WHITEOUT) and keeps the nodes' names up to date. Under a policy
// both ends are decided, and an app moving a directory must be allowed to
// move everything in it (renameDir).
func (fs *FS) Rename(ctx context.Context, r *fusedev.Request, in *abi.Rename2In, oldName, newName string) error {
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	np, npfd, err := fs.get(in.Newdir)
	if err != nil {
		return err
	}
	defer fs.put(np)
	if err := validName(oldName); err != nil {
		return err
	}
	if err := validName(newName); err != nil {
		return err
	}
	if err := fs.renameChecked(ctx, r, in, p, pfd, oldName, np, npfd, newName); err != nil {
		return err
	}
	fs.renamed(np, npfd, newName)
	if in.Flags&unix.RENAME_EXCHANGE != 0 {
		fs.renamed(p, pfd, oldName)
	}
	return nil
}

// renameChecked decides a rename and does it.
func (fs *FS) renameChecked(ctx context.Context, r *fusedev.Request, in *abi.Rename2In, p *node, pfd int, oldName string, np *node, npfd int, newName string) error {
	it := fs.st.begin(r)
	if it.done {
		return it.err // a predecessor did it
	}
	err := fs.renameDecided(ctx, r, in, p, pfd, oldName, np, npfd, newName, it)
	it.finish(err)
	return err
}

// renameDecided decides a rename and does it (it: its intent record).
func (fs *FS) renameDecided(ctx context.Context, r *fusedev.Request, in *abi.Rename2In, p *node, pfd int, oldName string, np *node, npfd int, newName string, it *intent) error {
	t, t2 := target{n: p, name: oldName, fd: pfd}, target{n: np, name: newName, fd: npfd}
	exchange := in.Flags&unix.RENAME_EXCHANGE != 0
	var st, st2 unix.Statx_t
	var dir, dir2 bool
	if fs.ps.pol.Load() != nil {
		t.st, t2.st = t.attrs(&st), t2.attrs(&st2)
		t.fd, t2.fd = -1, -1
		dir = t.st != nil && t.st.Mode&unix.S_IFMT == unix.S_IFDIR
		dir2 = exchange && t2.st != nil && t2.st.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	if dir || dir2 {
		// Nothing may be created in the tree while it is checked.
		fs.ps.tree.Lock()
		defer fs.ps.tree.Unlock()
		// Decided on what is there now.
		t.st, t2.st, t.fd, t2.fd = nil, nil, pfd, npfd
	} else {
		defer fs.entryLock()()
	}
	d, err := fs.admit2(ctx, r, t, t2, reqArgs{renameFlags: in.Flags})
	if err != nil {
		return err
	}
	if e := fs.ps.pol.Load(); e != nil && decided(&d) && !d.Trusted && (dir || dir2) {
		c := fs.callerOf(r)
		from, to := policyPath(fs.pathOf(p, oldName)), policyPath(fs.pathOf(np, newName))
		check := func(dfd int, name, from, to string) error {
			var st unix.Statx_t
			if statxAt(dfd, name, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return nil
			}
			fd, err := openPath(dfd, name)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return fs.renameDir(ctx, e, &c, fd, from, to)
		}
		if err := check(pfd, oldName, from, to); err != nil {
			return err
		}
		if exchange {
			if err := check(npfd, newName, to, from); err != nil {
				return err
			}
		}
	}
	as := fs.become(&r.Caller)
	err = it.tolerate(unix.Renameat2(pfd, oldName, npfd, newName, uint(in.Flags)), syscall.ENOENT)
	fs.done(as)
	return err
}

// renamed updates the name of the node now at name in p, if it has one.
func (fs *FS) renamed(p *node, pfd int, name string) {
	var st unix.Statx_t
	if statxAt(pfd, name, &st) != nil {
		return
	}
	fs.mu.Lock()
	n := fs.byKey[keyOf(&st)]
	fs.mu.Unlock()
	if n != nil {
		fs.rename(n, p, name)
	}
}

// Link makes a hard link to in.OldNodeID as the caller.
func (fs *FS) Link(ctx context.Context, r *fusedev.Request, in *abi.LinkIn, name string, out *abi.EntryOut) error {
	p, pfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(p)
	old, ofd, err := fs.get(in.OldNodeID)
	if err != nil {
		return err
	}
	defer fs.put(old)
	if err := validName(name); err != nil {
		return err
	}
	defer fs.entryLock()()
	t := target{n: p, name: name, fd: pfd}
	d, done, err := fs.once(r,
		func() (policy.Decision, error) { return fs.admit2(ctx, r, t, target{n: old, fd: ofd}, reqArgs{}) },
		func() error {
			// Through /proc/self/fd: linkat with AT_EMPTY_PATH would need
			// CAP_DAC_READ_SEARCH, which a caller's identity lacks. The
			// magic link resolves to the inode itself, a symlink included.
			return unix.Linkat(unix.AT_FDCWD, procPath(ofd), pfd, name, unix.AT_SYMLINK_FOLLOW)
		}, syscall.EEXIST)
	if done {
		d = fs.redone(ctx, r, t)
	}
	if err != nil {
		return err
	}
	var st unix.Statx_t
	if err := statxFd(ofd, &st); err != nil {
		return err
	}
	fs.ref(old)
	fs.fillEntry(ctx, &r.Caller, p, name, old, &st, &d, out)
	return nil
}

// Statfs answers the lower file system's statistics.
func (fs *FS) Statfs(ctx context.Context, r *fusedev.Request, out *abi.StatfsOut) error {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	if _, err := fs.admit(ctx, r, target{n: n, fd: fd}, reqArgs{}); err != nil {
		return err
	}
	var s unix.Statfs_t
	if err := unix.Fstatfs(fd, &s); err != nil {
		return err
	}
	out.St = abi.Kstatfs{
		Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail, Files: s.Files, Ffree: s.Ffree,
		Bsize: uint32(s.Bsize), Namelen: uint32(s.Namelen), Frsize: uint32(s.Frsize),
	}
	return nil
}

// Access checks permissions as the caller (sent without default_permissions).
func (fs *FS) Access(ctx context.Context, r *fusedev.Request, in *abi.AccessIn) error {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	if _, err := fs.admit(ctx, r, target{n: n, fd: fd}, reqArgs{}); err != nil {
		return err
	}
	as := fs.become(&r.Caller)
	err = unix.Faccessat2(fd, "", in.Mask, unix.AT_EMPTY_PATH|unix.AT_EACCESS|unix.AT_SYMLINK_NOFOLLOW)
	fs.done(as)
	return err
}

// Syncfs syncs the lower file system.
func (fs *FS) Syncfs(ctx context.Context, r *fusedev.Request) error {
	if _, err := fs.admit(ctx, r, target{n: fs.root, fd: fs.syncFd}, reqArgs{}); err != nil {
		return err
	}
	return unix.Syncfs(fs.syncFd)
}

// Setxattr sets an extended attribute as the caller.
func (fs *FS) Setxattr(ctx context.Context, r *fusedev.Request, in *abi.SetxattrIn, name string, value []byte) error {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	if _, err := fs.admit(ctx, r, target{n: n, fd: fd}, reqArgs{}); err != nil {
		return err
	}
	as := fs.become(&r.Caller)
	err = unix.Setxattr(procPath(fd), name, value, int(in.Flags))
	fs.done(as)
	return err
}

// Getxattr reads an extended attribute as the caller.
func (fs *FS) Getxattr(ctx context.Context, r *fusedev.Request, name string, dest []byte) (int, error) {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return 0, err
	}
	defer fs.put(n)
	if _, err := fs.admit(ctx, r, target{n: n, fd: fd}, reqArgs{}); err != nil {
		return 0, err
	}
	as := fs.become(&r.Caller)
	sz, err := unix.Getxattr(procPath(fd), name, dest)
	fs.done(as)
	return sz, err
}

// Listxattr lists extended attribute names as the caller.
func (fs *FS) Listxattr(ctx context.Context, r *fusedev.Request, dest []byte) (int, error) {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return 0, err
	}
	defer fs.put(n)
	if _, err := fs.admit(ctx, r, target{n: n, fd: fd}, reqArgs{}); err != nil {
		return 0, err
	}
	as := fs.become(&r.Caller)
	sz, err := unix.Listxattr(procPath(fd), dest)
	fs.done(as)
	return sz, err
}

// Removexattr removes an extended attribute as the caller.
func (fs *FS) Removexattr(ctx context.Context, r *fusedev.Request, name string) error {
	n, fd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	if _, err := fs.admit(ctx, r, target{n: n, fd: fd}, reqArgs{}); err != nil {
		return err
	}
	as := fs.become(&r.Caller)
	err = unix.Removexattr(procPath(fd), name)
	fs.done(as)
	return err
}
