package fusedev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// MinMinor is the oldest protocol minor the server speaks (Linux 2.6.29).
// From it on every request struct has its current size except INIT's.
const MinMinor = 12

// DefaultFlags are the INIT capabilities a Server asks for when
// Options.Flags is zero. The kernel grants the intersection with its offer.
const DefaultFlags = abi.InitAsyncRead | abi.InitAtomicOTrunc | abi.InitBigWrites |
	abi.InitAutoInvalData | abi.InitDoReaddirplus | abi.InitReaddirplusAuto |
	abi.InitAsyncDIO | abi.InitParallelDirops | abi.InitMaxPages |
	abi.InitSetxattrExt | abi.InitExt

// Options configure a Server. The zero value works.
type Options struct {
	Logger logrus.FieldLogger // default: a logger that discards

	// Readers is the number of descriptors read at once, each a cloned
	// /dev/fuse fd where cloning works (else they share one). Each has one
	// goroutine reading it, which handles what it reads itself and hands
	// the reading to a new goroutine when a request takes long, so requests
	// are still served concurrently. Default: one per 4 CPUs (GOMAXPROCS),
	// 1 to 4: the kernel wakes the reader that slept longest, so on small
	// machines a second reader adds cold-thread wake-ups (docs/BENCHMARKS.md,
	// engine: on 2 CPUs one reader is about 1.5x faster for one client, two
	// are about 1.4x faster for four).
	Readers int
	// MaxWrite is the largest WRITE payload: default 1 MiB, at least 4 KiB,
	// rounded up to whole pages (the kernel counts max_pages). Reads are
	// limited to it too.
	MaxWrite uint32
	// MaxReadahead caps the kernel's readahead (default: the kernel's offer).
	MaxReadahead        uint32
	MaxBackground       uint16 // 0: kernel default
	CongestionThreshold uint16 // 0: kernel default
	TimeGran            uint32 // timestamp granularity in ns (default 1)
	// Flags are the capabilities asked for (default DefaultFlags).
	Flags abi.InitFlags
	// MaxStackDepth is answered with InitPassthrough: how many stacked file
	// systems a backing file may sit on (default 1; the kernel accepts 1 or
	// 2 and silently refuses passthrough otherwise, so more is clamped to 2).
	MaxStackDepth uint32
	// MaxMinor caps the protocol minor answered (default abi.KernelMinorVersion).
	MaxMinor uint32
	// MaxInflight bounds requests being handled at once; readers stop
	// reading beyond it, so the kernel queues (default 1024). INTERRUPT,
	// FORGET and NOTIFY_REPLY never wait for a slot.
	MaxInflight int

	// Cuse, when set, makes the server expect CUSE_INIT instead of INIT
	// and lets it fill the reply (see CuseInit).
	Cuse CuseInit
	// Resume serves a connection whose INIT an earlier process answered:
	// no INIT is awaited, these parameters are used, and the kernel is asked
	// to resend requests that were read but never answered.
	Resume *Negotiated
	// Clones are cloned descriptors of the connection that an earlier
	// process read (handed back by systemd's fd store with Resume): they are
	// used as readers instead of new clones, so that nothing the kernel
	// queued on them is lost. Serve closes them when it returns.
	Clones []*Conn
	// ShutdownGrace is how long Serve waits for in-flight requests after ctx
	// is cancelled before cancelling their contexts (default 5 s).
	ShutdownGrace time.Duration
	// HandoverGrace is how long a stop after Handover waits for requests in
	// flight before it leaves those still waiting to the successor
	// (default 100 ms).
	HandoverGrace time.Duration
}

// CuseInit answers CUSE_INIT: given the kernel's request it returns the
// flags, limits and device numbers of the reply and the device info
// ("DEVNAME=name" and friends, NUL-separated). The server fills in the
// protocol version.
type CuseInit func(in *abi.CuseInitIn) (out abi.CuseInitOut, devInfo []byte, err error)

// Negotiated is the result of the INIT handshake.
type Negotiated struct {
	Major        uint32        `json:"major"`
	Minor        uint32        `json:"minor"`
	KernelMinor  uint32        `json:"kernel_minor"`
	KernelFlags  abi.InitFlags `json:"kernel_flags"` // offered by the kernel
	Flags        abi.InitFlags `json:"flags"`        // granted: in the reply and offered
	MaxReadahead uint32        `json:"max_readahead"`
	MaxWrite     uint32        `json:"max_write"`
	MaxRead      uint32        `json:"max_read,omitempty"` // CUSE only
	MaxPages     uint16        `json:"max_pages"`
	TimeGran     uint32        `json:"time_gran"`
	MaxStack     uint32        `json:"max_stack_depth"`
	Cuse         bool          `json:"cuse,omitempty"`
	CuseFlags    uint32        `json:"cuse_flags,omitempty"`
}

