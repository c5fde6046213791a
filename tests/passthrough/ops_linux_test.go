package passthrough

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/tests/harness"
)

// This file is a tiny interpreter of file operations that tests run in a
// child process (the test binary itself, started with envOps set) under
// other credentials: a script of steps, each a list of strings, runs in one
// process, so a step can use a descriptor an earlier step opened. Every
// step reports its errno and output; a failing step does not stop the
// script.

const envOps = "FUSEGATE_PT_OPS"

// step is one operation: its name, then its arguments.
type step []string

// result is what a step did.
type result struct {
	Errno int    `json:"errno"`
	Out   string `json:"out,omitempty"` // data read, link target, xattr value, ...
	Int   int64  `json:"int,omitempty"` // a descriptor, a size, an offset, a pid, ...
	Stat  *fstat `json:"stat,omitempty"`
}

// fstat is the part of a stat that tests look at.
type fstat struct {
	Ino, Nlink, Rdev   uint64
	Mode, UID, GID     uint32
	Size, Blocks       int64
	Atime, Mtime, Ctim int64 // nanoseconds
}

func (r result) err() error {
	if r.Errno == 0 {
		return nil
	}
	return syscall.Errno(r.Errno)
}

// runOps is the child's main: it reads a JSON script from stdin and prints
// the JSON results.
func runOps() int {
	var script []step
	if err := json.NewDecoder(os.Stdin).Decode(&script); err != nil {
		fmt.Fprintln(os.Stderr, "ops: bad script:", err)
		return 2
	}
	if m, err := strconv.ParseUint(os.Getenv(envOps), 8, 32); err == nil {
		unix.Umask(int(m))
	}
	fds := []int{}
	out := make([]result, 0, len(script))
	for _, s := range script {
		r := doStep(s, &fds)
		out = append(out, r)
	}
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

func atoi(s string) int64 {
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		panic(fmt.Sprintf("ops: %q is not a number", s))
	}
	return v
}

func errnoOf(err error) int {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return int(e)
	}
	if pe, ok := err.(*os.PathError); ok {
		return errnoOf(pe.Err)
	}
	return int(syscall.EIO)
}

func statOf(st *unix.Stat_t) *fstat {
	return &fstat{Ino: st.Ino, Nlink: st.Nlink, Rdev: st.Rdev, Mode: st.Mode, UID: st.Uid, GID: st.Gid,
		Size: st.Size, Blocks: st.Blocks, Atime: st.Atim.Nano(), Mtime: st.Mtim.Nano(), Ctim: st.Ctim.Nano()}
}

