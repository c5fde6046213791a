package passthrough

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
	"github.com/fusegate/fusegate/internal/memstate"
	"github.com/fusegate/fusegate/policy"
	"github.com/fusegate/fusegate/policy/redact/redacttest"
)

// The request → policy operation mapping, opcode by opcode.
func TestRequestOps(t *testing.T) {
	const (
		L  = policy.OpLookup
		RD = policy.OpReadDir
		R  = policy.OpRead
		W  = policy.OpWrite
		C  = policy.OpCreate
		M  = policy.OpMkdir
		D  = policy.OpDelete
		RF = policy.OpRenameFrom
		RT = policy.OpRenameTo
		S  = policy.OpSetattr
	)
	cases := []struct {
		op            abi.Opcode
		x             reqArgs
		first, second opPair
	}{
		{abi.OpLookup, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpGetattr, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpStatx, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpAccess, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpReadlink, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpGetxattr, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpListxattr, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpStatfs, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpSyncfs, reqArgs{}, opPair{L}, opPair{}},
		{abi.OpOpendir, reqArgs{}, opPair{RD}, opPair{}},
		{abi.OpReaddir, reqArgs{}, opPair{RD}, opPair{}},
		{abi.OpReaddirplus, reqArgs{}, opPair{RD}, opPair{}},
		{abi.OpOpen, reqArgs{openFlags: unix.O_RDONLY}, opPair{R}, opPair{}},
		{abi.OpOpen, reqArgs{openFlags: unix.O_RDONLY | unix.O_TRUNC}, opPair{R, W}, opPair{}},
		{abi.OpOpen, reqArgs{openFlags: unix.O_WRONLY | unix.O_APPEND}, opPair{W}, opPair{}},
		{abi.OpOpen, reqArgs{openFlags: unix.O_RDWR}, opPair{R, W}, opPair{}},
		{abi.OpOpen, reqArgs{openFlags: unix.O_ACCMODE}, opPair{R, W}, opPair{}},
		{abi.OpCreate, reqArgs{openFlags: unix.O_CREAT | unix.O_WRONLY}, opPair{C}, opPair{}},
		{abi.OpCreate, reqArgs{openFlags: unix.O_CREAT | unix.O_RDWR | unix.O_EXCL}, opPair{C}, opPair{}},
		{abi.OpCreate, reqArgs{openFlags: unix.O_CREAT | unix.O_RDONLY, exists: true}, opPair{R}, opPair{}},
		{abi.OpCreate, reqArgs{openFlags: unix.O_CREAT | unix.O_WRONLY | unix.O_TRUNC, exists: true}, opPair{W}, opPair{}},
		{abi.OpMknod, reqArgs{}, opPair{C}, opPair{}},
		{abi.OpSymlink, reqArgs{}, opPair{C}, opPair{}},
		{abi.OpMkdir, reqArgs{}, opPair{M}, opPair{}},
		{abi.OpLink, reqArgs{}, opPair{C}, opPair{RF}},
		{abi.OpUnlink, reqArgs{}, opPair{D}, opPair{}},
		{abi.OpRmdir, reqArgs{}, opPair{D}, opPair{}},
		{abi.OpRename, reqArgs{}, opPair{RF}, opPair{RT}},
		{abi.OpRename2, reqArgs{renameFlags: unix.RENAME_NOREPLACE}, opPair{RF}, opPair{RT}},
		{abi.OpRename2, reqArgs{renameFlags: unix.RENAME_EXCHANGE}, opPair{RF, RT}, opPair{RT, RF}},
		{abi.OpSetattr, reqArgs{setattrMask: abi.FattrMode}, opPair{S}, opPair{}},
		{abi.OpSetattr, reqArgs{setattrMask: abi.FattrUID | abi.FattrGID}, opPair{S}, opPair{}},
		{abi.OpSetattr, reqArgs{setattrMask: abi.FattrSize | abi.FattrFh}, opPair{W}, opPair{}},
		{abi.OpSetattr, reqArgs{setattrMask: abi.FattrMtimeNow | abi.FattrAtimeNow}, opPair{W}, opPair{}},
		{abi.OpSetattr, reqArgs{setattrMask: abi.FattrMode | abi.FattrSize}, opPair{S, W}, opPair{}},
		{abi.OpSetattr, reqArgs{setattrMask: abi.FattrFh | abi.FattrLockOwner}, opPair{W}, opPair{}},
		{abi.OpSetxattr, reqArgs{}, opPair{W}, opPair{}},
		{abi.OpRemovexattr, reqArgs{}, opPair{W}, opPair{}},
		{abi.OpFallocate, reqArgs{}, opPair{W}, opPair{}},
		{abi.OpCopyFileRange, reqArgs{}, opPair{W}, opPair{}},
		// Decided at open, or nothing to decide.
		{abi.OpRead, reqArgs{}, opPair{}, opPair{}},
		{abi.OpWrite, reqArgs{}, opPair{}, opPair{}},
		{abi.OpFlush, reqArgs{}, opPair{}, opPair{}},
		{abi.OpRelease, reqArgs{}, opPair{}, opPair{}},
		{abi.OpFsync, reqArgs{}, opPair{}, opPair{}},
		{abi.OpLseek, reqArgs{}, opPair{}, opPair{}},
		{abi.OpGetlk, reqArgs{}, opPair{}, opPair{}},
		{abi.OpSetlk, reqArgs{}, opPair{}, opPair{}},
		{abi.OpReleasedir, reqArgs{}, opPair{}, opPair{}},
		{abi.OpForget, reqArgs{}, opPair{}, opPair{}},
		// Refused under a policy by its handler.
		{abi.OpTmpfile, reqArgs{}, opPair{}, opPair{}},
	}
	for _, tc := range cases {
		f, s := requestOps(tc.op, tc.x)
		if f != tc.first || s != tc.second {
			t.Errorf("%v %+v: %v %v, want %v %v", tc.op, tc.x, f, s, tc.first, tc.second)
		}
	}
}

