package cuse

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// DefaultMaxIO is the default max_read and max_write: the most a CUSE
// connection moves per request (32 pages), so larger values gain nothing.
const DefaultMaxIO = 128 * 1024

// Options configure a Server. Name is required; the zero value of the rest
// works.
type Options struct {
	// Name is the device name: the node is /dev/NAME. Letters, digits and
	// ".-_+:", with "/" for a subdirectory of /dev; at most 128 bytes.
	Name string
	// Major and Minor fix the device number; Major 0 lets the kernel pick
	// a free major (Minor is then the first minor it tries).
	Major, Minor uint32
	// MaxRead and MaxWrite bound one READ and WRITE request (default and
	// maximum useful value: DefaultMaxIO; at least 4096).
	MaxRead, MaxWrite uint32
	// RestrictIoctl leaves out CUSE_UNRESTRICTED_IOCTL: the kernel then copies
	// only what an ioctl number encodes and IoctlRequest cannot ask for more.
	RestrictIoctl bool
	// Owner, when set, is given the node once the kernel created it
	// (devtmpfs creates it owned by root).
	Owner *Owner
	// Mode, when not zero, is set as the node's permission bits (devtmpfs
	// creates it 0600).
	Mode os.FileMode

	Logger logrus.FieldLogger // default: discard
	// Readers is the number of goroutines reading requests (default 1: a
	// CUSE connection has one descriptor, so more readers only hand its lock
	// around; handlers run concurrently anyway).
	Readers int
	// ShutdownGrace is how long Stop lets requests in flight finish before
	// cancelling them (default 200 ms).
	ShutdownGrace time.Duration
	// DevDir and SysDir are where devtmpfs and sysfs are mounted (default
	// /dev and /sys); tests and containers may move them.
	DevDir, SysDir string
	// CuseDev is the CUSE control node (default /dev/cuse).
	CuseDev string
}

// Owner is a numeric user and group (there may be no user database); -1
// leaves one unchanged.
type Owner struct {
	UID, GID int
}

// Stats count what the device served since it started.
type Stats struct {
	Opens        uint64 `json:"opens"`         // successful open(2)s
	OpenNow      int64  `json:"open_now"`      // files open now
	Reads        uint64 `json:"reads"`         // READ requests answered with data or 0
	Writes       uint64 `json:"writes"`        // WRITE requests answered
	BytesRead    uint64 `json:"bytes_read"`    // returned by reads
	BytesWritten uint64 `json:"bytes_written"` // taken by writes
	Ioctls       uint64 `json:"ioctls"`        // ioctl(2) calls answered (not counting retries)
	IoctlRetries uint64 `json:"ioctl_retries"` // rounds that asked the kernel for memory
	Polls        uint64 `json:"polls"`         // POLL requests
	Wakeups      uint64 `json:"wakeups"`       // poll notifications sent
	Interrupted  uint64 `json:"interrupted"`   // requests that ended because the caller got a signal
}

type counters struct {
	opens, reads, writes, bytesRead, bytesWritten atomic.Uint64
	ioctls, ioctlRetries, polls, wakeups, intr    atomic.Uint64
	openNow                                       atomic.Int64
}

// Server serves one CUSE device.
type Server struct {
	dev  Device
	opts Options
	log  logrus.FieldLogger

	fsrv  atomic.Pointer[fusedev.Server]
	stats counters

	nextFh atomic.Uint64
	mu     sync.RWMutex
	files  map[uint64]*File // guarded by mu

	ioctlPool sync.Pool // *IoctlRequest

	// Set by Start/Serve.
	life     sync.Mutex
	started  bool               // guarded by life
	conn     *fusedev.Conn      // guarded by life; the /dev/cuse fd (Start)
	cancel   context.CancelFunc // guarded by life
	ready    chan struct{}      // closed when CUSE_INIT was answered
	done     chan struct{}      // closed when serving ended
	err      error              // set before done is closed
	devMajor uint32             // set before ready is closed (Start)
	devMinor uint32

	st         *cuseState  // restart state (state_linux.go); nil: none kept
	handedOver atomic.Bool // Handover: the successor goes on with conn and files
}

