package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Caller performs file operations in child processes running as one
// identity: each call starts the harness helper (this test binary, copied
// where any uid can run it), which makes the system calls and reports the
// result or the errno. A child that crashes or outlives Timeout fails the
// test; an operation the kernel refuses returns an *OpError.
type Caller struct {
	t       testing.TB
	cred    Cred
	Timeout time.Duration // per operation; default DefaultTimeout
}

// NewCaller returns a Caller running as cred.
func NewCaller(t testing.TB, cred Cred) *Caller {
	return &Caller{t: t, cred: cred}
}

// Cred returns the identity the Caller's children run with.
func (c *Caller) Cred() Cred { return c.cred }

// OpError is a file operation the kernel refused. errors.Is(err, errno)
// works on it.
type OpError struct {
	Op, Path string
	Errno    syscall.Errno
}

func (e *OpError) Error() string {
	return fmt.Sprintf("%s %s: %v (%s)", e.Op, e.Path, e.Errno.Error(), unix.ErrnoName(e.Errno))
}

func (e *OpError) Unwrap() error { return e.Errno }

// Stat is what stat(2) or lstat(2) returned.
type Stat struct {
	Dev, Ino  uint64
	Mode      uint32 // type and permission bits, as st_mode
	Nlink     uint64
	UID, GID  uint32
	Rdev      uint64
	Size      int64
	Blocks    int64
	Blksize   int64
	Atime     time.Time
	Mtime     time.Time
	Ctime     time.Time
	IsDir     bool
	IsRegular bool
	IsSymlink bool
}

// Perm returns the permission bits including setuid, setgid and sticky.
func (s Stat) Perm() uint32 { return s.Mode & 0o7777 }

// do runs one helper operation; stdin may be nil.
func (c *Caller) do(stdin []byte, op string, args ...string) ([]byte, error) {
	c.t.Helper()
	path := ""
	if len(args) > 0 {
		path = args[0]
	}
	r := Run(c.t, Cmd{
		Argv:    append([]string{filepath.Join(harnessDir(c.t), helperName), op}, args...),
		Cred:    &c.cred,
		Env:     []string{envHelper + "=1"},
		Stdin:   stdin,
		Timeout: c.Timeout,
	})
	switch r.ExitCode {
	case 0:
		return r.Stdout, nil
	case helperErrnoExit:
		var e helperError
		if err := json.Unmarshal(r.Stderr, &e); err != nil || e.Errno == 0 {
			c.t.Fatalf("harness helper %s %s: unreadable error report: %v", op, path, r)
		}
		return nil, &OpError{Op: op, Path: path, Errno: syscall.Errno(e.Errno)}
	default:
		c.t.Fatalf("harness helper %s %s failed: %v", op, path, r)
		return nil, nil
	}
}

func (c *Caller) stat(op, path string) (Stat, error) {
	c.t.Helper()
	out, err := c.do(nil, op, path)
	if err != nil {
		return Stat{}, err
	}
	var st Stat
	if err := json.Unmarshal(out, &st); err != nil {
		c.t.Fatalf("harness helper %s %s: %v: %q", op, path, err, out)
	}
	return st, nil
}

// Stat runs stat(2) on path.
func (c *Caller) Stat(path string) (Stat, error) {
	c.t.Helper()
	return c.stat("stat", path)
}

// Lstat runs lstat(2) on path.
func (c *Caller) Lstat(path string) (Stat, error) {
	c.t.Helper()
	return c.stat("lstat", path)
}

// Statfs is what statfs(2) returned.
type Statfs struct {
	Type    int64 // file system magic: 0x65735546 for FUSE
	Bsize   int64
	Blocks  uint64
	Bfree   uint64
	Files   uint64
	Ffree   uint64
	Namelen int64
}

// Statfs runs statfs(2) on path. Unlike stat(2), which the kernel may answer
// from its attribute cache, it always reaches a FUSE server.
func (c *Caller) Statfs(path string) (Statfs, error) {
	c.t.Helper()
	out, err := c.do(nil, "statfs", path)
	if err != nil {
		return Statfs{}, err
	}
	var st Statfs
	if err := json.Unmarshal(out, &st); err != nil {
		c.t.Fatalf("harness helper statfs %s: %v: %q", path, err, out)
	}
	return st, nil
}

// ReadDir returns the names in directory path, sorted, without "." and "..".
func (c *Caller) ReadDir(path string) ([]string, error) {
	c.t.Helper()
	out, err := c.do(nil, "readdir", path)
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal(out, &names); err != nil {
		c.t.Fatalf("harness helper readdir %s: %v: %q", path, err, out)
	}
	return names, nil
}

// ReadFile opens path read-only and reads it to the end with read(2)s of
// bufSize bytes (0: 128 KiB).
func (c *Caller) ReadFile(path string, bufSize int) ([]byte, error) {
	c.t.Helper()
	if bufSize <= 0 {
		bufSize = 128 << 10
	}
	return c.do(nil, "read", path, "0", "-1", strconv.Itoa(bufSize))
}

// ReadAt opens path read-only and reads n bytes at off with one pread(2),
// then more preads while the result is short and not at end of file. It
// returns fewer than n bytes only at end of file.
func (c *Caller) ReadAt(path string, off int64, n int) ([]byte, error) {
	c.t.Helper()
	return c.do(nil, "read", path, strconv.FormatInt(off, 10), strconv.Itoa(n), strconv.Itoa(n))
}

// Readlink returns the target of symbolic link path.
func (c *Caller) Readlink(path string) (string, error) {
	c.t.Helper()
	out, err := c.do(nil, "readlink", path)
	return string(out), err
}

// Open opens path with flags (O_RDONLY, O_WRONLY|O_CREAT, ...; mode 0644
// for a new file) and closes it again.
func (c *Caller) Open(path string, flags int) error {
	c.t.Helper()
	_, err := c.do(nil, "open", path, strconv.Itoa(flags))
	return err
}

// WriteFile creates or truncates path with perm and writes data to it.
func (c *Caller) WriteFile(path string, data []byte, perm os.FileMode) error {
	c.t.Helper()
	if data == nil {
		data = []byte{}
	}
	_, err := c.do(data, "write", path, strconv.FormatUint(uint64(perm.Perm()), 8))
	return err
}

// Mkdir creates directory path with perm.
func (c *Caller) Mkdir(path string, perm os.FileMode) error {
	c.t.Helper()
	_, err := c.do(nil, "mkdir", path, strconv.FormatUint(uint64(perm.Perm()), 8))
	return err
}

// Remove removes a file or an empty directory (unlink(2), else rmdir(2)).
func (c *Caller) Remove(path string) error {
	c.t.Helper()
	_, err := c.do(nil, "remove", path)
	return err
}

// Rename renames oldpath to newpath (rename(2)).
func (c *Caller) Rename(oldpath, newpath string) error {
	c.t.Helper()
	_, err := c.do(nil, "rename", oldpath, newpath)
	return err
}

// Chmod changes path's permission bits (chmod(2)).
func (c *Caller) Chmod(path string, perm os.FileMode) error {
	c.t.Helper()
	_, err := c.do(nil, "chmod", path, strconv.FormatUint(uint64(perm.Perm()), 8))
	return err
}
