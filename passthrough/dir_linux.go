package passthrough

import (
	"context"
	"encoding/binary"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/policy"
)

// dirStream is the reading position of an open directory.
type dirStream struct {
	mu  sync.Mutex
	buf *[]byte // getdents data (pooled)
	pos int     // guarded by mu: next unread byte of buf
	end int     // guarded by mu: bytes of buf filled
	off uint64  // guarded by mu: offset of the next entry to deliver
}

const direntBufSize = 32 << 10

var direntBufs = sync.Pool{New: func() any { b := make([]byte, direntBufSize); return &b }}

func (d *dirStream) free() {
	d.mu.Lock()
	if d.buf != nil {
		direntBufs.Put(d.buf)
		d.buf = nil
	}
	d.mu.Unlock()
}

// Opendir opens a directory as the caller. Listings are cached by the
// kernel, and kept across opens while the directory did not change; not
// under a policy, where a listing is filtered for its caller and the
// kernel's cache of it would be shared by all.
func (fs *FS) Opendir(ctx context.Context, r *fusedev.Request, in *abi.OpenIn, out *abi.OpenOut) error {
	n, nfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	d, err := fs.admit(ctx, r, target{n: n, fd: nfd}, reqArgs{})
	if err != nil {
		return err
	}
	as := fs.become(&r.Caller)
	fd, err := fs.openat(unix.AT_FDCWD, procPath(nfd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	fs.done(as)
	if err != nil {
		return err
	}
	h := &handle{n: n, fd: fd, dir: true, ds: &dirStream{}, flags: in.Flags}
	out.Fh = fs.addHandle(h)
	if decided(&d) {
		// No FOPEN_CACHE_DIR and no FOPEN_KEEP_CACHE: the kernel drops
		// what an earlier open may have cached.
		n.io.mu.Lock()
		n.io.stampOK = false
		n.io.mu.Unlock()
		return nil
	}
	out.OpenFlags = abi.FopenCacheDir
	var st unix.Statx_t
	if statxFd(fd, &st) == nil {
		s := stampOf(&st)
		n.io.mu.Lock()
		if n.io.stampOK && n.io.stamp == s {
			out.OpenFlags |= abi.FopenKeepCache
		}
		n.io.stamp, n.io.stampOK = s, true
		n.io.mu.Unlock()
	}
	return nil
}

// Releasedir closes an open directory.
func (fs *FS) Releasedir(ctx context.Context, r *fusedev.Request, in *abi.ReleaseIn) error {
	h := fs.takeHandle(in.Fh)
	if h == nil || !h.dir {
		return syscall.EBADF
	}
	fs.st.closeHandle(h)
	fs.putHandle(h) // closes it, unless a READDIR still uses it
	fs.openUnref(h.n)
	return nil
}

// Fsyncdir syncs a directory.
func (fs *FS) Fsyncdir(ctx context.Context, r *fusedev.Request, in *abi.FsyncIn) error {
	h := fs.handle(in.Fh)
	if h == nil {
		return syscall.EBADF
	}
	defer fs.putHandle(h)
	if !h.dir {
		return syscall.EBADF
	}
	return fsync(h.fd, in.FsyncFlags)
}

// Readdir lists a directory.
func (fs *FS) Readdir(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	return fs.readdir(ctx, r, in, out)
}

// Readdirplus lists a directory with each entry's attributes: every entry
// but "." and ".." is looked up (as LOOKUP would, taking a reference).
// Under a policy, entries the caller may not look up are left out of both
// listings (and get no reference), and each entry carries the policy's
// timeouts for its path.
func (fs *FS) Readdirplus(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	return fs.readdir(ctx, r, in, out)
}

func (fs *FS) readdir(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	h := fs.handle(in.Fh)
	if h == nil {
		return syscall.EBADF
	}
	defer fs.putHandle(h)
	if !h.dir {
		return syscall.EBADF
	}
	if _, err := fs.admit(ctx, r, target{n: h.n, fd: h.fd}, reqArgs{}); err != nil {
		return err
	}
	e := fs.ps.pol.Load()
	var caller policy.Caller
	if e != nil {
		caller = fs.callerOf(r)
	}
	d := h.ds
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.buf == nil {
		d.buf = direntBufs.Get().(*[]byte)
	}
	if in.Offset != d.off {
		if _, err := unix.Seek(h.fd, int64(in.Offset), unix.SEEK_SET); err != nil {
			return err
		}
		d.pos, d.end, d.off = 0, 0, in.Offset
	}
	var dev uint64
	plus := out.Plus()
	for {
		if d.pos >= d.end {
			n, err := unix.Getdents(h.fd, *d.buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				if out.Len() > 0 {
					return nil
				}
				return err
			}
			if n <= 0 {
				return nil
			}
			d.pos, d.end = 0, n
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
		b := (*d.buf)[d.pos:d.end]
		if len(b) < 19 {
			d.pos = d.end
			continue
		}
		reclen := int(binary.NativeEndian.Uint16(b[16:]))
		if reclen < 19 || reclen > len(b) {
			d.pos = d.end
			continue
		}
		ino := binary.NativeEndian.Uint64(b[0:])
		off := binary.NativeEndian.Uint64(b[8:])
		typ := uint32(b[18])
		nb := b[19:reclen]
		for i, c := range nb {
			if c == 0 {
				nb = nb[:i]
				break
			}
		}
		if dev == 0 {
			dev = h.n.key.dev
		}
		ino = fs.inoOfDev(dev, ino)
		dot := len(nb) <= 2 && (string(nb) == "." || string(nb) == "..")
		switch {
		case e != nil && !dot:
			name := string(nb)
			var st unix.Statx_t
			stp := statOrNil(statxAt(h.fd, name, &st), &st)
			v := e.visible(ctx, fs, &caller, h.n, name, stp)
			if !v.Allowed {
				fs.stats.filtered.Add(1)
				break
			}
			if !plus {
				if !out.Add(name, ino, typ, off) {
					return nil
				}
				break
			}
			ent := out.AddPlus(name, ino, typ, off)
			if ent == nil {
				return nil
			}
			if stp == nil {
				break
			}
			n, err := fs.find(h.n, h.fd, name, &st)
			if err != nil {
				break
			}
			fs.fillEntry(ctx, &r.Caller, h.n, name, n, &st, &v, ent)
		case !plus:
			// DirList copies the name: a string over the buffer will do.
			if !out.Add(unsafe.String(unsafe.SliceData(nb), len(nb)), ino, typ, off) {
				return nil
			}
		default:
			name := string(nb)
			ent := out.AddPlus(name, ino, typ, off)
			if ent == nil {
				return nil
			}
			if !dot {
				var st unix.Statx_t
				if statxAt(h.fd, name, &st) != nil {
					break
				}
				if n, err := fs.find(h.n, h.fd, name, &st); err == nil {
					fs.fillEntry(ctx, &r.Caller, h.n, name, n, &st, nil, ent)
				}
			}
		}
		d.pos += reclen
		d.off = off
	}
}

// inoOfDev is inoOf for a directory entry on device dev.
func (fs *FS) inoOfDev(dev, ino uint64) uint64 {
	if dev == fs.rootDev {
		return ino
	}
	var st unix.Statx_t
	st.Dev_major, st.Dev_minor = unix.Major(dev), unix.Minor(dev)
	st.Ino = ino
	return fs.inoOf(&st)
}
