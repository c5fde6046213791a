package passthrough

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/tests/harness"
)

func TestMain(m *testing.M) {
	if os.Getenv(envOps) != "" {
		os.Exit(runOps())
	}
	harness.Main(m)
}

// mirror is a running 'fusegate mount SOURCE MOUNTPOINT'.
type mirror struct {
	t         *testing.T
	src, mp   string
	d         *harness.Daemon
	statsFile string
}

// modes are the passthrough modes most tests run under: kernel passthrough
// and the daemon serving every read and write.
var modes = []string{"on", "off"}

// startMirror mounts a fresh lower directory with --passthrough=mode.
func startMirror(t *testing.T, mode string, extra ...string) *mirror {
	t.Helper()
	harness.RequireRoot(t)
	harness.RequireFUSE(t)
	src := harness.UserDir(t, harness.Root())
	mp := harness.UserDir(t, harness.Root())
	return startMirrorOn(t, src, mp, mode, extra...)
}

func startMirrorOn(t *testing.T, src, mp, mode string, extra ...string) *mirror {
	t.Helper()
	stats := filepath.Join(t.TempDir(), "stats.json")
	args := []string{"mount", "--passthrough=" + mode, "--stats-file", stats}
	args = append(append(args, extra...), src, mp)
	d := harness.StartDaemon(t, harness.DaemonOptions{Mountpoints: []string{mp}}, args...)
	d.WaitMounted(mp)
	m := &mirror{t: t, src: src, mp: mp, d: d, statsFile: stats}
	t.Cleanup(func() {
		if !d.Exited() {
			if st := d.Stop(syscall.SIGTERM); st.ExitCode() != 0 {
				t.Errorf("fusegate exited with %v after SIGTERM", st)
			}
		}
		if strings.Contains(d.Logs(), "level=error") || strings.Contains(d.Logs(), "panic") {
			t.Errorf("fusegate logged errors:\n%s", d.Logs())
		}
	})
	return m
}

// p returns the path of name in the mount.
func (m *mirror) p(name string) string { return filepath.Join(m.mp, name) }

// l returns the path of name in the lower directory.
func (m *mirror) l(name string) string { return filepath.Join(m.src, name) }

// statsDoc is the part of --stats-file the tests read.
type statsDoc struct {
	Time time.Time `json:"time"`
	Ops  map[string]struct {
		Count  uint64 `json:"count"`
		Errors uint64 `json:"errors"`
	} `json:"ops"`
	FS struct {
		Nodes       int    `json:"nodes"`
		Handles     int    `json:"handles"`
		BackingIDs  int64  `json:"backing_ids"`
		BackingOpen uint64 `json:"backing_open"`
		PTOpens     uint64 `json:"pt_opens"`
		DaemonOpens uint64 `json:"daemon_opens"`
		Passthrough bool   `json:"passthrough"`
		Fallback    string `json:"fallback"`
		NodeFds     int    `json:"node_fds"`
		MaxNodeFds  int    `json:"max_node_fds"`
		Reopens     uint64 `json:"reopens"`
		Evictions   uint64 `json:"evictions"`
	} `json:"fs"`
}

func (s *statsDoc) count(op string) uint64 { return s.Ops[op].Count }

// stats asks the daemon for its counters (SIGUSR1) and reads them.
func (m *mirror) stats() statsDoc {
	m.t.Helper()
	return readStats(m.t, m.d.Signal, m.statsFile)
}

func readStats(t *testing.T, signal func(syscall.Signal) error, file string) statsDoc {
	t.Helper()
	asked := time.Now()
	if err := signal(syscall.SIGUSR1); err != nil {
		t.Fatalf("SIGUSR1: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var s statsDoc
		if b, err := os.ReadFile(file); err == nil && json.Unmarshal(b, &s) == nil && !s.Time.Before(asked) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fresh %s within 10 s of SIGUSR1", file)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// must fails t on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr fails t unless err is errno (0: success).
func wantErr(t *testing.T, what string, err error, errno syscall.Errno) {
	t.Helper()
	if errno == 0 {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s succeeded, want %v", what, errno)
		return
	}
	var e syscall.Errno
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	if le, ok := err.(*os.LinkError); ok {
		err = le.Err
	}
	if se, ok := err.(*os.SyscallError); ok {
		err = se.Err
	}
	e, _ = err.(syscall.Errno)
	if e != errno {
		t.Errorf("%s: %v, want %v", what, err, errno)
	}
}

// waitFor returns a channel that fires after ms milliseconds.
func waitFor(ms int) <-chan time.Time { return time.After(time.Duration(ms) * time.Millisecond) }
