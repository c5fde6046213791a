package passthrough

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/tests/harness"
)

// Identities the tests act as, besides root. They need no passwd entries.
var (
	alice = harness.Cred{UID: 1000, GID: 1000, Groups: []uint32{1000, 2000}}
	bob   = harness.Cred{UID: 1001, GID: 1001, Groups: []uint32{1001}}
	root  = harness.Root()
)

func itoa(v int) string { return strconv.Itoa(v) }

func oct(v int) string { return "0" + strconv.FormatInt(int64(v), 8) }

// expand replaces "%" in every argument with dir.
func expand(dir string, script []step) []step {
	out := make([]step, len(script))
	for i, s := range script {
		out[i] = make(step, len(s))
		for j, a := range s {
			if j > 0 {
				a = strings.ReplaceAll(a, "%", dir)
			}
			out[i][j] = a
		}
	}
	return out
}

// sameAsNative runs script (paths written with "%" for the directory) as
// cred in a fresh native directory on the lower file system and in a fresh
// directory of the mount, each made by root with mode dirMode, and fails t
// where the results differ. It returns the mount's results.
func sameAsNative(t *testing.T, m *mirror, cred harness.Cred, dirMode int, script ...step) []result {
	t.Helper()
	native := harness.UserDir(t, root)
	must(t, os.Chmod(native, os.FileMode(dirMode)&os.ModePerm|modeBits(dirMode)))
	name := fmt.Sprintf("t%d", len(script)) + strings.ReplaceAll(t.Name(), "/", "_")
	dir := m.p(name)
	must(t, os.Mkdir(dir, 0o700))
	must(t, os.Chmod(dir, os.FileMode(dirMode)&os.ModePerm|modeBits(dirMode)))
	want := as(t, cred, "022", expand(native, script)...)
	got := as(t, cred, "022", expand(dir, script)...)
	for i := range script {
		w, g := want[i], got[i]
		if w.Stat != nil && g.Stat != nil {
			ws, gs := *w.Stat, *g.Stat
			w.Stat, g.Stat = &ws, &gs
			if w.Stat.Nlink == 0 || g.Stat.Nlink == 0 {
				w.Stat.Nlink, g.Stat.Nlink = 0, 0
			}
			w.Stat.Ino, g.Stat.Ino = 0, 0
			w.Stat.Atime, w.Stat.Mtime, w.Stat.Ctim = 0, 0, 0
			g.Stat.Atime, g.Stat.Mtime, g.Stat.Ctim = 0, 0, 0
			if w.Stat.Mode&unix.S_IFMT == unix.S_IFDIR {
				w.Stat.Size, g.Stat.Size, w.Stat.Blocks, g.Stat.Blocks = 0, 0, 0, 0
			}
		}
		if script[i][0] == "getlk" || script[i][0] == "pid" {
			w.Int, g.Int = 0, 0
		}
		ws, gs := w.Stat, g.Stat
		w.Stat, g.Stat = nil, nil
		if fmt.Sprint(w, ws) != fmt.Sprint(g, gs) {
			t.Errorf("step %d %q as %v:\n native: errno %v %+v %+v\n mount:  errno %v %+v %+v",
				i, script[i], cred, w.err(), w, ws, g.err(), g, gs)
		}
	}
	return got
}