// Uids of the enforcement tests: two apps (unlisted: uid 10001 owns
// Android/data/uid10001) and one with the media-location role.
const (
	appA   = 10001
	appB   = 10002
	camera = 10050
)

const testPolicy = `
[[app]]
name = "camera"
uids = [10050]
packages = ["org.example.camera"]
roles = ["media-location"]
`

// auditLog collects the engine's audit lines.
type auditLog struct {
	mu    sync.Mutex
	lines []string
}

func (a *auditLog) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lines = append(a.lines, string(p))
	return len(p), nil
}

func (a *auditLog) all() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.lines, "")
}

// policyFS is an FS over a tree in the Android layout, under the built-in
// policy plus testPolicy:
//
//	Android/data/uid10001/f    (10001, private)
//	Android/data/uid10002/g    (10002, private)
//	DCIM/a.jpg                 (10001, JPEG with GPS)
//	DCIM/a.txt                 (10001)
//	DCIM/album/own.txt         (10001, album owned by 10001)
//	DCIM/mixed/b.txt           (10002, in an album owned by 10001)
type policyFS struct {
	t     *testing.T
	fs    *FS
	dir   string
	eng   *policy.Engine
	audit *auditLog
	jpeg  []byte
}

func newPolicyFS(t *testing.T, opts Options) *policyFS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("acting as app uids needs root")
	}
	p, err := policy.Parse("test.toml", append(policy.DefaultFile(), testPolicy...))
	if err != nil {
		t.Fatal(err)
	}
	al := &auditLog{}
	log := logrus.New()
	log.Out = al
	daemon := uint32(0)
	eng := policy.NewEngine(p, policy.Options{Logger: log, AuditInterval: -1, DaemonUID: &daemon,
		ProcessName: func(pid uint32) string { return "proc" + itoa(pid) }})
	opts.Policy = eng
	fs, dir := newFS(t, opts)
	pf := &policyFS{t: t, fs: fs, dir: dir, eng: eng, audit: al}
	mk := func(path string, uid int, mode os.FileMode, data []byte) {
		full := filepath.Join(dir, path)
		if data == nil {
			if err := os.MkdirAll(full, mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(full, mode)
		} else if err := os.WriteFile(full, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(full, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	pf.jpeg, _ = redacttest.JPEG(binary.LittleEndian)
	os.Chmod(dir, 0o755)
	mk("Android", 0, 0o755, nil)
	mk("Android/data", 0, 0o777, nil)
	mk("Android/data/uid10001", appA, 0o777, nil)
	mk("Android/data/uid10001/f", appA, 0o666, []byte("A's secret"))
	mk("Android/data/uid10002", appB, 0o777, nil)
	mk("Android/data/uid10002/g", appB, 0o666, []byte("B's secret"))
	mk("DCIM", 0, 0o777, nil)
	mk("DCIM/a.jpg", appA, 0o666, pf.jpeg)
	mk("DCIM/a.txt", appA, 0o666, []byte("text"))
	mk("DCIM/album", appA, 0o777, nil)
	mk("DCIM/album/own.txt", appA, 0o666, []byte("own"))
	mk("DCIM/mixed", appA, 0o777, nil)
	mk("DCIM/mixed/b.txt", appB, 0o666, []byte("b"))
	return pf
}

func itoa(v uint32) string { return string(appendUint(nil, uint64(v))) }

func appendUint(b []byte, v uint64) []byte {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, buf[i:]...)
}

func as(op abi.Opcode, node uint64, uid uint32) *fusedev.Request {
	return &fusedev.Request{Opcode: op, NodeID: node, Caller: fusedev.Caller{UID: uid, GID: uid, PID: 4242}}
}

// walk looks a path up as root (trusted) and returns its node id.
func (p *policyFS) walk(path string) uint64 {
	p.t.Helper()
	id := uint64(1)
	if path == "" {
		return id
	}
	for _, name := range strings.Split(path, "/") {
		var out abi.EntryOut
		if err := p.fs.Lookup(context.Background(), as(abi.OpLookup, id, 0), name, &out); err != nil {
			p.t.Fatalf("lookup %s as root: %v", path, err)
		}
		id = out.NodeID
	}
	return id
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// The enforcement decisions, request by request, for an app, another app
// and a trusted caller: the configured errors, on both ends of renames and
// links, and the lower file system untouched by what was denied.
func TestPolicyEnforcement(t *testing.T) {
	p := newPolicyFS(t, Options{Passthrough: PassthroughOff})
	ctx := context.Background()
	dataA, dataB := p.walk("Android/data/uid10001"), p.walk("Android/data/uid10002")
	data, dcim := p.walk("Android/data"), p.walk("DCIM")
	fA, gB := p.walk("Android/data/uid10001/f"), p.walk("Android/data/uid10002/g")
	jpg, txt := p.walk("DCIM/a.jpg"), p.walk("DCIM/a.txt")
	root := uint64(1)

	type step struct {
		name string
		uid  uint32
		do   func(r func(abi.Opcode, uint64) *fusedev.Request) error
		want syscall.Errno
	}
	lookup := func(parent uint64, name string) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var out abi.EntryOut
			return p.fs.Lookup(ctx, r(abi.OpLookup, parent), name, &out)
		}
	}
	getattr := func(node uint64) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var out abi.AttrOut
			return p.fs.Getattr(ctx, r(abi.OpGetattr, node), &abi.GetattrIn{}, &out)
		}
	}
	open := func(node uint64, flags uint32) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var out abi.OpenOut
			err := p.fs.Open(ctx, r(abi.OpOpen, node), &abi.OpenIn{Flags: flags}, &out)
			if err == nil {
				p.fs.Release(ctx, r(abi.OpRelease, node), &abi.ReleaseIn{Fh: out.Fh})
			}
			return err
		}
	}
	create := func(parent uint64, name string) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var e abi.EntryOut
			var out abi.OpenOut
			err := p.fs.Create(ctx, r(abi.OpCreate, parent), &abi.CreateIn{Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, name, &e, &out)
			if err == nil {
				p.fs.Release(ctx, r(abi.OpRelease, e.NodeID), &abi.ReleaseIn{Fh: out.Fh})
			}
			return err
		}
	}
	mkdir := func(parent uint64, name string) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var e abi.EntryOut
			return p.fs.Mkdir(ctx, r(abi.OpMkdir, parent), &abi.MkdirIn{Mode: 0o755}, name, &e)
		}
	}
	symlink := func(parent uint64, name, target string) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var e abi.EntryOut
			return p.fs.Symlink(ctx, r(abi.OpSymlink, parent), target, name, &e)
		}
	}
	link := func(old, parent uint64, name string) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var e abi.EntryOut
			return p.fs.Link(ctx, r(abi.OpLink, parent), &abi.LinkIn{OldNodeID: old}, name, &e)
		}
	}
	rename := func(parent uint64, name string, newParent uint64, newName string, flags uint32) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			return p.fs.Rename(ctx, r(abi.OpRename2, parent), &abi.Rename2In{Newdir: newParent, Flags: flags}, name, newName)
		}
	}
	unlink := func(parent uint64, name string) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			return p.fs.Unlink(ctx, r(abi.OpUnlink, parent), name)
		}
	}
	chmod := func(node uint64) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var out abi.AttrOut
			return p.fs.Setattr(ctx, r(abi.OpSetattr, node), &abi.SetattrIn{Valid: abi.FattrMode, Mode: 0o644}, &out)
		}
	}
	truncate := func(node uint64) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var out abi.AttrOut
			return p.fs.Setattr(ctx, r(abi.OpSetattr, node), &abi.SetattrIn{Valid: abi.FattrSize, Size: 4}, &out)
		}
	}
	setxattr := func(node uint64) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			return p.fs.Setxattr(ctx, r(abi.OpSetxattr, node), &abi.SetxattrIn{}, "user.x", []byte("1"))
		}
	}
	getxattr := func(node uint64) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			_, err := p.fs.Getxattr(ctx, r(abi.OpGetxattr, node), "user.none", nil)
			if errors.Is(err, syscall.ENODATA) {
				return nil // allowed; the attribute does not exist
			}
			return err
		}
	}
	opendir := func(node uint64) func(func(abi.Opcode, uint64) *fusedev.Request) error {
		return func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var out abi.OpenOut
			err := p.fs.Opendir(ctx, r(abi.OpOpendir, node), &abi.OpenIn{}, &out)
			if err == nil {
				p.fs.Releasedir(ctx, r(abi.OpReleasedir, node), &abi.ReleaseIn{Fh: out.Fh})
			}
			return err
		}
	}

	steps := []step{
		// B cannot see A's private directory or anything in it: ENOENT.
		{"B looks up A's package", appB, lookup(data, "uid10001"), syscall.ENOENT},
		{"B looks up A's file", appB, lookup(dataA, "f"), syscall.ENOENT},
		{"B looks up a missing name in A's dir", appB, lookup(dataA, "nothing"), syscall.ENOENT},
		{"B stats A's file by node", appB, getattr(fA), syscall.ENOENT},
		{"B opens A's file", appB, open(fA, unix.O_RDONLY), syscall.ENOENT},
		{"B lists A's dir", appB, opendir(dataA), syscall.ENOENT},
		{"B creates in A's dir", appB, create(dataA, "planted"), syscall.ENOENT},
		{"B mkdirs in A's dir", appB, mkdir(dataA, "d"), syscall.ENOENT},
		{"B symlinks in A's dir", appB, symlink(dataA, "s", "x"), syscall.ENOENT},
		{"B unlinks A's file", appB, unlink(dataA, "f"), syscall.ENOENT},
		{"B chmods A's file", appB, chmod(fA), syscall.ENOENT},
		{"B reads A's xattr", appB, getxattr(fA), syscall.ENOENT},
		{"B sets A's xattr", appB, setxattr(fA), syscall.ENOENT},
		{"B creates A's package dir", appB, mkdir(data, "uid10001"), syscall.ENOENT},
		// Renames: both ends, both ways.
		{"B renames its file into A's dir", appB, rename(dataB, "g", dataA, "g", 0), syscall.ENOENT},
		{"B renames A's file out", appB, rename(dataA, "f", dataB, "stolen", 0), syscall.ENOENT},
		{"A renames its file into B's dir", appA, rename(dataA, "f", dataB, "gift", 0), syscall.ENOENT},
		{"A exchanges its file with B's", appA, rename(dataA, "f", dataB, "g", unix.RENAME_EXCHANGE), syscall.ENOENT},
		// Links: the existing file is checked as a rename away, the new
		// name as a creation.
		{"A links B's file into its dir", appA, link(gB, dataA, "l"), syscall.ENOENT},
		{"A links its file into B's dir", appA, link(fA, dataB, "l"), syscall.ENOENT},
		{"B links A's DCIM file (not its own) into its dir", appB, link(txt, dataB, "l"), syscall.EACCES},
		// A in its own directory: everything.
		{"A looks up its file", appA, lookup(dataA, "f"), 0},
		{"A opens its file rw", appA, open(fA, unix.O_RDWR), 0},
		{"A lists its dir", appA, opendir(dataA), 0},
		{"A creates in its dir", appA, create(dataA, "new"), 0},
		{"A symlinks to B's dir in its dir", appA, symlink(dataA, "tob", "../uid10002/g"), 0},
		{"A chmods its file", appA, chmod(fA), 0},
		{"A truncates its file", appA, truncate(fA), 0},
		{"A sets an xattr on its file", appA, setxattr(fA), 0},
		{"A links its file into DCIM", appA, link(fA, dcim, "published"), 0},
		// Shared storage: readable by all, changeable by the owner.
		{"B reads A's DCIM file", appB, open(txt, unix.O_RDONLY), 0},
		{"B writes A's DCIM file", appB, open(txt, unix.O_WRONLY), syscall.EACCES},
		{"B truncates A's DCIM file by O_TRUNC", appB, open(txt, unix.O_RDONLY|unix.O_TRUNC), syscall.EACCES},
		{"B truncates A's DCIM file", appB, truncate(txt), syscall.EACCES},
		{"B unlinks A's DCIM file", appB, unlink(dcim, "a.txt"), syscall.EACCES},
		{"B renames A's DCIM file", appB, rename(dcim, "a.txt", dcim, "b.txt", 0), syscall.EACCES},
		{"B renames onto A's DCIM file", appB, rename(dcim, "b-own.txt", dcim, "a.txt", 0), syscall.EACCES},
		{"B creates in DCIM", appB, create(dcim, "b-own.txt"), 0},
		{"A opens its DCIM file rw", appA, open(txt, unix.O_RDWR), 0},
		{"nobody creates at the root", appB, create(root, "junk"), syscall.EACCES},
		{"nobody removes a top-level dir", appA, func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			return p.fs.Rmdir(ctx, r(abi.OpRmdir, root), "DCIM")
		}, syscall.EACCES},
		// Directory renames: everything inside must be movable.
		{"A moves an album holding B's file", appA, rename(dcim, "mixed", dcim, "mine", 0), syscall.EACCES},
		{"A moves its own album", appA, rename(dcim, "album", dcim, "album2", 0), 0},
		{"A moves its album into its private dir", appA, rename(dcim, "album2", dataA, "album", 0), 0},
		// Trusted callers see and do everything.
		{"root looks up A's file", 0, lookup(dataA, "f"), 0},
		{"system uid opens B's file", 1000, open(gB, unix.O_RDWR), 0},
		{"root moves the mixed album", 0, rename(dcim, "mixed", dcim, "mixed2", 0), 0},
		{"TMPFILE is refused under a policy", appA, func(r func(abi.Opcode, uint64) *fusedev.Request) error {
			var e abi.EntryOut
			var out abi.OpenOut
			return p.fs.Tmpfile(ctx, r(abi.OpTmpfile, dataA), &abi.CreateIn{Flags: unix.O_RDWR, Mode: 0o600}, &e, &out)
		}, syscall.EOPNOTSUPP},
	}
	for _, s := range steps {
		r := func(op abi.Opcode, node uint64) *fusedev.Request { return as(op, node, s.uid) }
		wantErrno(t, s.name, s.do(r), s.want)
	}
	_ = jpg
	// What was denied left the lower tree alone.
	for _, path := range []string{"Android/data/uid10001/planted", "Android/data/uid10002/stolen", "Android/data/uid10002/gift",
		"Android/data/uid10001/l", "Android/data/uid10002/l", "DCIM/mine", "junk"} {
		if _, err := os.Lstat(filepath.Join(p.dir, path)); err == nil {
			t.Errorf("%s exists after its creation was denied", path)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(p.dir, "Android/data/uid10002/g")); string(b) != "B's secret" {
		t.Errorf("B's file reads %q", b)
	}
	if st, err := os.Stat(filepath.Join(p.dir, "Android/data/uid10001/new")); err != nil || st.Sys().(*syscall.Stat_t).Uid != appA {
		t.Errorf("A's new file: %v (owned by A?)", err)
	}
	// Denials were audited with uid, pid, process name, op, path, rule.
	log := p.audit.all()
	for _, want := range []string{`uid=10002`, `pid=4242`, `comm=proc4242`, `op=lookup`, `path=Android/data/uid10001/f`, `rule="rule[2] app-data"`, `errno=ENOENT`, `op=rename_from path=DCIM/mixed/b.txt`} {
		if !strings.Contains(log, want) {
			t.Errorf("audit log lacks %s:\n%s", want, log)
		}
	}
	var denied uint64
	for _, rs := range p.eng.Stats() {
		denied += rs.Denials
	}
	if denied == 0 || p.fs.Stats().Policy == nil || p.fs.Stats().Policy.Rules == nil {
		t.Errorf("policy stats: %+v", p.fs.Stats().Policy)
	}
}

