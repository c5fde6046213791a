package fusetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// DefaultTimeout bounds every wait of a Kernel unless SetTimeout changes it.
const DefaultTimeout = 5 * time.Second

// DefaultCaller is the caller of requests sent without one (see SetCaller).
func DefaultCaller() fusedev.Caller { return fusedev.Caller{UID: 1000, GID: 1000, PID: 4242} }

// Kernel is the fake kernel end of one connection.
type Kernel struct {
	t       testing.TB
	srv     *fusedev.Server
	conn    *fusedev.Conn
	end     *kernelEnd
	cancel  context.CancelFunc
	timeout atomic.Int64 // time.Duration

	serveDone chan struct{}
	serveErr  error // set before serveDone is closed
	readDone  chan struct{}
	bg        sync.WaitGroup // interrupt resends
	logs      *testLog

	nextUnique atomic.Uint64
	messages   atomic.Uint64 // messages read from the server
	notes      chan Notification

	mu          sync.Mutex
	reqs        map[uint64]*pending     // guarded by mu; by unique
	intr        map[uint64]*interrupted // guarded by mu; by target unique
	noInterrupt bool                    // guarded by mu; the server answered ENOSYS to an INTERRUPT
	caller      fusedev.Caller          // guarded by mu
	violations  []string                // guarded by mu
	closed      bool                    // guarded by mu; kernel end closed
}

// pending is a request sent to the server.
type pending struct {
	op      abi.Opcode
	noReply bool       // FORGET, BATCH_FORGET, NOTIFY_REPLY
	replies int        // how many replies arrived
	ch      chan Reply // the first reply
}

// interrupted tracks the INTERRUPT of one request.
type interrupted struct {
	sent    int // INTERRUPT messages written, resends included
	answers map[syscall.Errno]int
}

// Reply is the server's answer to one request.
type Reply struct {
	Unique  uint64
	Op      abi.Opcode    // of the request, when the kernel sent it (0 for raw sends)
	Errno   syscall.Errno // 0 on success
	Payload []byte        // after the out header
	Raw     []byte        // the whole message
}

// Notification is a message with unique 0.
type Notification struct {
	Code    abi.NotifyCode
	Payload []byte // after the out header
	Raw     []byte
}

// recvMax is the largest message the fake kernel reads: a full READ reply
// plus slack for headers and ioctl iovecs.
func recvMax(opts *fusedev.Options) int {
	return int(max(opts.MaxWrite, 1<<20)) + 64<<10
}

// Start serves fs through a fake kernel. Serve runs in a goroutine with the
// given options (Logger defaults to the test log); no INIT is sent until the
// test calls Init or CuseInit (or Options.Resume skips it). Cleanup closes
// the kernel end, requires Serve to return, and reports protocol violations.
func Start(t testing.TB, fs fusedev.FileSystem, opts fusedev.Options) *Kernel {
	t.Helper()
	kfd, sfd, err := socketpair(recvMax(&opts))
	if err != nil {
		t.Fatalf("fusetest: %v", err)
	}
	end, err := newKernelEnd(kfd)
	if err != nil {
		t.Fatalf("fusetest: %v", err)
	}
	conn, err := fusedev.NewConnFD(sfd, "fusetest-server")
	if err != nil {
		end.close()
		t.Fatalf("fusetest: %v", err)
	}
	k := &Kernel{
		t:         t,
		conn:      conn,
		end:       end,
		serveDone: make(chan struct{}),
		readDone:  make(chan struct{}),
		notes:     make(chan Notification, 4096),
		reqs:      make(map[uint64]*pending),
		intr:      make(map[uint64]*interrupted),
		caller:    DefaultCaller(),
	}
	k.timeout.Store(int64(DefaultTimeout))
	k.nextUnique.Store(0)
	if opts.Logger == nil {
		k.logs = &testLog{t: t}
		l := logrus.New()
		l.Out = k.logs
		l.Level = logrus.DebugLevel
		opts.Logger = l
	}
	k.srv = fusedev.NewServer(conn, k.wrap(fs, &opts), opts)
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	go func() {
		defer close(k.serveDone)
		k.serveErr = k.srv.Serve(ctx)
	}()
	go k.readLoop(recvMax(&opts))
	t.Cleanup(k.cleanup)
	return k
}

