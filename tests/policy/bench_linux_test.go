package policy

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/tests/harness"
)

// BenchmarkPolicy measures what the built-in policy costs a passthrough
// mirror, side by side: one lower directory mounted twice by `fusegate
// mount --passthrough=on`, once with `--policy default` and once without.
// Each iteration is one round that, for both mounts in turn (the order
// alternating from round to round), has a child process running as an app
// uid
//
//   - read a 1 GiB file sequentially with 1 MiB reads (open, read, close;
//     the lower file is in the page cache, read once through each mount
//     before the first round): MB/s;
//   - create 2000 empty files in a new directory (open O_CREAT|O_EXCL,
//     close; LOOKUP, CREATE, RELEASE each): files/s;
//   - stat 2000 files made in the lower directory before the round (the
//     kernel has never seen them: a LOOKUP each): files/s.
//
// The timings are taken inside the child; for create and stat also the
// CPU time the serving daemon spent per file (its threads' schedstat), which
// moves much less with the machine's load. Reported: the median of each
// over the rounds, and the ratios policy / none. Not part of the test suite:
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
		name string
		mp   string
		d    *harness.Daemon
	}
	var mounts []*mount
	for _, name := range []string{"none", "policy"} {
		mp := filepath.Join(base, "mp-"+name)
		must(b, os.Mkdir(mp, 0o755))
		args := []string{"mount", "--passthrough=on"}
		if name == "policy" {
			args = append(args, "--policy", "default")
		}
		d := harness.StartDaemon(b, harness.DaemonOptions{Mountpoints: []string{mp}}, append(args, src, mp)...)
		d.WaitMounted(mp)
		mounts = append(mounts, &mount{name, mp, d})
		b.Cleanup(func() { d.Stop(syscall.SIGTERM) })
	}
	app := appA
	for _, m := range mounts { // warm: the file in the page cache, the daemons started
		if r := do(b, app, "readtime", filepath.Join(m.mp, "DCIM/big.bin")); r.Errno != 0 {
			b.Fatalf("%s: read: %v", m.name, r.err())
		}
	}
	const files = 2000
	reads := map[string][]float64{}
	creates := map[string][]float64{}
	stats := map[string][]float64{}
	createCPU := map[string][]float64{} // the daemon's CPU µs per file
	statCPU := map[string][]float64{}
	round := 0
	for b.Loop() {
		order := []*mount{mounts[0], mounts[1]}
		if round%2 == 1 {
			order[0], order[1] = order[1], order[0]
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
				rs := run(b, app, s...)
				cpu = daemonCPU(b, m.d.Pid()) - cpu
				for i, r := range rs {
					if r.Errno != 0 {
						b.Fatalf("%s round %d %s step %d: %v", m.name, round, what, i, r.err())
					}
				}
				return rs[len(rs)-1], cpu
			}
			r, _ := timed("read", step{"readtime", filepath.Join(m.mp, "DCIM/big.bin")})
			if r.Out != strconv.Itoa(size) {
				b.Fatalf("%s: read %s bytes", m.name, r.Out)
			}
			reads[m.name] = append(reads[m.name], float64(size)/1e6/time.Duration(r.Int).Seconds())
			r, cpu := timed("create", step{"mkdir", dir}, step{"createmany", dir, strconv.Itoa(files)})
			creates[m.name] = append(creates[m.name], files/time.Duration(r.Int).Seconds())
			createCPU[m.name] = append(createCPU[m.name], float64(cpu.Microseconds())/files)
			r, cpu = timed("stat", step{"statmany", filepath.Join(m.mp, "DCIM", sdir), strconv.Itoa(files)})
			stats[m.name] = append(stats[m.name], files/time.Duration(r.Int).Seconds())
			statCPU[m.name] = append(statCPU[m.name], float64(cpu.Microseconds())/files)
		}
		round++
	}
	report := func(what, unit string, v map[string][]float64) {
		none, pol := median(v["none"]), median(v["policy"])
		b.ReportMetric(none, what+"-none-"+unit)
		b.ReportMetric(pol, what+"-policy-"+unit)
		b.ReportMetric(pol/none, what+"-ratio")
		b.Logf("%-10s none %8.1f %s [%.1f–%.1f], policy %8.1f %s [%.1f–%.1f], policy/none %.3f (%d rounds)", what,
			none, unit, slices.Min(v["none"]), slices.Max(v["none"]), pol, unit, slices.Min(v["policy"]), slices.Max(v["policy"]), pol/none, len(v["none"]))
	}
	report("read", "MB/s", reads)
	report("create", "files/s", creates)
	report("stat", "files/s", stats)
	report("create-cpu", "µs", createCPU)
	report("stat-cpu", "µs", statCPU)
}

// daemonCPU is the CPU time the process pid has used, summed over its
// threads (/proc/PID/task/*/schedstat, first field): steadier than wall
// time on a shared machine.
func daemonCPU(b *testing.B, pid int) time.Duration {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that ended
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(n)
		}
	}
	return total
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
