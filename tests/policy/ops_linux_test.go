package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/tests/harness"
)

// A tiny interpreter of file operations, run in a child process (this test
// binary, started with envOps set) under other credentials. A script is a
// list of steps, each a list of strings (the operation, then its
// arguments); every step reports its errno and output, and a failing step
// does not stop the script.

const envOps = "FUSEGATE_POLICY_OPS"

type step []string

type result struct {
	Errno int    `json:"errno"`
	Out   string `json:"out,omitempty"`  // text: names, ...
	Data  []byte `json:"data,omitempty"` // file contents (binary: JSON strings would mangle them)
	Int   int64  `json:"int,omitempty"`
}

func (r result) err() error {
	if r.Errno == 0 {
		return nil
	}
	return syscall.Errno(r.Errno)
}

// runOps is the child's main.
func runOps() int {
	var script []step
	// Files and directories are made with the modes asked for.
	unix.Umask(0)
	if err := json.NewDecoder(os.Stdin).Decode(&script); err != nil {
		fmt.Fprintln(os.Stderr, "ops: bad script:", err)
		return 2
	}
	out := make([]result, 0, len(script))
	for _, s := range script {
		out = append(out, doStep(s))
	}
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

func errnoOf(err error) int {
	var e syscall.Errno
	if errors.As(err, &e) {
		return int(e)
	}
	if err != nil {
		return int(syscall.EIO)
	}
	return 0
}

func num(s string) int64 {
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		panic(fmt.Sprintf("ops: %q is not a number", s))
	}
	return v
}

// readAll reads fd to its end with reads of 64 KiB.
func readAll(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

func doStep(s step) (r result) {
	var err error
	switch s[0] {
	case "stat", "lstat": // path: Int is the owner uid
		var st unix.Stat_t
		if s[0] == "stat" {
			err = unix.Stat(s[1], &st)
		} else {
			err = unix.Lstat(s[1], &st)
		}
		r.Int = int64(st.Uid)
	case "read": // path: Out is the whole file
		var fd int
		fd, err = unix.Open(s[1], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			r.Data, err = readAll(fd)
			unix.Close(fd)
		}
	case "mmapread": // path: Out is the file read through a MAP_PRIVATE mapping
		var fd int
		fd, err = unix.Open(s[1], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			var st unix.Stat_t
			if err = unix.Fstat(fd, &st); err == nil && st.Size > 0 {
				var m []byte
				m, err = unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ, unix.MAP_PRIVATE)
				if err == nil {
					r.Data = bytes.Clone(m)
					unix.Munmap(m)
				}
			}
			unix.Close(fd)
		}
	case "open": // path flags: open and close
		var fd int
		fd, err = unix.Open(s[1], int(num(s[2]))|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
	case "write": // path data: O_WRONLY|O_CREAT|O_TRUNC, mode 0644
		var fd int
		fd, err = unix.Open(s[1], unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
		if err == nil {
			_, err = unix.Write(fd, []byte(s[2]))
			if cerr := unix.Close(fd); err == nil {
				err = cerr
			}
		}
	case "append": // path data: O_WRONLY|O_APPEND of an existing file
		var fd int
		fd, err = unix.Open(s[1], unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Write(fd, []byte(s[2]))
			unix.Close(fd)
		}
	case "readdir": // path: Out is the sorted names, "," separated
		var f *os.File
		f, err = os.Open(s[1])
		if err == nil {
			var names []string
			names, err = f.Readdirnames(-1)
			f.Close()
			slices.Sort(names)
			r.Out = strings.Join(names, ",")
		}
	case "mkdir":
		err = unix.Mkdir(s[1], 0o777)
	case "rmdir":
		err = unix.Rmdir(s[1])
	case "unlink":
		err = unix.Unlink(s[1])
	case "rename":
		err = unix.Rename(s[1], s[2])
	case "link":
		err = unix.Link(s[1], s[2])
	case "symlink": // target path
		err = unix.Symlink(s[1], s[2])
	case "chmod":
		err = unix.Chmod(s[1], uint32(num(s[2])))
	case "truncate":
		err = unix.Truncate(s[1], num(s[2]))
	case "createmany": // dir n: Int is the nanoseconds taken to create n empty files
		start := time.Now()
		for i := range num(s[2]) {
			var fd int
			fd, err = unix.Open(filepath.Join(s[1], "f"+strconv.FormatInt(i, 10)), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
			if err != nil {
				break
			}
			unix.Close(fd)
		}
		r.Int = int64(time.Since(start))
	case "statmany": // dir n: Int is the nanoseconds taken to stat n files made by createmany
		start := time.Now()
		var st unix.Stat_t
		for i := range num(s[2]) {
			if err = unix.Stat(filepath.Join(s[1], "f"+strconv.FormatInt(i, 10)), &st); err != nil {
				break
			}
		}
		r.Int = int64(time.Since(start))
	default:
		panic("ops: unknown step " + s[0])
	}
	r.Errno = errnoOf(err)
	return r
}

// run runs a script in a child process with cred and returns the result of
// each step.
func run(t testing.TB, cred harness.Cred, script ...step) []result {
	t.Helper()
	in, err := json.Marshal(script)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(os.Getenv("FUSEGATE_HARNESS_DIR"), "harness-helper")
	res := harness.Run(t, harness.Cmd{Argv: []string{bin}, Cred: &cred, Env: []string{envOps + "=1"}, Stdin: in})
	if res.Failed() {
		t.Fatalf("ops as %v: %v", cred, res)
	}
	var out []result
	if err := json.Unmarshal(res.Stdout, &out); err != nil || len(out) != len(script) {
		t.Fatalf("ops as %v: bad output (%v): %s", cred, err, res.Stdout)
	}
	return out
}

// do runs one step as cred.
func do(t testing.TB, cred harness.Cred, s ...string) result {
	t.Helper()
	return run(t, cred, step(s))[0]
}
