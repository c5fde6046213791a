package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// helperErrnoExit is the helper's exit status when the kernel refused the
// operation; stderr then holds a helperError.
const helperErrnoExit = 3

// helperError is the helper's report of a refused operation.
type helperError struct {
	Errno   int    `json:"errno"`
	Message string `json:"message"`
}

// runHelper performs one operation for Caller (argv: OP ARGS...) with plain
// system calls, writes the result on stdout and returns the exit status.
// It runs in a child started by Caller, never in the test process.
func runHelper(argv []string) int {
	out, err := helperOp(argv)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && errno != 0 {
			json.NewEncoder(os.Stderr).Encode(helperError{Errno: int(errno), Message: err.Error()})
			return helperErrnoExit
		}
		fmt.Fprintf(os.Stderr, "harness helper %q: %v\n", argv, err)
		return 1
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fmt.Fprintf(os.Stderr, "harness helper: %v\n", err)
		return 1
	}
	return 0
}

func helperOp(argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("no operation")
	}
	op, args := argv[0], argv[1:]
	want := map[string]int{"stat": 1, "lstat": 1, "statfs": 1, "readdir": 1, "read": 4, "readlink": 1,
		"open": 2, "write": 2, "mkdir": 2, "remove": 1, "rename": 2, "chmod": 2}
	n, ok := want[op]
	if !ok {
		return nil, fmt.Errorf("unknown operation %q", op)
	}
	if len(args) != n {
		return nil, fmt.Errorf("%s takes %d arguments, got %d", op, n, len(args))
	}
	num := func(i int) (int64, error) { return strconv.ParseInt(args[i], 10, 64) }
	mode := func(i int) (uint32, error) {
		v, err := strconv.ParseUint(args[i], 8, 32)
		return uint32(v), err
	}
	switch op {
	case "stat", "lstat":
		var st unix.Stat_t
		var err error
		if op == "stat" {
			err = unix.Stat(args[0], &st)
		} else {
			err = unix.Lstat(args[0], &st)
		}
		if err != nil {
			return nil, err
		}
		return json.Marshal(statOf(&st))
	case "statfs":
		var st unix.Statfs_t
		if err := unix.Statfs(args[0], &st); err != nil {
			return nil, err
		}
		return json.Marshal(Statfs{Type: st.Type, Bsize: st.Bsize, Blocks: st.Blocks, Bfree: st.Bfree,
			Files: st.Files, Ffree: st.Ffree, Namelen: st.Namelen})
	case "readdir":
		f, err := os.Open(args[0])
		if err != nil {
			return nil, err
		}
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			return nil, err
		}
		slices.Sort(names)
		if names == nil {
			names = []string{}
		}
		return json.Marshal(names)
	case "read":
		off, err1 := num(1)
		n, err2 := num(2)
		bufSize, err3 := num(3)
		if err := errors.Join(err1, err2, err3); err != nil || off < 0 || bufSize <= 0 {
			return nil, fmt.Errorf("bad read arguments %q: %v", args, err)
		}
		return helperRead(args[0], off, n, int(bufSize))
	case "readlink":
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlink(args[0], buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	case "open":
		flags, err := num(1)
		if err != nil {
			return nil, err
		}
		fd, err := unix.Open(args[0], int(flags)|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, err
		}
		return nil, unix.Close(fd)
	case "write":
		perm, err := mode(1)
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, err
		}
		fd, err := unix.Open(args[0], unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, perm)
		if err != nil {
			return nil, err
		}
		for len(data) > 0 {
			n, err := unix.Write(fd, data)
			if err != nil {
				unix.Close(fd)
				return nil, err
			}
			data = data[n:]
		}
		return nil, unix.Close(fd)
	case "mkdir":
		perm, err := mode(1)
		if err != nil {
			return nil, err
		}
		return nil, unix.Mkdir(args[0], perm)
	case "remove":
		err := unix.Unlink(args[0])
		if err == nil {
			return nil, nil
		}
		if rerr := unix.Rmdir(args[0]); rerr == nil {
			return nil, nil
		} else if rerr != unix.ENOTDIR {
			err = rerr
		}
		return nil, err
	case "rename":
		return nil, unix.Rename(args[0], args[1])
	case "chmod":
		perm, err := mode(1)
		if err != nil {
			return nil, err
		}
		return nil, unix.Chmod(args[0], perm)
	}
	return nil, fmt.Errorf("operation %q not handled", op)
}

// helperRead reads path from off: n bytes (n < 0: to the end of the file),
// with preads of at most bufSize bytes.
func helperRead(path string, off, n int64, bufSize int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, bufSize)
	for n < 0 || int64(len(out)) < n {
		want := len(buf)
		if n >= 0 {
			want = int(min(int64(want), n-int64(len(out))))
		}
		got, err := unix.Pread(fd, buf[:want], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if got == 0 {
			break
		}
		out = append(out, buf[:got]...)
		off += int64(got)
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

func statOf(st *unix.Stat_t) Stat {
	ts := func(t unix.Timespec) time.Time { return time.Unix(t.Sec, t.Nsec) }
	typ := st.Mode & unix.S_IFMT
	return Stat{Dev: st.Dev, Ino: st.Ino, Mode: st.Mode, Nlink: uint64(st.Nlink), UID: st.Uid, GID: st.Gid,
		Rdev: st.Rdev, Size: st.Size, Blocks: st.Blocks, Blksize: int64(st.Blksize),
		Atime: ts(st.Atim), Mtime: ts(st.Mtim), Ctime: ts(st.Ctim),
		IsDir: typ == unix.S_IFDIR, IsRegular: typ == unix.S_IFREG, IsSymlink: typ == unix.S_IFLNK}
}
