// Package load is the client the restart tests run while the daemon
// restarts under it: workers that write, read back (checksums) and stat
// files on a mount, keep some files open for the whole run (their I/O goes
// through handles the daemon must carry across the restart), list the
// directory, and stream sequence-numbered bytes through a CUSE loopback
// device (one writer, one reader that waits in poll(2)). Every operation is
// timed; any error or wrong byte is a failure.
//
// It must run in a process that does not serve the mount (the test
// process, while the daemon is a child or a systemd service).
package load

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options say what to load.
type Options struct {
	Dir      string // a directory on the mount (created)
	Device   string // a CUSE loopback device node ("": none)
	Workers  int    // file workers (default 2)
	KeepOpen int    // files held open for the whole run (default 4)
}

// Result is what a run saw.
type Result struct {
	Ops      uint64
	Failures []string // the first failures
	Failed   uint64
	// MaxStall is the longest operation that should never block (file
	// operations, device writes, a device read after poll said readable);
	// MaxStallOp says which and when it ended, MaxStallMono when it
	// started on CLOCK_MONOTONIC (the clock of the journal's
	// short-monotonic timestamps), in nanoseconds.
	MaxStall     time.Duration
	MaxStallOp   string
	MaxStallAt   time.Time
	MaxStallMono int64
	// DeviceBytes went through the device and came back in order.
	DeviceBytes uint64
	FileBytes   uint64
	// Slow are the longest operations (at most slowKeep, over 50 ms), in
	// the order they started, for the log.
	Slow []string
	slow []slowOp
}

// slowKeep is how many of the longest operations a Result lists.
const slowKeep = 12

type slowOp struct {
	start time.Time
	d     time.Duration
	what  string
}

func (r *Result) String() string {
	return fmt.Sprintf("%d ops, %d failed, longest stall %v (%s), %d file bytes and %d device bytes checked",
		r.Ops, r.Failed, r.MaxStall.Round(time.Microsecond), r.MaxStallOp, r.FileBytes, r.DeviceBytes)
}

type run struct {
	mu  sync.Mutex
	res Result // guarded by mu
	ops atomic.Uint64
}

func (r *run) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Failed++
	if len(r.res.Failures) < 20 {
		r.res.Failures = append(r.res.Failures, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
}

// timed runs f and records its duration as a stall candidate.
func (r *run) timed(what string, f func() error) error {
	t0 := time.Now()
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	err := f()
	d := time.Since(t0)
	r.ops.Add(1)
	r.mu.Lock()
	if d > r.res.MaxStall {
		r.res.MaxStall, r.res.MaxStallOp, r.res.MaxStallAt, r.res.MaxStallMono = d, what, time.Now(), ts.Nano()
	}
	if d > 50*time.Millisecond {
		r.keepSlow(slowOp{t0, d, what})
	}
	r.mu.Unlock()
	if err != nil {
		r.fail("%s: %v", what, err)
	}
	return err
}

// keepSlow keeps op if it is among the slowKeep longest. r.mu is held.
func (r *run) keepSlow(op slowOp) {
	sl := r.res.slow
	if len(sl) < slowKeep {
		r.res.slow = append(sl, op)
		return
	}
	short := 0
	for i := range sl {
		if sl[i].d < sl[short].d {
			short = i
		}
	}
	if op.d > sl[short].d {
		sl[short] = op
	}
}

// Run loads until ctx ends and returns what it saw.
func Run(ctx context.Context, o Options) *Result {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.KeepOpen <= 0 {
		o.KeepOpen = 4
	}
	r := &run{}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		r.fail("mkdir %s: %v", o.Dir, err)
		return &r.res
	}
	var wg sync.WaitGroup
	for i := 0; i < o.Workers; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); r.files(ctx, o.Dir, i) }()
	}
	wg.Add(2)
	go func() { defer wg.Done(); r.held(ctx, o.Dir, o.KeepOpen) }()
	go func() { defer wg.Done(); r.lister(ctx, o.Dir) }()
	if o.Device != "" {
		r.device(ctx, &wg, o.Device)
	}
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Ops = r.ops.Load()
	sort.Slice(r.res.slow, func(i, j int) bool { return r.res.slow[i].start.Before(r.res.slow[j].start) })
	for _, op := range r.res.slow {
		r.res.Slow = append(r.res.Slow, fmt.Sprintf("%s %s took %v", op.start.Format("15:04:05.000"), op.what, op.d.Round(time.Microsecond)))
	}
	return &r.res
}

