package passthrough

import (
	"context"
	"math"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// Locks, with Options.Locks == LocksLower: POSIX record locks and flock
// locks are taken on the lower file, so they also exclude processes that
// use the lower directory directly.
//
// A POSIX lock belongs to a process (its lock owner) and spans every
// descriptor the process has of the file; closing any of them drops it.
// The daemon is one process, so its own POSIX locks could not tell owners
// apart: each owner of a file gets an open file description of its own and
// takes open file description locks (F_OFD_*) on it. FLUSH, which the kernel
// sends with the owner on every close, closes that description and with it
// the owner's locks. F_OFD_GETLK reports no pid, so the daemon remembers the
// ranges each owner holds, and the pid that took them, to answer F_GETLK.
//
// flock locks belong to an open file description already: they are taken
// on the handle's own descriptor, and go with it.

// lockState is a node's lock owners.
type lockState struct {
	mu     sync.Mutex
	owners map[uint64]*lockOwner // guarded by mu
}

type lockOwner struct {
	fd     int
	pid    uint32
	ranges []lockRange // held, sorted, not overlapping
}

// lockRange is [start, end] held with typ (F_RDLCK or F_WRLCK).
type lockRange struct {
	start, end uint64
	typ        uint32
}

// setRange records that [start, end] is now held with typ (F_UNLCK: not
// held) by the owner, splitting the ranges it overlaps.
func (o *lockOwner) setRange(start, end uint64, typ uint32) {
	var out []lockRange
	for _, r := range o.ranges {
		if r.end < start || r.start > end {
			out = append(out, r)
			continue
		}
		if r.start < start {
			out = append(out, lockRange{r.start, start - 1, r.typ})
		}
		if r.end > end {
			out = append(out, lockRange{end + 1, r.end, r.typ})
		}
	}
	if typ != unix.F_UNLCK {
		out = append(out, lockRange{start, end, typ})
	}
	for i := 1; i < len(out); i++ { // insertion sort: lists are short
		for j := i; j > 0 && out[j].start < out[j-1].start; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	o.ranges = out
}

func toFlock(lk *abi.FileLock) unix.Flock_t {
	f := unix.Flock_t{Type: int16(lk.Type), Whence: unix.SEEK_SET, Start: int64(lk.Start)}
	if lk.End != math.MaxInt64 && lk.End != math.MaxUint64 && lk.End >= lk.Start {
		f.Len = int64(lk.End - lk.Start + 1)
	}
	return f
}

// owner returns the lock owner of n for the kernel's owner id, opening its
// open file description (as the daemon, from the handle's descriptor).
func (fs *FS) owner(n *node, h *handle, id uint64, pid uint32) (*lockOwner, error) {
	ls := &n.locks
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if o := ls.owners[id]; o != nil {
		return o, nil
	}
	var fd int
	var err error
	for _, mode := range []int{unix.O_RDWR, unix.O_RDONLY, unix.O_WRONLY} {
		fd, err = openRetry(procPath(h.fd), mode|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if ls.owners == nil {
		ls.owners = make(map[uint64]*lockOwner)
	}
	o := &lockOwner{fd: fd, pid: pid}
	ls.owners[id] = o
	return o, nil
}

// dropOwner closes an owner's description, releasing its POSIX locks.
func (fs *FS) dropOwner(n *node, id uint64) {
	ls := &n.locks
	ls.mu.Lock()
	o := ls.owners[id]
	delete(ls.owners, id)
	ls.mu.Unlock()
	if o != nil {
		unix.Close(o.fd)
	}
}

// dropOwners closes every lock owner's description of n (its last handle
// is closed).
func (fs *FS) dropOwners(n *node) {
	ls := &n.locks
	ls.mu.Lock()
	owners := ls.owners
	ls.owners = nil
	ls.mu.Unlock()
	for _, o := range owners {
		unix.Close(o.fd)
	}
}

// lockHandle returns the open file of a lock request; give it back with
// putHandle.
func (fs *FS) lockHandle(in *abi.LkIn) (*handle, error) {
	return fs.fileHandle(in.Fh)
}

// Getlk reports a lock that would conflict with the one described.
func (fs *FS) Getlk(ctx context.Context, r *fusedev.Request, in *abi.LkIn, out *abi.LkOut) error {
	h, err := fs.lockHandle(in)
	if err != nil {
		return err
	}
	defer fs.putHandle(h)
	if _, err := fs.admit(ctx, r, target{n: h.n, fd: -1}, reqArgs{}); err != nil {
		return err
	}
	o, err := fs.owner(h.n, h, in.Owner, in.Lk.PID)
	if err != nil {
		return err
	}
	f := toFlock(&in.Lk)
	if err := unix.FcntlFlock(uintptr(o.fd), unix.F_OFD_GETLK, &f); err != nil {
		return err
	}
	out.Lk = abi.FileLock{Type: uint32(f.Type)}
	if f.Type == unix.F_UNLCK {
		return nil
	}
	out.Lk.Start = uint64(f.Start)
	out.Lk.End = math.MaxInt64
	if f.Len > 0 {
		out.Lk.End = uint64(f.Start + f.Len - 1)
	}
	if f.Pid > 0 {
		out.Lk.PID = uint32(f.Pid) // a classic POSIX lock of another process
		return nil
	}
	// An open file description lock: find which owner holds that range.
	ls := &h.n.locks
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for id, other := range ls.owners {
		if id == in.Owner {
			continue
		}
		for _, rg := range other.ranges {
			if rg.start <= out.Lk.End && rg.end >= out.Lk.Start && (rg.typ == unix.F_WRLCK || f.Type == unix.F_WRLCK) {
				out.Lk.PID = other.pid
				return nil
			}
		}
	}
	return nil
}

// Setlk takes or releases a lock without waiting.
func (fs *FS) Setlk(ctx context.Context, r *fusedev.Request, in *abi.LkIn) error {
	return fs.setlk(ctx, r, in, false)
}

// Setlkw takes a lock, waiting for it (interruptibly).
func (fs *FS) Setlkw(ctx context.Context, r *fusedev.Request, in *abi.LkIn) error {
	return fs.setlk(ctx, r, in, true)
}

func (fs *FS) setlk(ctx context.Context, r *fusedev.Request, in *abi.LkIn, wait bool) error {
	h, err := fs.lockHandle(in)
	if err != nil {
		return err
	}
	defer fs.putHandle(h)
	if _, err := fs.admit(ctx, r, target{n: h.n, fd: -1}, reqArgs{}); err != nil {
		return err
	}
	if in.LkFlags&abi.LkFlock != 0 {
		how := map[uint32]int{unix.F_RDLCK: unix.LOCK_SH, unix.F_WRLCK: unix.LOCK_EX, unix.F_UNLCK: unix.LOCK_UN}[in.Lk.Type]
		if how == 0 {
			return syscall.EINVAL
		}
		return retryLock(ctx, wait, func() error { return unix.Flock(h.fd, how|unix.LOCK_NB) })
	}
	o, err := fs.owner(h.n, h, in.Owner, in.Lk.PID)
	if err != nil {
		return err
	}
	f := toFlock(&in.Lk)
	err = retryLock(ctx, wait, func() error {
		g := f
		return unix.FcntlFlock(uintptr(o.fd), unix.F_OFD_SETLK, &g)
	})
	if err != nil {
		return err
	}
	end := uint64(math.MaxInt64)
	if f.Len > 0 {
		end = uint64(f.Start + f.Len - 1)
	}
	ls := &h.n.locks
	ls.mu.Lock()
	o.pid = in.Lk.PID
	o.setRange(uint64(f.Start), end, uint32(f.Type))
	ls.mu.Unlock()
	return nil
}

// retryLock runs try, and while it reports a conflict and wait is set,
// again with a growing pause, until ctx is cancelled (EINTR).
func retryLock(ctx context.Context, wait bool, try func() error) error {
	pause := 500 * time.Microsecond
	for {
		err := try()
		if err == unix.EINTR {
			continue
		}
		if !wait || (err != unix.EAGAIN && err != unix.EWOULDBLOCK && err != unix.EACCES) {
			return err
		}
		select {
		case <-ctx.Done():
			return syscall.EINTR
		case <-time.After(pause):
		}
		pause = min(pause*2, 50*time.Millisecond)
	}
}
