package passthrough

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openFds counts the descriptors of process pid.
func openFds(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	must(t, err)
	return len(ents)
}

// dropCaches makes the kernel evict unused dentries and inodes, so it
// forgets the mount's nodes (FORGET, BATCH_FORGET).
func dropCaches(t *testing.T) {
	t.Helper()
	unix.Sync()
	must(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0))
}

// TestDescriptorsBounded touches 100k files through the mount: the daemon
// holds a node for each but no more descriptors than its bound (the rest
// are reopened from file handles). Then it drops the kernel's caches: every
// node is forgotten to zero, and the descriptors return to their baseline.
func TestDescriptorsBounded(t *testing.T) {
	const files = 100_000
	m := startMirror(t, "on")
	base := openFds(t, m.d.Pid())
	for d := 0; d < files/1000; d++ {
		dir := m.l(fmt.Sprintf("d%03d", d))
		must(t, os.Mkdir(dir, 0o755))
		for f := 0; f < 1000; f++ {
			fd, err := unix.Open(filepath.Join(dir, strconv.Itoa(f)), unix.O_CREAT|unix.O_WRONLY, 0o644)
			must(t, err)
			unix.Close(fd)
		}
	}
	// A lookup opens no descriptor; reading an xattr makes the daemon open
	// one for the node.
	var st unix.Stat_t
	buf := make([]byte, 16)
	for d := 0; d < files/1000; d++ {
		for f := 0; f < 1000; f++ {
			path := m.p(fmt.Sprintf("d%03d/%d", d, f))
			must(t, unix.Lstat(path, &st))
			if _, err := unix.Lgetxattr(path, "user.none", buf); err != unix.ENODATA {
				t.Fatalf("getxattr %s: %v, want ENODATA", path, err)
			}
		}
	}
	peak := openFds(t, m.d.Pid())
	s := m.stats()
	if forgets := s.count("FORGET") + s.count("BATCH_FORGET"); s.FS.Nodes < files && forgets > 0 {
		// Something outside this test made the kernel drop its caches
		// (drop_caches by another process, memory pressure): it forgot
		// nodes before the test asked it to.
		t.Logf("after %d lookups: %d nodes; the kernel already sent %d FORGET/BATCH_FORGET requests", files, s.FS.Nodes, forgets)
	} else if s.FS.Nodes < files {
		t.Errorf("after %d lookups: %d nodes; want a node per file", files, s.FS.Nodes)
	}
	if limit := base + s.FS.MaxNodeFds + 16; peak > limit || s.FS.Evictions == 0 {
		t.Errorf("after %d lookups: %d descriptors (baseline %d, bound %d), %d evictions; want at most %d",
			files, peak, base, s.FS.MaxNodeFds, s.FS.Evictions, limit)
	}
	// Nodes whose descriptor was evicted still work (reopened by handle).
	for d := 0; d < 3; d++ {
		must(t, os.WriteFile(m.p(fmt.Sprintf("d%03d/%d", d, 7)), []byte("again"), 0o644))
		if b, err := os.ReadFile(m.p(fmt.Sprintf("d%03d/%d", d, 7))); err != nil || string(b) != "again" {
			t.Fatalf("an evicted node: %q, %v", b, err)
		}
	}
	if s = m.stats(); s.FS.Reopens == 0 {
		t.Errorf("no node descriptor was reopened from its handle")
	}
	dropCaches(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		s = m.stats()
		now := openFds(t, m.d.Pid())
		if s.FS.Nodes <= 10 && now <= base+10 {
			t.Logf("descriptors: baseline %d, peak %d, after dropping caches %d; nodes %d", base, peak, now, s.FS.Nodes)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after dropping caches: %d nodes, %d descriptors (baseline %d, peak %d)", s.FS.Nodes, now, base, peak)
		}
		dropCaches(t)
		time.Sleep(200 * time.Millisecond)
	}
	if s.count("FORGET")+s.count("BATCH_FORGET") == 0 {
		t.Errorf("no FORGET reached the daemon")
	}
	// Everything still resolves after being forgotten.
	must(t, unix.Lstat(m.p("d099/999"), &st))
}

// TestReaddir lists a large directory with READDIRPLUS and READDIR, and
// checks names and inode numbers against the lower directory, also while
// it changes.
func TestReaddir(t *testing.T) {
	m := startMirror(t, "on")
	must(t, os.Mkdir(m.l("big"), 0o755))
	want := []string{}
	for i := 0; i < 3000; i++ {
		name := fmt.Sprintf("entry-%04d-%s", i, string(rune('a'+i%26)))
		must(t, os.WriteFile(m.l("big/"+name), nil, 0o644))
		want = append(want, name)
	}
	slices.Sort(want)
	list := func() []string {
		ents, err := os.ReadDir(m.p("big"))
		must(t, err)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	for round := 0; round < 2; round++ { // the second from the kernel's cache
		if got := list(); !slices.Equal(got, want) {
			t.Fatalf("round %d: %d names, want %d", round, len(got), len(want))
		}
	}
	// Inode numbers: stat through the mount, readdir's d_ino, the lower stat.
	f, err := os.Open(m.p("big"))
	must(t, err)
	buf := make([]byte, 64<<10)
	seen := 0
	for {
		n, err := unix.Getdents(int(f.Fd()), buf)
		must(t, err)
		if n == 0 {
			break
		}
		for off := 0; off < n; {
			ino := binary.NativeEndian.Uint64(buf[off:])
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			name := cstring(buf[off+19 : off+reclen])
			off += reclen
			if name == "." || name == ".." {
				continue
			}
			var ls, fs unix.Stat_t
			must(t, unix.Lstat(m.l("big/"+name), &ls))
			must(t, unix.Lstat(m.p("big/"+name), &fs))
			if ino != ls.Ino || fs.Ino != ls.Ino {
				t.Fatalf("%s: d_ino %d, st_ino through the mount %d, lower %d", name, ino, fs.Ino, ls.Ino)
			}
			seen++
		}
	}
	f.Close()
	if seen != len(want) {
		t.Errorf("getdents returned %d entries, want %d", seen, len(want))
	}
	// Changes through the mount and below it show up.
	must(t, os.Remove(m.p("big/"+want[0])))
	must(t, os.WriteFile(m.p("big/zz-new"), nil, 0o644))
	want = append(want[1:], "zz-new")
	if got := list(); !slices.Equal(got, want) {
		t.Errorf("after changes through the mount: %d names, want %d", len(got), len(want))
	}
	must(t, os.WriteFile(m.l("big/zz-lower"), nil, 0o644))
	want = append(want, "zz-lower")
	slices.Sort(want)
	deadline := time.Now().Add(5 * time.Second)
	for got := list(); !slices.Equal(got, want); got = list() {
		if time.Now().After(deadline) {
			t.Fatalf("a file made in the lower directory does not show: %d names, want %d", len(got), len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