// CanResend reports whether the connection has FUSE_NOTIFY_RESEND (protocol
// 7.40, Linux 6.9): whether a successor can have the kernel send again the
// requests a process read and did not answer.
func (n *Negotiated) CanResend() bool {
	return n != nil && n.Minor >= abi.NotifyResend.MinMinor()
}

// canResend is CanResend of the negotiated parameters.
func (s *Server) canResend() bool { return s.neg.Load().CanResend() }

// Server serves one FUSE or CUSE connection.
type Server struct {
	fs   FileSystem
	conn *Conn
	opts Options
	log  logrus.FieldLogger

	epoch   time.Time // of clock
	neg     atomic.Pointer[Negotiated]
	ready   chan struct{} // closed once INIT is answered
	bufSize int
	pool    bufPool
	stats   stats
	active  atomic.Int64 // requests holding a MaxInflight slot

	mu        sync.Mutex
	inflight  map[uint64]*request    // guarded by mu; handed-off requests by unique (the rest are in readSlot.cur)
	retrieves map[uint64]chan []byte // guarded by mu; by notify unique
	conns     []*Conn                // guarded by mu; clones, closed when Serve returns
	readers   []*readSlot            // guarded by mu
	slotFree  chan struct{}          // guarded by mu; closed when a MaxInflight slot frees, if someone waits

	nextNotify  atomic.Uint64
	served      atomic.Bool
	initialised atomic.Bool // FileSystem.Init succeeded: Destroy is owed
	destroyed   atomic.Bool // FileSystem.Destroy was called
	handover    atomic.Bool // the next stop hands the connection to a successor
	wedge       atomic.Bool // test hook: readers stop making progress
	shareFD     bool        // test hook: readers share the one descriptor (no clones)
}

// NewServer returns a Server for fs on conn. conn stays owned by the caller.
func NewServer(conn *Conn, fs FileSystem, opts Options) *Server {
	if opts.Logger == nil {
		l := logrus.New()
		l.Out = discard{}
		opts.Logger = l
	}
	if opts.Readers <= 0 {
		opts.Readers = min(max(runtime.GOMAXPROCS(0)/4, 1), 4)
	}
	if opts.MaxWrite == 0 {
		opts.MaxWrite = 1 << 20
	}
	opts.MaxWrite = max(opts.MaxWrite, pageSize)
	opts.MaxWrite = min(opts.MaxWrite, maxMaxWrite)
	opts.MaxWrite = (opts.MaxWrite + pageSize - 1) &^ (pageSize - 1)
	if opts.Flags == 0 {
		opts.Flags = DefaultFlags
	}
	if opts.TimeGran == 0 {
		opts.TimeGran = 1
	}
	if opts.MaxStackDepth == 0 {
		opts.MaxStackDepth = 1
	}
	opts.MaxStackDepth = min(opts.MaxStackDepth, maxStackDepth)
	if opts.MaxMinor == 0 || opts.MaxMinor > abi.KernelMinorVersion {
		opts.MaxMinor = abi.KernelMinorVersion
	}
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = 1024
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 5 * time.Second
	}
	if opts.HandoverGrace <= 0 {
		opts.HandoverGrace = 100 * time.Millisecond
	}
	return &Server{
		epoch:     time.Now().Add(-time.Second), // clock() is never 0
		fs:        fs,
		conn:      conn,
		opts:      opts,
		log:       opts.Logger,
		ready:     make(chan struct{}),
		bufSize:   int(opts.MaxWrite) + 4096,
		inflight:  make(map[uint64]*request),
		retrieves: make(map[uint64]chan []byte),
	}
}

const (
	pageSize = 4096
	// maxMaxWrite keeps max_pages within its 16-bit field.
	maxMaxWrite = 0xffff * pageSize
	// maxStackDepth is the kernel's FILESYSTEM_MAX_STACK_DEPTH.
	maxStackDepth = 2
	// defaultMaxPages is what the kernel uses without InitMaxPages
	// (FUSE_DEFAULT_MAX_PAGES_PER_REQ).
	defaultMaxPages = 32
)

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// clock is the server's monotonic clock: cheaper than time.Now, which also
// reads the wall clock.
func (s *Server) clock() time.Duration { return time.Since(s.epoch) }