// Entries carry the policy's timeouts: 0 on app-private paths (entries and
// attributes), 1 s elsewhere; a missing private name is an error, never a
// cached negative entry; a missing shared one may be cached.
func TestPolicyTimeouts(t *testing.T) {
	p := newPolicyFS(t, Options{Passthrough: PassthroughOff, EntryTimeout: time.Hour, Timeouts: func(context.Context, *EntryInfo) Timeouts {
		return Timeouts{Entry: time.Hour, Attr: time.Hour} // unused under a policy
	}})
	ctx := context.Background()
	dataA := p.walk("Android/data/uid10001")
	var out abi.EntryOut
	if err := p.fs.Lookup(ctx, as(abi.OpLookup, dataA, appA), "f", &out); err != nil {
		t.Fatal(err)
	}
	if out.EntryValid != 0 || out.EntryValidNsec != 0 || out.AttrValid != 0 || out.AttrValidNsec != 0 {
		t.Errorf("private entry cached: entry %d.%09d attr %d.%09d", out.EntryValid, out.EntryValidNsec, out.AttrValid, out.AttrValidNsec)
	}
	var a abi.AttrOut
	if err := p.fs.Getattr(ctx, as(abi.OpGetattr, out.NodeID, appA), &abi.GetattrIn{}, &a); err != nil || a.AttrValid != 0 {
		t.Errorf("private getattr: %v, attr valid %d", err, a.AttrValid)
	}
	out = abi.EntryOut{}
	if err := p.fs.Lookup(ctx, as(abi.OpLookup, dataA, appA), "missing", &out); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("missing private name: %v %+v, want ENOENT (no cached negative entry)", err, out)
	}
	if err := p.fs.Lookup(ctx, as(abi.OpLookup, 1, appA), "DCIM", &out); err != nil || out.EntryValid != 1 || out.AttrValid != 1 {
		t.Errorf("DCIM: %v, entry %d attr %d, want 1 s", err, out.EntryValid, out.AttrValid)
	}
	dcim := out.NodeID
	out = abi.EntryOut{}
	if err := p.fs.Lookup(ctx, as(abi.OpLookup, dcim, appA), "missing", &out); err != nil || out.NodeID != 0 || out.EntryValid != 1 {
		t.Errorf("missing shared name: %v %+v, want a negative entry of 1 s", err, out)
	}
}