// New returns a Server for dev. It checks the options; nothing is opened
// until Start or Serve.
func New(dev Device, opts Options) (*Server, error) {
	if dev == nil {
		return nil, errors.New("cuse: nil Device")
	}
	if err := CheckName(opts.Name); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		l := logrus.New()
		l.Out = discardWriter{}
		opts.Logger = l
	}
	for _, v := range []*uint32{&opts.MaxRead, &opts.MaxWrite} {
		if *v == 0 {
			*v = DefaultMaxIO
		}
		*v = max(*v, 4096)
	}
	if opts.Readers <= 0 {
		opts.Readers = 1
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 200 * time.Millisecond
	}
	if opts.Mode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("cuse: mode %v has bits other than permissions", opts.Mode)
	}
	if opts.DevDir == "" {
		opts.DevDir = "/dev"
	}
	if opts.SysDir == "" {
		opts.SysDir = "/sys"
	}
	if opts.CuseDev == "" {
		opts.CuseDev = "/dev/cuse"
	}
	s := &Server{
		dev: dev, opts: opts, log: opts.Logger.WithField("device", opts.Name),
		files: make(map[uint64]*File),
		ready: make(chan struct{}), done: make(chan struct{}),
	}
	s.ioctlPool.New = func() any { return new(IoctlRequest) }
	return s, nil
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// CheckName reports whether name is a device name this package accepts.
func CheckName(name string) error {
	if name == "" {
		return errors.New("cuse: empty device name")
	}
	if len(name) > 128 {
		return fmt.Errorf("cuse: device name of %d bytes; at most 128", len(name))
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("cuse: device name %q: empty, . or .. path element", name)
		}
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.ContainsRune("._-+:/", c):
		default:
			return fmt.Errorf("cuse: device name %q: character %q not allowed (letters, digits, ._-+: and /)", name, c)
		}
	}
	return nil
}

// Name returns the device name.
func (s *Server) Name() string { return s.opts.Name }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Opens: c.opens.Load(), OpenNow: c.openNow.Load(),
		Reads: c.reads.Load(), Writes: c.writes.Load(),
		BytesRead: c.bytesRead.Load(), BytesWritten: c.bytesWritten.Load(),
		Ioctls: c.ioctls.Load(), IoctlRetries: c.ioctlRetries.Load(),
		Polls: c.polls.Load(), Wakeups: c.wakeups.Load(), Interrupted: c.intr.Load(),
	}
}

// Negotiated returns the CUSE_INIT result, or nil before it.
func (s *Server) Negotiated() *fusedev.Negotiated {
	if f := s.fsrv.Load(); f != nil {
		return f.Negotiated()
	}
	return nil
}

// WakeAll wakes the pollers of every open file (see File.Wake).
func (s *Server) WakeAll() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, f := range s.files {
		f.Wake()
	}
}

func (s *Server) notifyPoll(kh uint64) {
	f := s.fsrv.Load()
	if f == nil {
		return
	}
	s.stats.wakeups.Add(1)
	if err := f.NotifyPoll(kh); err != nil && !errors.Is(err, syscall.ENOENT) {
		s.log.WithError(err).Debug("cuse: poll notification failed")
	}
}

// FileSystem returns what a fusedev.Server needs to serve the device on a
// connection made elsewhere: the file system that turns requests into
// Handle calls, and the server options (CUSE_INIT hook, buffer sizes). It is
// for tests with fusedev/fusetest; Start and Serve use it themselves.
func (s *Server) FileSystem() (fusedev.FileSystem, fusedev.Options) {
	return &adapter{s: s}, s.fusedevOptions()
}

