// Command enginebench measures the fusedev engine on real FUSE mounts: a
// null file system (a root directory, a large zero-filled file served with
// FOPEN_DIRECT_IO and a second one through the page cache) is served by a
// child process per reader count, mounted side by side, while the parent
// process, which serves nothing, measures
//
//   - GETATTR round trips: stat(2) of a file whose attributes time out at
//     once (attr_valid 0), so every stat reaches the server, from one and
//     from several client goroutines;
//   - sequential READ throughput with 1 MiB reads of the direct-I/O file
//     (each read(2) is one 1 MiB FUSE READ), from one and several clients
//     on disjoint ranges;
//   - cold cached reads of the other file: the server's open reply has no
//     FOPEN_KEEP_CACHE, so every open drops the page cache and the data
//     comes from the server in readahead-sized READs.
//
// Rounds interleave the mounts so that machine noise hits each
// configuration alike; the median of the rounds is reported, with the ratio
// to the first configuration. Next to each rate it reports the server's CPU
// time per operation (per stat, or per MiB read), summed over the server
// child's threads from /proc: far less sensitive to other load on the
// machine than the rates are. It needs root (mount(2)) and /dev/fuse; it is not part of
// the test suite. It must never touch a mount from the process serving it:
// the servers are children, the measuring parent serves nothing.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// serveEnv switches the binary into the server child.
const serveEnv = "ENGINEBENCH_SERVE"

func main() {
	if os.Getenv(serveEnv) != "" {
		os.Exit(serveChild(os.Args[1:]))
	}
	os.Exit(runBench(os.Args[1:]))
}

// ---- server child ----

// nullFS: root (1), "direct" (2, FOPEN_DIRECT_IO) and "cached" (3), both
// size bytes of zeros. Entries are cached for an hour, attributes not at all.
type nullFS struct {
	fusedev.NotImplemented
	size  uint64
	zeros []byte
}

const (
	inoDirect = 2
	inoCached = 3
)

func (f *nullFS) attr(ino uint64, a *abi.Attr) error {
	switch ino {
	case abi.RootID:
		*a = abi.Attr{Ino: ino, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}
	case inoDirect, inoCached:
		*a = abi.Attr{Ino: ino, Mode: syscall.S_IFREG | 0o444, Nlink: 1, Size: f.size, Blocks: f.size / 512, Blksize: 1 << 20}
	default:
		return syscall.ENOENT
	}
	return nil
}

func (f *nullFS) Lookup(_ context.Context, r *fusedev.Request, name string, out *abi.EntryOut) error {
	ino := map[string]uint64{"direct": inoDirect, "cached": inoCached}[name]
	if r.NodeID != abi.RootID || ino == 0 {
		return syscall.ENOENT
	}
	out.NodeID, out.Generation, out.EntryValid = ino, 1, 3600
	return f.attr(ino, &out.Attr)
}

func (f *nullFS) Getattr(_ context.Context, r *fusedev.Request, _ *abi.GetattrIn, out *abi.AttrOut) error {
	return f.attr(r.NodeID, &out.Attr) // AttrValid 0: every stat asks again
}

func (f *nullFS) Open(_ context.Context, r *fusedev.Request, _ *abi.OpenIn, out *abi.OpenOut) error {
	switch r.NodeID {
	case inoDirect:
		out.OpenFlags = abi.FopenDirectIO
	case inoCached: // no FOPEN_KEEP_CACHE: the kernel drops cached pages on open
	default:
		return syscall.EISDIR
	}
	return nil
}

func (f *nullFS) Read(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, _ []byte) ([]byte, error) {
	if in.Offset >= f.size {
		return nil, nil
	}
	n := min(uint64(in.Size), f.size-in.Offset, uint64(len(f.zeros)))
	return f.zeros[:n], nil
}

func (f *nullFS) Release(context.Context, *fusedev.Request, *abi.ReleaseIn) error { return nil }
func (f *nullFS) Opendir(context.Context, *fusedev.Request, *abi.OpenIn, *abi.OpenOut) error {
	return nil
}
func (f *nullFS) Releasedir(context.Context, *fusedev.Request, *abi.ReleaseIn) error { return nil }