// timespec parses "now", "omit" or nanoseconds.
func timespec(s string) unix.Timespec {
	switch s {
	case "now":
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	case "omit":
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.NsecToTimespec(atoi(s))
}

func doStep(s step, fds *[]int) (r result) {
	fd := func(i int) int { return (*fds)[atoi(s[i])] }
	var err error
	var st unix.Stat_t
	switch s[0] {
	case "open": // path flags [mode]: Int is the descriptor's index
		mode := int64(0o644)
		if len(s) > 3 {
			mode = atoi(s[3])
		}
		var f int
		f, err = unix.Open(s[1], int(atoi(s[2])), uint32(mode))
		if err == nil {
			*fds = append(*fds, f)
			r.Int = int64(len(*fds) - 1)
		}
	case "close":
		err = unix.Close(fd(1))
	case "read": // fd n
		b := make([]byte, atoi(s[2]))
		var n int
		n, err = unix.Read(fd(1), b)
		if err == nil {
			r.Out = string(b[:n])
		}
	case "pread": // fd off n
		b := make([]byte, atoi(s[3]))
		var n int
		n, err = unix.Pread(fd(1), b, atoi(s[2]))
		if err == nil {
			r.Out = string(b[:n])
		}
	case "write": // fd data
		var n int
		n, err = unix.Write(fd(1), []byte(s[2]))
		r.Int = int64(n)
	case "pwrite": // fd off data
		var n int
		n, err = unix.Pwrite(fd(1), []byte(s[3]), atoi(s[2]))
		r.Int = int64(n)
	case "stat", "lstat", "fstat":
		switch s[0] {
		case "stat":
			err = unix.Stat(s[1], &st)
		case "lstat":
			err = unix.Lstat(s[1], &st)
		default:
			err = unix.Fstat(fd(1), &st)
		}
		if err == nil {
			r.Stat = statOf(&st)
		}
	case "mkdir":
		err = unix.Mkdir(s[1], uint32(atoi(s[2])))
	case "rmdir":
		err = unix.Rmdir(s[1])
	case "unlink":
		err = unix.Unlink(s[1])
	case "rename": // old new [flags]
		flags := int64(0)
		if len(s) > 3 {
			flags = atoi(s[3])
		}
		err = unix.Renameat2(unix.AT_FDCWD, s[1], unix.AT_FDCWD, s[2], uint(flags))
	case "link":
		err = unix.Link(s[1], s[2])
	case "linkfd": // fd newpath: linkat(fd, "", AT_EMPTY_PATH)
		err = unix.Linkat(fd(1), "", unix.AT_FDCWD, s[2], unix.AT_EMPTY_PATH)
	case "linkproc": // fd newpath: linkat of /proc/self/fd/N, following it
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd(1)), unix.AT_FDCWD, s[2], unix.AT_SYMLINK_FOLLOW)
	case "symlink":
		err = unix.Symlink(s[1], s[2])
	case "readlink":
		b := make([]byte, 8192)
		var n int
		n, err = unix.Readlink(s[1], b)
		if err == nil {
			r.Out = string(b[:n])
		}
	case "mknod": // path mode dev
		err = unix.Mknod(s[1], uint32(atoi(s[2])), int(atoi(s[3])))
	case "chmod":
		err = unix.Chmod(s[1], uint32(atoi(s[2])))
	case "chown", "lchown": // path uid gid
		if s[0] == "chown" {
			err = unix.Chown(s[1], int(atoi(s[2])), int(atoi(s[3])))
		} else {
			err = unix.Lchown(s[1], int(atoi(s[2])), int(atoi(s[3])))
		}
	case "truncate":
		err = unix.Truncate(s[1], atoi(s[2]))
	case "ftruncate":
		err = unix.Ftruncate(fd(1), atoi(s[2]))
	case "utimens": // path atime mtime [flags]
		flags := int64(0)
		if len(s) > 4 {
			flags = atoi(s[4])
		}
		err = unix.UtimesNanoAt(unix.AT_FDCWD, s[1], []unix.Timespec{timespec(s[2]), timespec(s[3])}, int(flags))
	case "access": // path mode
		err = unix.Faccessat(unix.AT_FDCWD, s[1], uint32(atoi(s[2])), 0)
	case "setxattr": // path name value flags
		err = unix.Lsetxattr(s[1], s[2], []byte(s[3]), int(atoi(s[4])))
	case "getxattr": // path name size
		b := make([]byte, atoi(s[3]))
		var n int
		n, err = unix.Lgetxattr(s[1], s[2], b)
		if err == nil {
			r.Int = int64(n)
			r.Out = string(b[:min(n, len(b))])
		}
	case "listxattr": // path size
		b := make([]byte, atoi(s[2]))
		var n int
		n, err = unix.Llistxattr(s[1], b)
		if err == nil {
			r.Int = int64(n)
			r.Out = string(b[:min(n, len(b))])
		}
	case "removexattr":
		err = unix.Lremovexattr(s[1], s[2])
	case "setlk", "setlkw", "getlk": // fd type start len: Int is the pid of a conflicting lock (getlk)
		typ := map[string]int16{"r": unix.F_RDLCK, "w": unix.F_WRLCK, "u": unix.F_UNLCK}[s[2]]
		lk := unix.Flock_t{Type: typ, Whence: 0, Start: atoi(s[3]), Len: atoi(s[4])}
		cmd := map[string]int{"setlk": unix.F_SETLK, "setlkw": unix.F_SETLKW, "getlk": unix.F_GETLK}[s[0]]
		err = unix.FcntlFlock(uintptr(fd(1)), cmd, &lk)
		if err == nil && s[0] == "getlk" {
			r.Int = int64(lk.Pid)
			r.Out = map[int16]string{unix.F_RDLCK: "r", unix.F_WRLCK: "w", unix.F_UNLCK: "u"}[lk.Type]
		}
	case "flock": // fd how
		err = unix.Flock(fd(1), int(atoi(s[2])))
	case "fallocate": // fd mode off len
		err = unix.Fallocate(fd(1), uint32(atoi(s[2])), atoi(s[3]), atoi(s[4]))
	case "lseek": // fd off whence
		r.Int, err = unix.Seek(fd(1), atoi(s[2]), int(atoi(s[3])))
	case "fsync":
		err = unix.Fsync(fd(1))
	case "fdatasync":
		err = unix.Fdatasync(fd(1))
	case "copy": // fdin offin fdout offout len
		offIn, offOut := atoi(s[2]), atoi(s[4])
		var n int
		n, err = unix.CopyFileRange(fd(1), &offIn, fd(3), &offOut, int(atoi(s[5])), 0)
		r.Int = int64(n)
	case "readdir": // path: Out is the names, NUL-separated, in order
		var f *os.File
		f, err = os.Open(s[1])
		if err == nil {
			var names []string
			names, err = f.Readdirnames(-1)
			f.Close()
			var b bytes.Buffer
			for _, n := range names {
				b.WriteString(n)
				b.WriteByte(0)
			}
			r.Out = b.String()
		}
	case "sleep":
		time.Sleep(time.Duration(atoi(s[1])) * time.Millisecond)
	case "pid":
		r.Int = int64(os.Getpid())
	default:
		panic("ops: unknown step " + s[0])
	}
	r.Errno = errnoOf(err)
	return r
}

// as runs a script in a child process with cred (and umask, octal) and
// returns the result of each step.
func as(t *testing.T, cred harness.Cred, umask string, script ...step) []result {
	t.Helper()
	in, err := json.Marshal(script)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(os.Getenv("FUSEGATE_HARNESS_DIR"), "harness-helper")
	res := harness.Run(t, harness.Cmd{Argv: []string{bin}, Cred: &cred, Env: []string{envOps + "=" + umask}, Stdin: in})
	if res.Failed() {
		t.Fatalf("ops as %v: %v", cred, res)
	}
	var out []result
	if err := json.Unmarshal(res.Stdout, &out); err != nil || len(out) != len(script) {
		t.Fatalf("ops as %v: bad output (%v): %s", cred, err, res.Stdout)
	}
	return out
}

// ok fails t unless every result succeeded.
func ok(t *testing.T, what string, rs []result) []result {
	t.Helper()
	for i, r := range rs {
		if r.Errno != 0 {
			t.Fatalf("%s: step %d failed: %v", what, i, r.err())
		}
	}
	return rs
}