// Conn returns the connection the server was made for.
func (s *Server) Conn() *Conn { return s.conn }

// Negotiated returns the INIT result, or nil before INIT was answered.
func (s *Server) Negotiated() *Negotiated { return s.neg.Load() }

// Ready is closed once the INIT handshake has been answered (or, with
// Options.Resume, once serving started).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Stats returns the per-opcode counters.
func (s *Server) Stats() []OpStats { return s.stats.snapshot() }

// Inflight returns the number of requests read and not yet answered
// (handled, or waiting for a MaxInflight slot).
func (s *Server) Inflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.inflight)
	for _, sl := range s.readers {
		if sl.cur.Load() != nil {
			n++
		}
	}
	return n
}

// Conns returns every descriptor the server reads: the connection, then its
// clones (known once Ready is closed). A restart keeps them all alive (in
// systemd's fd store): a request read from a clone whose last descriptor
// is closed is failed by the kernel.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Conn{s.conn}, s.conns...)
}

// Handover makes the stop that follows (Serve's ctx cancelled) hand the
// connection to a successor process instead of ending it: requests in
// flight get HandoverGrace to finish and be answered; those still waiting
// then (a read of a device with no data, a lock wait) have their contexts
// cancelled and are left unanswered, so that the kernel sends them again
// to the successor (FUSE_NOTIFY_RESEND; on a connection without it, which
// could never have them answered, they get EINTR); and FileSystem.Destroy
// is not called, since the successor goes on with the file system's state.
func (s *Server) Handover() { s.handover.Store(true) }

// Wedge makes every reader stop serving after its current message, for
// tests of watchdogs; Check then reports the readers as stuck.
func (s *Server) Wedge() { s.wedge.Store(true) }

// Check reports an error when a reader loop has been busy outside its read
// for longer than limit: the serving loop is not making progress.
func (s *Server) Check(limit time.Duration) error {
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.readers {
		if t := time.Duration(r.busySince.Load()); t != 0 && now-t > limit {
			return fmt.Errorf("reader %d stuck for %v", i, (now - t).Round(time.Millisecond))
		}
	}
	return nil
}

// Serve answers INIT (unless resuming), then reads and dispatches requests
// until the file system is unmounted (it returns nil) or ctx is cancelled
// (it stops reading, waits up to ShutdownGrace for requests in flight, and
// returns nil, leaving the connection open so another process can go on
// serving it). Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("fusedev: Serve called twice")
	}
	defer func() {
		if !s.handover.Load() {
			s.destroy()
		}
	}()
	if s.opts.Resume != nil {
		n := *s.opts.Resume
		s.neg.Store(&n)
		if err := s.initFS(ctx); err != nil {
			return err
		}
	} else if err := s.handshake(ctx); err != nil {
		return err
	}

	conns := []*Conn{s.conn}
	conns = append(conns, s.opts.Clones...)
	if !s.Negotiated().Cuse && !s.shareFD {
		for i := len(conns); i < s.opts.Readers; i++ {
			c, err := s.conn.Clone()
			if err != nil {
				s.log.WithError(err).Debug("cannot clone /dev/fuse; readers share one fd")
				break
			}
			conns = append(conns, c)
		}
	}
	s.mu.Lock()
	s.conns = conns[1:]
	s.mu.Unlock()

	if s.opts.Resume != nil {
		// Before any reader starts: the kernel puts back in its queue every
		// request read and not answered on this connection, which would
		// include those this process had begun, and they would be done
		// twice (their first replies then find them gone: ENOENT).
		switch err := s.NotifyResend(); {
		case errors.Is(err, syscall.ENOSYS):
			s.log.Debug("fuse: the protocol has no FUSE_NOTIFY_RESEND (7.40); requests read by the predecessor are not resent")
		case err != nil:
			s.log.WithError(err).Warn("asking the kernel to resend pending requests failed")
		}
	}

	lc := &loopCtl{stop: make(chan struct{}), errs: make(chan error, 1)}
	var slots []*readSlot
	for i := 0; i < max(s.opts.Readers, len(conns)); i++ {
		sl := &readSlot{s: s, c: conns[i%len(conns)], lc: lc}
		sl.timer = time.AfterFunc(time.Hour, sl.expired)
		sl.timer.Stop()
		slots = append(slots, sl)
		s.mu.Lock()
		s.readers = append(s.readers, sl)
		s.mu.Unlock()
		s.startLoop(sl)
	}
	defer func() {
		for _, sl := range slots {
			sl.timer.Stop()
		}
	}()
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}

	// Wait for a reader to meet the end of the connection, or for ctx.
	var result error
	unmounted := false
	select {
	case err := <-lc.errs:
		if !errors.Is(err, ErrClosed) {
			result = err
		}
		unmounted = true
	case <-ctx.Done():
	}
	lc.stopped.Store(true)
	close(lc.stop)
	for _, c := range conns {
		c.SetReadDeadline(time.Now())
	}
	// Readers leave at once; what remains are requests being handled.
	done := make(chan struct{})
	go func() { lc.wg.Wait(); close(done) }()
	handover := s.handover.Load() && !unmounted
	if unmounted {
		s.handover.Store(false)
		s.cancelAll(false) // nobody can read their replies
	}
	grace := s.opts.ShutdownGrace
	if handover {
		grace = s.opts.HandoverGrace
	}
	select {
	case <-done:
	case <-time.After(grace):
		// Graceful stop: requests in flight had their grace; cancel them.
		// On a handover, those that were waiting end unanswered.
		s.cancelAll(handover)
		if !handover {
			<-done
			break
		}
		select {
		case <-done:
		case <-time.After(s.opts.ShutdownGrace):
			s.log.Warn("fuse: requests still running at the handover; the successor gets them again")
		}
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Time{})
	}

	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.readers = nil
	s.mu.Unlock()
	return result
}