// content is the deterministic content of a file version.
func content(worker, seq int) []byte {
	size := 1 + (seq*7919+worker*104729)%(48<<10)
	b := make([]byte, size)
	var x uint64 = uint64(worker)<<32 | uint64(seq)
	for i := range b {
		x = x*6364136223846793005 + 1442695040888963407
		b[i] = byte(x >> 56)
	}
	return b
}

// files writes a file, reads it back and compares checksums, stats it, and
// now and then renames it, over and over.
func (r *run) files(ctx context.Context, dir string, w int) {
	for seq := 0; ctx.Err() == nil; seq++ {
		name := filepath.Join(dir, fmt.Sprintf("w%d-%d", w, seq%8))
		want := content(w, seq)
		sum := sha256.Sum256(want)
		if r.timed("write "+filepath.Base(name), func() error { return os.WriteFile(name, want, 0o644) }) != nil {
			continue
		}
		var got []byte
		if r.timed("read "+filepath.Base(name), func() (err error) { got, err = os.ReadFile(name); return }) == nil {
			if sha256.Sum256(got) != sum {
				r.fail("read %s: %d bytes, checksum differs from the %d written", name, len(got), len(want))
			} else {
				r.mu.Lock()
				r.res.FileBytes += uint64(len(got))
				r.mu.Unlock()
			}
		}
		var st unix.Stat_t
		if r.timed("stat "+filepath.Base(name), func() error { return unix.Lstat(name, &st) }) == nil && st.Size != int64(len(want)) {
			r.fail("stat %s: size %d, want %d", name, st.Size, len(want))
		}
		if seq%5 == 4 {
			tmp := name + ".moved"
			r.timed("rename "+filepath.Base(name), func() error { return os.Rename(name, tmp) })
			r.timed("rename back "+filepath.Base(name), func() error { return os.Rename(tmp, name) })
		}
	}
}

// held keeps files open for the whole run and writes, reads back and
// fstats through those descriptors.
func (r *run) held(ctx context.Context, dir string, n int) {
	var fds []*os.File
	for i := 0; i < n; i++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("held-%d", i)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			r.fail("open held-%d: %v", i, err)
			return
		}
		defer f.Close()
		fds = append(fds, f)
	}
	block := make([]byte, 4096)
	back := make([]byte, 4096)
	for seq := 0; ctx.Err() == nil; seq++ {
		f := fds[seq%n]
		off := int64(seq/n%64) * 4096
		binary.LittleEndian.PutUint64(block, uint64(seq))
		for i := 8; i < len(block); i++ {
			block[i] = byte(seq + i)
		}
		if r.timed("pwrite "+f.Name(), func() error { _, err := f.WriteAt(block, off); return err }) != nil {
			continue
		}
		if r.timed("pread "+f.Name(), func() error { _, err := f.ReadAt(back, off); return err }) == nil && !bytes.Equal(block, back) {
			r.fail("pread %s at %d: not what was written", f.Name(), off)
		}
		r.timed("fstat "+f.Name(), func() error { _, err := f.Stat(); return err })
		time.Sleep(time.Millisecond)
	}
}

// lister lists the directory over and over.
func (r *run) lister(ctx context.Context, dir string) {
	seen := false // files exist from then on: an empty listing is wrong
	for ctx.Err() == nil {
		r.timed("readdir", func() error {
			ents, err := os.ReadDir(dir)
			if err == nil && len(ents) == 0 && seen {
				err = errors.New("empty")
			}
			seen = seen || len(ents) > 0
			return err
		})
		time.Sleep(5 * time.Millisecond)
	}
}

