package policy

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/policy"
	"github.com/fusegate/fusegate/policy/redact/redacttest"
	"github.com/fusegate/fusegate/tests/harness"
)

func TestMain(m *testing.M) {
	if os.Getenv(envOps) != "" {
		os.Exit(runOps())
	}
	harness.Main(m)
}

// The callers: two apps (unlisted, so uid 10001 is the app "uid10001"
// owning Android/data/uid10001), an app with the media-location role,
// root and a system uid (both trusted).
var (
	appA   = harness.Cred{UID: 10001, GID: 10001}
	appB   = harness.Cred{UID: 10002, GID: 10002}
	camera = harness.Cred{UID: 10050, GID: 10050}
	root   = harness.Root()
	system = harness.Cred{UID: 1000, GID: 1000}
)

// basePolicy is the built-in policy plus the camera app.
func basePolicy() string {
	return string(policy.DefaultFile()) + `
[[app]]
name = "camera"
uids = [10050]
packages = ["org.example.camera"]
roles = ["media-location"]
`
}

// target is a mount of a fresh lower tree under a policy file, served by
// `fusegate mount --policy` or by `fusegate serve`.
type target struct {
	t      *testing.T
	kind   string // "mount", "mount-entries" or "serve"
	dir    string // holds lower/, mp/, the policy, the configuration, ...
	src    string
	mp     string
	policy string // the policy file
	d      *harness.Daemon
	stats  string // mount: --stats-file
	sock   string // serve: control socket
	jpeg   []byte // DCIM/photo.jpg
}

// kinds are the two ways a policy mount is served.
var kinds = []string{"mount", "serve"}

// forEach runs f as a subtest on a fresh target of each kind.
func forEach(t *testing.T, f func(t *testing.T, tg *target)) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) { f(t, newTarget(t, kind, basePolicy())) })
	}
}

// newTarget makes the lower tree
//
//	Android/data/uid10001/secret.txt   (10001; directories 0777, files 0666:
//	Android/data/uid10002/secret.txt    only the policy keeps apps apart)
//	DCIM/photo.jpg                     (10001, a JPEG with EXIF GPS data)
//	DCIM/shared.txt                    (10001)
//	DCIM/big.bin                       (10001, 1 MiB)
//
// and serves it under policyText.
func newTarget(t *testing.T, kind, policyText string) *target {
	t.Helper()
	harness.RequireRoot(t)
	harness.RequireFUSE(t)
	dir, err := os.MkdirTemp("", "fusegate-policy-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	tg := &target{t: t, kind: kind, dir: dir, src: filepath.Join(dir, "lower"), mp: filepath.Join(dir, "mp"),
		policy: filepath.Join(dir, "policy.toml")}
	tg.jpeg, _ = redacttest.JPEG(binary.BigEndian)
	mk := func(path string, uid uint32, data []byte) {
		full := filepath.Join(tg.src, path)
		if data == nil {
			must(t, os.MkdirAll(full, 0o777))
			must(t, os.Chmod(full, 0o777))
		} else {
			must(t, os.WriteFile(full, data, 0o666))
		}
		must(t, os.Chown(full, int(uid), int(uid)))
	}
	mk("", 0, nil)
	mk("Android", 0, nil)
	mk("Android/data", 0, nil)
	mk("Android/data/uid10001", appA.UID, nil)
	mk("Android/data/uid10001/secret.txt", appA.UID, []byte("A's secret"))
	mk("Android/data/uid10002", appB.UID, nil)
	mk("Android/data/uid10002/secret.txt", appB.UID, []byte("B's secret"))
	mk("DCIM", 0, nil)
	mk("DCIM/photo.jpg", appA.UID, tg.jpeg)
	mk("DCIM/shared.txt", appA.UID, []byte("shared"))
	mk("DCIM/big.bin", appA.UID, make([]byte, 1<<20))
	must(t, os.Mkdir(tg.mp, 0o755))
	tg.writePolicy(policyText)
	switch kind {
	case "mount", "mount-entries":
		// mount-entries: reloads invalidate the kernel's cached names
		// one by one, as on kernels without FUSE_NOTIFY_INC_EPOCH.
		var env []string
		if kind == "mount-entries" {
			env = append(env, "FUSEGATE_TEST_ONLY_INVAL_ENTRIES=1")
		}
		tg.stats = filepath.Join(dir, "stats.json")
		tg.d = harness.StartDaemon(t, harness.DaemonOptions{Mountpoints: []string{tg.mp}, Env: env},
			"mount", "--passthrough=on", "--policy", tg.policy, "--stats-file", tg.stats, tg.src, tg.mp)
	case "serve":
		tg.sock = filepath.Join(dir, "control.sock")
		cfg := filepath.Join(dir, "fusegate.toml")
		must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`version = 1
[control]
socket = %q
[daemon]
shutdown_grace = "1s"
[[mount]]
name = "m"
source = %q
mountpoint = %q
policy = %q
passthrough = "on"
options = ["allow_other", "default_permissions"]
`, tg.sock, tg.src, tg.mp, tg.policy)), 0o644))
		tg.d = harness.StartDaemon(t, harness.DaemonOptions{Mountpoints: []string{tg.mp}}, "serve", "--config", cfg)
	default:
		t.Fatalf("unknown target kind %q", kind)
	}
	tg.d.WaitMounted(tg.mp)
	t.Cleanup(func() {
		if !tg.d.Exited() {
			if st := tg.d.Stop(syscall.SIGTERM); st.ExitCode() != 0 {
				t.Errorf("fusegate %s exited with %v", kind, st)
			}
		}
		if strings.Contains(tg.d.Logs(), "panic") || strings.Contains(tg.d.Logs(), "DATA RACE") {
			t.Errorf("fusegate %s:\n%s", kind, tg.d.Logs())
		}
	})
	return tg
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (tg *target) writePolicy(text string) {
	tg.t.Helper()
	must(tg.t, os.WriteFile(tg.policy, []byte(text), 0o644))
}

