// Command driver runs the passthrough benchmarks side by side: the native
// directory, fusegate with kernel passthrough, fusegate serving reads and
// writes itself, and go-fuse's loopback example, all on the same lower file
// system, in interleaved rounds. It prints a table of medians with each
// figure's ratio to native. bench/passthrough/run.sh installs what it needs
// and starts it; it is not part of the test suite.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

type target struct {
	name       string
	label      string
	data, meta bool   // runs the data workloads, the metadata workload
	dir        string // where the workloads run
	lower      string // the lower directory of a mount
	cmd        *exec.Cmd
	mount      func(t *target) *exec.Cmd
}

type options struct {
	work, metawork                string
	fusegate, loopback, metabench string
	rounds, files                 int
	size                          string
	runtime                       int
	only                          string
	out                           string
}

func main() {
	var o options
	flag.StringVar(&o.work, "work", "/var/tmp/fusegate-bench", "work directory of the data workloads (on the file system to measure)")
	flag.StringVar(&o.metawork, "metawork", "", "work directory of the metadata workload (default: -work)")
	flag.StringVar(&o.fusegate, "fusegate", "fusegate", "fusegate binary")
	flag.StringVar(&o.loopback, "loopback", "loopback", "go-fuse's example/loopback binary")
	flag.StringVar(&o.metabench, "metabench", "metabench", "metabench binary")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each figure is the median")
	flag.IntVar(&o.files, "files", 10000, "files for the metadata run")
	flag.StringVar(&o.size, "size", "1g", "file size for the data runs (fio syntax)")
	flag.IntVar(&o.runtime, "runtime", 5, "seconds for each random-read run")
	flag.StringVar(&o.only, "only", "", "comma-separated targets to run (native, pt, daemon, gofuse: data and metadata; m-native, m-pt, m-pt-nodp, m-gofuse: metadata only); default all")
	flag.StringVar(&o.out, "out", "", "also write the table (markdown) to this file")
	flag.Parse()
	if err := run(&o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o *options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (drops caches, mounts)")
	}
	if o.metawork == "" {
		o.metawork = o.work
	}
	os.MkdirAll(o.work, 0o755)
	fusegate := func(args ...string) func(t *target) *exec.Cmd {
		return func(t *target) *exec.Cmd {
			return exec.Command(o.fusegate, append(append([]string{"mount", "--log-level=warn"}, args...), t.lower, t.dir)...)
		}
	}
	gofuse := func(t *target) *exec.Cmd { return exec.Command(o.loopback, "-directmount", "-q", t.dir, t.lower) }
	targets := []*target{
		{name: "native", label: "native", data: true},
		{name: "pt", label: "fusegate passthrough", data: true, mount: fusegate("--passthrough=on")},
		{name: "daemon", label: "fusegate no passthrough", data: true, mount: fusegate("--passthrough=off")},
		{name: "gofuse", label: "go-fuse loopback", data: true, mount: gofuse},
		{name: "m-native", label: "native", meta: true},
		{name: "m-pt", label: "fusegate passthrough", meta: true, mount: fusegate("--passthrough=on")},
		{name: "m-pt-nodp", label: "fusegate passthrough, nodefault_permissions", meta: true,
			mount: fusegate("--passthrough=on", "-o", "nodefault_permissions")},
		{name: "m-gofuse", label: "go-fuse loopback", meta: true, mount: gofuse},
	}
	if o.only != "" {
		want := strings.Split(o.only, ",")
		targets = slices.DeleteFunc(targets, func(t *target) bool {
			return !slices.Contains(want, t.name) && !slices.Contains(want, strings.TrimPrefix(t.name, "m-"))
		})
	}
	for _, t := range targets {
		base := o.work
		if t.meta {
			base = o.metawork
		}
		t.dir = filepath.Join(base, t.name)
		os.MkdirAll(t.dir, 0o755)
		if t.mount != nil {
			// The lower directory is on the same file system as the
			// target's native counterpart: the metadata targets' on the
			// fresh image, so that the lower file system is the same for all.
			t.lower = filepath.Join(base, t.name+"-lower")
			os.MkdirAll(t.lower, 0o755)
			if err := start(t); err != nil {
				stopAll(targets)
				return err
			}
		}
	}
	defer stopAll(targets)

	results := map[string]map[string][]float64{} // metric → target → values
	add := func(metric, tgt string, v float64) {
		if results[metric] == nil {
			results[metric] = map[string][]float64{}
		}
		results[metric][tgt] = append(results[metric][tgt], v)
	}
	data := slices.DeleteFunc(slices.Clone(targets), func(t *target) bool { return !t.data })
	metas := slices.DeleteFunc(slices.Clone(targets), func(t *target) bool { return !t.meta })
	for round := 0; round < o.rounds; round++ {
		order := rotate(data, round)
		fmt.Fprintf(os.Stderr, "round %d/%d\n", round+1, o.rounds)
		for _, t := range order {
			file := filepath.Join(t.dir, "seqfile")
			v, err := fio(o, file, "write", "1M", "", false, false)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			add("seq write 1M (MB/s)", t.name, v)
		}
		for _, t := range order {
			v, err := fio(o, filepath.Join(t.dir, "seqfile"), "read", "1M", "", true, false)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			add("seq read 1M cold (MB/s)", t.name, v)
		}
		for _, t := range order {
			v, err := fio(o, filepath.Join(t.dir, "seqfile"), "read", "1M", "", false, true)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			add("seq read 1M warm (MB/s)", t.name, v)
		}
		for _, t := range order {
			v, err := fio(o, filepath.Join(t.dir, "seqfile"), "randread", "4k", fmt.Sprint(o.runtime), true, false)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			add("rand read 4k cold (IOPS)", t.name, v)
		}
		for _, t := range order {
			v, err := fio(o, filepath.Join(t.dir, "seqfile"), "randread", "4k", fmt.Sprint(o.runtime), false, true)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			add("rand read 4k warm (IOPS)", t.name, v)
		}
		for _, t := range rotate(metas, round) {
			m, err := meta(o, t.dir)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			add("create (files/s)", t.name, m.Create)
			add("stat, caches dropped (files/s)", t.name, m.Stat)
			add("readdir (entries/s)", t.name, m.Readdir)
			add("unlink (files/s)", t.name, m.Unlink)
		}
	}
	for _, t := range targets {
		os.Remove(filepath.Join(t.dir, "seqfile"))
	}
	table := "Medians:\n\n" + render(o, data, results, "", median) + "\n" + render(o, metas, results, "m-", median) +
		"\nBest of the rounds (the least disturbed by other load on the machine):\n\n" +
		render(o, data, results, "", best) + "\n" + render(o, metas, results, "m-", best) +
		fmt.Sprintf("\n%d interleaved rounds; ratios are to native.\n<!-- every value: %s -->\n", o.rounds, raw(targets, results))
	fmt.Print(table)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(table), 0o644)
	}
	return nil
}