// readdir lists, through the fake kernel k, what READDIR or READDIRPLUS
// returns for uid: the names and the entries by name.
func (p *policyFS) readdir(k *fusetest.Kernel, node uint64, uid uint32, plus bool) (names []string, entries map[string]abi.EntryOut) {
	p.t.Helper()
	k.SetCaller(fusedev.Caller{UID: uid, GID: uid, PID: 4242})
	o, errno := k.Opendir(node)
	if errno != 0 {
		p.t.Fatalf("opendir as %d: %v", uid, errno)
	}
	defer k.Do(abi.OpReleasedir, node, fusetest.Arg(abi.ReleaseIn{Fh: o.Fh}))
	if o.OpenFlags&(abi.FopenCacheDir|abi.FopenKeepCache) != 0 {
		p.t.Errorf("opendir under a policy: flags %v; a filtered listing must not be cached", o.OpenFlags)
	}
	entries = map[string]abi.EntryOut{}
	off := uint64(0)
	for {
		if plus {
			ents, errno := k.Readdirplus(node, o.Fh, off, 4096)
			if errno != 0 {
				p.t.Fatal(errno)
			}
			if len(ents) == 0 {
				return names, entries
			}
			for _, e := range ents {
				names = append(names, e.Name)
				entries[e.Name] = e.Entry
				off = e.Off
			}
			continue
		}
		ents, errno := k.Readdir(node, o.Fh, off, 4096)
		if errno != 0 {
			p.t.Fatal(errno)
		}
		if len(ents) == 0 {
			return names, entries
		}
		for _, e := range ents {
			names = append(names, e.Name)
			off = e.Off
		}
	}
}

