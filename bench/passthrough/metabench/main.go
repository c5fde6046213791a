// Command metabench times metadata operations on many small files in a
// directory: create (open O_CREAT|O_EXCL, write, close), stat after the
// kernel's caches are dropped, readdir, and unlink. It prints one JSON
// object of operations per second. It is run by bench/passthrough/run.sh
// against a native directory and against each FUSE mount, never by the
// process serving a mount.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", "", "directory to work in (made if missing)")
	n := flag.Int("n", 10000, "files")
	size := flag.Int("size", 512, "bytes written to each file")
	readdirs := flag.Int("readdirs", 5, "times the directory is listed")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "metabench: -dir is required")
		os.Exit(2)
	}
	res, err := run(*dir, *n, *size, *readdirs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "metabench:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

// result is operations per second of each phase.
type result struct {
	Create  float64 `json:"create"`
	Stat    float64 `json:"stat"`
	Readdir float64 `json:"readdir"` // entries per second
	Unlink  float64 `json:"unlink"`
}

func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

func run(dir string, n, size, readdirs int) (result, error) {
	var r result
	work := filepath.Join(dir, "metabench")
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return r, err
	}
	names := make([]string, n)
	for i := range names {
		names[i] = filepath.Join(work, fmt.Sprintf("file-%06d", i))
	}
	data := make([]byte, size)

	start := time.Now()
	for _, name := range names {
		fd, err := unix.Open(name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return r, err
		}
		if _, err := unix.Write(fd, data); err != nil {
			return r, err
		}
		unix.Close(fd)
	}
	r.Create = float64(n) / time.Since(start).Seconds()

	if err := dropCaches(); err != nil {
		return r, err
	}
	var st unix.Stat_t
	start = time.Now()
	for _, name := range names {
		if err := unix.Lstat(name, &st); err != nil {
			return r, err
		}
	}
	r.Stat = float64(n) / time.Since(start).Seconds()

	buf := make([]byte, 64<<10)
	entries := 0
	start = time.Now()
	for i := 0; i < readdirs; i++ {
		fd, err := unix.Open(work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return r, err
		}
		for {
			m, err := unix.Getdents(fd, buf)
			if err != nil {
				return r, err
			}
			if m == 0 {
				break
			}
			for off := 0; off < m; {
				reclen := int(buf[off+16]) | int(buf[off+17])<<8
				off += reclen
				entries++
			}
		}
		unix.Close(fd)
	}
	r.Readdir = float64(entries) / time.Since(start).Seconds()
	if want := readdirs * (n + 2); entries != want {
		return r, fmt.Errorf("readdir saw %d entries, want %d", entries, want)
	}

	start = time.Now()
	for _, name := range names {
		if err := unix.Unlink(name); err != nil {
			return r, err
		}
	}
	r.Unlink = float64(n) / time.Since(start).Seconds()
	return r, os.Remove(work)
}
