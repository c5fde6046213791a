// Package sockdev is a CUSE device whose driver is another process: each
// open of /dev/NAME connects to a unix stream socket where the driver
// listens, and the open file is bridged to that connection. What clients
// write reaches the driver in TypeWrite frames, what the driver sends in
// TypeData frames is what clients read, poll reports the bridge's buffers,
// and ioctls travel as TypeIoctl/TypeReply frames (command, direction, size,
// payload). The framing is documented in docs/DEVICES.md and proto.go; a
// driver in any language needs a socket and little-endian integers.
//
// The bridge never trusts the driver: a malformed frame or a frame over
// MaxPayload closes the connection (the file then reads EOF and fails
// writes with EPIPE), an ioctl answer longer than the ioctl's size is cut,
// and every wait ends when the caller gets a signal. It must never block the
// device's other files on one driver connection.
package sockdev

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/cuse/internal/cond"
)

// Options configure a Device. Socket is required.
type Options struct {
	Socket string // path of the driver's listening unix stream socket
	// Buffer bounds, per open file, the bytes waiting to go to the driver
	// and the bytes received from it and not yet read (default 256 KiB each).
	Buffer int
	// DialTimeout bounds connecting to the driver (default 5 s).
	DialTimeout time.Duration
	// DrainTimeout is how long a released file may take to hand its last
	// writes to the driver before the connection is closed (default 5 s).
	DrainTimeout time.Duration
	Logger       logrus.FieldLogger // default: discard
}

// Device bridges opens to a driver socket.
type Device struct {
	opts Options
	log  logrus.FieldLogger
}

var _ cuse.Device = (*Device)(nil)

// New returns a Device for opts.
func New(opts Options) (*Device, error) {
	if opts.Socket == "" {
		return nil, errors.New("sockdev: no socket path")
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 256 << 10
	}
	opts.Buffer = max(opts.Buffer, 4096)
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		l := logrus.New()
		l.Out = discard{}
		opts.Logger = l
	}
	return &Device{opts: opts, log: opts.Logger.WithField("socket", opts.Socket)}, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Open connects to the driver. A driver that is not listening makes open(2)
