package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/tests/harness"
)

// BenchmarkPolicy measures what the built-in policy costs a passthrough
// mirror, side by side: one lower directory mounted twice by `fusegate
// mount --passthrough=on`, once with `--policy default` and once without.
// Each iteration is one round in which a child process running as an app
// uid, for both mounts (the order alternating from round to round),
//
//   - reads a 1 GiB file sequentially with 1 MiB reads (open, read, close;
//     the lower file is in the page cache, read once through each mount
//     before the first round), twice per mount in the order A B B A, so
//     that a change of the machine's load during the round weighs on both
//     alike: MB/s of wall time, and MB per second of the reader's CPU time
//     (with passthrough the reads are the reader's own system calls);
//   - creates 2000 empty files in a new directory (open O_CREAT|O_EXCL,
//     close; LOOKUP, CREATE, RELEASE each): files/s;
//   - stats 2000 files made in the lower directory before the round (the
//     kernel has never seen them: a LOOKUP each): files/s.
//
// For create and stat also the CPU time the serving daemon spent per file
// (its threads' schedstat), which moves much less with the machine's load.
// Every figure is compared within its round (policy / none), and the
// median of those ratios over the rounds is reported, with the medians of
// the figures themselves. Not part of the test suite:
//
//	go test -run '^$' -bench BenchmarkPolicy -benchtime 21x ./tests/policy
//
// docs/benchmarks/policy.md has the figures.
func BenchmarkPolicy(b *testing.B) {
	harness.RequireRoot(b)
	harness.RequireFUSE(b)
	base, err := os.MkdirTemp("/var/tmp", "fusegate-policy-bench-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(base, 0o755)
	b.Cleanup(func() { os.RemoveAll(base) })
	src := filepath.Join(base, "lower")
	for _, d := range []string{src, filepath.Join(src, "DCIM")} {
		must(b, os.Mkdir(d, 0o777))
		must(b, os.Chmod(d, 0o777))
	}
	big := filepath.Join(src, "DCIM", "big.bin")
	const size = 1 << 30
	f, err := os.Create(big)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for off := 0; off < size; off += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	must(b, f.Close())
	must(b, os.Chmod(big, 0o644))

	type mount struct {
		name  string
		mp    string
		d     *harness.Daemon
		stats statsDoc // before the rounds
	}
	var mounts []*mount
	for _, name := range []string{"none", "policy"} {
		mp := filepath.Join(base, "mp-"+name)
		must(b, os.Mkdir(mp, 0o755))
		args := []string{"mount", "--passthrough=on", "--stats-file", filepath.Join(base, "stats-"+name+".json")}
		if name == "policy" {
			args = append(args, "--policy", "default")
		}
		d := harness.StartDaemon(b, harness.DaemonOptions{Mountpoints: []string{mp}}, append(args, src, mp)...)
		d.WaitMounted(mp)
		mounts = append(mounts, &mount{name: name, mp: mp, d: d})
		b.Cleanup(func() { d.Stop(syscall.SIGTERM) })
	}
	app := appA
	for _, m := range mounts { // warm: the file in the page cache, the daemons started
		if r := do(b, app, "readtime", filepath.Join(m.mp, "DCIM/big.bin")); r.Errno != 0 {
			b.Fatalf("%s: read: %v", m.name, r.err())
		}
		m.stats = daemonStats(b, m.d, filepath.Join(base, "stats-"+m.name+".json"))
	}
	const files = 2000
	// figures[what][mount name] has one value per round.
	figures := map[string]map[string][]float64{}
	add := func(what, mount string, v float64) {
		if figures[what] == nil {
			figures[what] = map[string][]float64{}
		}
		figures[what][mount] = append(figures[what][mount], v)
	}
	round := 0
	for b.Loop() {
		order := []*mount{mounts[round%2], mounts[1-round%2]}
		check := func(m *mount, what string, rs []result) result {
			for i, r := range rs {
				if r.Errno != 0 {
					b.Fatalf("%s round %d %s step %d: %v", m.name, round, what, i, r.err())
				}
			}
			return rs[len(rs)-1]
		}
		var wall, cpu [2]time.Duration // by mounts index
		for _, m := range []*mount{order[0], order[1], order[1], order[0]} {
			r := check(m, "read", run(b, app, step{"readtime", filepath.Join(m.mp, "DCIM/big.bin")}))
			if r.Out != strconv.Itoa(size) {
				b.Fatalf("%s: read %s bytes", m.name, r.Out)
			}
			i := slices.Index(mounts, m)
			wall[i] += time.Duration(r.Int)
			cpu[i] += time.Duration(r.CPU)
		}
		for i, m := range mounts {
			add("read", m.name, 2*size/1e6/wall[i].Seconds())
			add("read-cpu", m.name, 2*size/1e6/cpu[i].Seconds())
		}
		for _, m := range order {
			// Files to stat, made in the lower directory: the kernel
			// has never seen them, so each stat is a LOOKUP.
			sdir := "s-" + m.name + strconv.Itoa(round)
			b.StopTimer()
			must(b, os.Mkdir(filepath.Join(src, "DCIM", sdir), 0o755))
			for i := range files {
				must(b, os.WriteFile(filepath.Join(src, "DCIM", sdir, "f"+strconv.Itoa(i)), nil, 0o644))
			}
			b.StartTimer()
			dir := filepath.Join(m.mp, "DCIM", "c-"+m.name+strconv.Itoa(round))
			timed := func(what string, s ...step) (result, time.Duration) {
				cpu := daemonCPU(b, m.d.Pid())
				r := check(m, what, run(b, app, s...))
				return r, daemonCPU(b, m.d.Pid()) - cpu
			}
			r, cpu := timed("create", step{"mkdir", dir}, step{"createmany", dir, strconv.Itoa(files)})
			add("create", m.name, files/time.Duration(r.Int).Seconds())
			add("create-cpu", m.name, float64(cpu.Microseconds())/files)
			r, cpu = timed("stat", step{"statmany", filepath.Join(m.mp, "DCIM", sdir), strconv.Itoa(files)})
			add("stat", m.name, files/time.Duration(r.Int).Seconds())
			add("stat-cpu", m.name, float64(cpu.Microseconds())/files)
		}
		round++
	}
	// The reads went through kernel passthrough on both mounts: no READ
	// request reached either daemon, and each read was one passthrough
	// OPEN (the policy decides OPEN, not the reads).
	for _, m := range mounts {
		st := daemonStats(b, m.d, filepath.Join(base, "stats-"+m.name+".json"))
		reads := st.Ops["READ"].Count - m.stats.Ops["READ"].Count
		pt := st.FS.PTOpens - m.stats.FS.PTOpens
		b.ReportMetric(float64(reads), "READs-"+m.name)
		b.Logf("%-6s %d READ requests reached the daemon during %d rounds (%d reads of big.bin); %d passthrough opens (the reads' and the creates')",
			m.name, reads, round, 2*round, pt)
		if reads != 0 || pt < uint64(2*round+files*round) {
			b.Errorf("%s: reads were not all kernel passthrough", m.name)
		}
	}
	for _, w := range []struct{ what, unit, note string }{
		{"read", "MB/s", "wall"},
		{"read-cpu", "MB/cpu-s", "reader's CPU"},
		{"create", "files/s", "wall"},
		{"create-cpu", "µs/file", "daemon CPU"},
		{"stat", "files/s", "wall"},
		{"stat-cpu", "µs/file", "daemon CPU"},
	} {
		none, pol := figures[w.what]["none"], figures[w.what]["policy"]
		ratios := make([]float64, len(none))
		for i := range none {
			ratios[i] = pol[i] / none[i]
		}
		b.ReportMetric(median(none), w.what+"-none-"+w.unit)
		b.ReportMetric(median(pol), w.what+"-policy-"+w.unit)
		b.ReportMetric(median(ratios), w.what+"-ratio")
		b.Logf("%-10s none %8.1f %s [%.1f–%.1f], policy %8.1f [%.1f–%.1f]; policy/none per round: median %.3f, quartiles %.3f–%.3f, [%.3f–%.3f] (%s, %d rounds)",
			w.what, median(none), w.unit, slices.Min(none), slices.Max(none), median(pol), slices.Min(pol), slices.Max(pol),
			median(ratios), quantile(ratios, 0.25), quantile(ratios, 0.75), slices.Min(ratios), slices.Max(ratios), w.note, len(none))
	}
}

// daemonStats asks `fusegate mount` d for its --stats-file path (SIGUSR1)
// and returns it once it is fresh.
func daemonStats(b *testing.B, d *harness.Daemon, path string) statsDoc {
	asked := time.Now()
	must(b, d.Signal(syscall.SIGUSR1))
	for deadline := time.Now().Add(10 * time.Second); ; {
		var doc statsDoc
		if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &doc) == nil && !doc.Time.Before(asked) {
			return doc
		}
		if time.Now().After(deadline) {
			b.Fatalf("no fresh %s within 10 s of SIGUSR1", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemonCPU is harness.ProcessCPU, failing b when pid has no threads.
func daemonCPU(b *testing.B, pid int) time.Duration {
	d, err := harness.ProcessCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
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

// quantile is the q-quantile of v (0 <= q <= 1), interpolated linearly
// between the two nearest values.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	x := q * float64(len(s)-1)
	i := int(x)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (x-float64(i))*(s[i+1]-s[i])
}