// Listings leave out what the caller may not look up (no reference is
// taken for it), and readdirplus entries carry the per-path timeouts.
func TestPolicyReaddir(t *testing.T) {
	p := newPolicyFS(t, Options{Passthrough: PassthroughOff})
	k := fusetest.Start(t, p.fs, fusedev.Options{Flags: p.fs.InitFlags()})
	if r := k.Init(abi.KernelVersion, abi.KernelMinorVersion, fusedev.DefaultFlags); r.Errno != 0 {
		t.Fatalf("INIT: %v", r.Errno)
	}
	k.SetCaller(fusedev.Caller{})
	android, _ := k.Lookup(1, "Android")
	dataE, _ := k.Lookup(android.NodeID, "data")
	dcimE, _ := k.Lookup(1, "DCIM")
	data := dataE.NodeID
	for _, plus := range []bool{false, true} {
		nodes := p.fs.Stats().Nodes
		names, ents := p.readdir(k, data, appA, plus)
		if got := strings.Join(filterDots(names), ","); got != "uid10001" {
			t.Errorf("plus=%v: A lists Android/data as %q, want only its own package", plus, got)
		}
		if plus {
			e := ents["uid10001"]
			if e.NodeID == 0 || e.EntryValid != 0 || e.AttrValid != 0 {
				t.Errorf("readdirplus entry of A's package: %+v, want a node with timeouts 0", e)
			}
			if got := p.fs.Stats().Nodes; got != nodes+1 {
				t.Errorf("readdirplus took references on %d nodes, want 1 (hidden entries get none)", got-nodes)
			}
		}
		names, _ = p.readdir(k, data, 0, plus)
		if got := strings.Join(filterDots(names), ","); got != "uid10001,uid10002" {
			t.Errorf("plus=%v: root lists Android/data as %q", plus, got)
		}
	}
	_, ents := p.readdir(k, dcimE.NodeID, appB, true)
	if e := ents["a.txt"]; e.NodeID == 0 || e.EntryValid != 1 || e.AttrValid != 1 {
		t.Errorf("readdirplus entry of DCIM/a.txt: %+v, want 1 s timeouts", e)
	}
	if p.fs.Stats().Policy.Filtered == 0 {
		t.Error("no filtered entries counted")
	}
}