// fusedevOptions are the options of the fusedev.Server under the device.
// Its buffers must hold the largest WRITE and the largest IOCTL argument.
func (s *Server) fusedevOptions() fusedev.Options {
	return fusedev.Options{
		Logger:        s.opts.Logger,
		Readers:       s.opts.Readers,
		MaxWrite:      max(s.opts.MaxRead, s.opts.MaxWrite, IoctlMaxBytes),
		Cuse:          s.cuseInit,
		ShutdownGrace: s.opts.ShutdownGrace,
	}
}

// cuseInit builds the CUSE_INIT reply.
func (s *Server) cuseInit(in *abi.CuseInitIn) (abi.CuseInitOut, []byte, error) {
	out := abi.CuseInitOut{
		MaxRead: s.opts.MaxRead, MaxWrite: s.opts.MaxWrite,
		DevMajor: s.opts.Major, DevMinor: s.opts.Minor,
	}
	if !s.opts.RestrictIoctl {
		out.Flags = in.Flags & abi.CuseUnrestrictedIoctl
	}
	info := append([]byte("DEVNAME="+s.opts.Name), 0)
	return out, info, nil
}

// claim marks s started: of Serve, Start and Resume, only one may run, and
// only once.
func (s *Server) claim() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.started {
		return errors.New("cuse: Server started twice")
	}
	s.started = true
	return nil
}

// Serve answers CUSE_INIT on conn and serves the device until the connection
// ends (it returns nil) or ctx is cancelled (it waits ShutdownGrace for
// requests in flight, cancels the rest and returns nil, leaving conn open).
// Files still open when it returns are released. Most callers use Start,
// which opens /dev/cuse and sets up the node; Serve is for a conn opened
// elsewhere (a test's fake kernel, a descriptor handed over by systemd).
func (s *Server) Serve(ctx context.Context, conn *fusedev.Conn) error {
	if err := s.claim(); err != nil {
		return err
	}
	err := s.serve(ctx, conn, s.ready)
	s.finish(err)
	return err
}

// serve runs the fusedev server on conn; initDone is closed once CUSE_INIT
// has been answered.
func (s *Server) serve(ctx context.Context, conn *fusedev.Conn, initDone chan struct{}) error {
	fsrv := fusedev.NewServer(conn, &adapter{s: s}, s.fusedevOptions())
	s.fsrv.Store(fsrv)
	go func() {
		select {
		case <-fsrv.Ready():
			if fsrv.Negotiated() != nil {
				close(initDone)
			}
		case <-s.done:
		}
	}()
	return fsrv.Serve(ctx)
}

// finish records the end of serving.
func (s *Server) finish(err error) {
	s.life.Lock()
	defer s.life.Unlock()
	s.err = err
	select {
	case <-s.done:
	default:
		close(s.done)
	}
}

// releaseAll releases the files the kernel will never release: it dropped
// them with the connection.
func (s *Server) releaseAll() {
	s.mu.Lock()
	files := s.files
	s.files = make(map[uint64]*File)
	s.mu.Unlock()
	for _, f := range files {
		s.stats.openNow.Add(-1)
		if err := f.handle.Release(context.Background()); err != nil {
			s.log.WithError(err).Debug("cuse: release at shutdown failed")
		}
	}
}

// Ready is closed once CUSE_INIT has been answered (with Start: once the
// node exists with its owner and mode).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Done is closed when the device has stopped; Err then says why.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err returns the error serving ended with (nil for a clean stop or a
// connection closed by the kernel), valid once Done is closed.
func (s *Server) Err() error {
	s.life.Lock()
	defer s.life.Unlock()
	return s.err
}

func (s *Server) file(fh uint64) (*File, error) {
	s.mu.RLock()
	f := s.files[fh]
	s.mu.RUnlock()
	if f == nil {
		s.log.WithField("fh", fh).Error("cuse: request for an unknown file handle")
		return nil, syscall.EBADF
	}
	return f, nil
}

// interrupted counts a request its caller abandoned.
func (s *Server) countErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		s.stats.intr.Add(1)
	}
	return err
}
