package harness

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestBin(t *testing.T) {
	r := Fusegate(t, "version").MustSucceed(t)
	if !strings.HasPrefix(string(r.Stdout), "fusegate ") {
		t.Errorf("fusegate version printed %q", r.Stdout)
	}
	if st, err := os.Stat(Bin(t)); err != nil || st.Mode().Perm()&0o005 != 0o005 {
		t.Errorf("binary %s: %v, %v; want it runnable by any uid", Bin(t), st.Mode(), err)
	}
}

// TestCaller runs each file operation in a child on an ordinary directory.
func TestCaller(t *testing.T) {
	dir := t.TempDir()
	c := NewCaller(t, Self())
	p := func(n string) string { return filepath.Join(dir, n) }

	if err := c.WriteFile(p("f"), []byte("0123456789"), 0o640); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Stat(p("f")); err != nil || !st.IsRegular || st.Size != 10 || st.Perm() != 0o640&^umask() {
		t.Errorf("stat f = %+v, %v", st, err)
	}
	if got, err := c.ReadFile(p("f"), 3); err != nil || string(got) != "0123456789" {
		t.Errorf("ReadFile = %q, %v", got, err)
	}
	for _, tc := range []struct {
		off  int64
		n    int
		want string
	}{{0, 1, "0"}, {3, 4, "3456"}, {8, 5, "89"}, {10, 1, ""}, {99, 1, ""}} {
		if got, err := c.ReadAt(p("f"), tc.off, tc.n); err != nil || string(got) != tc.want {
			t.Errorf("ReadAt(%d, %d) = %q, %v; want %q", tc.off, tc.n, got, err, tc.want)
		}
	}
	if err := c.Mkdir(p("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", p("l")); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Lstat(p("l")); err != nil || !st.IsSymlink {
		t.Errorf("lstat l = %+v, %v", st, err)
	}
	if got, err := c.Readlink(p("l")); err != nil || got != "f" {
		t.Errorf("readlink l = %q, %v", got, err)
	}
	if err := c.Rename(p("f"), p("d/g")); err != nil {
		t.Fatal(err)
	}
	if err := c.Chmod(p("d/g"), 0o600); err != nil {
		t.Fatal(err)
	}
	if names, err := c.ReadDir(dir); err != nil || !slices.Equal(names, []string{"d", "l"}) {
		t.Errorf("ReadDir = %q, %v", names, err)
	}
	if st, err := c.Statfs(dir); err != nil || st.Bsize == 0 {
		t.Errorf("statfs = %+v, %v", st, err)
	}

	// Refusals come back as the errno.
	_, err := c.Stat(p("missing"))
	var oe *OpError
	if !errors.Is(err, syscall.ENOENT) || !errors.As(err, &oe) || oe.Op != "stat" || !strings.Contains(err.Error(), "ENOENT") {
		t.Errorf("stat missing: %v; want an OpError with ENOENT", err)
	}
	if err := c.Remove(p("d")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("remove non-empty d: %v; want ENOTEMPTY", err)
	}
	if err := c.Open(p("d"), os.O_WRONLY); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("open d for writing: %v; want EISDIR", err)
	}
	for _, n := range []string{"d/g", "d", "l"} {
		if err := c.Remove(p(n)); err != nil {
			t.Errorf("remove %s: %v", n, err)
		}
	}
}

func umask() uint32 {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return uint32(m)
}

// TestCallerAsNobody: another identity sees the permissions it should.
func TestCallerAsNobody(t *testing.T) {
	RequireRoot(t)
	nobody := NewCaller(t, Nobody())
	private := t.TempDir() // 0700 root
	if err := nobody.WriteFile(filepath.Join(private, "x"), nil, 0o644); !errors.Is(err, syscall.EACCES) {
		t.Errorf("nobody writing in root's private directory: %v; want EACCES", err)
	}
	own := UserDir(t, Nobody())
	if err := nobody.WriteFile(filepath.Join(own, "x"), []byte("hi"), 0o644); err != nil {
		t.Fatalf("nobody writing in its own directory: %v", err)
	}
	if st, err := os.Stat(filepath.Join(own, "x")); err != nil || st.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Errorf("file made by nobody: %v, %v; want owner 65534", st, err)
	}
	groups := Cred{UID: 65534, GID: 65534, Groups: []uint32{4, 27}}
	r := RunAs(t, groups, "id").MustSucceed(t)
	if got := string(r.Stdout); !strings.Contains(got, "uid=65534") || !strings.Contains(got, "groups=65534") ||
		!strings.Contains(got, ",4") || !strings.Contains(got, ",27") {
		t.Errorf("id as %v printed %q", groups, got)
	}
}

func TestRunTimeout(t *testing.T) {
	start := time.Now()
	r := Run(t, Cmd{Argv: []string{"sh", "-c", "sleep 30 & sleep 30"}, Timeout: 300 * time.Millisecond})
	if !r.Failed() || !strings.Contains(r.Err.Error(), "timeout") || r.ExitCode != -1 {
		t.Errorf("Run past its timeout: %v", r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v to give up (its process group was not killed?)", d)
	}
}

func TestRunResult(t *testing.T) {
	r := Run(t, Cmd{Argv: []string{"sh", "-c", "cat; echo err >&2; pwd; exit 3"}, Stdin: []byte("in\n")})
	if r.ExitCode != 3 || string(r.Stdout) != "in\n/\n" || string(r.Stderr) != "err\n" || !r.Failed() {
		t.Errorf("got %v", r)
	}
}

func TestMountsAt(t *testing.T) {
	ms := MountsAt(t, "/proc")
	if len(ms) == 0 || ms[len(ms)-1].FSType != "proc" {
		t.Fatalf("MountsAt(/proc) = %+v", ms)
	}
	if len(MountsAt(t, t.TempDir())) != 0 {
		t.Error("a fresh directory has mounts")
	}
	if Mounted(t, "/proc") {
		t.Error("Mounted(/proc) reports a FUSE mount")
	}
	m := MountEntry{Options: "ro,nosuid", SuperOptions: "rw,user_id=7"}
	if v, ok := m.Option("user_id"); !ok || v != "7" {
		t.Errorf("Option(user_id) = %q, %v", v, ok)
	}
	if _, ok := m.Option("nosuid"); !ok {
		t.Error("Option(nosuid) not found")
	}
	if _, ok := m.Option("allow_other"); ok {
		t.Error("Option(allow_other) found")
	}
}