// modeBits turns the set-id and sticky bits of a numeric mode into Go's.
func modeBits(mode int) os.FileMode {
	var m os.FileMode
	if mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

const (
	oRDONLY = unix.O_RDONLY
	oWRONLY = unix.O_WRONLY
	oRDWR   = unix.O_RDWR
	oCREAT  = unix.O_CREAT
)

// TestOpenFlags checks open(2) flags and access modes against the native
// file system.
func TestOpenFlags(t *testing.T) {
	for _, mode := range modes {
		t.Run("passthrough="+mode, func(t *testing.T) {
			m := startMirror(t, mode)
			sameAsNative(t, m, root, 0o755,
				step{"open", "%/f", itoa(oWRONLY | oCREAT | unix.O_EXCL), "0640"}, // 0
				step{"write", "0", "hello"},
				step{"open", "%/f", itoa(oWRONLY | oCREAT | unix.O_EXCL)}, // EEXIST
				step{"open", "%/f", itoa(oRDONLY)},                        // 1
				step{"write", "1", "x"},                                   // EBADF
				step{"read", "0", "10"},                                   // EBADF
				step{"open", "%/f", itoa(oWRONLY | unix.O_APPEND)},        // 2
				step{"write", "2", " world"},
				step{"pread", "1", "0", "100"},
				step{"fstat", "1"},
				step{"open", "%/f", itoa(oRDONLY | unix.O_DIRECTORY)}, // ENOTDIR
				step{"symlink", "f", "%/l"},
				step{"open", "%/l", itoa(oRDONLY | unix.O_NOFOLLOW)}, // ELOOP
				step{"open", "%/l", itoa(oRDONLY)},                   // 3, follows
				step{"read", "3", "100"},
				step{"mkdir", "%/d", "0755"},
				step{"open", "%/d", itoa(oWRONLY)}, // EISDIR
				step{"open", "%/d", itoa(oRDONLY | unix.O_DIRECTORY)},
				step{"open", "%/f", itoa(oRDWR | unix.O_TRUNC)}, // 5
				step{"fstat", "5"},
				step{"pwrite", "5", "3", "abc"},
				step{"pread", "5", "0", "10"},
				step{"open", "%/nope", itoa(oRDONLY)},                             // ENOENT
				step{"open", "%/f/x", itoa(oRDONLY)},                              // ENOTDIR
				step{"open", "%/dangling-target", itoa(oRDONLY | oCREAT), "0600"}, // 6
				step{"symlink", "made-through-link", "%/dl"},
				step{"open", "%/dl", itoa(oWRONLY | oCREAT), "0600"}, // creates the target
				step{"lstat", "%/made-through-link"},
				step{"open", "%/f", itoa(oRDONLY | unix.O_DIRECT)},
				step{"open", "%/f", itoa(oRDONLY | unix.O_NOATIME)},
			)
			// Permission checks by another user.
			must(t, os.WriteFile(m.p("secret"), []byte("s"), 0o600))
			must(t, os.WriteFile(m.p("public"), []byte("p"), 0o644))
			rs := as(t, bob, "022",
				step{"open", m.p("secret"), itoa(oRDONLY)},
				step{"open", m.p("public"), itoa(oRDONLY)},
				step{"open", m.p("public"), itoa(oWRONLY)},
				step{"open", m.p("public"), itoa(oRDONLY | unix.O_NOATIME)},
				step{"open", m.p("newfile"), itoa(oWRONLY | oCREAT)},
			)
			for i, want := range []syscall.Errno{syscall.EACCES, 0, syscall.EACCES, syscall.EPERM, syscall.EACCES} {
				wantErr(t, fmt.Sprintf("bob's open %d", i), rs[i].err(), want)
			}
		})
	}
}

// TestOwnership checks that what a user creates belongs to that user, that
// the umask is applied once, that setgid directories pass on their group,
// and that chown, chmod and the sticky bit follow the rules.
func TestOwnership(t *testing.T) {
	m := startMirror(t, "on")
	shared := m.p("shared")
	must(t, os.Mkdir(shared, 0o777))
	must(t, os.Chmod(shared, 0o777|os.ModeSticky))
	sg := m.p("sg")
	must(t, os.Mkdir(sg, 0o777))
	must(t, os.Chown(sg, 0, 2000))
	must(t, os.Chmod(sg, 0o777|os.ModeSetgid))

	rs := ok(t, "alice creates", as(t, alice, "022",
		step{"open", shared + "/f", itoa(oWRONLY | oCREAT), "0666"},
		step{"mkdir", shared + "/d", "0777"},
		step{"symlink", "f", shared + "/l"},
		step{"mknod", shared + "/p", itoa(unix.S_IFIFO | 0o666), "0"},
		step{"mknod", shared + "/s", itoa(unix.S_IFSOCK | 0o666), "0"},
		step{"lstat", shared + "/f"},
		step{"lstat", shared + "/d"},
		step{"lstat", shared + "/l"},
		step{"lstat", shared + "/p"},
		step{"lstat", shared + "/s"},
	))
	for i, want := range []uint32{unix.S_IFREG | 0o644, unix.S_IFDIR | 0o755, unix.S_IFLNK | 0o777, unix.S_IFIFO | 0o644, unix.S_IFSOCK | 0o644} {
		st := rs[5+i].Stat
		if st.UID != alice.UID || st.GID != alice.GID || st.Mode != want {
			t.Errorf("alice's new %s: uid %d gid %d mode %o, want uid %d gid %d mode %o",
				[]string{"file", "dir", "symlink", "fifo", "socket"}[i], st.UID, st.GID, st.Mode, alice.UID, alice.GID, want)
		}
	}
	var lst unix.Stat_t
	must(t, unix.Lstat(m.l("shared/f"), &lst))
	if lst.Uid != alice.UID || lst.Mode != unix.S_IFREG|0o644 {
		t.Errorf("lower file: uid %d mode %o, want %d, %o", lst.Uid, lst.Mode, alice.UID, unix.S_IFREG|0o644)
	}

	rs = ok(t, "umask 077", as(t, alice, "077",
		step{"open", shared + "/private", itoa(oWRONLY | oCREAT), "0666"},
		step{"mkdir", shared + "/pd", "0777"},
		step{"lstat", shared + "/private"},
		step{"lstat", shared + "/pd"},
	))
	if rs[2].Stat.Mode&0o7777 != 0o600 || rs[3].Stat.Mode&0o7777 != 0o700 {
		t.Errorf("umask 077: file %o, dir %o; want 600 and 700", rs[2].Stat.Mode&0o7777, rs[3].Stat.Mode&0o7777)
	}

	// setgid directory: new entries get its group, new directories its bit.
	rs = ok(t, "setgid dir", as(t, alice, "022",
		step{"open", sg + "/f", itoa(oWRONLY | oCREAT), "0644"},
		step{"mkdir", sg + "/d", "0755"},
		step{"lstat", sg + "/f"},
		step{"lstat", sg + "/d"},
	))
	if rs[2].Stat.GID != 2000 || rs[3].Stat.GID != 2000 || rs[3].Stat.Mode&unix.S_ISGID == 0 {
		t.Errorf("in a setgid dir of group 2000: file gid %d, dir gid %d mode %o; want 2000, 2000 with setgid",
			rs[2].Stat.GID, rs[3].Stat.GID, rs[3].Stat.Mode)
	}
	rs = ok(t, "setgid dir, non-member", as(t, bob, "022",
		step{"open", sg + "/b", itoa(oWRONLY | oCREAT), "0644"},
		step{"lstat", sg + "/b"},
	))
	if rs[1].Stat.GID != 2000 || rs[1].Stat.UID != bob.UID {
		t.Errorf("bob's file in the setgid dir: uid %d gid %d, want %d and 2000", rs[1].Stat.UID, rs[1].Stat.GID, bob.UID)
	}

	// chown/chmod rules, sticky directory.
	rs = as(t, alice, "022",
		step{"chown", shared + "/f", "-1", "2000"}, // a group alice is in
		step{"chown", shared + "/f", "-1", "3000"}, // not hers
		step{"chown", shared + "/f", itoa(int(bob.UID)), "-1"},
		step{"chmod", shared + "/f", "02640"},
		step{"lstat", shared + "/f"},
	)
	wantErr(t, "chgrp to a member group", rs[0].err(), 0)
	wantErr(t, "chgrp to another group", rs[1].err(), syscall.EPERM)
	wantErr(t, "give away a file", rs[2].err(), syscall.EPERM)
	wantErr(t, "chmod g+s in a member group", rs[3].err(), 0)
	if rs[4].Stat.GID != 2000 || rs[4].Stat.Mode&0o7777 != 0o2640 {
		t.Errorf("after chgrp and chmod: gid %d mode %o, want 2000 and 2640", rs[4].Stat.GID, rs[4].Stat.Mode&0o7777)
	}
	rs = as(t, bob, "022",
		step{"chmod", shared + "/f", "0666"},
		step{"unlink", shared + "/f"},
		step{"rename", shared + "/f", shared + "/g"},
		step{"open", shared + "/f", itoa(oWRONLY)},
		step{"utimens", shared + "/f", "now", "now"},
		step{"utimens", shared + "/f", "1000000000", "1000000000"},
	)
	for i, want := range []syscall.Errno{syscall.EPERM, syscall.EPERM, syscall.EPERM, syscall.EACCES, syscall.EACCES, syscall.EPERM} {
		wantErr(t, fmt.Sprintf("bob's step %d on alice's file", i), rs[i].err(), want)
	}
	// Root may do all of it.
	must(t, os.Chown(m.p("shared/f"), int(bob.UID), int(bob.GID)))
	ok(t, "bob owns it now", as(t, bob, "022", step{"chmod", shared + "/f", "0600"}, step{"unlink", shared + "/f"}))
}

// TestSetidKill checks that a write by a user without CAP_FSETID clears
// the set-user-ID bit, with the writer's open in passthrough or not, and
// with other opens of the same file in passthrough at the same time (which
// makes the writer's open mix I/O modes on one inode).
func TestSetidKill(t *testing.T) {
	for _, mode := range modes {
		t.Run("passthrough="+mode, func(t *testing.T) {
			m := startMirror(t, mode)
			for _, rootFirst := range []bool{false, true} {
				name := fmt.Sprintf("suid-%v", rootFirst)
				f := m.p(name)
				must(t, os.WriteFile(f, []byte("0123456789"), 0o644))
				must(t, os.Chmod(f, 0o777|os.ModeSetuid|os.ModeSetgid))
				var held *os.File
				if rootFirst {
					var err error
					held, err = os.OpenFile(f, os.O_RDWR, 0)
					must(t, err)
				}
				rs := ok(t, "alice writes", as(t, alice, "022",
					step{"open", f, itoa(oWRONLY)},
					step{"pwrite", "0", "2", "ab"},
					step{"close", "0"},
					step{"stat", f},
				))
				if got := rs[3].Stat.Mode & 0o7777; got != 0o777 {
					t.Errorf("root first %v: after alice's write the mode is %o, want 777 (set-id bits cleared)", rootFirst, got)
				}
				if held != nil {
					b := make([]byte, 10)
					n, err := held.ReadAt(b, 0)
					if n != 10 || string(b) != "01ab456789" {
						t.Errorf("root's open reads %q, %v; want 01ab456789", b[:n], err)
					}
					if _, err := held.WriteAt([]byte("Z"), 9); err != nil {
						t.Errorf("root's open: write: %v", err)
					}
					held.Close()
				}
				var st unix.Stat_t
				must(t, unix.Stat(m.l(name), &st))
				if st.Mode&0o7777 != 0o777 {
					t.Errorf("lower mode %o, want 777", st.Mode&0o7777)
				}
			}
		})
	}
}

// TestRename checks rename(2) and renameat2's RENAME_NOREPLACE and
// RENAME_EXCHANGE against the native file system, and that an open file
// keeps working when it and its directory are renamed.
func TestRename(t *testing.T) {
	m := startMirror(t, "on")
	sameAsNative(t, m, root, 0o755,
		step{"open", "%/a", itoa(oWRONLY | oCREAT)},
		step{"write", "0", "A"},
		step{"open", "%/b", itoa(oWRONLY | oCREAT)},
		step{"write", "1", "B"},
		step{"rename", "%/a", "%/c"},
		step{"lstat", "%/a"},
		step{"rename", "%/c", "%/b", itoa(unix.RENAME_NOREPLACE)},
		step{"rename", "%/c", "%/b", itoa(unix.RENAME_EXCHANGE)},
		step{"open", "%/b", itoa(oRDONLY)},
		step{"read", "2", "10"},
		step{"mkdir", "%/d", "0755"},
		step{"rename", "%/d", "%/b", itoa(unix.RENAME_EXCHANGE)},
		step{"lstat", "%/b"},
		step{"lstat", "%/d"},
		step{"mkdir", "%/b/sub", "0755"},
		step{"rename", "%/b", "%/b/sub/x"},
		step{"rename", "%/d", "%/b"},
		step{"mkdir", "%/e", "0755"},
		step{"rename", "%/e", "%/b"},
		step{"rename", "%/b", "%/e"},
		step{"rename", "%/c", "%/e"},
		step{"rename", "%/nope", "%/x"},
		step{"rename", "%/c", "%/c"},
		step{"rename", "%/c", "%/z", itoa(unix.RENAME_EXCHANGE)},
	)
	// An open file survives renames of itself and of its directory.
	must(t, os.MkdirAll(m.p("d1"), 0o755))
	must(t, os.WriteFile(m.p("d1/f"), []byte("before"), 0o644))
	f, err := os.OpenFile(m.p("d1/f"), os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	must(t, os.Rename(m.p("d1"), m.p("d2")))
	must(t, os.Rename(m.p("d2/f"), m.p("d2/g")))
	if _, err := f.WriteAt([]byte("AFTER!"), 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != 6 {
		t.Errorf("fstat after renames: %v, %v", fi, err)
	}
	if b, err := os.ReadFile(m.p("d2/g")); err != nil || string(b) != "AFTER!" {
		t.Errorf("d2/g reads %q, %v", b, err)
	}
	if b, err := os.ReadFile(m.l("d2/g")); err != nil || string(b) != "AFTER!" {
		t.Errorf("lower d2/g reads %q, %v", b, err)
	}
}

// TestLongNames checks 255-byte names and 4096-byte paths.
func TestLongNames(t *testing.T) {
	m := startMirror(t, "on")
	long := strings.Repeat("n", 255)
	sameAsNative(t, m, root, 0o755,
		step{"open", "%/" + long, itoa(oWRONLY | oCREAT)},
		step{"lstat", "%/" + long},
		step{"open", "%/" + long + "x", itoa(oWRONLY | oCREAT)},
		step{"lstat", "%/" + long + "x"},
		step{"mkdir", "%/" + long + "x", "0755"},
		step{"rename", "%/" + long, "%/" + long[:254] + "y"},
		step{"symlink", strings.Repeat("t/", 2000), "%/" + long},
		step{"readlink", "%/" + long},
		step{"readdir", "%"},
	)
	// A path of PATH_MAX-1 bytes, and files deeper than PATH_MAX reached
	// through directory descriptors.
	dir := m.p("deep")
	must(t, os.Mkdir(dir, 0o755))
	comp := strings.Repeat("d", 200)
	for len(dir)+1+len(comp) < 4000 {
		dir += "/" + comp
		must(t, os.Mkdir(dir, 0o755))
	}
	file := dir + "/" + strings.Repeat("f", 4095-len(dir)-1)
	if len(file) != 4095 {
		t.Fatalf("built a path of %d bytes", len(file))
	}
	must(t, os.WriteFile(file, []byte("deep"), 0o644))
	if b, err := os.ReadFile(file); err != nil || string(b) != "deep" {
		t.Errorf("4095-byte path reads %q, %v", b, err)
	}
	_, err := os.Stat(file + "x")
	wantErr(t, "4096-byte path", err, syscall.ENAMETOOLONG)
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	must(t, err)
	defer func() { unix.Close(dfd) }()
	for i := 0; i < 5; i++ {
		must(t, unix.Mkdirat(dfd, comp, 0o755))
		nfd, err := unix.Openat(dfd, comp, unix.O_PATH|unix.O_DIRECTORY, 0)
		must(t, err)
		unix.Close(dfd)
		dfd = nfd
	}
	fd, err := unix.Openat(dfd, "beyond", unix.O_CREAT|unix.O_WRONLY, 0o644)
	must(t, err)
	unix.Write(fd, []byte("beyond PATH_MAX"))
	unix.Close(fd)
	var st unix.Stat_t
	must(t, unix.Fstatat(dfd, "beyond", &st, 0))
	if st.Size != 15 {
		t.Errorf("file beyond PATH_MAX has size %d", st.Size)
	}
}

// TestSparse checks holes, SEEK_DATA/SEEK_HOLE, fallocate (keep size,
// punch hole, zero range) and truncation against the native file system.
func TestSparse(t *testing.T) {
	for _, mode := range modes {
		t.Run("passthrough="+mode, func(t *testing.T) {
			m := startMirror(t, mode)
			sameAsNative(t, m, root, 0o755,
				step{"open", "%/s", itoa(oRDWR | oCREAT)},
				step{"pwrite", "0", itoa(1 << 20), "data at one MiB"},
				step{"pwrite", "0", "0", "head"},
				step{"fstat", "0"},
				step{"lseek", "0", "0", itoa(unix.SEEK_HOLE)},
				step{"lseek", "0", "4096", itoa(unix.SEEK_DATA)},
				step{"lseek", "0", itoa(1 << 20), itoa(unix.SEEK_HOLE)},
				step{"lseek", "0", itoa(2 << 20), itoa(unix.SEEK_DATA)},
				step{"pread", "0", "100000", "8"},
				step{"fallocate", "0", itoa(unix.FALLOC_FL_KEEP_SIZE), itoa(2 << 20), itoa(1 << 20)},
				step{"fstat", "0"},
				step{"fallocate", "0", "0", itoa(4 << 20), "4096"},
				step{"fstat", "0"},
				step{"pwrite", "0", "8192", strings.Repeat("x", 8192)},
				step{"fallocate", "0", itoa(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE), "8192", "4096"},
				step{"pread", "0", "8190", "8"},
				step{"lseek", "0", "8192", itoa(unix.SEEK_DATA)},
				step{"fallocate", "0", itoa(unix.FALLOC_FL_ZERO_RANGE), "12288", "100"},
				step{"pread", "0", "12286", "6"},
				step{"fstat", "0"},
				step{"ftruncate", "0", "10"},
				step{"pread", "0", "0", "100"},
				step{"truncate", "%/s", "100000"},
				step{"pread", "0", "0", "12"},
				step{"fstat", "0"},
				step{"fsync", "0"},
				step{"fdatasync", "0"},
				step{"open", "%/s", itoa(oRDONLY)},
				step{"fallocate", "1", "0", "0", "10"},
			)
		})
	}
}

// TestCopyFileRange copies within the mount.
func TestCopyFileRange(t *testing.T) {
	for _, mode := range modes {
		t.Run("passthrough="+mode, func(t *testing.T) {
			m := startMirror(t, mode)
			data := strings.Repeat("0123456789abcdef", 1<<16)
			must(t, os.WriteFile(m.p("a"), []byte(data), 0o644))
			sameAsNative(t, m, root, 0o755,
				step{"open", "%/a", itoa(oWRONLY | oCREAT)},
				step{"write", "0", data},
				step{"open", "%/a", itoa(oRDONLY)},
				step{"open", "%/b", itoa(oWRONLY | oCREAT)},
				step{"copy", "1", "3", "2", "5", itoa(len(data))},
				step{"open", "%/b", itoa(oRDONLY)},
				step{"pread", "3", "0", "40"},
				step{"fstat", "3"},
				step{"copy", "2", "0", "1", "0", "10"},
			)
		})
	}
}

// TestXattrs checks the four xattr operations and their flags and errors.
func TestXattrs(t *testing.T) {
	m := startMirror(t, "on")
	sameAsNative(t, m, root, 0o755,
		step{"open", "%/f", itoa(oWRONLY | oCREAT)},
		step{"setxattr", "%/f", "user.a", "one", "0"},
		step{"setxattr", "%/f", "user.a", "two", itoa(unix.XATTR_CREATE)},
		step{"setxattr", "%/f", "user.b", "two", itoa(unix.XATTR_REPLACE)},
		step{"setxattr", "%/f", "user.b", strings.Repeat("v", 3000), "0"},
		step{"getxattr", "%/f", "user.a", "0"},
		step{"getxattr", "%/f", "user.a", "100"},
		step{"getxattr", "%/f", "user.b", "10"},
		step{"getxattr", "%/f", "user.none", "100"},
		step{"listxattr", "%/f", "0"},
		step{"listxattr", "%/f", "100"},
		step{"listxattr", "%/f", "3"},
		step{"removexattr", "%/f", "user.a"},
		step{"removexattr", "%/f", "user.a"},
		step{"listxattr", "%/f", "100"},
		step{"setxattr", "%/f", "trusted.t", "root only", "0"},
		step{"getxattr", "%/f", "trusted.t", "100"},
		step{"symlink", "f", "%/l"},
		step{"setxattr", "%/l", "user.x", "no", "0"},
		step{"setxattr", "%/l", "trusted.x", "link", "0"},
		step{"getxattr", "%/l", "trusted.x", "100"},
		step{"mkdir", "%/d", "0755"},
		step{"setxattr", "%/d", "user.d", "dir", "0"},
		step{"getxattr", "%/d", "user.d", "100"},
		step{"mknod", "%/p", itoa(unix.S_IFIFO | 0o644), "0"},
		step{"setxattr", "%/p", "user.p", "fifo", "0"},
		step{"setxattr", "%/f", "bogus.a", "x", "0"},
	)
	// Another user.
	must(t, os.WriteFile(m.p("mine"), nil, 0o644))
	must(t, unix.Setxattr(m.p("mine"), "user.a", []byte("1"), 0))
	rs := as(t, bob, "022",
		step{"getxattr", m.p("mine"), "user.a", "10"},
		step{"setxattr", m.p("mine"), "user.b", "2", "0"},
		step{"removexattr", m.p("mine"), "user.a"},
		step{"getxattr", m.p("mine"), "trusted.t", "10"},
	)
	wantErr(t, "bob reads a user xattr", rs[0].err(), 0)
	wantErr(t, "bob sets a user xattr on root's 0644 file", rs[1].err(), syscall.EACCES)
	wantErr(t, "bob removes a user xattr on root's 0644 file", rs[2].err(), syscall.EACCES)
	wantErr(t, "bob reads a trusted xattr", rs[3].err(), syscall.ENODATA)
}

// TestLinks checks hard links across directories, symlinks, and unlinking
// a file that is still open.
func TestLinks(t *testing.T) {
	for _, mode := range modes {
		t.Run("passthrough="+mode, func(t *testing.T) {
			m := startMirror(t, mode)
			rs := sameAsNative(t, m, root, 0o755,
				step{"mkdir", "%/d1", "0755"},
				step{"mkdir", "%/d2", "0755"},
				step{"open", "%/d1/f", itoa(oRDWR | oCREAT)},
				step{"write", "0", "shared"},
				step{"link", "%/d1/f", "%/d2/g"},
				step{"lstat", "%/d1/f"},
				step{"lstat", "%/d2/g"},
				step{"open", "%/d2/g", itoa(oRDWR)},
				step{"pwrite", "1", "0", "SH"},
				step{"pread", "0", "0", "10"},
				step{"unlink", "%/d1/f"},
				step{"lstat", "%/d2/g"},
				step{"rename", "%/d2/g", "%/d1/h"},
				step{"lstat", "%/d1/h"},
				step{"link", "%/d1", "%/d3"},
				step{"link", "%/nope", "%/d3"},
				step{"link", "%/d1/h", "%/d1/h"},
				step{"symlink", "d1/h", "%/sl"},
				step{"link", "%/sl", "%/sl2"},
				step{"lstat", "%/sl2"},
				step{"readlink", "%/sl2"},
				// unlink an open file
				step{"open", "%/u", itoa(oRDWR | oCREAT)},
				step{"unlink", "%/u"},
				step{"write", "2", "still here"},
				step{"pread", "2", "0", "20"},
				step{"fstat", "2"},
				step{"lstat", "%/u"},
				step{"close", "2"},
				step{"mknod", "%/fifo", itoa(unix.S_IFIFO | 0o600), "0"},
				step{"mknod", "%/chr", itoa(unix.S_IFCHR | 0o600), itoa(int(unix.Mkdev(1, 3)))},
				step{"mknod", "%/blk", itoa(unix.S_IFBLK | 0o600), itoa(int(unix.Mkdev(7, 200)))},
				step{"lstat", "%/chr"},
				step{"lstat", "%/blk"},
				step{"mknod", "%/fifo", itoa(unix.S_IFIFO | 0o600), "0"},
				step{"rmdir", "%/d1"},
				step{"unlink", "%/d2"},
				step{"rmdir", "%/d2"},
				step{"readdir", "%"},
			)
			if rs[5].Stat.Nlink != 2 || rs[5].Stat.Ino != rs[6].Stat.Ino {
				t.Errorf("hard link: nlink %d, inodes %d and %d", rs[5].Stat.Nlink, rs[5].Stat.Ino, rs[6].Stat.Ino)
			}
		})
	}
}

// TestTmpfile checks O_TMPFILE with linkat, as root and as a user.
func TestTmpfile(t *testing.T) {
	m := startMirror(t, "on")
	sameAsNative(t, m, root, 0o755,
		step{"open", "%", itoa(oRDWR | unix.O_TMPFILE), "0640"},
		step{"write", "0", "anonymous"},
		step{"fstat", "0"},
		step{"linkfd", "0", "%/named"},
		step{"lstat", "%/named"},
		step{"open", "%/named", itoa(oRDONLY)},
		step{"read", "1", "20"},
		step{"open", "%", itoa(oRDWR | unix.O_TMPFILE | unix.O_EXCL), "0600"},
		step{"linkfd", "2", "%/never"},
		step{"open", "%", itoa(oWRONLY | unix.O_TMPFILE), "0600"},
		step{"linkproc", "3", "%/viaproc"},
		step{"lstat", "%/viaproc"},
		step{"open", "%", itoa(oRDONLY | unix.O_TMPFILE), "0600"},
	)
	shared := m.p("shared")
	must(t, os.Mkdir(shared, 0o777))
	must(t, os.Chmod(shared, 0o777))
	rs := ok(t, "alice's tmpfile", as(t, alice, "022",
		step{"open", shared, itoa(oRDWR | unix.O_TMPFILE), "0666"},
		step{"write", "0", "hers"},
		step{"linkproc", "0", shared + "/hers"},
		step{"lstat", shared + "/hers"},
	))
	if st := rs[3].Stat; st.UID != alice.UID || st.GID != alice.GID || st.Mode&0o777 != 0o644 || st.Size != 4 {
		t.Errorf("alice's linked tmpfile: %+v", st)
	}
}

// TestTimes checks utimensat with explicit times, UTIME_NOW and UTIME_OMIT,
// as the owner and as another user.
func TestTimes(t *testing.T) {
	m := startMirror(t, "on")
	rs := sameAsNative(t, m, root, 0o777,
		step{"open", "%/f", itoa(oWRONLY | oCREAT), "0666"},
		step{"utimens", "%/f", "1000000001", "2000000002"},
		step{"stat", "%/f"},
		step{"utimens", "%/f", "omit", "3000000003"},
		step{"stat", "%/f"},
		step{"utimens", "%/f", "-5000000000", "omit"},
		step{"stat", "%/f"},
		step{"symlink", "f", "%/l"},
		step{"utimens", "%/l", "7000000007", "8000000008", itoa(unix.AT_SYMLINK_NOFOLLOW)},
	)
	if st := rs[2].Stat; st.Atime != 1000000001 || st.Mtime != 2000000002 {
		t.Errorf("explicit times: atime %d mtime %d", st.Atime, st.Mtime)
	}
	if st := rs[4].Stat; st.Atime != 1000000001 || st.Mtime != 3000000003 {
		t.Errorf("UTIME_OMIT atime: atime %d mtime %d", st.Atime, st.Mtime)
	}
	if st := rs[6].Stat; st.Atime != -5000000000 || st.Mtime != 3000000003 {
		t.Errorf("time before the epoch: atime %d mtime %d", st.Atime, st.Mtime)
	}
	// chown(-1, -1) changes nothing but the ctime, which Linux updates.
	for _, path := range []string{m.p("ct"), m.l("ct-native")} {
		must(t, os.WriteFile(path, nil, 0o644))
		var a, b unix.Stat_t
		must(t, unix.Stat(path, &a))
		time.Sleep(20 * time.Millisecond)
		must(t, os.Chown(path, -1, -1))
		must(t, unix.Stat(path, &b))
		if b.Ctim.Nano() <= a.Ctim.Nano() {
			t.Errorf("%s: chown(-1, -1) left the ctime at %d", path, b.Ctim.Nano())
		}
	}
	f := m.p("world-writable")
	must(t, os.WriteFile(f, nil, 0o666))
	must(t, os.Chmod(f, 0o666))
	rs = as(t, bob, "022",
		step{"utimens", f, "now", "now"},
		step{"utimens", f, "1", "1"},
		step{"utimens", f, "omit", "now"},
	)
	wantErr(t, "UTIME_NOW by a writer", rs[0].err(), 0)
	wantErr(t, "explicit times by a non-owner", rs[1].err(), syscall.EPERM)
	wantErr(t, "UTIME_OMIT/UTIME_NOW by a non-owner", rs[2].err(), syscall.EPERM)
}

// TestLocks checks POSIX record locks and flock between two processes,
// kept by the kernel and taken on the lower files.
func TestLocks(t *testing.T) {
	for _, where := range []string{"kernel", "lower"} {
		t.Run("locks="+where, func(t *testing.T) { testLocks(t, where) })
	}
}

func testLocks(t *testing.T, where string) {
	m := startMirror(t, "on", "--locks="+where)
	f := m.p("locked")
	must(t, os.WriteFile(f, []byte("data"), 0o666))
	must(t, os.Chmod(f, 0o666))
	mine, err := os.OpenFile(f, os.O_RDWR, 0)
	must(t, err)
	defer mine.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 100}
	must(t, unix.FcntlFlock(mine.Fd(), unix.F_SETLK, &lk))
	rs := as(t, bob, "022",
		step{"open", f, itoa(oRDWR)},
		step{"setlk", "0", "w", "0", "10"},
		step{"setlk", "0", "r", "50", "10"},
		step{"getlk", "0", "w", "0", "10"},
		step{"setlk", "0", "w", "200", "10"},
		step{"getlk", "0", "r", "300", "10"},
	)
	wantErr(t, "conflicting write lock", rs[1].err(), syscall.EAGAIN)
	wantErr(t, "conflicting read lock", rs[2].err(), syscall.EAGAIN)
	if rs[3].Out != "w" || rs[3].Int != int64(os.Getpid()) {
		t.Errorf("F_GETLK: %q held by pid %d; want w held by %d", rs[3].Out, rs[3].Int, os.Getpid())
	}
	wantErr(t, "lock elsewhere", rs[4].err(), 0)
	if rs[5].Out != "u" {
		t.Errorf("F_GETLK on a free range: %q, want unlocked", rs[5].Out)
	}
	// A waiter is woken when the lock goes.
	done := make(chan []result, 1)
	go func() {
		done <- as(t, bob, "022", step{"open", f, itoa(oRDWR)}, step{"setlkw", "0", "w", "0", "10"})
	}()
	select {
	case <-done:
		t.Fatal("F_SETLKW returned while the lock was held")
	case <-waitFor(300):
	}
	lk.Type = unix.F_UNLCK
	must(t, unix.FcntlFlock(mine.Fd(), unix.F_SETLK, &lk))
	if rs := <-done; rs[1].Errno != 0 {
		t.Errorf("F_SETLKW after unlock: %v", rs[1].err())
	}
	// flock
	must(t, unix.Flock(int(mine.Fd()), unix.LOCK_EX))
	rs = as(t, bob, "022",
		step{"open", f, itoa(oRDONLY)},
		step{"flock", "0", itoa(unix.LOCK_EX | unix.LOCK_NB)},
		step{"flock", "0", itoa(unix.LOCK_SH | unix.LOCK_NB)},
	)
	wantErr(t, "flock LOCK_EX against LOCK_EX", rs[1].err(), syscall.EWOULDBLOCK)
	wantErr(t, "flock LOCK_SH against LOCK_EX", rs[2].err(), syscall.EWOULDBLOCK)
	must(t, unix.Flock(int(mine.Fd()), unix.LOCK_UN))
	rs = as(t, bob, "022", step{"open", f, itoa(oRDONLY)}, step{"flock", "0", itoa(unix.LOCK_EX | unix.LOCK_NB)})
	wantErr(t, "flock after unlock", rs[1].err(), 0)

	// Closing any descriptor of the file drops the process's POSIX locks.
	other, err := os.Open(f)
	must(t, err)
	lk = unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 0}
	must(t, unix.FcntlFlock(mine.Fd(), unix.F_SETLK, &lk))
	rs = as(t, bob, "022", step{"open", f, itoa(oRDWR)}, step{"setlk", "0", "w", "5", "1"})
	wantErr(t, "write lock against a whole-file read lock", rs[1].err(), syscall.EAGAIN)
	other.Close()
	rs = as(t, bob, "022", step{"open", f, itoa(oRDWR)}, step{"setlk", "0", "w", "5", "1"})
	wantErr(t, "write lock after the holder closed another descriptor", rs[1].err(), 0)
	if where == "lower" {
		// The locks are on the lower file: a process using it directly sees them.
		must(t, unix.FcntlFlock(mine.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 1}))
		low, err := os.OpenFile(m.l("locked"), os.O_RDWR, 0)
		must(t, err)
		defer low.Close()
		probe := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 1}
		must(t, unix.FcntlFlock(low.Fd(), unix.F_OFD_GETLK, &probe))
		if probe.Type != unix.F_WRLCK {
			t.Errorf("a lock taken through the mount is not seen on the lower file (got type %d)", probe.Type)
		}
	}
}