// device streams sequence-numbered 8-byte words through the loopback
// device: a writer writes batches, a reader waits for them in poll(2) and
// checks that every word comes back once, in order.
func (r *run) device(ctx context.Context, wg *sync.WaitGroup, path string) {
	wfd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		r.fail("open %s: %v", path, err)
		return
	}
	rfd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(wfd)
		r.fail("open %s: %v", path, err)
		return
	}
	var written atomic.Uint64 // words written
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer unix.Close(wfd)
		defer close(stop)
		buf := make([]byte, 8*128)
		var next uint64
		for ctx.Err() == nil {
			words := 1 + int(next%128)
			for i := 0; i < words; i++ {
				binary.LittleEndian.PutUint64(buf[8*i:], next+uint64(i))
			}
			var n int
			if r.timed("device write", func() (err error) { n, err = unix.Write(wfd, buf[:8*words]); return }) != nil {
				return
			}
			if n != 8*words {
				r.fail("device write: %d of %d bytes", n, 8*words)
				return
			}
			next += uint64(words)
			written.Store(next)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		defer unix.Close(rfd)
		buf := make([]byte, 64<<10)
		var want uint64
		var partial []byte
		for {
			select {
			case <-stop:
				if want >= written.Load() {
					r.mu.Lock()
					r.res.DeviceBytes = want * 8
					r.mu.Unlock()
					return
				}
			default:
			}
			pfd := []unix.PollFd{{Fd: int32(rfd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 200)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				r.fail("device poll: %v", err)
				return
			}
			if n == 0 {
				if ctx.Err() != nil && want < written.Load() {
					// Nothing comes although bytes are owed: keep asking
					// (a lost wake-up shows as data found without poll).
					k, rerr := unix.Read(rfd, buf)
					if rerr == nil && k > 0 {
						r.fail("device: %d bytes were readable but poll(2) did not say so", k)
						partial = r.check(append(partial, buf[:k]...), &want)
					}
					if ctx.Err() != nil && time.Now().After(deadlineOf(ctx)) {
						r.fail("device: %d words written, %d read back", written.Load(), want)
						return
					}
				}
				continue
			}
			var k int
			if r.timed("device read", func() (err error) {
				k, err = unix.Read(rfd, buf)
				if err == unix.EAGAIN {
					k, err = 0, nil
				}
				return err
			}) != nil {
				return
			}
			partial = r.check(append(partial, buf[:k]...), &want)
		}
	}()
}

var deadlines sync.Map // ctx → time the reader gives up after the end

func deadlineOf(ctx context.Context) time.Time {
	v, _ := deadlines.LoadOrStore(ctx, time.Now().Add(10*time.Second))
	return v.(time.Time)
}

// check consumes whole words of b, which must be want, want+1, ...; it
// returns the bytes of an incomplete word.
func (r *run) check(b []byte, want *uint64) []byte {
	for len(b) >= 8 {
		got := binary.LittleEndian.Uint64(b)
		if got != *want {
			r.fail("device: word %d where %d was due (lost or repeated bytes)", got, *want)
			*want = got
		}
		*want++
		b = b[8:]
	}
	return append([]byte(nil), b...)
}

// Report formats a result for the test log.
func Report(name string, r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n", name, r)
	for _, s := range r.Slow {
		fmt.Fprintf(&b, "  slow: %s\n", s)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "  FAILED: %s\n", f)
	}
	return b.String()
}

// The load runs in a child process (the test binary run again): a process
// that holds files open on the mount must not fork the daemon, or the
// child's execve closes them, which sends FLUSH to a daemon that is not
// there yet, and waits for it forever.

const childEnv = "FUSEGATE_TEST_LOAD_CHILD"

// MaybeChild runs the load and exits when this process was started as a
// load child (call it first in TestMain).
func MaybeChild() {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return
	}
	var o Options
	if err := json.Unmarshal([]byte(spec), &o); err != nil {
		fmt.Fprintln(os.Stderr, "load child:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; cancel() }()
	res := Run(ctx, o)
	json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// Child is a load running in a child process.
type Child struct {
	cmd *exec.Cmd
	out bytes.Buffer
	err bytes.Buffer
}

// Start starts a load child.
func Start(o Options) (*Child, error) {
	spec, _ := json.Marshal(o)
	c := &Child{cmd: exec.Command("/proc/self/exe", "-test.run=^$")}
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.err
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// Stop ends the load and returns its result.
func (c *Child) Stop() (*Result, error) {
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("load child: %v: %s", err, c.err.String())
		}
	case <-time.After(60 * time.Second):
		c.cmd.Process.Kill()
		return nil, fmt.Errorf("load child did not stop: %s", c.err.String())
	}
	var r Result
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("load child output: %v: %q %s", err, c.out.String(), c.err.String())
	}
	return &r, nil
}