// childReport is what a server child prints when its mount goes away.
type childReport struct {
	Readers  int              `json:"readers"`
	Ops      map[string]int64 `json:"ops"`
	MaxWrite uint32           `json:"max_write"`
	Minor    uint32           `json:"minor"`
	Error    string           `json:"error,omitempty"`
}

func serveChild(args []string) int {
	signal.Ignore(os.Interrupt) // the parent unmounts; ^C must not leave a stale mount
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "enginebench child: want MOUNTPOINT READERS SIZE CPUPROFILE")
		return 2
	}
	mp := args[0]
	readers, _ := strconv.Atoi(args[1])
	size, _ := strconv.ParseUint(args[2], 10, 64)
	conn, err := fusedev.Mount(mp, fusedev.MountOptions{FSName: "enginebench", Subtype: "enginebench"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "enginebench child: %v\n", err)
		return 1
	}
	defer conn.Close()
	fs := &nullFS{size: size, zeros: make([]byte, 1<<20)}
	srv := fusedev.NewServer(conn, fs, fusedev.Options{Readers: readers})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		fmt.Fprintf(os.Stderr, "enginebench child: Serve: %v\n", err)
		return 1
	}
	if prof := args[3]; prof != "" {
		f, err := os.Create(prof)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	fmt.Println("ready")
	err = <-done
	rep := childReport{Readers: readers, Ops: map[string]int64{}}
	if neg := srv.Negotiated(); neg != nil {
		rep.MaxWrite, rep.Minor = neg.MaxWrite, neg.Minor
	}
	for _, st := range srv.Stats() {
		rep.Ops[st.Op.String()] = int64(st.Count)
	}
	if err != nil {
		rep.Error = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// ---- measuring parent ----

type mount struct {
	label   string // column title
	readers int
	dir     string
	cmd     *exec.Cmd
	out     *bufio.Reader
	report  childReport
}

func startMount(work, bin, label string, index, readers int, size uint64, profDir string) (*mount, error) {
	m := &mount{label: label, readers: readers, dir: filepath.Join(work, fmt.Sprintf("mnt%d-r%d", index, readers))}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return nil, err
	}
	prof := ""
	if profDir != "" {
		prof = filepath.Join(profDir, fmt.Sprintf("server%d-r%d.pprof", index, readers))
	}
	m.cmd = exec.Command(bin, m.dir, strconv.Itoa(readers), strconv.FormatUint(size, 10), prof)
	m.cmd.Env = append(os.Environ(), serveEnv+"=1")
	m.cmd.Stderr = os.Stderr
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdout, err := m.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	m.out = bufio.NewReader(stdout)
	line := make(chan string, 1)
	go func() {
		s, _ := m.out.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "ready" {
			m.cmd.Process.Kill()
			m.cmd.Wait()
			return nil, fmt.Errorf("server child for %d readers did not start", readers)
		}
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		m.cmd.Wait()
		return nil, fmt.Errorf("server child for %d readers: no INIT within 10s", readers)
	}
	return m, nil
}

// stop unmounts and collects the child's report.
func (m *mount) stop() {
	if err := fusedev.Unmount(m.dir, fusedev.UnmountOptions{}); err != nil {
		fmt.Fprintf(os.Stderr, "unmount %s: %v; detaching\n", m.dir, err)
		fusedev.Unmount(m.dir, fusedev.UnmountOptions{Lazy: true})
	}
	done := make(chan struct{})
	go func() {
		b, _ := io.ReadAll(m.out)
		json.Unmarshal(b, &m.report)
		m.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-done
	}
	os.Remove(m.dir)
}

// statLoop stats path from n goroutines for d and returns stats per second.
func statLoop(ctx context.Context, path string, n int, d time.Duration) (float64, error) {
	var ops atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st unix.Stat_t
			local := int64(0)
			for ctx.Err() == nil {
				for j := 0; j < 64; j++ {
					if err := unix.Stat(path, &st); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					local++
				}
				if time.Now().After(stop) {
					break
				}
			}
			ops.Add(local)
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return float64(ops.Load()) / time.Since(start).Seconds(), ctx.Err()
}

// readLoop reads path sequentially with 1 MiB reads from n goroutines, each
// over its own 1/n of the file (reopening at its end), for d; it returns
// MB/s (10^6 bytes).
func readLoop(ctx context.Context, path string, size uint64, n int, d time.Duration) (float64, error) {
	var total atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	span := size / uint64(n) &^ (1<<20 - 1)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			lo := uint64(i) * span
			for ctx.Err() == nil && time.Now().Before(stop) {
				f, err := os.Open(path)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				for off := lo; off < lo+span && time.Now().Before(stop); {
					k, err := f.ReadAt(buf, int64(off))
					total.Add(int64(k))
					off += uint64(k)
					if err != nil || k == 0 {
						if !errors.Is(err, io.EOF) {
							firstErr.CompareAndSwap(nil, fmt.Errorf("read at %d: %v", off, err))
						}
						break
					}
				}
				f.Close()
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return float64(total.Load()) / time.Since(start).Seconds() / 1e6, ctx.Err()
}

// serverCPU returns the CPU time the child's threads have used so far.
func (m *mount) serverCPU() (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", m.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no schedstat for the server child: %v", err)
	}
	var total time.Duration
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // a thread that just exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		total += time.Duration(ns)
	}
	return total, nil
}

