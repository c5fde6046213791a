// Package loopback is the reference CUSE device: a bounded in-memory pipe.
// What any opener writes, any opener can read back, in order; reads block
// while it is empty and writes while it is full (or fail with EAGAIN under
// O_NONBLOCK), poll reports readable and writable as a pipe does, and a few
// ioctls report and peek at its contents (one with a pointer inside its
// argument, which exercises the unrestricted-ioctl retry path). The data
// outlives the openers: it stays until read or reset, while the device runs.
//
// It is fusegate's benchmark subject. It must never block a caller beyond
// what the pipe semantics say: a read of more than is buffered returns what
// is there, and every wait ends when the caller gets a signal.
package loopback

import (
	"context"
	"encoding/binary"
	"sync"
	"syscall"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/cuse/internal/cond"
)

// DefaultCapacity is the pipe's size when Options.Capacity is zero.
const DefaultCapacity = 64 * 1024

// Ioctl numbers of the loopback device (type byte 0xC5).
var (
	// IocStat copies out Stat: bytes buffered and capacity.
	IocStat = cuse.Ioc(cuse.IocRead, 0xC5, 1, StatSize)
	// IocPeek takes Peek: it copies up to Peek.Len buffered bytes, without
	// consuming them, to the caller's buffer at Peek.Buf and writes the
	// count back into Peek.Copied. The result is the count too.
	IocPeek = cuse.Ioc(cuse.IocRead|cuse.IocWrite, 0xC5, 2, PeekSize)
	// IocReset discards everything buffered; the result is how many bytes.
	IocReset = cuse.Ioc(cuse.IocNone, 0xC5, 3, 0)
	// FIONREAD (TIOCINQ) stores the bytes buffered as an int at the argument.
	// Its number encodes no size, so only an unrestricted ioctl can serve it.
	FIONREAD = cuse.IoctlCmd(0x541B)
)

// Stat is IocStat's argument: two little-endian uint64s.
type Stat struct {
	Used     uint64
	Capacity uint64
}

// StatSize and PeekSize are the wire sizes of the ioctl arguments.
const (
	StatSize = 16
	PeekSize = 16
)

// Peek is IocPeek's argument: Buf (uint64, a pointer, also for 32-bit
// callers), Len (uint32), Copied (uint32), little-endian.
type Peek struct {
	Buf    uint64
	Len    uint32
	Copied uint32
}

// Options configure a Device.
type Options struct {
	Capacity int // bytes buffered at most (default DefaultCapacity)
	// State, when set (StateSize(Capacity) bytes, e.g. cuse.DeviceArea of
	// a state memfd), holds the ring and its bookkeeping, so that the bytes
	// buffered survive a restart of the process; Restore adopts what a
	// predecessor left there.
	State   []byte
	Restore bool
}

// Device is a loopback device.
type Device struct {
	mu     sync.Mutex
	buf    []byte                 // guarded by mu; the ring
	head   int                    // guarded by mu; index of the oldest byte
	n      int                    // guarded by mu; bytes buffered
	change cond.Var               // guarded by mu; broadcast on every change
	files  map[*cuse.File]*handle // guarded by mu

	ps *persist // the ring lives in Options.State (state_linux.go); nil: in memory

	unlockRead func() // ends a ReadSlice: unlocks mu, wakes pollers
}

var (
	_ cuse.Device     = (*Device)(nil)
	_ cuse.Persistent = (*Device)(nil)
)

// New returns an empty loopback device (or, with Options.Restore, the one a
// predecessor kept in Options.State).
func New(opts Options) *Device {
	if opts.Capacity <= 0 {
		opts.Capacity = DefaultCapacity
	}
	d := &Device{files: make(map[*cuse.File]*handle)}
	d.unlockRead = func() {
		d.mu.Unlock()
		d.wakePollers()
	}
	if len(opts.State) >= StateSize(opts.Capacity) {
		d.ps = newPersist(opts.State, opts.Capacity)
		d.buf = d.ps.ring
		if opts.Restore {
			d.ps.restore(d)
		}
	} else {
		d.buf = make([]byte, opts.Capacity)
	}
	return d
}

