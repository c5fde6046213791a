package cuse

import (
	"context"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
)

// Device is a character device: it opens a Handle for every open(2) of its
// node. Open may fail with a syscall.Errno, which open(2) returns.
type Device interface {
	Open(ctx context.Context, f *File) (Handle, error)
}

// Handle serves one open file of a Device. Its methods may be called
// concurrently (several threads of a process share a file). Errors that are
// a syscall.Errno (possibly wrapped) reach the caller as that errno; ctx.Err()
// reaches it as EINTR; any other error as EIO.
type Handle interface {
	// Read fills dest (at most max_read bytes) and returns how many bytes it
	// filled. A Read that would block must honour op.Nonblock() (return
	// syscall.EAGAIN) and ctx (cancelled when the caller gets a signal), and
	// must not block when op.Offset > 0: the kernel splits a large read(2)
	// into max_read chunks, and a chunk after the first one should return
	// what is there, even 0 bytes, which ends the read(2).
	Read(ctx context.Context, op Op, dest []byte) (int, error)
	// Write consumes data (at most max_write bytes) and returns how many
	// bytes it took; fewer than len(data) ends the write(2) with that count.
	// data is valid only during the call.
	Write(ctx context.Context, op Op, data []byte) (int, error)
	// Release is called once when the last descriptor of the open file is
	// closed, or when the Server stops with the file still open.
	Release(ctx context.Context) error
}

// Ioctler is implemented by a Handle that answers ioctl(2). It returns the
// ioctl's result (≥ 0) or an error; syscall.ENOTTY says "no such ioctl".
// See IoctlRequest for reading and writing the caller's memory.
type Ioctler interface {
	Ioctl(ctx context.Context, op Op, req *IoctlRequest) (int32, error)
}

// Poller is implemented by a Handle that supports poll(2)/select/epoll: it
// returns which of the requested events are ready now. When readiness
// changes later, the device calls File.Wake (or Server.WakeAll). A Handle
// without Poll is always readable and writable to pollers.
type Poller interface {
	Poll(ctx context.Context, op Op, events Events) (Events, error)
}

// Flusher is implemented by a Handle that acts on every close(2) of a
// descriptor of the file (Release comes only after the last one).
type Flusher interface {
	Flush(ctx context.Context, op Op) error
}

// Fsyncer is implemented by a Handle that supports fsync(2)/fdatasync(2).
type Fsyncer interface {
	Fsync(ctx context.Context, op Op, mode SyncMode) error
}

// SyncMode says what an Fsync must make durable.
type SyncMode int

// Sync modes.
const (
	SyncAll  SyncMode = iota // fsync(2)
	SyncData                 // fdatasync(2)
)

// Events are poll(2) event bits.
type Events uint32

// Poll events (the values of poll(2)).
const (
	PollIn     Events = unix.POLLIN
	PollPri    Events = unix.POLLPRI
	PollOut    Events = unix.POLLOUT
	PollErr    Events = unix.POLLERR
	PollHup    Events = unix.POLLHUP
	PollRdNorm Events = 0x40   // POLLRDNORM
	PollWrNorm Events = 0x100  // POLLWRNORM
	PollRdHup  Events = 0x2000 // POLLRDHUP
)

// Op is what a Handle method knows about the call besides its arguments.
type Op struct {
	File   *File
	Caller fusedev.Caller // the calling process (pid in the server's pid namespace)
	// Flags are the file's status flags at the time of the call (open(2)
	// flags as changed by fcntl(F_SETFL)) for Read and Write; the open
	// flags for the other calls.
	Flags int
	// Offset, for Read and Write, is how many bytes the current read(2) or
	// write(2) has already transferred in earlier chunks (0 for the first).
	Offset int64
	// Unique is the kernel's id of the request, the same when the kernel
	// resends it to a restarted server (Resent is then true): a Persistent
	// device uses it to answer a resent request as the first try did.
	Unique uint64
	Resent bool

	req *fusedev.Request
}

// AfterReply runs f once the reply has been written (see
// fusedev.Request.AfterReply); f never runs if the request is left to a
// successor.
func (o Op) AfterReply(f func()) {
	if o.req != nil {
		o.req.AfterReply(f)
	}
}

// Nonblock reports whether the caller asked not to block (O_NONBLOCK): a
// call that cannot proceed at once returns syscall.EAGAIN.
func (o Op) Nonblock() bool { return o.Flags&unix.O_NONBLOCK != 0 }

// File is one open file of the device: what open(2) created, shared by the
// descriptors dup'ed or inherited from it.
type File struct {
	id     uint64
	flags  int
	caller fusedev.Caller
	srv    *Server
	handle Handle

	kh    atomic.Uint64 // the kernel's poll handle, once a POLL brought one
	hasKh atomic.Bool
	armed atomic.Bool // a poller waits for a wake-up
	slot  uint32      // restart state record + 1 (state_linux.go)

	ioctlReq atomic.Pointer[IoctlRequest] // a spare for the next ioctl on the file
}

// ID is the file handle the kernel uses for this file; unique among the
// files open at once.
func (f *File) ID() uint64 { return f.id }

// OpenFlags are the flags open(2) was called with (O_ACCMODE, O_NONBLOCK...).
func (f *File) OpenFlags() int { return f.flags }

// Opener is the process that opened the file.
func (f *File) Opener() fusedev.Caller { return f.caller }

// Handle returns the Handle the Device opened for this file.
func (f *File) Handle() Handle { return f.handle }

// Wake tells the kernel that the file's readiness may have changed, so that
// pollers waiting on it poll again. It costs nothing when no poller waits;
// call it after every change that may make the file readable or writable.
func (f *File) Wake() {
	if !f.armed.Load() || !f.armed.CompareAndSwap(true, false) {
		return
	}
	if !f.hasKh.Load() {
		return
	}
	f.srv.notifyPoll(f.kh.Load())
}
