package systemd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkRestartSandbox measures where a `systemctl restart` spends the
// time during which nobody serves the mount and the device, without a
// client (docs/benchmarks/restart.md), with the unit as shipped and with
// its sandbox loosened by drop-ins, to show what the sandbox costs. One
// iteration is one restart; the times come from the journal (CLOCK_MONOTONIC,
// when journald received each line):
//
//	gap-ms    the old daemon handed over -> the new one resumed the mount
//	          and the device (nobody serves in between)
//	exec-ms   systemd logs "Starting" -> the new daemon's first log line
//	          (fork, sandbox, exec, Go's start-up)
//	resume-ms the new daemon's first log line -> both resumed
//
// Run in the backports guest (not part of scripts/test):
//
//	CGO_ENABLED=0 go build -o /tmp/fg/fusegate ./cmd/fusegate
//	FUSEGATE_VM_KERNEL=backports FUSEGATE_VM_PAYLOAD=/tmp/fg/fusegate CGO_ENABLED=0 \
//	  go test -run '^$' -bench BenchmarkRestartSandbox -benchtime 5x \
//	  -exec "$PWD/tests/vm/exec-systemd" ./tests/systemd
func BenchmarkRestartSandbox(b *testing.B) {
	ensureRunning(b)
	requireResend(b)
	tmpfsLower(b)
	const (
		kernelProtect = "ProtectKernelTunables=no\nProtectKernelModules=no\nProtectKernelLogs=no\nProtectControlGroups=no\n"
		mountNS       = "ProtectSystem=no\nPrivateTmp=no\nProtectHome=no\n"
		seccomp       = "ProtectClock=no\nProtectHostname=no\nRestrictNamespaces=no\nMemoryDenyWriteExecute=no\n" +
			"SystemCallArchitectures=\nLockPersonality=no\nRestrictRealtime=no\nRestrictAddressFamilies=\n"
	)
	variants := []struct{ name, dropIn string }{
		{"shipped", ""},
		{"no-ProtectKernel-ControlGroups", kernelProtect},
		{"no-mount-namespace", kernelProtect + mountNS},
		{"no-sandbox", kernelProtect + mountNS + seccomp + "NoNewPrivileges=no\nCapabilityBoundingSet=~\n"},
	}
	b.Cleanup(func() {
		os.RemoveAll(dropIn)
		run(b, "systemctl", "daemon-reload")
		run(b, "systemctl", "restart", "fusegate.service")
	})
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			os.RemoveAll(dropIn)
			if v.dropIn != "" {
				os.MkdirAll(dropIn, 0o755)
				if err := os.WriteFile(filepath.Join(dropIn, "bench.conf"), []byte("[Service]\n"+v.dropIn), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			mustRun(b, "systemctl", "daemon-reload")
			mustRun(b, "systemctl", "restart", "fusegate.service")
			var gap, spawn, resume time.Duration
			for i := 0; i < b.N; i++ {
				time.Sleep(time.Second)
				old := prop(b, "fusegate.service", "MainPID")
				mustRun(b, "systemctl", "restart", "fusegate.service")
				next := prop(b, "fusegate.service", "MainPID")
				pidJournal(b, next, "resumed the mount", "resumed the device")
				handed := last(b, journalTimes(b, "handed over", "_PID="+old))
				newLines := journalTimes(b, "", "_PID="+next)
				resumed := max(last(b, journalTimes(b, "resumed the mount", "_PID="+next)),
					last(b, journalTimes(b, "resumed the device", "_PID="+next)))
				var starting time.Duration
				for _, at := range journalTimes(b, "Starting fusegate", "-u", "fusegate.service") {
					if at > handed {
						starting = at
						break
					}
				}
				if len(newLines) == 0 || starting == 0 {
					b.Fatalf("no journal of the new daemon %s, or no start after %v", next, handed)
				}
				gap += resumed - handed
				spawn += newLines[0] - starting
				resume += resumed - newLines[0]
			}
			n := float64(b.N)
			b.ReportMetric(float64(gap.Milliseconds())/n, "gap-ms")
			b.ReportMetric(float64(spawn.Milliseconds())/n, "exec-ms")
			b.ReportMetric(float64(resume.Milliseconds())/n, "resume-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// journalTimes returns when (CLOCK_MONOTONIC) journald received each line
// holding match ("": every line) among this boot's entries that match the
// journalctl arguments.
func journalTimes(t testing.TB, match string, args ...string) []time.Duration {
	t.Helper()
	out := mustRun(t, "journalctl", append([]string{"-b", "--no-pager", "-o", "short-monotonic"}, args...)...)
	var ats []time.Duration
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, match) {
			continue
		}
		if at, ok := monoOf(l); ok {
			ats = append(ats, at)
		}
	}
	return ats
}

func last(t testing.TB, ats []time.Duration) time.Duration {
	t.Helper()
	if len(ats) == 0 {
		t.Fatal("no such line in the journal")
	}
	return ats[len(ats)-1]
}