// Reopen gives an open file restored after a restart its handle.
func (d *Device) Reopen(ctx context.Context, f *cuse.File) (cuse.Handle, error) {
	return d.Open(ctx, f)
}

// Len returns how many bytes are buffered.
func (d *Device) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// Open implements cuse.Device.
func (d *Device) Open(ctx context.Context, f *cuse.File) (cuse.Handle, error) {
	h := &handle{d: d, f: f}
	d.mu.Lock()
	d.files[f] = h
	d.mu.Unlock()
	return h, nil
}

// wakePollers tells every open file's pollers to look again. File.Wake
// costs an atomic load unless a poller waits, and never calls back into the
// device, so it runs under the lock.
func (d *Device) wakePollers() {
	d.mu.Lock()
	for f := range d.files {
		f.Wake()
	}
	d.mu.Unlock()
}

// readLocked moves up to len(p) bytes out of the ring.
func (d *Device) readLocked(p []byte, consume bool) int {
	n := min(len(p), d.n)
	first := min(n, len(d.buf)-d.head)
	copy(p, d.buf[d.head:d.head+first])
	copy(p[first:n], d.buf)
	if consume {
		d.head = (d.head + n) % len(d.buf)
		d.n -= n
		if d.n == 0 && d.ps.reserved() == 0 {
			d.head = 0
		}
	}
	return n
}

// writeLocked moves as much of p as fits into the ring.
func (d *Device) writeLocked(p []byte) int {
	n := min(len(p), len(d.buf)-d.n-d.ps.reserved())
	tail := (d.head + d.n) % len(d.buf)
	first := min(n, len(d.buf)-tail)
	copy(d.buf[tail:], p[:first])
	copy(d.buf, p[first:n])
	d.n += n
	return n
}

type handle struct {
	d *Device
	f *cuse.File
}

var (
	_ cuse.Handle      = (*handle)(nil)
	_ cuse.SliceReader = (*handle)(nil)
	_ cuse.Poller      = (*handle)(nil)
	_ cuse.Ioctler     = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, op cuse.Op, dest []byte) (int, error) {
	b, err := h.read(ctx, op, dest, false)
	return len(b), err
}

// ReadSlice implements cuse.SliceReader: the reply goes out straight from
// the ring, and d.mu stays held until it has been written, so that no
// writer reuses those bytes meanwhile (libfuse's loopback does the same).
// Bytes that wrap around the ring's end, and a ring in a state memfd
// (whose reads are recorded for a restart), are copied into dest instead.
func (h *handle) ReadSlice(ctx context.Context, op cuse.Op, dest []byte) ([]byte, error) {
	return h.read(ctx, op, dest, true)
}

func (h *handle) read(ctx context.Context, op cuse.Op, dest []byte, direct bool) ([]byte, error) {
	d := h.d
	d.mu.Lock()
	d.ps.dropPriorLater(d)
	if n, ok := d.ps.replayRead(d, op, dest); ok {
		d.mu.Unlock()
		return dest[:n], nil
	}
	for d.n == 0 {
		switch {
		case op.Nonblock():
			d.mu.Unlock()
			return nil, syscall.EAGAIN
		case op.Offset > 0 || len(dest) == 0:
			d.mu.Unlock()
			return dest[:0], nil // the read(2) already has data: end it here
		}
		if err := d.change.Wait(ctx, &d.mu); err != nil {
			d.mu.Unlock()
			return nil, err
		}
	}
	from := d.head
	if n := min(len(dest), d.n); direct && d.ps == nil && from+n <= len(d.buf) && op.AfterReply(d.unlockRead) {
		d.head, d.n = from+n, d.n-n
		if d.n == 0 {
			d.head = 0
		}
		d.change.Broadcast()
		return d.buf[from : from+n], nil // d.unlockRead runs after the reply
	}
	n := d.readLocked(dest, true)
	d.ps.read(d, op, from, n)
	d.change.Broadcast()
	d.mu.Unlock()
	d.wakePollers()
	return dest[:n], nil
}