// p is the path of rel in the mount.
func (tg *target) p(rel string) string { return filepath.Join(tg.mp, rel) }

// l is the path of rel in the lower tree.
func (tg *target) l(rel string) string { return filepath.Join(tg.src, rel) }

// fsStats is what the tests read of the mirror's counters.
type fsStats struct {
	PTOpens     uint64 `json:"pt_opens"`
	DaemonOpens uint64 `json:"daemon_opens"`
	Passthrough bool   `json:"passthrough"`
	Policy      *struct {
		Policy        string `json:"policy"`
		RedactedOpens uint64 `json:"redacted_opens"`
		DirectOpens   uint64 `json:"direct_opens"`
		Filtered      uint64 `json:"filtered"`
		Rules         []struct {
			Rule       string `json:"Rule"`
			Decisions  uint64 `json:"Decisions"`
			Denials    uint64 `json:"Denials"`
			Logged     uint64 `json:"Logged"`
			Suppressed uint64 `json:"Suppressed"`
		} `json:"rules"`
	} `json:"policy"`
}

// fs returns the mirror's counters now: from the --stats-file (after
// SIGUSR1) or from `ctl mounts`.
func (tg *target) fs() fsStats {
	tg.t.Helper()
	if tg.kind == "serve" {
		r := harness.Fusegate(tg.t, "ctl", "--socket", tg.sock, "mounts").MustSucceed(tg.t)
		var ms []struct {
			FS *fsStats `json:"fs"`
		}
		if err := json.Unmarshal(r.Stdout, &ms); err != nil || len(ms) != 1 || ms[0].FS == nil {
			tg.t.Fatalf("ctl mounts: %v: %s", err, r.Stdout)
		}
		return *ms[0].FS
	}
	asked := time.Now()
	must(tg.t, tg.d.Signal(syscall.SIGUSR1))
	deadline := time.Now().Add(10 * time.Second)
	for {
		var doc struct {
			Time time.Time `json:"time"`
			FS   fsStats   `json:"fs"`
		}
		if b, err := os.ReadFile(tg.stats); err == nil && json.Unmarshal(b, &doc) == nil && !doc.Time.Before(asked) {
			return doc.FS
		}
		if time.Now().After(deadline) {
			tg.t.Fatalf("no fresh %s within 10 s of SIGUSR1", tg.stats)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reload makes the daemon read the policy file again and waits until it
// did: `fusegate mount` on SIGHUP (its log says so), `fusegate serve`
// through `ctl reload` (which answers when done). It returns whether the
// new policy was accepted and the reason it was not.
func (tg *target) reload() (bool, string) {
	tg.t.Helper()
	if tg.kind == "serve" {
		r := harness.Fusegate(tg.t, "ctl", "--socket", tg.sock, "reload")
		return !r.Failed(), string(r.Stderr)
	}
	count := func() (ok, bad int) {
		logs := tg.d.Logs()
		return strings.Count(logs, "policy reloaded"), strings.Count(logs, "policy reload rejected")
	}
	ok0, bad0 := count()
	must(tg.t, tg.d.Signal(syscall.SIGHUP))
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, bad := count()
		switch {
		case ok > ok0:
			return true, ""
		case bad > bad0:
			logs := tg.d.Logs()
			i := strings.LastIndex(logs, "policy reload rejected")
			line := logs[i:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			return false, line
		case time.Now().After(deadline):
			tg.t.Fatalf("no reload logged within 10 s of SIGHUP:\n%s", tg.d.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metrics returns `ctl metrics` (serve only).
func (tg *target) metrics() string {
	tg.t.Helper()
	return string(harness.Fusegate(tg.t, "ctl", "--socket", tg.sock, "metrics").MustSucceed(tg.t).Stdout)
}

// want checks that a step ended with errno (0: success).
func want(t testing.TB, what string, r result, errno syscall.Errno) {
	t.Helper()
	if syscall.Errno(r.Errno) != errno {
		got := "success"
		if r.Errno != 0 {
			got = r.err().Error()
		}
		wantS := "success"
		if errno != 0 {
			wantS = errno.Error()
		}
		t.Errorf("%s: %s, want %s", what, got, wantS)
	}
}