// wrap puts the file system and the CUSE_INIT hook behind syncFS.
func (k *Kernel) wrap(fs fusedev.FileSystem, opts *fusedev.Options) fusedev.FileSystem {
	if cuse := opts.Cuse; cuse != nil {
		opts.Cuse = func(in *abi.CuseInitIn) (abi.CuseInitOut, []byte, error) {
			k.mu.Lock()
			k.mu.Unlock() // see syncFS
			defer func() { k.mu.Lock(); k.mu.Unlock() }()
			return cuse(in)
		}
	}
	return syncFS{fs: fs, mu: &k.mu}
}

func (k *Kernel) cleanup() {
	t := k.t
	k.Close()
	select {
	case <-k.serveDone:
	case <-time.After(k.Timeout()):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("fusetest: Serve did not return within %v of closing the kernel end\n%s", k.Timeout(), buf)
	}
	k.cancel()
	k.conn.Close()
	<-k.readDone
	k.bg.Wait()
	for _, v := range k.Violations() {
		t.Errorf("fusetest: protocol violation: %s", v)
	}
	if k.logs != nil {
		k.logs.stop()
	}
}

// Server returns the server under test.
func (k *Kernel) Server() *fusedev.Server { return k.srv }

// Conn returns the server's end of the connection.
func (k *Kernel) Conn() *fusedev.Conn { return k.conn }

// SetTimeout changes how long waits last. Safe from any goroutine.
func (k *Kernel) SetTimeout(d time.Duration) { k.timeout.Store(int64(d)) }

// Timeout returns how long waits last.
func (k *Kernel) Timeout() time.Duration { return time.Duration(k.timeout.Load()) }

// SetCaller sets the uid, gid and pid put in the header of later requests.
func (k *Kernel) SetCaller(c fusedev.Caller) {
	k.mu.Lock()
	k.caller = c
	k.mu.Unlock()
}

// Cancel cancels the context Serve runs with: a graceful stop that leaves
// the connection open.
func (k *Kernel) Cancel() { k.cancel() }

// Close closes the kernel end, as an unmount would: Serve should return nil.
// It is idempotent.
func (k *Kernel) Close() {
	k.mu.Lock()
	closed := k.closed
	k.closed = true
	k.mu.Unlock()
	if !closed {
		k.end.close()
	}
}

// Restart serves the same connection with a new Server once the previous
// Serve has returned (after Cancel), as a restarted daemon would; typically
// opts.Resume is the previous server's Negotiated. It returns the new server.
func (k *Kernel) Restart(fs fusedev.FileSystem, opts fusedev.Options) *fusedev.Server {
	k.t.Helper()
	select {
	case <-k.serveDone:
	case <-time.After(k.Timeout()):
		k.t.Fatalf("fusetest: Restart: the previous Serve did not return within %v", k.Timeout())
	}
	if opts.Logger == nil && k.logs != nil {
		l := logrus.New()
		l.Out = k.logs
		l.Level = logrus.DebugLevel
		opts.Logger = l
	}
	k.srv = fusedev.NewServer(k.conn, k.wrap(fs, &opts), opts)
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	k.serveDone = make(chan struct{})
	srv, done := k.srv, k.serveDone
	go func() {
		defer close(done)
		k.serveErr = srv.Serve(ctx)
	}()
	return srv
}

// WaitServe waits up to the timeout for Serve to return and returns its
// result; ok is false if it has not returned.
func (k *Kernel) WaitServe() (err error, ok bool) {
	select {
	case <-k.serveDone:
		return k.serveErr, true
	case <-time.After(k.Timeout()):
		return nil, false
	}
}

// ServeErr waits for Serve to return and returns its result, failing the
// test if it does not return within the timeout.
func (k *Kernel) ServeErr() error {
	k.t.Helper()
	err, ok := k.WaitServe()
	if !ok {
		k.t.Fatalf("fusetest: Serve still running after %v", k.Timeout())
	}
	return err
}

// ServeDone is closed when Serve has returned.
func (k *Kernel) ServeDone() <-chan struct{} { return k.serveDone }

// Violations returns the protocol violations seen so far.
func (k *Kernel) Violations() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.violations...)
}

func (k *Kernel) violation(format string, args ...any) {
	k.mu.Lock()
	k.violations = append(k.violations, fmt.Sprintf(format, args...))
	k.mu.Unlock()
}

// Messages returns how many messages the server has written so far.
func (k *Kernel) Messages() uint64 { return k.messages.Load() }