// initFS calls FileSystem.Init and records that Destroy is owed.
func (s *Server) initFS(ctx context.Context) error {
	if err := s.fs.Init(ctx, s); err != nil {
		return fmt.Errorf("file system init: %w", err)
	}
	s.initialised.Store(true)
	return nil
}

// destroy calls FileSystem.Destroy once, if Init succeeded: on FUSE_DESTROY
// or when Serve returns, whichever comes first.
func (s *Server) destroy() {
	if s.initialised.Load() && s.destroyed.CompareAndSwap(false, true) {
		s.fs.Destroy()
	}
}

// cancelAll cancels every request in flight; handover marks them to be
// left unanswered if they end because of it.
func (s *Server) cancelAll(handover bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.inflight {
		r.ctx.cancelFor(handover)
	}
	for _, sl := range s.readers {
		if r := sl.cur.Load(); r != nil {
			r.ctx.cancelFor(handover)
		}
	}
}

// handoffDelay is how long a loop goroutine handles a request itself
// before it hands its read duty to a new goroutine. Requests that finish
// sooner (most of them) cost no goroutine and no thread wake-up; slow or
// blocking ones (SETLKW, POLL, a CUSE read waiting for data) still let the
// descriptor be read after about this long (timers wake at millisecond
// granularity when the other threads are idle, so about 1 ms in practice).
const handoffDelay = 100 * time.Microsecond

// readSlot is the duty of reading one descriptor. Exactly one goroutine
// holds it at a time (see loop).
//
// The hand-off timer is armed when a request starts being served and not
// stopped when it ends: when it fires it hands off only if the request
// being served then has run for handoffDelay, re-arms itself while requests
// keep coming, and goes quiet when the reader is idle. A steady stream of
// quick requests so costs a timer run per millisecond or so, not a timer
// reset and stop per request.
type readSlot struct {
	s  *Server
	c  *Conn
	lc *loopCtl

	busySince atomic.Int64            // clock() when the reader left Read; 0 while reading (Check)
	cur       atomic.Pointer[request] // the request its goroutine handles, until handed off
	owner     atomic.Pointer[loopG]   // the goroutine holding the read duty
	state     atomic.Uint64           // seq<<1 of the request served inline, |1 once handed off; 0: none
	spare     atomic.Pointer[request] // a request object for the next goroutine, left by one handed off
	since     atomic.Int64            // clock() when that request was read
	armed     atomic.Bool             // timer is pending
	timer     *time.Timer
	seq       uint64 // owner only
}

// loopG is one loop goroutine's own state.
type loopG struct {
	handed chan struct{} // closed once its read duty went to a new goroutine
	rd     connReader
	bp     *[]byte  // read buffer
	spare  *request // a request object to reuse
}

