package serve

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/internal/control"
	"github.com/fusegate/fusegate/tests/harness"
)

// The cost of the daemon's policy gate, side by side: one `fusegate serve`
// with two mirrors of the same kind of tree, one under the built-in policy
// and one with policy "none", and the lower directory itself. Every
// operation measured reaches the daemon (OPEN, CREATE/UNLINK and lookups of
// names never seen are never answered from the kernel's caches). This
// process measures; the daemon, a child, serves. See
// docs/benchmarks/serve.md for the command and the figures.
//
// Not part of the test suite (benchmarks run only with -bench).

type benchTargets struct {
	native, none, policy string
	d                    *harness.Daemon
}

// benchSetup starts one daemon with the two mirrors (stopped at the end of
// b) next to a native directory of the same content.
func benchSetup(b *testing.B) *benchTargets {
	b.Helper()
	harness.RequireRoot(b)
	harness.RequireFUSE(b)
	dir, err := os.MkdirTemp("", "fusegate-serve-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, name := range []string{"lower-none", "lower-policy", "native", "mp-none", "mp-policy"} {
		os.MkdirAll(filepath.Join(p(name), "DCIM"), 0o755)
	}
	for _, name := range []string{"lower-none", "lower-policy", "native"} {
		for i := 0; i < 100; i++ {
			os.WriteFile(filepath.Join(p(name), "DCIM", "f"+strconv.Itoa(i)), []byte("0123456789"), 0o644)
		}
	}
	cfg := fmt.Sprintf("version = 1\n[control]\nsocket = %q\n", p("control.sock"))
	for _, m := range []string{"none", "policy"} {
		pol := m
		if m == "policy" {
			pol = "default"
		}
		cfg += fmt.Sprintf("[[mount]]\nname = %q\nsource = %q\nmountpoint = %q\npolicy = %q\noptions = [\"allow_other\"]\n",
			m, p("lower-"+m), p("mp-"+m), pol)
	}
	os.WriteFile(p("fusegate.toml"), []byte(cfg), 0o644)
	d := harness.StartDaemon(b, harness.DaemonOptions{Mountpoints: []string{p("mp-none"), p("mp-policy")}},
		"serve", "--config", p("fusegate.toml"))
	d.WaitMounted(p("mp-none"))
	d.WaitMounted(p("mp-policy"))
	return &benchTargets{native: p("native"), none: p("mp-none"), policy: p("mp-policy"), d: d}
}

// daemonCPU is harness.ProcessCPU, failing b when pid has no threads.
func daemonCPU(b *testing.B, pid int) time.Duration {
	d, err := harness.ProcessCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// reportDaemonCPU adds the daemon's CPU time per operation to b's results
// (0 for the native directory, which the daemon does not serve).
func reportDaemonCPU(b *testing.B, pid int, from time.Duration) {
	b.ReportMetric(float64(daemonCPU(b, pid)-from)/float64(b.N), "daemon-cpu-ns/op")
}

func BenchmarkServeGate(b *testing.B) {
	tg := benchSetup(b)
	pid := tg.d.Pid()
	targets := []struct{ name, dir string }{{"native", tg.native}, {"none", tg.none}, {"policy", tg.policy}}
	for _, tgt := range targets {
		b.Run("open-read-close/"+tgt.name, func(b *testing.B) {
			buf := make([]byte, 64)
			cpu := daemonCPU(b, pid)
			defer func() { reportDaemonCPU(b, pid, cpu) }()
			for i := 0; b.Loop(); i++ {
				fd, err := unix.Open(filepath.Join(tgt.dir, "DCIM", "f"+strconv.Itoa(i%100)), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				unix.Read(fd, buf)
				unix.Close(fd)
			}
		})
	}
	for _, tgt := range targets {
		b.Run("create-unlink/"+tgt.name, func(b *testing.B) {
			cpu := daemonCPU(b, pid)
			defer func() { reportDaemonCPU(b, pid, cpu) }()
			for i := 0; b.Loop(); i++ {
				p := filepath.Join(tgt.dir, "DCIM", "new-"+strconv.Itoa(i))
				fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err != nil {
					b.Fatal(err)
				}
				unix.Close(fd)
				if err := unix.Unlink(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, tgt := range targets {
		b.Run("lookup-missing/"+tgt.name, func(b *testing.B) {
			stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
			var st unix.Stat_t
			cpu := daemonCPU(b, pid)
			defer func() { reportDaemonCPU(b, pid, cpu) }()
			for i := 0; b.Loop(); i++ {
				if err := unix.Stat(filepath.Join(tgt.dir, "DCIM", "missing-"+stamp+"-"+strconv.Itoa(i)), &st); err != unix.ENOENT {
					b.Fatalf("stat of a missing name: %v", err)
				}
			}
		})
	}
	if strings.Contains(tg.d.Logs(), "level=error") {
		b.Errorf("the daemon logged errors:\n%s", tg.d.Logs())
	}
}

// BenchmarkServeControl times control calls from this process: status,
// metrics, and a reload that swaps the policy of a live mount (the file
// alternates between two policies) next to one that changes nothing.
func BenchmarkServeControl(b *testing.B) {
	tg := benchSetup(b)
	sock := filepath.Join(filepath.Dir(tg.none), "control.sock")
	cfgPath := filepath.Join(filepath.Dir(tg.none), "fusegate.toml")
	pol := filepath.Join(filepath.Dir(tg.none), "policy.toml")
	os.WriteFile(pol, []byte(openPolicy), 0o644)
	cfg, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), `policy = "default"`, fmt.Sprintf("policy = %q", pol), 1)), 0o644)
	call := func(b *testing.B, method string) {
		if _, err := control.Call(b.Context(), sock, method, nil); err != nil {
			b.Fatalf("%s: %v", method, err)
		}
	}
	call(b, "reload")
	for _, m := range []string{"status", "metrics"} {
		b.Run(m, func(b *testing.B) {
			for b.Loop() {
				call(b, m)
			}
		})
	}
	b.Run("reload-unchanged", func(b *testing.B) {
		for b.Loop() {
			call(b, "reload")
		}
	})
	b.Run("reload-policy-swap", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			text := openPolicy
			if i%2 == 0 {
				text = closedPolicy
			}
			os.WriteFile(pol, []byte(text), 0o644)
			call(b, "reload")
		}
	})
}