type metric struct {
	key        string // for --metrics
	name, unit string
	perOp      float64 // operations per unit of the rate: 1, or MiB per MB
	opName     string
	run        func(ctx context.Context, m *mount) (float64, error)
}

func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	for suf, m := range map[string]uint64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional KiB/MiB/GiB suffix", s)
	}
	return n * mult, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func runBench(args []string) int {
	fl := flag.NewFlagSet("enginebench", flag.ContinueOnError)
	readersFlag := fl.String("readers", "1,2,4", "comma-separated reader counts, one mount each, compared side by side")
	clients := fl.Int("clients", 4, "concurrent clients in the multi-client measurements")
	dur := fl.Duration("duration", 2*time.Second, "length of each measurement")
	rounds := fl.Int("rounds", 3, "rounds over all mounts; the median is reported")
	sizeFlag := fl.String("size", "1GiB", "size of the zero-filled files")
	work := fl.String("dir", "", "directory for the mount points (default: a new temporary directory)")
	profDir := fl.String("cpuprofile-dir", "", "write each server child's CPU profile here (keep profiles out of git)")
	only := fl.String("metrics", "", "comma-separated subset of stat1,statN,direct1,directN,cached1 (default: all)")
	baseline := fl.String("baseline", "", "another enginebench binary whose server is measured next to this one's, for each reader count")
	out := fl.String("out", "", "also write the results table (markdown) to this file")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var readers []int
	for _, s := range strings.Split(*readersFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "--readers: %q is not a positive count\n", s)
			return 2
		}
		readers = append(readers, n)
	}
	if *clients < 1 || *rounds < 1 || *dur <= 0 {
		fmt.Fprintln(os.Stderr, "--clients, --rounds and --duration must be positive")
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "enginebench mounts with mount(2): run it as root")
		return 1
	}
	dir := *work
	if dir == "" {
		if dir, err = os.MkdirTemp("", "enginebench-"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.Remove(dir)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	var mounts []*mount
	defer func() {
		for _, m := range mounts {
			m.stop()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	type config struct {
		bin, label string
		readers    int
	}
	var configs []config
	for _, r := range readers {
		if *baseline != "" {
			configs = append(configs, config{*baseline, fmt.Sprintf("baseline, readers=%d", r), r})
		}
		configs = append(configs, config{self, fmt.Sprintf("readers=%d", r), r})
	}
	for i, c := range configs {
		m, err := startMount(dir, c.bin, c.label, i, c.readers, size, *profDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		mounts = append(mounts, m)
	}

	metrics := []metric{
		{"stat1", "stat, 1 client", "stat/s", 1, "stat", func(ctx context.Context, m *mount) (float64, error) {
			return statLoop(ctx, filepath.Join(m.dir, "direct"), 1, *dur)
		}},
		{"statN", fmt.Sprintf("stat, %d clients", *clients), "stat/s", 1, "stat", func(ctx context.Context, m *mount) (float64, error) {
			return statLoop(ctx, filepath.Join(m.dir, "direct"), *clients, *dur)
		}},
		{"direct1", "direct read 1 MiB, 1 client", "MB/s", 1e6 / (1 << 20), "MiB", func(ctx context.Context, m *mount) (float64, error) {
			return readLoop(ctx, filepath.Join(m.dir, "direct"), size, 1, *dur)
		}},
		{"directN", fmt.Sprintf("direct read 1 MiB, %d clients", *clients), "MB/s", 1e6 / (1 << 20), "MiB", func(ctx context.Context, m *mount) (float64, error) {
			return readLoop(ctx, filepath.Join(m.dir, "direct"), size, *clients, *dur)
		}},
		{"cached1", "cached read (cold), 1 client", "MB/s", 1e6 / (1 << 20), "MiB", func(ctx context.Context, m *mount) (float64, error) {
			return readLoop(ctx, filepath.Join(m.dir, "cached"), size, 1, *dur)
		}},
	}
	if *only != "" {
		keep := map[string]bool{}
		for _, k := range strings.Split(*only, ",") {
			keep[strings.TrimSpace(k)] = true
		}
		metrics = slices.DeleteFunc(metrics, func(m metric) bool { return !keep[m.key] })
		if len(metrics) == 0 {
			fmt.Fprintln(os.Stderr, "--metrics: none of stat1,statN,direct1,directN,cached1 selected")
			return 2
		}
	}
	results := make([][][]float64, len(metrics)) // metric, mount, round
	cpuPer := make([][][]float64, len(metrics))  // server CPU µs per operation
	for i := range results {
		results[i] = make([][]float64, len(mounts))
		cpuPer[i] = make([][]float64, len(mounts))
	}
	// Warm up every mount (lookups, first opens).
	for _, m := range mounts {
		if _, err := statLoop(ctx, filepath.Join(m.dir, "direct"), 1, 200*time.Millisecond); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	for round := 0; round < *rounds; round++ {
		for mi, met := range metrics {
			for ji := range mounts {
				// Rotate the order each round so no mount always goes first.
				j := (ji + round) % len(mounts)
				cpu0, err := mounts[j].serverCPU()
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				t0 := time.Now()
				v, err := met.run(ctx, mounts[j])
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				elapsed := time.Since(t0)
				cpu1, _ := mounts[j].serverCPU()
				ops := v * met.perOp * elapsed.Seconds()
				us := float64((cpu1 - cpu0).Microseconds()) / ops
				results[mi][j] = append(results[mi][j], v)
				cpuPer[mi][j] = append(cpuPer[mi][j], us)
				fmt.Fprintf(os.Stderr, "round %d: %-32s %-22s %12.0f %s  %7.2f µs server CPU/%s\n",
					round+1, met.name, mounts[j].label, v, met.unit, us, met.opName)
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "| measurement | unit |")
	for _, m := range mounts {
		fmt.Fprintf(&b, " %s |", m.label)
	}
	b.WriteString("\n|---|---|")
	for range mounts {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	row := func(name, unit, format string, vals [][]float64) {
		base := median(vals[0])
		fmt.Fprintf(&b, "| %s | %s |", name, unit)
		for j := range mounts {
			v := median(vals[j])
			if j == 0 {
				fmt.Fprintf(&b, " "+format+" |", v)
			} else {
				fmt.Fprintf(&b, " "+format+" (×%.2f) |", v, v/base)
			}
		}
		b.WriteString("\n")
	}
	for mi, met := range metrics {
		row(met.name, met.unit, "%.0f", results[mi])
	}
	for mi, met := range metrics {
		row(met.name, "server CPU µs/"+met.opName, "%.2f", cpuPer[mi])
	}
	for _, m := range mounts {
		m.stop()
	}
	fmt.Fprintf(&b, "\nServer-side requests (all rounds): ")
	for i, m := range mounts {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: GETATTR %d, READ %d", m.label, m.report.Ops["GETATTR"], m.report.Ops["READ"])
		if m.report.Error != "" {
			fmt.Fprintf(&b, " (Serve: %s)", m.report.Error)
		}
	}
	fmt.Fprintf(&b, "\n\n%s, GOMAXPROCS %d, %v per value, median of %d rounds, files of %s, protocol 7.%d, max_write %d\n",
		runtime.Version(), runtime.GOMAXPROCS(0), *dur, *rounds, *sizeFlag, mounts[0].report.Minor, mounts[0].report.MaxWrite)
	mounts = nil
	fmt.Print(b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}
