package foundation

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fusegate/fusegate/internal/demofs"
	"github.com/fusegate/fusegate/tests/harness"
)

// startDemo starts 'fusegate mount --demo mp' as cred and waits until the
// mount is live.
func startDemo(t *testing.T, cred harness.Cred, mp string, extra ...string) *harness.Daemon {
	t.Helper()
	args := append([]string{"mount", "--demo"}, extra...)
	d := harness.StartDaemon(t, harness.DaemonOptions{Cred: &cred, Mountpoints: []string{mp}}, append(args, mp)...)
	d.WaitMounted(mp)
	return d
}

// stopClean stops d with SIGTERM and checks that it exited 0, that nothing
// is mounted at mp any more and that no process of its group is left.
func stopClean(t *testing.T, d *harness.Daemon, mp string) {
	t.Helper()
	if st := d.Stop(syscall.SIGTERM); st.ExitCode() != 0 {
		t.Fatalf("fusegate after SIGTERM: %v, want exit status 0; output:\n%s", st, d.Logs())
	}
	if left := harness.MountsAt(t, mp); len(left) > 0 {
		t.Errorf("left mounted at %s after exit: %+v", mp, left)
	}
	if left := d.Leftovers(); len(left) > 0 {
		t.Errorf("processes left in fusegate's process group after exit: %v", left)
	}
	if !strings.Contains(d.Logs(), "unmounted") {
		t.Errorf("fusegate did not log the unmount; output:\n%s", d.Logs())
	}
	// The mount point is the plain empty directory again.
	names, err := harness.NewCaller(t, d.Cred()).ReadDir(mp)
	if err != nil || len(names) != 0 {
		t.Errorf("after unmount, %s lists %q, %v; want an empty directory", mp, names, err)
	}
}

// checkMountEntry checks the mountinfo line of the demo mount at mp.
func checkMountEntry(t *testing.T, mp string, owner harness.Cred) {
	t.Helper()
	ms := harness.MountsAt(t, mp)
	if len(ms) != 1 {
		t.Fatalf("%d mounts at %s, want 1: %+v", len(ms), mp, ms)
	}
	m := ms[0]
	if m.FSType != "fuse" || m.Source != "fusegate-demo" {
		t.Errorf("mount at %s is %s from %q, want fuse from fusegate-demo", mp, m.FSType, m.Source)
	}
	for _, o := range []string{"ro", "nosuid", "nodev"} {
		if _, ok := m.Option(o); !ok {
			t.Errorf("mount at %s lacks option %s: %s / %s", mp, o, m.Options, m.SuperOptions)
		}
	}
	if uid, _ := m.Option("user_id"); uid != strconv.FormatUint(uint64(owner.UID), 10) {
		t.Errorf("mount at %s has user_id=%s, want %d", mp, uid, owner.UID)
	}
	if _, ok := m.Option("allow_other"); ok {
		t.Errorf("mount at %s has allow_other, which was not asked for", mp)
	}
}

// wantErrno fails t unless err carries errno.
func wantErrno(t *testing.T, what string, err error, errno syscall.Errno) {
	t.Helper()
	if !errors.Is(err, errno) {
		t.Errorf("%s: got %v, want %v", what, err, errno)
	}
}

// checkDemoTree lists, stats and reads the demo tree at mp as c.
func checkDemoTree(t *testing.T, c *harness.Caller, mp string) {
	t.Helper()
	p := func(name string) string { return filepath.Join(mp, name) }

	names, err := c.ReadDir(mp)
	if want := []string{"README", "big.bin", "docs", "hello.txt", "latest"}; err != nil || !slices.Equal(names, want) {
		t.Errorf("ReadDir(%s) = %q, %v; want %q", mp, names, err, want)
	}
	names, err = c.ReadDir(p("docs"))
	if want := []string{"nested.txt"}; err != nil || !slices.Equal(names, want) {
		t.Errorf("ReadDir(docs) = %q, %v; want %q", names, err, want)
	}

	type want struct {
		name  string
		dir   bool
		perm  uint32
		size  int64
		nlink uint64
	}
	for _, w := range []want{
		{"", true, 0o555, -1, 3},
		{"docs", true, 0o555, -1, 2},
		{"hello.txt", false, 0o444, 21, 1},
		{"big.bin", false, 0o444, demofs.BigSize, 1},
		{"docs/nested.txt", false, 0o444, 23, 1},
		{"latest", false, 0o444, 21, 1}, // stat follows the link
	} {
		st, err := c.Stat(p(w.name))
		if err != nil {
			t.Errorf("stat %s: %v", w.name, err)
			continue
		}
		if st.IsDir != w.dir || (!w.dir && !st.IsRegular) || st.Perm() != w.perm || st.Nlink != w.nlink ||
			(w.size >= 0 && st.Size != w.size) {
			t.Errorf("stat %q: dir=%v regular=%v perm=%o nlink=%d size=%d; want dir=%v perm=%o nlink=%d size=%d",
				w.name, st.IsDir, st.IsRegular, st.Perm(), st.Nlink, st.Size, w.dir, w.perm, w.nlink, w.size)
		}
	}
	if st, err := c.Lstat(p("latest")); err != nil || !st.IsSymlink {
		t.Errorf("lstat latest: %+v, %v; want a symbolic link", st, err)
	}
	if target, err := c.Readlink(p("latest")); err != nil || target != "hello.txt" {
		t.Errorf("readlink latest = %q, %v; want hello.txt", target, err)
	}

	for name, want := range map[string]string{
		"hello.txt":       "Hello from fusegate.\n",
		"latest":          "Hello from fusegate.\n",
		"docs/nested.txt": "A file one level down.\n",
	} {
		if got, err := c.ReadFile(p(name), 0); err != nil || string(got) != want {
			t.Errorf("read %s = %q, %v; want %q", name, got, err, want)
		}
	}
	if got, err := c.ReadFile(p("README"), 0); err != nil || !strings.Contains(string(got), "fusegate's built-in demo file system") {
		t.Errorf("read README = %q, %v", got, err)
	}

	// What the demo refuses, with the errno the caller sees.
	_, err = c.Stat(p("missing"))
	wantErrno(t, "stat missing", err, syscall.ENOENT)
	_, err = c.ReadDir(p("hello.txt"))
	wantErrno(t, "readdir hello.txt", err, syscall.ENOTDIR)
	_, err = c.Readlink(p("hello.txt"))
	wantErrno(t, "readlink hello.txt", err, syscall.EINVAL)
	wantErrno(t, "open hello.txt for writing", c.Open(p("hello.txt"), os.O_WRONLY), syscall.EROFS)
	wantErrno(t, "create new.txt", c.WriteFile(p("new.txt"), []byte("x"), 0o644), syscall.EROFS)
	wantErrno(t, "mkdir newdir", c.Mkdir(p("newdir"), 0o755), syscall.EROFS)
	wantErrno(t, "remove hello.txt", c.Remove(p("hello.txt")), syscall.EROFS)

	checkBig(t, c, p("big.bin"))
}

