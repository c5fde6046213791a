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
// kernel, and kept across opens while the directory did not change.
func (fs *FS) Opendir(ctx context.Context, r *fusedev.Request, in *abi.OpenIn, out *abi.OpenOut) error {
	n, nfd, err := fs.get(r.NodeID)
	if err != nil {
		return err
	}
	defer fs.put(n)
	if err := fs.gate(ctx, r, n, ""); err != nil {
		return err
	}
	as := fs.become(&r.Caller)
	fd, err := fs.openat(unix.AT_FDCWD, procPath(nfd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	fs.done(as)
	if err != nil {
		return err
	}
	h := &handle{n: n, fd: fd, dir: true, ds: &dirStream{}, flags: in.Flags}
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
	out.Fh = fs.addHandle(h)
	return nil
}

// Releasedir closes an open directory.
func (fs *FS) Releasedir(ctx context.Context, r *fusedev.Request, in *abi.ReleaseIn) error {
	h := fs.takeHandle(in.Fh)
	if h == nil || !h.dir {
		return syscall.EBADF
	}
	fs.st.closeHandle(h)
	h.close()
	fs.openUnref(h.n)
	return nil
}

// Fsyncdir syncs a directory.
func (fs *FS) Fsyncdir(ctx context.Context, r *fusedev.Request, in *abi.FsyncIn) error {
	h := fs.handle(in.Fh)
	if h == nil || !h.dir {
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
func (fs *FS) Readdirplus(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	return fs.readdir(ctx, r, in, out)
}

func (fs *FS) readdir(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	h := fs.handle(in.Fh)
	if h == nil || !h.dir {
		return syscall.EBADF
	}
	if err := fs.gate(ctx, r, h.n, ""); err != nil {
		return err
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
		if !plus {
			// DirList copies the name: a string over the buffer will do.
			if !out.Add(unsafe.String(unsafe.SliceData(nb), len(nb)), ino, typ, off) {
				return nil
			}
		} else {
			name := string(nb)
			e := out.AddPlus(name, ino, typ, off)
			if e == nil {
				return nil
			}
			if name != "." && name != ".." {
				if err := fs.lookup(ctx, &r.Caller, h.n, h.fd, name, e, false); err != nil {
					*e = abi.EntryOut{}
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