func (h *handle) Write(ctx context.Context, op cuse.Op, data []byte) (int, error) {
	d := h.d
	done := 0
	d.mu.Lock()
	d.ps.dropPriorLater(d)
	done = d.ps.resumeWrite(d, op, len(data))
	for {
		n := d.writeLocked(data[done:])
		done += n
		if n > 0 {
			d.ps.wrote(d, op, done)
			d.change.Broadcast()
		}
		if done == len(data) {
			break
		}
		if op.Nonblock() {
			if done == 0 {
				d.mu.Unlock()
				return 0, syscall.EAGAIN
			}
			break
		}
		if n > 0 {
			// Let readers and pollers in while we wait for the rest.
			d.mu.Unlock()
			d.wakePollers()
			d.mu.Lock()
			continue
		}
		if err := d.change.Wait(ctx, &d.mu); err != nil {
			d.mu.Unlock()
			if done > 0 {
				return done, nil
			}
			return 0, err
		}
	}
	d.mu.Unlock()
	d.wakePollers()
	return done, nil
}

func (h *handle) Release(ctx context.Context) error {
	h.d.mu.Lock()
	delete(h.d.files, h.f)
	h.d.mu.Unlock()
	return nil
}

func (h *handle) Poll(ctx context.Context, op cuse.Op, events cuse.Events) (cuse.Events, error) {
	d := h.d
	d.mu.Lock()
	var ev cuse.Events
	if d.n > 0 {
		ev |= cuse.PollIn | cuse.PollRdNorm
	}
	if d.n < len(d.buf) {
		ev |= cuse.PollOut | cuse.PollWrNorm
	}
	d.mu.Unlock()
	return ev & events, nil
}

func (h *handle) Ioctl(ctx context.Context, op cuse.Op, req *cuse.IoctlRequest) (int32, error) {
	d := h.d
	le := binary.LittleEndian
	switch req.Cmd {
	case IocStat:
		out, err := req.Out(req.ArgRegion())
		if err != nil {
			return 0, err
		}
		d.mu.Lock()
		le.PutUint64(out, uint64(d.n))
		le.PutUint64(out[8:], uint64(len(d.buf)))
		d.mu.Unlock()
		return 0, nil

	case FIONREAD:
		out, err := req.Out(cuse.Region{Addr: req.Arg, Len: 4})
		if err != nil {
			return 0, err
		}
		le.PutUint32(out, uint32(d.Len()))
		return 0, nil

	case IocPeek:
		// Ask for the struct in and out at once: one round trip fewer.
		in, errIn := req.In(req.ArgRegion())
		back, errOut := req.Out(req.ArgRegion())
		if errIn != nil {
			return 0, errIn
		}
		if errOut != nil {
			return 0, errOut
		}
		p := Peek{Buf: le.Uint64(in), Len: le.Uint32(in[8:])}
		want := int(min(p.Len, cuse.IoctlMaxBytes-PeekSize))
		dst, err := req.Out(cuse.Region{Addr: p.Buf, Len: want})
		if err != nil {
			return 0, err
		}
		d.mu.Lock()
		n := d.readLocked(dst, false)
		d.mu.Unlock()
		copy(back, in)
		le.PutUint32(back[12:], uint32(n))
		req.Trim(PeekSize + n) // leave the caller's buffer beyond n alone
		return int32(n), nil

	case IocReset:
		d.mu.Lock()
		n := d.n
		d.head = (d.head + d.n) % len(d.buf)
		d.n = 0
		if d.ps.reserved() == 0 {
			d.head = 0
		}
		d.ps.commit(d)
		d.change.Broadcast()
		d.mu.Unlock()
		d.wakePollers()
		return int32(n), nil
	}
	return 0, syscall.ENOTTY
}