func filterDots(names []string) []string {
	var out []string
	for _, n := range names {
		if n != "." && n != ".." {
			out = append(out, n)
		}
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// A redacted open: FOPEN_DIRECT_IO without passthrough or KEEP_CACHE, its
// reads zero exactly the GPS bytes; the owner and the media-location role
// read the original (also without the page cache: the file is redactable);
// a redacted open is refused while the inode is in passthrough mode, and
// copy_file_range falls back to reads.
func TestPolicyRedaction(t *testing.T) {
	p := newPolicyFS(t, Options{Passthrough: PassthroughOff})
	ctx := context.Background()
	jpg := p.walk("DCIM/a.jpg")
	_, gps := redacttest.JPEG(binary.LittleEndian)
	want := bytes.Clone(p.jpeg)
	for _, r := range gps {
		clear(want[r.Off:r.End()])
	}
	read := func(uid uint32, wantFlags abi.OpenFlags) []byte {
		t.Helper()
		var o abi.OpenOut
		if err := p.fs.Open(ctx, as(abi.OpOpen, jpg, uid), &abi.OpenIn{Flags: unix.O_RDONLY}, &o); err != nil {
			t.Fatalf("open as %d: %v", uid, err)
		}
		defer p.fs.Release(ctx, as(abi.OpRelease, jpg, uid), &abi.ReleaseIn{Fh: o.Fh})
		if o.OpenFlags&^abi.FopenNoflush != wantFlags || o.BackingID != 0 {
			t.Errorf("open as %d: flags %v backing %d, want %v", uid, o.OpenFlags, o.BackingID, wantFlags)
		}
		var got []byte
		for off := 0; off < len(p.jpeg); off += 100 { // odd-sized reads across the ranges
			b, err := p.fs.Read(ctx, as(abi.OpRead, jpg, uid), &abi.ReadIn{Fh: o.Fh, Offset: uint64(off), Size: 100}, make([]byte, 100))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b...)
		}
		return got
	}
	if got := read(appB, abi.FopenDirectIO); !bytes.Equal(got, want) {
		t.Errorf("B's redacted read differs from the file with zeros over the GPS ranges")
	}
	if got := read(appA, abi.FopenDirectIO); !bytes.Equal(got, p.jpeg) {
		t.Errorf("the owner's read is not the original")
	}
	if got := read(camera, abi.FopenDirectIO); !bytes.Equal(got, p.jpeg) {
		t.Errorf("the media-location role's read is not the original")
	}
	if got := read(0, abi.FopenDirectIO); !bytes.Equal(got, p.jpeg) {
		t.Errorf("root's read is not the original")
	}
	st := p.fs.Stats().Policy
	if st.RedactedOpens != 1 || st.DirectOpens != 3 {
		t.Errorf("redacted %d direct %d opens, want 1 and 3", st.RedactedOpens, st.DirectOpens)
	}
	// A text file: no redaction, the page cache.
	txt := p.walk("DCIM/a.txt")
	var o abi.OpenOut
	if err := p.fs.Open(ctx, as(abi.OpOpen, txt, appB), &abi.OpenIn{Flags: unix.O_RDONLY}, &o); err != nil || o.OpenFlags&abi.FopenDirectIO != 0 {
		t.Errorf("open of a text file: %v, flags %v", err, o.OpenFlags)
	}
	p.fs.Release(ctx, as(abi.OpRelease, txt, appB), &abi.ReleaseIn{Fh: o.Fh})

	// copy_file_range from a redacted open: EOPNOTSUPP (the kernel then
	// reads through the open). Into a file B made.
	var ce abi.EntryOut
	var co abi.OpenOut
	dcim := p.walk("DCIM")
	if err := p.fs.Create(ctx, as(abi.OpCreate, dcim, appB), &abi.CreateIn{Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, "copy.bin", &ce, &co); err != nil {
		t.Fatal(err)
	}
	var ro abi.OpenOut
	if err := p.fs.Open(ctx, as(abi.OpOpen, jpg, appB), &abi.OpenIn{Flags: unix.O_RDONLY}, &ro); err != nil {
		t.Fatal(err)
	}
	_, err := p.fs.CopyFileRange(ctx, as(abi.OpCopyFileRange, jpg, appB), &abi.CopyFileRangeIn{FhIn: ro.Fh, FhOut: co.Fh, NodeIDOut: ce.NodeID, Len: 1 << 20})
	wantErrno(t, "copy_file_range from a redacted open", err, syscall.EOPNOTSUPP)
	// While it is open, an unredacted open of the inode bypasses the page
	// cache too.
	if err := p.fs.Open(ctx, as(abi.OpOpen, txt, 0), &abi.OpenIn{Flags: unix.O_RDONLY}, &o); err != nil {
		t.Fatal(err)
	}
	p.fs.Release(ctx, as(abi.OpRelease, txt, 0), &abi.ReleaseIn{Fh: o.Fh})
	p.fs.Release(ctx, as(abi.OpRelease, jpg, appB), &abi.ReleaseIn{Fh: ro.Fh})
	p.fs.Release(ctx, as(abi.OpRelease, ce.NodeID, appB), &abi.ReleaseIn{Fh: co.Fh})

	// The inode in passthrough mode (as after opens made before a policy
	// change): a redacted open is refused rather than given the backing
	// file or the shared page cache.
	n, _ := p.fs.node(jpg)
	n.io.mu.Lock()
	n.io.ptOpens++
	n.io.mu.Unlock()
	err = p.fs.Open(ctx, as(abi.OpOpen, jpg, appB), &abi.OpenIn{Flags: unix.O_RDONLY}, &o)
	wantErrno(t, "redacted open of an inode with passthrough opens", err, syscall.EBUSY)
	n.io.mu.Lock()
	n.io.ptOpens--
	n.io.mu.Unlock()
}

// SetPolicy changes the decisions at once and invalidates the kernel's
// cached names: with one INC_EPOCH on kernels that have it (7.44), else one
// INVAL_ENTRY per node the kernel holds.
func TestSetPolicyInvalidates(t *testing.T) {
	for _, minor := range []uint32{45, 43} {
		t.Run("7."+itoa(minor), func(t *testing.T) {
			p := newPolicyFS(t, Options{Passthrough: PassthroughOff})
			k := fusetest.Start(t, p.fs, fusedev.Options{Flags: p.fs.InitFlags()})
			k.SetCaller(fusedev.Caller{UID: appB, GID: appB, PID: 1})
			if r := k.Init(abi.KernelVersion, minor, fusedev.DefaultFlags); r.Errno != 0 {
				t.Fatalf("INIT: %v", r.Errno)
			}
			dcim, errno := k.Lookup(1, "DCIM")
			if errno != 0 {
				t.Fatal(errno)
			}
			if _, errno := k.Lookup(dcim.NodeID, "a.txt"); errno != 0 {
				t.Fatal(errno)
			}
			closed, err := policy.Parse("closed.toml", []byte("version = 1\n[default]\nallow.view = [\"apps\"]\n[[rule]]\nname = \"no-dcim\"\npath = \"DCIM/**\"\nallow.lookup = []\ndeny = \"ENOENT\"\n"))
			if err != nil {
				t.Fatal(err)
			}
			inv, err := p.fs.SetPolicy(closed)
			if err != nil {
				t.Fatal(err)
			}
			if minor >= 44 {
				if !inv.Epoch {
					t.Errorf("invalidation %+v, want an epoch", inv)
				}
				k.ExpectNotification(abi.NotifyIncEpoch)
			} else {
				if inv.Epoch || inv.Entries != 2 {
					t.Errorf("invalidation %+v, want 2 entries", inv)
				}
				got := map[string]bool{}
				for i := 0; i < 2; i++ {
					n := k.ExpectNotification(abi.NotifyInvalEntry)
					var out abi.NotifyInvalEntryOut
					abi.Decode(n.Payload, &out)
					name := string(n.Payload[abi.SizeNotifyInvalEntryOut : abi.SizeNotifyInvalEntryOut+int(out.Namelen)])
					got[itoa(uint32(out.Parent))+"/"+name] = true
				}
				if !got["1/DCIM"] || !got[itoa(uint32(dcim.NodeID))+"/a.txt"] {
					t.Errorf("invalidated %v", got)
				}
			}
			if _, errno := k.Lookup(1, "DCIM"); errno != syscall.ENOENT {
				t.Errorf("lookup of DCIM after the reload: %v, want ENOENT", errno)
			}
			// Off: everything is let through; then the engine again.
			if _, err := p.fs.SetPolicy(nil); err != nil || p.fs.Policy() != nil {
				t.Errorf("SetPolicy(nil): %v, engine %v", err, p.fs.Policy())
			}
			if _, errno := k.Lookup(1, "DCIM"); errno != 0 {
				t.Errorf("lookup of DCIM without a policy: %v", errno)
			}
		})
	}
	// An FS made without an engine cannot take a policy.
	fs, _ := newFS(t, Options{})
	if _, err := fs.SetPolicy(policy.Default()); !errors.Is(err, ErrNoPolicyEngine) {
		t.Errorf("SetPolicy without an engine: %v", err)
	}
}

// A redacted open stays redacted in a successor process that restores the
// restart state: its reads still zero the GPS bytes.
func TestPolicyRedactionSurvivesRestart(t *testing.T) {
	p := newPolicyFS(t, Options{Passthrough: PassthroughOff})
	ctx := context.Background()
	r, err := memstate.Create("test", StateSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := p.fs.TrackState(r, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.fs.st.writeHeader(p.fs, &fusedev.Negotiated{Major: 7, Minor: 45, MaxWrite: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	jpg := p.walk("DCIM/a.jpg")
	var o abi.OpenOut
	if err := p.fs.Open(ctx, as(abi.OpOpen, jpg, appB), &abi.OpenIn{Flags: unix.O_RDONLY}, &o); err != nil {
		t.Fatal(err)
	}
	fs2, err := New(p.dir, Options{Passthrough: PassthroughOff, Policy: p.eng})
	if err != nil {
		t.Fatal(err)
	}
	defer fs2.Close()
	if _, err := fs2.Restore(successor(t, r)); err != nil {
		t.Fatal(err)
	}
	got, err := fs2.Read(ctx, as(abi.OpRead, jpg, appB), &abi.ReadIn{Fh: o.Fh, Size: uint32(len(p.jpeg))}, make([]byte, len(p.jpeg)))
	if err != nil {
		t.Fatal(err)
	}
	_, gps := redacttest.JPEG(binary.LittleEndian)
	for _, rg := range gps {
		if !bytes.Equal(got[rg.Off:rg.End()], make([]byte, rg.Len)) {
			t.Errorf("after a restart, GPS bytes %v read back unredacted", rg)
		}
	}
	if n, _ := fs2.node(jpg); n == nil || n.io.redacted != 1 {
		t.Errorf("the restored inode does not count its redacted open")
	}
}
