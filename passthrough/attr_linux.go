package passthrough

import (
	"context"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/policy"
)

const (
	statxMask = unix.STATX_BASIC_STATS
	// statxFlags never follow a symlink, never trigger an automount, and
	// never make a FUSE file system (our own mount, should the lower tree
	// reach it) ask its daemon for fresh attributes.
	statxFlags = unix.AT_SYMLINK_NOFOLLOW | unix.AT_NO_AUTOMOUNT | unix.AT_STATX_DONT_SYNC
)

func statxAt(dirfd int, name string, st *unix.Statx_t) error {
	for {
		err := unix.Statx(dirfd, name, statxFlags, statxMask, st)
		if err != unix.EINTR {
			return err
		}
	}
}

func statxFd(fd int, st *unix.Statx_t) error {
	for {
		err := unix.Statx(fd, "", statxFlags|unix.AT_EMPTY_PATH, statxMask, st)
		if err != unix.EINTR {
			return err
		}
	}
}

// inoOf is the inode number shown for a lower inode: its own on the lower
// root's device; on other devices (submounts) mixed with a small device
// index so that inodes of different devices rarely share a number.
func (fs *FS) inoOf(st *unix.Statx_t) uint64 {
	dev := devOf(st)
	if dev == fs.rootDev {
		return st.Ino
	}
	fs.mu.Lock()
	idx, ok := fs.devIdx[dev]
	if !ok {
		idx = uint64(len(fs.devIdx) + 1)
		fs.devIdx[dev] = idx
	}
	fs.mu.Unlock()
	return st.Ino ^ idx<<56
}

// encodeDev packs a device number the way the kernel's new_encode_dev does
// for fuse_attr.rdev and fuse_mknod_in.rdev.
func encodeDev(major, minor uint32) uint32 {
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}

// decodeDev unpacks new_encode_dev.
func decodeDev(d uint32) uint64 {
	major := (d & 0xfff00) >> 8
	minor := d&0xff | (d>>12)&0xfff00
	return unix.Mkdev(major, minor)
}

func (fs *FS) fillAttr(a *abi.Attr, st *unix.Statx_t) {
	*a = abi.Attr{
		Ino:       fs.inoOf(st),
		Size:      st.Size,
		Blocks:    st.Blocks,
		Atime:     uint64(st.Atime.Sec),
		Mtime:     uint64(st.Mtime.Sec),
		Ctime:     uint64(st.Ctime.Sec),
		Atimensec: st.Atime.Nsec,
		Mtimensec: st.Mtime.Nsec,
		Ctimensec: st.Ctime.Nsec,
		Mode:      uint32(st.Mode),
		Nlink:     st.Nlink,
		UID:       st.Uid,
		GID:       st.Gid,
		Rdev:      encodeDev(st.Rdev_major, st.Rdev_minor),
		Blksize:   st.Blksize,
	}
}

// timeouts asks the Timeouts hook (or the defaults) for an entry.
func (fs *FS) timeouts(ctx context.Context, c *fusedev.Caller, parent *node, name string, st *unix.Statx_t) Timeouts {
	if fs.opts.Timeouts == nil {
		if st == nil {
			return Timeouts{Entry: fs.opts.timeout(fs.opts.NegativeTimeout)}
		}
		return Timeouts{Entry: fs.opts.timeout(fs.opts.EntryTimeout), Attr: fs.opts.timeout(fs.opts.AttrTimeout)}
	}
	e := &EntryInfo{Caller: *c, Name: name, fs: fs, parent: parent}
	if st != nil {
		e.Exists, e.Mode = true, uint32(st.Mode)
	}
	return fs.opts.Timeouts(ctx, e)
}

// entryTimeouts are the cache timeouts of an entry: the policy's when d
// was decided by one, else the Timeouts hook's or the defaults.
func (fs *FS) entryTimeouts(ctx context.Context, c *fusedev.Caller, parent *node, name string, st *unix.Statx_t, d *policy.Decision) Timeouts {
	if d != nil && decided(d) {
		return timeoutsOf(d)
	}
	return fs.timeouts(ctx, c, parent, name, st)
}

// fillEntry answers an entry for node n (name in parent) whose attributes
// are st; d is the policy's decision that allowed it (nil or undecided: no
// policy).
func (fs *FS) fillEntry(ctx context.Context, c *fusedev.Caller, parent *node, name string, n *node, st *unix.Statx_t, d *policy.Decision, out *abi.EntryOut) {
	t := fs.entryTimeouts(ctx, c, parent, name, st, d)
	out.NodeID = n.id
	out.Generation = fs.gen
	out.EntryValid, out.EntryValidNsec = ttl(t.Entry)
	out.AttrValid, out.AttrValidNsec = ttl(t.Attr)
	n.attrTTL.Store(int64(t.Attr))
	fs.fillAttr(&out.Attr, st)
}

// fillAttrOut answers attributes of n; d is the policy's decision that
// allowed it, as for fillEntry.
func (fs *FS) fillAttrOut(n *node, st *unix.Statx_t, d *policy.Decision, out *abi.AttrOut) {
	out.AttrValid, out.AttrValidNsec = ttl(fs.attrTTL(n, d))
	fs.fillAttr(&out.Attr, st)
}

// attrTTL is the attribute timeout of n: the policy's for the path when d
// was decided by one (remembered in n), else the one last given with its
// entry.
func (fs *FS) attrTTL(n *node, d *policy.Decision) time.Duration {
	if d != nil && decided(d) {
		n.attrTTL.Store(int64(d.AttrTimeout))
		return d.AttrTimeout
	}
	return nodeTTL(n)
}

// nodeTTL is the attribute timeout last decided for n.
func nodeTTL(n *node) time.Duration { return time.Duration(n.attrTTL.Load()) }