// checkBig reads big.bin at odd offsets and sizes (first, so the daemon
// serves them rather than the page cache), then whole, and compares every
// byte with demofs.FillBig.
func checkBig(t *testing.T, c *harness.Caller, path string) {
	t.Helper()
	const size = demofs.BigSize
	type rd struct {
		off int64
		n   int
	}
	reads := []rd{
		{0, 1}, {1, 1}, {7, 9}, {4095, 2}, {4096, 4096}, {4097, 131071},
		{1<<20 - 3, 1<<20 + 7}, {size - 4097, 4097}, {size - 10, 100}, {size, 1}, {size + 12345, 10},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		reads = append(reads, rd{rng.Int64N(size), 1 + rng.IntN(300<<10)})
	}
	for _, r := range reads {
		got, err := c.ReadAt(path, r.off, r.n)
		if err != nil {
			t.Errorf("pread big.bin %d bytes at %d: %v", r.n, r.off, err)
			continue
		}
		wantN := int(max(0, min(int64(r.n), size-r.off)))
		want := make([]byte, wantN)
		demofs.FillBig(want, r.off)
		if len(got) != wantN {
			t.Errorf("pread big.bin %d bytes at %d: got %d bytes, want %d", r.n, r.off, len(got), wantN)
		} else if i := firstDiff(got, want); i >= 0 {
			t.Errorf("pread big.bin %d bytes at %d: byte %d (offset %d) is %#x, want %#x", r.n, r.off, i, r.off+int64(i), got[i], want[i])
		}
	}

	got, err := c.ReadFile(path, 0)
	if err != nil {
		t.Fatalf("read big.bin: %v", err)
	}
	want := make([]byte, size)
	demofs.FillBig(want, 0)
	if len(got) != size {
		t.Fatalf("read big.bin: %d bytes, want %d", len(got), size)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("read big.bin: byte at offset %d is %#x, want %#x", i, got[i], want[i])
	}
}

// firstDiff returns the first index where a and b (of equal length) differ, or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestDemoAsRoot mounts the demo directly with mount(2), as root.
func TestDemoAsRoot(t *testing.T) {
	harness.RequireRoot(t)
	harness.RequireFUSE(t)
	mp := t.TempDir()
	d := startDemo(t, harness.Root(), mp)
	checkMountEntry(t, mp, harness.Root())
	checkDemoTree(t, harness.NewCaller(t, harness.Root()), mp)
	stopClean(t, d, mp)
}

// TestDemoAsUser mounts the demo as an unprivileged user, which goes
// through fusermount3, on a mount point that user owns.
func TestDemoAsUser(t *testing.T) {
	harness.RequireRoot(t) // to run the daemon as another user
	harness.RequireFusermount3(t)
	user := harness.Nobody()
	mp := harness.UserDir(t, user)
	d := startDemo(t, user, mp)
	checkMountEntry(t, mp, user)
	checkDemoTree(t, harness.NewCaller(t, user), mp)

	// Without allow_other the kernel answers nobody else, root included.
	_, err := harness.NewCaller(t, harness.Root()).Stat(filepath.Join(mp, "hello.txt"))
	wantErrno(t, "stat by root of a user's mount", err, syscall.EACCES)

	stopClean(t, d, mp)
}