// NextUnique allocates a request unique (even, as the kernel's are).
func (k *Kernel) NextUnique() uint64 { return k.nextUnique.Add(2) }

// Req describes a request to send.
type Req struct {
	Op     abi.Opcode
	Node   uint64
	Unique uint64          // 0: NextUnique
	Caller *fusedev.Caller // nil: the current caller (SetCaller)
	// Ext are request extensions (7.38), each an abi.ExtHeader and body;
	// they are padded to 8 bytes and counted in TotalExtlen.
	Ext  []byte
	Args [][]byte // the request's arguments, concatenated after the header
}

// Message encodes r without sending it and returns its unique.
func (k *Kernel) Message(r Req) (uint64, []byte) {
	if r.Unique == 0 {
		r.Unique = k.NextUnique()
	}
	c := r.Caller
	if c == nil {
		k.mu.Lock()
		cc := k.caller
		k.mu.Unlock()
		c = &cc
	}
	size := abi.SizeInHeader
	for _, a := range r.Args {
		size += len(a)
	}
	ext := abi.Align8(len(r.Ext))
	size += ext
	msg := make([]byte, abi.SizeInHeader, size)
	h := abi.InHeader{Len: uint32(size), Opcode: r.Op, Unique: r.Unique, NodeID: r.Node,
		UID: c.UID, GID: c.GID, PID: c.PID, TotalExtlen: uint16(ext / 8)}
	copy(msg, abi.Bytes(&h))
	for _, a := range r.Args {
		msg = append(msg, a...)
	}
	msg = append(msg, r.Ext...)
	msg = msg[:size] // padding of the extensions
	return r.Unique, msg
}

// SendReq sends a request and returns its unique.
func (k *Kernel) SendReq(r Req) uint64 {
	k.t.Helper()
	u, msg := k.Message(r)
	k.register(u, r.Op)
	if err := k.end.send(msg); err != nil {
		k.t.Fatalf("fusetest: sending %v: %v", r.Op, err)
	}
	return u
}

// Send sends a request with the given arguments and returns its unique.
func (k *Kernel) Send(op abi.Opcode, node uint64, args ...[]byte) uint64 {
	k.t.Helper()
	return k.SendReq(Req{Op: op, Node: node, Args: args})
}

// TrySend is Send for goroutines other than the test's: it returns errors
// instead of failing the test.
func (k *Kernel) TrySend(r Req) (uint64, error) {
	u, msg := k.Message(r)
	k.register(u, r.Op)
	return u, k.end.send(msg)
}

// Prepare registers r as sent, as the kernel does once a server reader has
// taken a request, and returns its unique and a function that writes it.
// It lets a test order messages as a kernel with several readers can, e.g.
// an INTERRUPT overtaking the request it is about.
func (k *Kernel) Prepare(r Req) (unique uint64, send func()) {
	u, msg := k.Message(r)
	k.register(u, r.Op)
	return u, func() {
		k.t.Helper()
		if err := k.end.send(msg); err != nil {
			k.t.Fatalf("fusetest: sending %v: %v", r.Op, err)
		}
	}
}

// SendRaw writes b as one message, unchecked. When b holds a unique (bytes
// 8..15) a reply to it is accepted once; when it also holds an opcode that
// gets no reply, a reply is a violation.
func (k *Kernel) SendRaw(b []byte) {
	k.t.Helper()
	if len(b) >= 16 {
		u := le64(b[8:])
		op := abi.Opcode(le32(b[4:]))
		k.register(u, op)
	}
	if err := k.end.send(b); err != nil {
		k.t.Fatalf("fusetest: sending raw message: %v", err)
	}
}

func (k *Kernel) register(u uint64, op abi.Opcode) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.reqs[u]; p != nil && p.replies == 0 {
		return // sent again before an answer (a resend, or a test reusing it)
	}
	k.reqs[u] = &pending{op: op, noReply: op.NoReply(), ch: make(chan Reply, 1)}
}

func (k *Kernel) pendingOf(u uint64) *pending {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reqs[u]
}

// WaitReply waits up to d for the reply to unique.
func (k *Kernel) WaitReply(unique uint64, d time.Duration) (Reply, error) {
	p := k.pendingOf(unique)
	if p == nil {
		return Reply{}, fmt.Errorf("fusetest: no request with unique %d was sent", unique)
	}
	select {
	case r := <-p.ch:
		p.ch <- r // keep it for later waits
		return r, nil
	case <-time.After(d):
		return Reply{}, fmt.Errorf("fusetest: no reply to %v (unique %d) within %v", p.op, unique, d)
	}
}

