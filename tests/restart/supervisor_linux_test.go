package restart

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/tests/harness"
)

// supervisor does what systemd does for fusegate.service, as far as a
// restart is concerned: it listens on a notify socket, keeps the
// descriptors the daemon stores (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1; a
// descriptor already stored is not stored twice), and starts the daemon
// with them (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID).
type supervisor struct {
	t    *testing.T
	args []string
	sock string
	conn *net.UnixConn

	mu    sync.Mutex
	cond  *sync.Cond
	msgs  []string  // guarded by mu
	store []fdEntry // guarded by mu

	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	logs strings.Builder // every daemon's output
}

type fdEntry struct {
	name string
	fd   int
}

func newSupervisor(t *testing.T, dir string, args ...string) *supervisor {
	t.Helper()
	s := &supervisor{t: t, args: args, sock: filepath.Join(dir, "notify.sock")}
	s.cond = sync.NewCond(&s.mu)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s.conn = conn
	go s.receive()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon output:\n%s", s.allLogs())
		}
		s.kill()
		conn.Close()
		s.mu.Lock()
		for _, e := range s.store {
			unix.Close(e.fd)
		}
		s.store = nil
		s.mu.Unlock()
	})
	return s
}

func (s *supervisor) receive() {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*253))
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		var fds []int
		if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, c := range cmsgs {
				if r, err := unix.ParseUnixRights(&c); err == nil {
					fds = append(fds, r...)
				}
			}
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, msg)
		fields := map[string]string{}
		for _, line := range strings.Split(msg, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				fields[k] = v
			}
		}
		name := fields["FDNAME"]
		switch {
		case fields["FDSTORE"] == "1":
		next:
			for _, fd := range fds {
				unix.CloseOnExec(fd)
				for _, e := range s.store {
					if sameFile(e.fd, fd) {
						unix.Close(fd)
						continue next
					}
				}
				s.store = append(s.store, fdEntry{name, fd})
			}
		case fields["FDSTOREREMOVE"] == "1":
			kept := s.store[:0]
			for _, e := range s.store {
				if e.name == name {
					unix.Close(e.fd)
				} else {
					kept = append(kept, e)
				}
			}
			s.store = kept
			fallthrough
		default:
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// sameFile reports whether two descriptors of this process share an open
// file description (kcmp KCMP_FILE), as systemd checks.
func sameFile(a, b int) bool {
	pid := uintptr(os.Getpid())
	r, _, e := unix.Syscall6(unix.SYS_KCMP, pid, pid, 0, uintptr(a), uintptr(b), 0)
	return e == 0 && r == 0
}

// stored returns the names in the store, with how many descriptors each.
func (s *supervisor) stored() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int{}
	for _, e := range s.store {
		m[e.name]++
	}
	return m
}

// start starts the daemon with the stored descriptors and waits for its
// READY=1.
func (s *supervisor) start() {
	t := s.t
	t.Helper()
	s.mu.Lock()
	from := len(s.msgs)
	var files []*os.File
	var names []string
	for _, e := range s.store {
		fd, err := unix.Dup(e.fd) // the child's copy; ours stays in the store
		if err != nil {
			s.mu.Unlock()
			t.Fatal(err)
		}
		files = append(files, os.NewFile(uintptr(fd), e.name))
		names = append(names, e.name)
	}
	s.mu.Unlock()
	// LISTEN_PID must be the daemon's pid, known only after fork: a shell
	// sets it and execs the daemon in its place.
	args := append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, harness.Bin(t)}, s.args...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+s.sock)
	if len(files) > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	cmd.ExtraFiles = files
	s.out = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(s.done)
	deadline := time.Now().Add(60 * time.Second)
	for {
		s.mu.Lock()
		for i := from; i < len(s.msgs); i++ {
			if strings.Contains(s.msgs[i], "READY=1") {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		select {
		case <-s.done:
			t.Fatalf("fusegate exited before READY=1:\n%s", s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no READY=1 within a minute:\n%s", s.out.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// askHandover sends SIGUSR1 and waits for the daemon's acknowledgement
// (STATUS= on the notify socket), sending it again if none comes: a
// SIGTERM that overtook it would stop the daemon for good.
func (s *supervisor) askHandover() {
	s.t.Helper()
	s.mu.Lock()
	from := len(s.msgs)
	s.mu.Unlock()
	for try := 0; try < 5; try++ {
		s.cmd.Process.Signal(syscall.SIGUSR1)
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			s.mu.Lock()
			for _, m := range s.msgs[from:] {
				if strings.Contains(m, "STATUS=hand-over requested") {
					s.mu.Unlock()
					return
				}
			}
			s.mu.Unlock()
		}
		s.t.Logf("no acknowledgement of SIGUSR1 within 2 s (try %d); sending it again", try+1)
	}
	s.t.Fatalf("the daemon never acknowledged SIGUSR1:\n%s", s.out.String())
}

// stop sends sig (SIGUSR1 first when handover is set) and waits for the
// daemon to exit.
func (s *supervisor) stop(sig syscall.Signal, handover bool) {
	s.t.Helper()
	if handover {
		s.askHandover()
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("fusegate did not exit after %v:\n%s", sig, s.out.String())
	}
	s.logs.WriteString(s.out.String())
	s.logs.WriteString("--- exited: " + s.cmd.ProcessState.String() + "\n")
	s.cmd = nil
}

func (s *supervisor) kill() {
	if s.cmd != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		s.logs.WriteString(s.out.String())
		s.cmd = nil
	}
}

func (s *supervisor) allLogs() string {
	b := s.logs.String()
	if s.out != nil && s.cmd != nil {
		b += s.out.String()
	}
	return b
}

// current returns the running daemon's output so far.
func (s *supervisor) current() string {
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