var metrics = []string{
	"seq write 1M (MB/s)", "seq read 1M cold (MB/s)", "seq read 1M warm (MB/s)",
	"rand read 4k cold (IOPS)", "rand read 4k warm (IOPS)",
	"create (files/s)", "stat, caches dropped (files/s)", "readdir (entries/s)", "unlink (files/s)",
}

func best(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return slices.Max(v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rotate(ts []*target, by int) []*target {
	if len(ts) == 0 {
		return nil
	}
	by %= len(ts)
	return append(slices.Clone(ts[by:]), ts[:by]...)
}

func render(o *options, targets []*target, results map[string]map[string][]float64, prefix string, stat func([]float64) float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| workload |")
	for _, t := range targets {
		fmt.Fprintf(&b, " %s |", t.label)
	}
	fmt.Fprintf(&b, "\n|---|")
	for range targets {
		fmt.Fprintf(&b, "---:|")
	}
	fmt.Fprintln(&b)
	for _, m := range metrics {
		r := results[m]
		if r == nil {
			continue
		}
		native := stat(r[prefix+"native"])
		if len(r[prefix+"native"]) == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %s |", m)
		for _, t := range targets {
			v := stat(r[t.name])
			if t.name == prefix+"native" || native == 0 {
				fmt.Fprintf(&b, " %s |", num(v))
			} else {
				fmt.Fprintf(&b, " %s (%.2f×) |", num(v), v/native)
			}
		}
		fmt.Fprintln(&b)
	}
	return b.String()
}

func raw(targets []*target, results map[string]map[string][]float64) string {
	var parts []string
	for _, m := range metrics {
		for _, t := range targets {
			var vs []string
			for _, v := range results[m][t.name] {
				vs = append(vs, num(v))
			}
			if len(vs) > 0 {
				parts = append(parts, fmt.Sprintf("%s/%s=[%s]", t.name, strings.Fields(m)[0]+"-"+strings.Fields(m)[1], strings.Join(vs, " ")))
			}
		}
	}
	return strings.Join(parts, "; ")
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// fio runs one fio job and returns MB/s (sequential) or IOPS (random).
func fio(o *options, file, rw, bs, runtime string, cold, warm bool) (float64, error) {
	if cold {
		if err := dropCaches(); err != nil {
			return 0, err
		}
	}
	if warm {
		// Read it once so the page cache holds it.
		f, err := os.Open(file)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, bufio.NewReaderSize(f, 1<<20))
		f.Close()
	}
	// No fadvise hints and no invalidation: the kernel does not pass
	// fadvise on to a passthrough file's backing file, so hints would make
	// native and FUSE read differently; caches are dropped for cold runs.
	args := []string{"--name=bench", "--filename=" + file, "--rw=" + rw, "--bs=" + bs, "--size=" + o.size,
		"--ioengine=psync", "--numjobs=1", "--output-format=json", "--fadvise_hint=0", "--invalidate=0"}
	if runtime != "" {
		args = append(args, "--runtime="+runtime, "--time_based")
	}
	out, err := exec.Command("fio", args...).Output()
	if err != nil {
		return 0, fmt.Errorf("fio %s: %w", strings.Join(args, " "), err)
	}
	var doc struct {
		Jobs []struct {
			Read, Write struct {
				BwBytes float64 `json:"bw_bytes"`
				Iops    float64 `json:"iops"`
			}
		} `json:"jobs"`
	}
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &doc); err != nil || len(doc.Jobs) == 0 {
		return 0, fmt.Errorf("fio output: %v", err)
	}
	j := doc.Jobs[0]
	switch rw {
	case "write":
		return j.Write.BwBytes / 1e6, nil
	case "read":
		return j.Read.BwBytes / 1e6, nil
	}
	return j.Read.Iops, nil
}

type metaResult struct {
	Create, Stat, Readdir, Unlink float64
}

func meta(o *options, dir string) (metaResult, error) {
	var m metaResult
	out, err := exec.Command(o.metabench, "-dir", dir, "-n", fmt.Sprint(o.files)).Output()
	if err != nil {
		return m, fmt.Errorf("metabench: %w", err)
	}
	err = json.Unmarshal(out, &m)
	return m, err
}

func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func start(t *target) error {
	t.cmd = t.mount(t)
	t.cmd.Stdout, t.cmd.Stderr = os.Stderr, os.Stderr
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := t.cmd.Start(); err != nil {
		return err
	}
	for i := 0; i < 100; i++ {
		if mounted(t.dir) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not mount %s", t.name, t.dir)
}

func stopAll(targets []*target) {
	for _, t := range targets {
		if t.cmd == nil || t.cmd.Process == nil {
			continue
		}
		syscall.Unmount(t.dir, 0)
		done := make(chan struct{})
		go func() { t.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-t.cmd.Process.Pid, syscall.SIGKILL)
			syscall.Unmount(t.dir, syscall.MNT_DETACH)
		}
		t.cmd = nil
	}
}