// TestMixedOpens opens one inode in different I/O modes at once: a writable
// open by a user, which must not use passthrough (its writes clear the
// set-user-ID bit in the daemon), and meanwhile an open by root, which
// would use passthrough but must not while the page cache is in use. No
// open may fail, and both see each other's data.
func TestMixedOpens(t *testing.T) {
	m := startMirror(t, "on")
	f := m.p("mixed")
	must(t, os.WriteFile(f, []byte("...."), 0o666))
	must(t, os.Chmod(f, 0o777|os.ModeSetuid))
	before := m.stats()
	done := make(chan []result, 1)
	go func() {
		done <- as(t, alice, "022",
			step{"open", f, itoa(oRDWR)},
			step{"pwrite", "0", "0", "A"},
			step{"sleep", "1500"},
			step{"pread", "0", "0", "4"},
			step{"close", "0"},
		)
	}()
	time.Sleep(500 * time.Millisecond)
	g, err := os.OpenFile(f, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("root's open while alice's is open: %v", err)
	}
	if _, err := g.WriteAt([]byte("B"), 1); err != nil {
		t.Errorf("root's write: %v", err)
	}
	b := make([]byte, 4)
	if n, err := g.ReadAt(b, 0); n != 4 || string(b) != "AB.." {
		t.Errorf("root reads %q, %v; want AB..", b[:n], err)
	}
	g.Close()
	rs := ok(t, "alice", <-done)
	if rs[3].Out != "AB.." {
		t.Errorf("alice reads %q, want AB..", rs[3].Out)
	}
	s := waitStats(t, m.stats, func(s statsDoc) bool { return s.FS.Handles == 0 })
	if got := s.FS.DaemonOpens - before.FS.DaemonOpens; got != 2 {
		t.Errorf("%d opens served by the daemon, want 2 (alice's, and root's while alice's was open)", got)
	}
	// Alone again, root's open uses passthrough.
	pt := s.FS.PTOpens
	must(t, os.WriteFile(f, []byte("CD"), 0o666))
	if b, err := os.ReadFile(f); err != nil || string(b) != "CD" {
		t.Errorf("read after: %q, %v", b, err)
	}
	if s := m.stats(); s.FS.PTOpens < pt+2 {
		t.Errorf("opens after the others closed: %d in passthrough, want 2 more than %d", s.FS.PTOpens, pt)
	}
	var st unix.Stat_t
	must(t, unix.Stat(f, &st))
	if st.Mode&unix.S_ISUID != 0 {
		t.Errorf("mode %o: alice's write did not clear the set-user-ID bit", st.Mode)
	}
}