// Reply waits for the reply to unique and fails the test on timeout.
func (k *Kernel) Reply(unique uint64) Reply {
	k.t.Helper()
	r, err := k.WaitReply(unique, k.Timeout())
	if err != nil {
		k.t.Fatal(err)
	}
	return r
}

// Do sends a request and waits for its reply.
func (k *Kernel) Do(op abi.Opcode, node uint64, args ...[]byte) Reply {
	k.t.Helper()
	return k.Reply(k.Send(op, node, args...))
}

// Replies returns how many replies to unique arrived.
func (k *Kernel) Replies(unique uint64) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.reqs[unique]; p != nil {
		return p.replies
	}
	return 0
}

// ExpectNoReply fails the test if a reply to unique arrives within d (or
// has arrived already).
func (k *Kernel) ExpectNoReply(unique uint64, d time.Duration) {
	k.t.Helper()
	if r, err := k.WaitReply(unique, d); err == nil {
		k.t.Fatalf("fusetest: unexpected reply to unique %d: errno %v, %d bytes", unique, r.Errno, len(r.Payload))
	}
}

// ExpectQuiet fails the test if the server writes anything within d.
func (k *Kernel) ExpectQuiet(d time.Duration) {
	k.t.Helper()
	before := k.Messages()
	time.Sleep(d)
	if n := k.Messages() - before; n > 0 {
		k.t.Fatalf("fusetest: server wrote %d messages while it should have been quiet", n)
	}
}

// WaitNotification waits up to d for the next notification.
func (k *Kernel) WaitNotification(d time.Duration) (Notification, error) {
	select {
	case n := <-k.notes:
		return n, nil
	case <-time.After(d):
		return Notification{}, fmt.Errorf("fusetest: no notification within %v", d)
	}
}

// Notification waits for the next notification and fails the test on timeout.
func (k *Kernel) Notification() Notification {
	k.t.Helper()
	n, err := k.WaitNotification(k.Timeout())
	if err != nil {
		k.t.Fatal(err)
	}
	return n
}

// ExpectNotification waits for the next notification and requires its code.
func (k *Kernel) ExpectNotification(code abi.NotifyCode) Notification {
	k.t.Helper()
	n := k.Notification()
	if n.Code != code {
		k.t.Fatalf("fusetest: got notification %v, want %v", n.Code, code)
	}
	return n
}

// Interrupt sends INTERRUPT for the request target, as the kernel does when
// the caller gets a signal: unique target|1, argument target. If the server
// answers EAGAIN while target is unanswered, the INTERRUPT is sent again.
// After the server answered ENOSYS to an INTERRUPT, Interrupt does nothing,
// like a kernel with no_interrupt set.
func (k *Kernel) Interrupt(target uint64) {
	k.t.Helper()
	k.mu.Lock()
	if k.noInterrupt {
		k.mu.Unlock()
		return
	}
	st := k.intr[target]
	if st == nil {
		st = &interrupted{answers: map[syscall.Errno]int{}}
		k.intr[target] = st
	}
	st.sent++
	k.mu.Unlock()
	if err := k.sendInterrupt(target); err != nil {
		k.t.Fatalf("fusetest: sending INTERRUPT: %v", err)
	}
}

func (k *Kernel) sendInterrupt(target uint64) error {
	in := abi.InterruptIn{Unique: target}
	_, msg := k.Message(Req{Op: abi.OpInterrupt, Unique: target | abi.UniqueIntBit, Args: [][]byte{abi.Bytes(&in)}})
	return k.end.send(msg)
}

// Interrupts reports how many INTERRUPTs were sent for target (resends
// included) and how the server answered them, by errno.
func (k *Kernel) Interrupts(target uint64) (sent int, answers map[syscall.Errno]int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.intr[target]
	if st == nil {
		return 0, nil
	}
	answers = make(map[syscall.Errno]int, len(st.answers))
	for e, n := range st.answers {
		answers[e] = n
	}
	return st.sent, answers
}