// fail with ENXIO ("no such device or address").
func (d *Device) Open(ctx context.Context, f *cuse.File) (cuse.Handle, error) {
	dctx, cancel := context.WithTimeout(ctx, d.opts.DialTimeout)
	defer cancel()
	var dialer net.Dialer
	c, err := dialer.DialContext(dctx, "unix", d.opts.Socket)
	if err != nil {
		d.log.WithError(err).Info("sockdev: cannot reach the driver")
		switch {
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return nil, syscall.EACCES
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		return nil, syscall.ENXIO
	}
	uc := c.(*net.UnixConn)
	o := f.Opener()
	h := &handle{d: d, f: f, c: uc, pending: make(map[uint32]chan reply)}
	h.queueLocked(AppendFrame(nil, TypeOpen, OpenMsg{Flags: uint32(f.OpenFlags()), UID: o.UID, GID: o.GID, PID: o.PID}.Bytes()))
	go h.writer()
	go h.reader()
	return h, nil
}

type reply struct {
	msg ReplyMsg
	err error
}

// handle is one open file bridged to one driver connection.
type handle struct {
	d *Device
	f *cuse.File
	c *net.UnixConn

	mu        sync.Mutex
	in        []byte                // guarded by mu; received, not yet read
	out       [][]byte              // guarded by mu; frames to send
	outBytes  int                   // guarded by mu
	eof       bool                  // guarded by mu; the driver hung up (or broke the protocol)
	released  bool                  // guarded by mu
	change    cond.Var              // guarded by mu; broadcast on every change
	nextID    uint32                // guarded by mu
	pending   map[uint32]chan reply // guarded by mu; ioctls waiting for their reply
	writerErr error                 // guarded by mu
}

var (
	_ cuse.Handle  = (*handle)(nil)
	_ cuse.Poller  = (*handle)(nil)
	_ cuse.Ioctler = (*handle)(nil)
)

func (h *handle) queueLocked(frame []byte) {
	h.out = append(h.out, frame)
	h.outBytes += len(frame)
	h.change.Broadcast()
}

// hangup records the end of the driver connection.
func (h *handle) hangup(err error) {
	h.mu.Lock()
	if !h.eof {
		h.eof = true
		if err != nil && !h.released {
			h.d.log.WithError(err).Info("sockdev: driver connection ended")
		}
	}
	for id, ch := range h.pending {
		ch <- reply{err: syscall.EPIPE}
		delete(h.pending, id)
	}
	h.change.Broadcast()
	h.mu.Unlock()
	h.f.Wake()
}

// reader moves frames from the driver into the read buffer and to waiting
// ioctls. It stops reading while the buffer is full.
func (h *handle) reader() {
	var buf []byte
	for {
		fr, err := ReadFrame(h.c, buf)
		if err != nil {
			// EOF (the driver closed or shut down its writing side) or a
			// broken frame: either way the bridge is over.
			h.hangup(err)
			h.c.Close()
			return
		}
		switch fr.Type {
		case TypeData:
			h.mu.Lock()
			for len(h.in) >= h.d.opts.Buffer && !h.released {
				h.change.Wait(context.Background(), &h.mu)
			}
			h.in = append(h.in, fr.Payload...)
			h.change.Broadcast()
			h.mu.Unlock()
			h.f.Wake()
			buf = fr.Payload
		case TypeReply:
			m, err := ParseReply(fr.Payload)
			if err != nil {
				h.hangup(err)
				h.c.Close()
				return
			}
			m.Output = append([]byte(nil), m.Output...)
			h.mu.Lock()
			ch := h.pending[m.ID]
			delete(h.pending, m.ID)
			h.mu.Unlock()
			if ch != nil {
				ch <- reply{msg: m}
			}
			buf = fr.Payload
		default:
			buf = fr.Payload // unknown frame: skipped
		}
	}
}

// writer sends queued frames; after a release it drains the queue and
// closes the connection.
func (h *handle) writer() {
	for {
		h.mu.Lock()
		for len(h.out) == 0 && !h.released && h.writerErr == nil {
			h.change.Wait(context.Background(), &h.mu)
		}
		if len(h.out) == 0 || h.writerErr != nil {
			h.mu.Unlock()
			h.c.Close()
			return
		}
		frames := net.Buffers(h.out)
		h.out, h.outBytes = nil, 0
		released := h.released
		h.mu.Unlock()
		if released {
			h.c.SetWriteDeadline(time.Now().Add(h.d.opts.DrainTimeout))
		}
		_, err := frames.WriteTo(h.c)
		h.mu.Lock()
		if err != nil {
			h.writerErr = err
		}
		h.change.Broadcast()
		h.mu.Unlock()
		h.f.Wake()
		if err != nil {
			h.hangup(err)
		}
	}
}

func (h *handle) Read(ctx context.Context, op cuse.Op, dest []byte) (int, error) {
	h.mu.Lock()
	for len(h.in) == 0 {
		switch {
		case h.eof:
			h.mu.Unlock()
			return 0, nil
		case op.Nonblock():
			h.mu.Unlock()
			return 0, syscall.EAGAIN
		case op.Offset > 0 || len(dest) == 0:
			h.mu.Unlock()
			return 0, nil
		}
		if err := h.change.Wait(ctx, &h.mu); err != nil {
			h.mu.Unlock()
			return 0, err
		}
	}
	n := copy(dest, h.in)
	h.in = h.in[n:]
	if len(h.in) == 0 {
		h.in = nil
	}
	h.change.Broadcast() // the reader goroutine may wait for room
	h.mu.Unlock()
	return n, nil
}

func (h *handle) Write(ctx context.Context, op cuse.Op, data []byte) (int, error) {
	limit := h.d.opts.Buffer
	done := 0
	h.mu.Lock()
	for done < len(data) {
		if h.eof || h.writerErr != nil {
			h.mu.Unlock()
			if done > 0 {
				return done, nil
			}
			return 0, syscall.EPIPE
		}
		room := limit - h.outBytes - HeaderSize
		if room > 0 {
			n := min(room, len(data)-done)
			h.queueLocked(AppendFrame(make([]byte, 0, HeaderSize+n), TypeWrite, data[done:done+n]))
			done += n
			continue
		}
		if op.Nonblock() {
			break
		}
		if err := h.change.Wait(ctx, &h.mu); err != nil {
			h.mu.Unlock()
			if done > 0 {
				return done, nil
			}
			return 0, err
		}
	}
	h.mu.Unlock()
	if done == 0 && len(data) > 0 {
		return 0, syscall.EAGAIN
	}
	return done, nil
}

func (h *handle) Poll(ctx context.Context, op cuse.Op, events cuse.Events) (cuse.Events, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ev cuse.Events
	if len(h.in) > 0 || h.eof {
		ev |= cuse.PollIn | cuse.PollRdNorm
	}
	if h.eof {
		ev |= cuse.PollHup
	} else if h.outBytes+HeaderSize < h.d.opts.Buffer {
		ev |= cuse.PollOut | cuse.PollWrNorm
	}
	return ev & (events | cuse.PollHup | cuse.PollErr), nil
}

// Ioctl forwards well-formed ioctls: the argument struct the number encodes
// goes to the driver (DirIn) and its answer back to the caller (DirOut).
func (h *handle) Ioctl(ctx context.Context, op cuse.Op, req *cuse.IoctlRequest) (int32, error) {
	dir, size := req.Cmd.Dir(), req.Cmd.Size()
	var in, out []byte
	var errIn, errOut error
	if dir&cuse.IocWrite != 0 && size > 0 {
		in, errIn = req.In(req.ArgRegion())
	}
	if dir&cuse.IocRead != 0 && size > 0 {
		out, errOut = req.Out(req.ArgRegion())
	}
	if err := errors.Join(errIn, errOut); err != nil {
		if errors.Is(err, cuse.ErrIoctlRetry) {
			return 0, cuse.ErrIoctlRetry
		}
		return 0, err
	}
	var m IoctlMsg
	m.Cmd, m.Arg, m.Size = uint32(req.Cmd), req.Arg, uint32(size)
	if dir&cuse.IocWrite != 0 {
		m.Dir |= DirIn
		m.Input = in
	}
	if dir&cuse.IocRead != 0 {
		m.Dir |= DirOut
	}
	ch := make(chan reply, 1)
	h.mu.Lock()
	if h.eof || h.writerErr != nil {
		h.mu.Unlock()
		return 0, syscall.EPIPE
	}
	h.nextID++
	m.ID = h.nextID
	h.pending[m.ID] = ch
	h.queueLocked(AppendFrame(nil, TypeIoctl, m.Bytes()))
	h.mu.Unlock()

	select {
	case r := <-ch:
		if r.err != nil {
			return 0, r.err
		}
		if r.msg.Result < 0 {
			return 0, syscall.Errno(-r.msg.Result)
		}
		n := copy(out, r.msg.Output)
		req.Trim(n)
		return r.msg.Result, nil
	case <-ctx.Done():
		h.mu.Lock()
		delete(h.pending, m.ID)
		h.mu.Unlock()
		return 0, ctx.Err()
	}
}

// Release hands what is queued to the driver, then closes the connection,
// in the background.
func (h *handle) Release(ctx context.Context) error {
	h.mu.Lock()
	h.released = true
	h.change.Broadcast()
	h.mu.Unlock()
	return nil
}