// loopCtl is shared by the loop goroutines of one Serve.
type loopCtl struct {
	stop    chan struct{}  // closed when Serve stops reading
	stopped atomic.Bool    // set just before stop is closed
	errs    chan error     // the first read error: the connection is gone
	wg      sync.WaitGroup // every loop goroutine
}

func (s *Server) startLoop(sl *readSlot) {
	sl.lc.wg.Add(1)
	go s.loop(sl, nil)
}

// loop holds the read duty of sl: it reads a message and handles it on its
// own goroutine. If handling takes longer than handoffDelay, the slot's
// timer passes the read duty to a new loop goroutine and this one ends
// with its request.
func (s *Server) loop(sl *readSlot, bp *[]byte) {
	lc := sl.lc
	defer lc.wg.Done()
	g := &loopG{handed: make(chan struct{}), bp: bp, spare: sl.spare.Swap(nil)}
	g.rd.init(sl.c)
	sl.owner.Store(g)
	defer func() {
		s.pool.put(g.bp)
		if g.spare != nil {
			g.spare.drop()
		}
	}()
	for {
		if lc.stopped.Load() {
			return
		}
		if g.bp == nil {
			g.bp = s.pool.get(s.bufSize)
		}
		sl.busySince.Store(0)
		n, err := g.rd.read(*g.bp)
		now := s.clock()
		sl.busySince.Store(int64(now))
		if err != nil {
			if lc.stopped.Load() {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a deadline from an earlier stop; keep serving
			}
			select {
			case lc.errs <- err:
			default:
			}
			return
		}
		for s.wedge.Load() {
			select {
			case <-lc.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		if !s.handle(sl, g, n, now) {
			return // a new goroutine reads sl now
		}
	}
}

// handle dispatches and serves the message of n bytes in g's buffer, read
// at now. It reports false when the request was handed off: g's goroutine
// has served it and must end, as another one reads sl now.
func (s *Server) handle(sl *readSlot, g *loopG, n int, now time.Duration) bool {
	r := g.spare
	if r == nil {
		r = s.newRequest()
	}
	g.spare = nil
	var ok bool
	ok, g.bp = s.dispatch(sl, r, g.bp, n, now)
	if !ok {
		g.spare = r
		return true
	}
	if !sl.serveInline(r, now) {
		<-g.handed
		s.mu.Lock()
		delete(s.inflight, r.hdr.Unique)
		s.mu.Unlock()
		// Leave the object, with its buffers, to the slot's next goroutine:
		// a new goroutine that had to allocate them could take long enough
		// on its first request to be handed off in turn.
		if r.big != nil {
			s.pool.put(r.big)
			r.big = nil
		}
		if !sl.spare.CompareAndSwap(nil, r) {
			r.drop()
		}
		return false
	}
	sl.cur.Store(nil)
	if r.big != nil { // the request took the read buffer: take it back
		s.pool.put(g.bp)
		g.bp, r.big = r.big, nil
	}
	g.spare = r
	return true
}

// serveInline serves r, read at start, on this goroutine with the hand-off
// timer armed. It reports false when the timer handed the read duty to
// another goroutine meanwhile.
func (sl *readSlot) serveInline(r *request, start time.Duration) bool {
	sl.seq++
	st := sl.seq << 1
	sl.since.Store(int64(start))
	sl.state.Store(st)
	if !sl.armed.Load() && sl.armed.CompareAndSwap(false, true) {
		sl.timer.Reset(handoffDelay)
	}
	r.serve()
	return sl.state.CompareAndSwap(st, 0)
}

// expired runs when the slot's hand-off timer fires (see readSlot).
func (sl *readSlot) expired() {
	sl.armed.Store(false) // before looking: a request starting now re-arms
	st := sl.state.Load()
	if st == 0 || st&1 != 0 {
		return // idle
	}
	age := sl.s.clock() - time.Duration(sl.since.Load())
	if age < handoffDelay || !sl.state.CompareAndSwap(st, st|1) {
		// A young request, or the next one already: look again later.
		if sl.state.Load() != 0 && sl.armed.CompareAndSwap(false, true) {
			sl.timer.Reset(max(handoffDelay-age, time.Microsecond))
		}
		return
	}
	// The request has run too long: its goroutine keeps it, a new one reads.
	g := sl.owner.Load()
	if r := sl.cur.Load(); r != nil {
		// Into the map first, so an INTERRUPT finds it in one place or the other.
		s := sl.s
		s.mu.Lock()
		s.inflight[r.hdr.Unique] = r
		s.mu.Unlock()
		sl.cur.Store(nil)
	}
	if !sl.lc.stopped.Load() {
		// The new goroutine takes g's read buffer: g's request does not
		// use it (a large one took its own), g only ends after serving.
		sl.lc.wg.Add(1) // counted while g's goroutine still is
		go sl.s.loop(sl, g.bp)
		g.bp = nil
	}
	close(g.handed)
}

// dispatch validates one message (n bytes in *bp, read at now) and answers
// what needs no handler (errors, INTERRUPT, FORGET, NOTIFY_REPLY).
// Otherwise it fills r with the request, registers it as sl's current one
// and takes a MaxInflight slot; ok says r is to be served. It returns the
// buffer for the next read (nil when the request took it).
func (s *Server) dispatch(sl *readSlot, r *request, bp *[]byte, n int, now time.Duration) (ok bool, next *[]byte) {
	c := sl.c
	msg := (*bp)[:n]
	var h abi.InHeader
	if err := abi.Decode(msg, &h); err != nil {
		s.log.WithField("bytes", n).Error("fuse: dropping message shorter than a request header")
		if n >= 16 {
			// Opcode and unique are readable: answer so the caller is not
			// left hanging (unless the opcode gets no answer).
			op := abi.Opcode(le32(msg[4:]))
			s.replyMalformed(c, op, le64(msg[8:]))
		}
		return false, bp
	}
	if int(h.Len) != n {
		s.log.WithFields(logrus.Fields{"op": h.Opcode, "len": h.Len, "read": n}).Error("fuse: request length disagrees with bytes read")
		s.replyMalformed(c, h.Opcode, h.Unique)
		return false, bp
	}
	payload := msg[abi.SizeInHeader:]
	ext := int(h.TotalExtlen) * 8
	if ext > len(payload) {
		s.log.WithFields(logrus.Fields{"op": h.Opcode, "extlen": ext}).Error("fuse: extension longer than request")
		s.replyMalformed(c, h.Opcode, h.Unique)
		return false, bp
	}

	switch h.Opcode {
	case abi.OpInterrupt:
		s.interrupt(c, &h, payload)
		return false, bp
	case abi.OpForget, abi.OpBatchForget:
		s.forget(&h, payload)
		s.stats.record(h.Opcode, s.clock()-now, false)
		return false, bp
	case abi.OpNotifyReply:
		s.notifyReply(&h, payload)
		return false, bp
	}
	if h.Unique == 0 {
		// A reply with unique 0 would be taken for a notification.
		s.log.WithField("op", h.Opcode).Error("fuse: dropping request with unique 0")
		return false, bp
	}

	r.reset(c, &h, now)
	var body []byte
	if n <= smallRequest {
		// Copy small requests so a long-blocked handler holds little memory
		// and the big buffer serves the next read.
		body = r.small[:copy(r.small[:n], msg)][abi.SizeInHeader:]
	} else {
		r.big, bp = bp, nil
		body = (*r.big)[abi.SizeInHeader:n]
	}
	r.in = body[:len(body)-ext]
	r.ext = body[len(body)-ext:]

	// Register before waiting for a slot, so an INTERRUPT that comes
	// meanwhile finds the request (instead of bouncing with EAGAIN until a
	// slot frees) and the handler starts with its context cancelled.
	sl.cur.Store(r)
	if !s.acquire(sl.lc.stop) {
		sl.cur.Store(nil)
		if !s.handover.Load() || !s.canResend() {
			s.replyError(c, h.Unique, syscall.EINTR) // else the successor gets it again
		}
		if r.big != nil {
			bp, r.big = r.big, nil
		}
		return false, bp
	}
	return true, bp
}

// acquire takes a MaxInflight slot, waiting while none is free (the kernel
// keeps requests queued meanwhile); false when stop closed first.
func (s *Server) acquire(stop <-chan struct{}) bool {
	for {
		n := s.active.Load()
		if n < int64(s.opts.MaxInflight) {
			if s.active.CompareAndSwap(n, n+1) {
				return true
			}
			continue
		}
		s.mu.Lock()
		if s.active.Load() < int64(s.opts.MaxInflight) {
			s.mu.Unlock()
			continue
		}
		if s.slotFree == nil {
			s.slotFree = make(chan struct{})
		}
		ch := s.slotFree
		s.mu.Unlock()
		select {
		case <-ch:
		case <-stop:
			return false
		}
	}
}

// release frees a MaxInflight slot.
func (s *Server) release() {
	if s.active.Add(-1) != int64(s.opts.MaxInflight)-1 {
		return // nobody can be waiting: it was not full
	}
	s.mu.Lock()
	if s.slotFree != nil {
		close(s.slotFree)
		s.slotFree = nil
	}
	s.mu.Unlock()
}

// replyMalformed answers a request that could not be decoded with EIO,
// unless its opcode gets no reply or its unique is 0 (a reply with unique 0
// would be read as a notification).
func (s *Server) replyMalformed(c *Conn, op abi.Opcode, unique uint64) {
	if op.NoReply() || op == abi.OpInterrupt || unique == 0 {
		return
	}
	s.replyError(c, unique, syscall.EIO)
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

// smallRequest is the size up to which a request is copied out of the read
// buffer (every request but large WRITE, SETXATTR and IOCTL payloads).
const smallRequest = 4096

func (s *Server) interrupt(c *Conn, h *abi.InHeader, payload []byte) {
	var in abi.InterruptIn
	if err := abi.Decode(payload, &in); err != nil {
		s.log.WithError(err).Error("fuse: malformed INTERRUPT dropped")
		return
	}
	s.mu.Lock()
	r := s.inflight[in.Unique]
	readers := s.readers
	s.mu.Unlock()
	if r != nil && r.ctx.cancelIf(in.Unique) {
		return
	}
	for _, sl := range readers {
		// Request objects are reused: cancelIf checks that r still is
		// the request asked about.
		if r := sl.cur.Load(); r != nil && r.ctx.cancelIf(in.Unique) {
			return
		}
	}
	// Not read yet on another reader, or already answered: ask the kernel
	// to queue the interrupt again (it drops it if the request is done).
	s.replyError(c, h.Unique, syscall.EAGAIN)
}

func (s *Server) forget(h *abi.InHeader, payload []byte) {
	if h.Opcode == abi.OpForget {
		var in abi.ForgetIn
		if err := abi.Decode(payload, &in); err != nil {
			s.log.WithError(err).Error("fuse: malformed FORGET dropped")
			return
		}
		s.fs.Forget(h.NodeID, in.Nlookup)
		return
	}
	var in abi.BatchForgetIn
	if err := abi.Decode(payload, &in); err != nil {
		s.log.WithError(err).Error("fuse: malformed BATCH_FORGET dropped")
		return
	}
	items := payload[abi.SizeBatchForgetIn:]
	if uint64(in.Count)*abi.SizeForgetOne > uint64(len(items)) {
		s.log.WithFields(logrus.Fields{"count": in.Count, "bytes": len(items)}).Error("fuse: BATCH_FORGET count exceeds message; forgetting what is there")
		in.Count = uint32(len(items) / abi.SizeForgetOne)
	}
	for i := 0; i < int(in.Count); i++ {
		var one abi.ForgetOne
		abi.Decode(items[i*abi.SizeForgetOne:], &one)
		s.fs.Forget(one.NodeID, one.Nlookup)
	}
}

func (s *Server) notifyReply(h *abi.InHeader, payload []byte) {
	var in abi.NotifyRetrieveIn
	if err := abi.Decode(payload, &in); err != nil {
		s.log.WithError(err).Error("fuse: malformed NOTIFY_REPLY dropped")
		return
	}
	data := payload[abi.SizeNotifyRetrieveIn:]
	if int(in.Size) < len(data) {
		data = data[:in.Size]
	}
	s.mu.Lock()
	ch := s.retrieves[h.Unique]
	delete(s.retrieves, h.Unique)
	s.mu.Unlock()
	if ch == nil {
		s.log.WithField("unique", h.Unique).Debug("fuse: NOTIFY_REPLY for no pending retrieve")
		return
	}
	ch <- append([]byte(nil), data...)
}

// replyError answers unique with an errno and no payload.
func (s *Server) replyError(c *Conn, unique uint64, errno syscall.Errno) {
	out := abi.OutHeader{Len: abi.SizeOutHeader, Error: -int32(errno), Unique: unique}
	if err := c.Write([][]byte{abi.Bytes(&out)}); err != nil && err != syscall.ENOENT {
		s.log.WithError(err).WithField("unique", unique).Debug("fuse: writing error reply failed")
	}
}