// readLoop reads the server's messages until the kernel end is closed.
func (k *Kernel) readLoop(size int) {
	defer close(k.readDone)
	buf := make([]byte, size)
	for {
		n, truncated, err := k.end.recv(buf)
		if err != nil {
			k.mu.Lock()
			closed := k.closed
			k.mu.Unlock()
			if !closed && !errors.Is(err, errPeerClosed) {
				k.violation("reading from the server: %v", err)
			}
			return
		}
		k.messages.Add(1)
		if truncated {
			k.violation("message longer than the %d bytes a reader holds", len(buf))
			continue
		}
		k.route(append([]byte(nil), buf[:n]...))
	}
}

func (k *Kernel) route(msg []byte) {
	var h abi.OutHeader
	if err := abi.Decode(msg, &h); err != nil {
		k.violation("message of %d bytes, shorter than an out header", len(msg))
		return
	}
	if int(h.Len) != len(msg) {
		k.violation("out header says %d bytes, message has %d (unique %d)", h.Len, len(msg), h.Unique)
	}
	payload := msg[abi.SizeOutHeader:]
	switch {
	case h.Unique == 0:
		n := Notification{Code: abi.NotifyCode(h.Error), Payload: payload, Raw: msg}
		if n.Code <= 0 {
			k.violation("message with unique 0 and error %d: a reply to no request, or a notification with no code", h.Error)
			return
		}
		select {
		case k.notes <- n:
		default:
			k.violation("more than %d notifications unread", cap(k.notes))
		}
	case h.Unique&abi.UniqueIntBit != 0:
		k.interruptReply(h, len(payload))
	default:
		k.reply(h, payload, msg)
	}
}

func errnoOf(h abi.OutHeader) (syscall.Errno, bool) {
	if h.Error > 0 || h.Error <= -512 {
		return 0, false // the kernel refuses the write with EINVAL
	}
	return syscall.Errno(-h.Error), true
}

func (k *Kernel) reply(h abi.OutHeader, payload, msg []byte) {
	errno, ok := errnoOf(h)
	if !ok {
		k.violation("reply to unique %d has error %d: the kernel rejects it and the caller hangs", h.Unique, h.Error)
	}
	if errno != 0 && len(payload) > 0 {
		k.violation("error reply to unique %d carries %d bytes of payload", h.Unique, len(payload))
	}
	k.mu.Lock()
	p := k.reqs[h.Unique]
	if p == nil {
		k.mu.Unlock()
		k.violation("reply to unique %d, which was never sent", h.Unique)
		return
	}
	p.replies++
	n := p.replies
	k.mu.Unlock()
	switch {
	case p.noReply:
		k.violation("reply (errno %v) to %v unique %d, which gets none", errno, p.op, h.Unique)
	case n > 1:
		k.violation("reply #%d to %v unique %d", n, p.op, h.Unique)
		return
	}
	p.ch <- Reply{Unique: h.Unique, Op: p.op, Errno: errno, Payload: payload, Raw: msg}
}

// interruptReply acts as the kernel does on a reply to an INTERRUPT: EAGAIN
// queues the interrupt again while the request is unanswered, ENOSYS turns
// interrupts off.
func (k *Kernel) interruptReply(h abi.OutHeader, payloadLen int) {
	target := h.Unique &^ abi.UniqueIntBit
	errno, ok := errnoOf(h)
	if !ok || payloadLen != 0 {
		k.violation("reply to INTERRUPT of %d: error %d with %d payload bytes (the kernel wants a bare header)", target, h.Error, payloadLen)
	}
	k.mu.Lock()
	st := k.intr[target]
	if st == nil {
		st = &interrupted{answers: map[syscall.Errno]int{}}
		k.intr[target] = st
	}
	st.answers[errno]++
	p := k.reqs[target]
	resend := errno == syscall.EAGAIN && p != nil && p.replies == 0 && !k.closed
	if resend {
		st.sent++
		k.bg.Add(1)
	}
	if errno == syscall.ENOSYS {
		k.noInterrupt = true
	}
	k.mu.Unlock()
	if resend {
		go func() {
			defer k.bg.Done()
			time.Sleep(time.Millisecond) // the kernel queues it again; the server's next read gets it
			k.sendInterrupt(target)      // fails only once closed
		}()
	}
}

// testLog writes the server's log to the test log until the test ends.
type testLog struct {
	t    testing.TB
	mu   sync.Mutex
	done bool // guarded by mu
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Logf("server: %s", trimNL(p))
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && p[len(p)-1] == '\n' {
		p = p[:len(p)-1]
	}
	return p
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }
