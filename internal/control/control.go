// Package control is fusegate's control socket: a unix stream socket on
// which each line is a JSON request and each answer a JSON line. Read-only
// methods are open to anyone who can connect; methods that change state
// need root or membership of an admin group, checked with SO_PEERCRED.
//
// The server never trusts a request: lines are bounded, unknown methods and
// malformed JSON get an error answer, a slow client is cut off, and a
// handler that panics answers an error without taking the daemon down.
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// MaxLine bounds one request or answer line.
const MaxLine = 64 << 10

// Request is one call.
type Request struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Response answers one Request.
type Response struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Peer is the process at the other end of a connection.
type Peer struct {
	UID, GID uint32
	PID      int32
	Admin    bool // root or in the admin group
}

// Handler answers a method. The result is encoded as JSON.
type Handler func(ctx context.Context, p Peer, params json.RawMessage) (any, error)

// Method describes a method the server offers.
type Method struct {
	Handler Handler
	// Admin restricts the method to root and the admin group.
	Admin bool
}

// Options configure a Server. The zero value works.
type Options struct {
	Logger logrus.FieldLogger
	// AdminGID is the group whose members may call admin methods (besides
	// root); nil: root only.
	AdminGID *uint32
	// IdleTimeout cuts off a connection that sends nothing (default 30s).
	IdleTimeout time.Duration
}

// Server serves methods on listeners.
type Server struct {
	opts    Options
	log     logrus.FieldLogger
	methods map[string]Method // immutable after NewServer

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu
	wg    sync.WaitGroup
}

// NewServer returns a server offering methods.
func NewServer(methods map[string]Method, opts Options) *Server {
	if opts.Logger == nil {
		l := logrus.New()
		l.Out = discard{}
		opts.Logger = l
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Second
	}
	return &Server{opts: opts, log: opts.Logger, methods: methods, conns: map[net.Conn]struct{}{}}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Listen creates the socket at path (removing a stale one), with mode and,
// when gid is not nil, that group.
func Listen(path string, mode os.FileMode, gid *uint32) (net.Listener, error) {
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process is listening (is fusegate already running?)", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if gid != nil {
		if err := os.Chown(path, -1, int(*gid)); err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return "/"
}

// Serve accepts connections on l until ctx is cancelled or l fails. It
// closes l and every connection before returning.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer s.closeAll()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// peerOf reads the credentials of a unix socket's peer.
func (s *Server) peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix socket")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if cerr != nil {
		return Peer{}, cerr
	}
	p := Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
	p.Admin = p.UID == 0 || (s.opts.AdminGID != nil && inGroup(p, *s.opts.AdminGID))
	return p, nil
}

// inGroup reports whether the peer's primary or supplementary groups
// include gid (supplementary groups from /proc/PID/status).
func inGroup(p Peer, gid uint32) bool {
	if p.GID == gid {
		return true
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(int(p.PID)) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil && uint32(g) == gid {
					return true
				}
			}
		}
	}
	return false
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	peer, err := s.peerOf(c)
	if err != nil {
		s.log.WithError(err).Warn("control: cannot identify peer; closing")
		return
	}
	r := bufio.NewReaderSize(c, 4096)
	w := bufio.NewWriter(c)
	for {
		c.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
		line, err := readLine(r)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				s.write(c, w, Response{Error: fmt.Sprintf("request longer than %d bytes", MaxLine)})
			}
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		resp := s.call(ctx, peer, line)
		if !s.write(c, w, resp) {
			return
		}
	}
}

var errLineTooLong = errors.New("line too long")

func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxLine {
			return nil, errLineTooLong
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case len(line) == 0:
			return nil, err
		}
		return line, nil // a last line without newline
	}
}

func (s *Server) write(c net.Conn, w *bufio.Writer, resp Response) bool {
	data, err := json.Marshal(resp)
	if err != nil {
		data, _ = json.Marshal(Response{Error: "encoding the answer: " + err.Error()})
	}
	c.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout))
	w.Write(data)
	w.WriteByte('\n')
	return w.Flush() == nil
}

func (s *Server) call(ctx context.Context, peer Peer, line []byte) (resp Response) {
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Response{Error: "malformed request: " + err.Error() + ` (want {"method": "NAME"})`}
	}
	m, ok := s.methods[req.Method]
	if !ok {
		return Response{Error: fmt.Sprintf("unknown method %q (have %s)", req.Method, s.methodList())}
	}
	log := s.log.WithFields(logrus.Fields{"method": req.Method, "uid": peer.UID, "pid": peer.PID})
	if m.Admin && !peer.Admin {
		log.Warn("control: unauthorised call refused")
		return Response{Error: fmt.Sprintf("%s needs root or the admin group (you are uid %d)", req.Method, peer.UID)}
	}
	defer func() {
		if p := recover(); p != nil {
			log.Errorf("control: handler panicked: %v", p)
			resp = Response{Error: fmt.Sprintf("internal error in %s", req.Method)}
		}
	}()
	result, err := m.Handler(ctx, peer, req.Params)
	if err != nil {
		return Response{Error: err.Error()}
	}
	data, err := json.Marshal(result)
	if err != nil {
		return Response{Error: "encoding the result: " + err.Error()}
	}
	return Response{OK: true, Result: data}
}

func (s *Server) methodList() string {
	names := make([]string, 0, len(s.methods))
	for n := range s.methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Call connects to the socket at path, sends one request and returns the
// result, or the server's error.
func Call(ctx context.Context, path, method string, params any) (json.RawMessage, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w (is fusegate serve running?)", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req := Request{Method: method}
	if params != nil {
		if req.Params, err = json.Marshal(params); err != nil {
			return nil, err
		}
	}
	data, _ := json.Marshal(req)
	if _, err := c.Write(append(data, '\n')); err != nil {
		return nil, err
	}
	line, err := readLine(bufio.NewReader(c))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("malformed answer: %w", err)
	}
	if !resp.OK {
		return nil, errors.New(resp.Error)
	}
	return resp.Result, nil
}
