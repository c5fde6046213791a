package passthrough

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// These tests call the FS's methods directly, as the server would, on a
// lower directory; no mount is involved. The kernel's side of passthrough
// is covered by tests/passthrough.

func newFS(t testing.TB, opts Options) (*FS, string) {
	t.Helper()
	dir := t.TempDir()
	fs, err := New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs, dir
}

func req(op abi.Opcode, node uint64) *fusedev.Request {
	return &fusedev.Request{Opcode: op, NodeID: node,
		Caller: fusedev.Caller{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), PID: uint32(os.Getpid())}}
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestLookupForget(t *testing.T) {
	fs, dir := newFS(t, Options{})
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), nil, 0o644)
	}
	base := fdCount(t)
	ids := map[uint64]uint64{}
	for round := 0; round < 3; round++ {
		for i := 0; i < 50; i++ {
			var out abi.EntryOut
			if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "f"+strconv.Itoa(i), &out); err != nil {
				t.Fatal(err)
			}
			if out.NodeID == 0 || out.Attr.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Fatalf("lookup f%d: %+v", i, out)
			}
			ids[out.NodeID]++
		}
	}
	if len(ids) != 50 || fs.Stats().Nodes != 51 {
		t.Fatalf("%d node ids for 50 files, %d nodes", len(ids), fs.Stats().Nodes)
	}
	if got := fdCount(t); got != base {
		t.Errorf("%d descriptors after 50 lookups, want %d: a looked-up node opens none until used", got, base)
	}
	for id := range ids {
		var a abi.AttrOut
		if err := fs.Getattr(ctx, req(abi.OpGetattr, id), &abi.GetattrIn{}, &a); err != nil {
			t.Fatal(err)
		}
	}
	if got := fdCount(t); got != base+50 {
		t.Errorf("%d descriptors after using 50 nodes, want %d", got, base+50)
	}
	for id, n := range ids {
		fs.Forget(id, n-1)
	}
	if fs.Stats().Nodes != 51 {
		t.Errorf("nodes forgotten before their count reached zero: %d left", fs.Stats().Nodes)
	}
	var batch []abi.ForgetOne
	for id := range ids {
		batch = append(batch, abi.ForgetOne{NodeID: id, Nlookup: 1})
	}
	for _, f := range batch {
		fs.Forget(f.NodeID, f.Nlookup)
	}
	if fs.Stats().Nodes != 1 || fdCount(t) != base {
		t.Errorf("after forgetting all: %d nodes, %d descriptors (base %d)", fs.Stats().Nodes, fdCount(t), base)
	}
	// A forgotten node id is stale; the root is never forgotten.
	var a abi.AttrOut
	for id := range ids {
		if err := fs.Getattr(ctx, req(abi.OpGetattr, id), &abi.GetattrIn{}, &a); !errors.Is(err, syscall.ESTALE) {
			t.Errorf("getattr of a forgotten node: %v, want ESTALE", err)
		}
		break
	}
	fs.Forget(1, 1<<40)
	if err := fs.Getattr(ctx, req(abi.OpGetattr, 1), &abi.GetattrIn{}, &a); err != nil {
		t.Errorf("getattr of the root after forgetting it: %v", err)
	}
}

func TestNegativeAndTimeouts(t *testing.T) {
	var asked []string
	fs, dir := newFS(t, Options{
		NegativeTimeout: 3 * time.Second,
		Timeouts: func(ctx context.Context, e *EntryInfo) Timeouts {
			asked = append(asked, e.Path())
			if !e.Exists {
				return Timeouts{Entry: 2 * time.Second}
			}
			return Timeouts{Entry: 5 * time.Second, Attr: 1500 * time.Millisecond}
		},
	})
	ctx := context.Background()
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	os.WriteFile(filepath.Join(dir, "d", "f"), nil, 0o644)
	var out abi.EntryOut
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "nope", &out); err != nil || out.NodeID != 0 || out.EntryValid != 2 {
		t.Errorf("negative lookup: %v, %+v; want a cached negative entry of 2 s", err, out)
	}
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "d", &out); err != nil {
		t.Fatal(err)
	}
	d := out.NodeID
	if err := fs.Lookup(ctx, req(abi.OpLookup, d), "f", &out); err != nil {
		t.Fatal(err)
	}
	if out.EntryValid != 5 || out.AttrValid != 1 || out.AttrValidNsec != 500_000_000 {
		t.Errorf("timeouts: entry %d s, attr %d s %d ns", out.EntryValid, out.AttrValid, out.AttrValidNsec)
	}
	var a abi.AttrOut
	if err := fs.Getattr(ctx, req(abi.OpGetattr, out.NodeID), &abi.GetattrIn{}, &a); err != nil || a.AttrValid != 1 {
		t.Errorf("getattr: %v, attr valid %d; want the node's 1.5 s", err, a.AttrValid)
	}
	want := []string{"/nope", "/d", "/d/f"}
	if len(asked) != 3 || asked[0] != want[0] || asked[1] != want[1] || asked[2] != want[2] {
		t.Errorf("Timeouts asked for %q, want %q", asked, want)
	}
}

func TestGateAndPaths(t *testing.T) {
	var seen []string
	fs, dir := newFS(t, Options{Check: func(ctx context.Context, a *Access) error {
		seen = append(seen, a.Request.Opcode.String()+" "+a.Path()+" "+a.NewPath())
		if a.Name == "forbidden" {
			return syscall.EACCES
		}
		return nil
	}})
	ctx := context.Background()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "f"), []byte("x"), 0o644)
	var a, b, f abi.EntryOut
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fs.Lookup(ctx, req(abi.OpLookup, 1), "a", &a))
	must(fs.Lookup(ctx, req(abi.OpLookup, a.NodeID), "b", &b))
	must(fs.Lookup(ctx, req(abi.OpLookup, b.NodeID), "f", &f))
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "forbidden", &a); !errors.Is(err, syscall.EACCES) {
		t.Errorf("the gate's error: %v, want EACCES", err)
	}
	// Renames keep paths right, also of the nodes below.
	must(fs.Rename(ctx, req(abi.OpRename2, a.NodeID), &abi.Rename2In{Newdir: 1}, "b", "c"))
	n, _ := fs.node(f.NodeID)
	if p := fs.pathOf(n, ""); p != "/c/f" {
		t.Errorf("after renaming a/b to c: %s, want /c/f", p)
	}
	must(fs.Rename(ctx, req(abi.OpRename2, b.NodeID), &abi.Rename2In{Newdir: a.NodeID}, "f", "g"))
	if p := fs.pathOf(n, ""); p != "/a/g" {
		t.Errorf("after renaming c/f to a/g: %s, want /a/g", p)
	}
	var l abi.EntryOut
	must(fs.Link(ctx, req(abi.OpLink, 1), &abi.LinkIn{OldNodeID: f.NodeID}, "hard", &l))
	if l.NodeID != f.NodeID || l.Attr.Nlink != 2 {
		t.Errorf("link: node %d nlink %d, want node %d nlink 2", l.NodeID, l.Attr.Nlink, f.NodeID)
	}
	if len(seen) == 0 || seen[len(seen)-1] != "LINK /hard /a/g" {
		t.Errorf("gate saw %q", seen)
	}
	for _, bad := range []string{"..", ".", "a/b", ""} {
		if err := fs.Unlink(ctx, req(abi.OpUnlink, 1), bad); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("unlink %q: %v, want EINVAL", bad, err)
		}
	}
}

func TestEvictionReopens(t *testing.T) {
	fs, dir := newFS(t, Options{MaxDescriptors: 8})
	ctx := context.Background()
	base := fdCount(t)
	var ids []uint64
	for i := 0; i < 40; i++ {
		name := "f" + strconv.Itoa(i)
		os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644)
		var out abi.EntryOut
		if err := fs.Lookup(ctx, req(abi.OpLookup, 1), name, &out); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, out.NodeID)
	}
	if got := fdCount(t); got > base+8 {
		t.Errorf("%d node descriptors with a bound of 8", got-base)
	}
	for i, id := range ids {
		var a abi.AttrOut
		if err := fs.Getattr(ctx, req(abi.OpGetattr, id), &abi.GetattrIn{}, &a); err != nil {
			t.Fatalf("getattr f%d after eviction: %v", i, err)
		}
		if a.Attr.Size != uint64(len("f"+strconv.Itoa(i))) {
			t.Errorf("f%d: size %d", i, a.Attr.Size)
		}
		var open abi.OpenOut
		if err := fs.Open(ctx, req(abi.OpOpen, id), &abi.OpenIn{Flags: unix.O_RDONLY}, &open); err != nil {
			t.Fatalf("open f%d after eviction: %v", i, err)
		}
		buf := make([]byte, 16)
		data, err := fs.Read(ctx, req(abi.OpRead, id), &abi.ReadIn{Fh: open.Fh, Size: 16}, buf)
		if err != nil || string(data) != "f"+strconv.Itoa(i) {
			t.Errorf("read f%d: %q, %v", i, data, err)
		}
		if open.OpenFlags&abi.FopenPassthrough != 0 {
			t.Errorf("an FS without a server answered FOPEN_PASSTHROUGH")
		}
		fs.Release(ctx, req(abi.OpRelease, id), &abi.ReleaseIn{Fh: open.Fh})
	}
	st := fs.Stats()
	if st.Reopens == 0 || st.Evictions == 0 || st.NodeFds > 8 || st.Handles != 0 {
		t.Errorf("stats %+v: want reopens, evictions, at most 8 node descriptors, no handles", st)
	}
}

func TestKeepCache(t *testing.T) {
	fs, dir := newFS(t, Options{Passthrough: PassthroughOff})
	ctx := context.Background()
	os.WriteFile(filepath.Join(dir, "f"), []byte("one"), 0o644)
	var e abi.EntryOut
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "f", &e); err != nil {
		t.Fatal(err)
	}
	open := func() abi.OpenFlags {
		var o abi.OpenOut
		if err := fs.Open(ctx, req(abi.OpOpen, e.NodeID), &abi.OpenIn{Flags: unix.O_RDWR}, &o); err != nil {
			t.Fatal(err)
		}
		fs.Release(ctx, req(abi.OpRelease, e.NodeID), &abi.ReleaseIn{Fh: o.Fh})
		return o.OpenFlags
	}
	if open()&abi.FopenKeepCache != 0 {
		t.Error("first open kept a cache that was never filled")
	}
	if open()&abi.FopenKeepCache == 0 {
		t.Error("unchanged file: the cache was not kept")
	}
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(filepath.Join(dir, "f"), []byte("changed below"), 0o644)
	if open()&abi.FopenKeepCache != 0 {
		t.Error("a file changed in the lower directory kept its cache")
	}
}

func TestCallerIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching to another caller's identity needs root")
	}
	fs, dir := newFS(t, Options{})
	os.Chmod(dir, 0o777)
	ctx := context.Background()
	r := req(abi.OpMkdir, 1)
	r.UID, r.GID = 1234, 5678
	var out abi.EntryOut
	if err := fs.Mkdir(ctx, r, &abi.MkdirIn{Mode: 0o750}, "owned", &out); err != nil {
		t.Fatal(err)
	}
	if out.Attr.UID != 1234 || out.Attr.GID != 5678 || out.Attr.Mode&0o7777 != 0o750 {
		t.Errorf("created as 1234:5678: uid %d gid %d mode %o", out.Attr.UID, out.Attr.GID, out.Attr.Mode&0o7777)
	}
	// The daemon's thread is itself again afterwards.
	os.WriteFile(filepath.Join(dir, "mine"), nil, 0o644)
	var st unix.Stat_t
	unix.Stat(filepath.Join(dir, "mine"), &st)
	if st.Uid != 0 {
		t.Errorf("a file the test made afterwards belongs to %d", st.Uid)
	}
	// Permissions are the caller's: 1234 may not write into a 0755 root dir.
	os.Mkdir(filepath.Join(dir, "rootonly"), 0o755)
	var d abi.EntryOut
	fs.Lookup(ctx, req(abi.OpLookup, 1), "rootonly", &d)
	r = req(abi.OpMknod, d.NodeID)
	r.UID, r.GID = 1234, 1234
	err := fs.Mknod(ctx, r, &abi.MknodIn{Mode: unix.S_IFIFO | 0o644}, "p", &out)
	if !errors.Is(err, syscall.EACCES) {
		t.Errorf("mknod by 1234 in a root 0755 directory: %v, want EACCES", err)
	}
}

func TestGroupsOfCaller(t *testing.T) {
	gs := readGroups(uint32(os.Getpid()))
	own, _ := os.Getgroups()
	if len(gs) != len(own) {
		t.Errorf("groups of this process: %v, want %v", gs, own)
	}
	if readGroups(0) != nil || readGroups(1<<30) != nil {
		t.Error("groups of no process")
	}
}

func TestDevEncoding(t *testing.T) {
	for _, d := range [][2]uint32{{0, 0}, {1, 3}, {8, 17}, {259, 65539}, {4095, 1<<20 - 1}} {
		enc := encodeDev(d[0], d[1])
		if got := decodeDev(enc); got != unix.Mkdev(d[0], d[1]) {
			t.Errorf("%d:%d → %#x → %d:%d", d[0], d[1], enc, unix.Major(got), unix.Minor(got))
		}
	}
}

func TestAccessObject(t *testing.T) {
	var objs []Object
	fs, dir := newFS(t, Options{Check: func(ctx context.Context, a *Access) error {
		o, err := a.Stat()
		if err != nil {
			return err
		}
		objs = append(objs, o)
		if own, _ := os.Getgroups(); len(a.Groups()) != len(own) {
			return syscall.EIO
		}
		return nil
	}})
	os.Mkdir(filepath.Join(dir, "d"), 0o750)
	var e abi.EntryOut
	ctx := context.Background()
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "d", &e); err != nil {
		t.Fatal(err)
	}
	fs.Lookup(ctx, req(abi.OpLookup, 1), "missing", &e)
	if len(objs) != 2 || !objs[0].Exists || !objs[0].Dir || objs[0].Mode&0o777 != 0o750 || objs[1].Exists {
		t.Errorf("objects seen by the gate: %+v", objs)
	}
}

func TestGateSeesOpenFlags(t *testing.T) {
	type seen struct {
		op    abi.Opcode
		path  string
		flags uint32
	}
	var got []seen
	fs, dir := newFS(t, Options{Passthrough: PassthroughOff, Check: func(ctx context.Context, a *Access) error {
		got = append(got, seen{a.Request.Opcode, a.Path(), a.OpenFlags})
		return nil
	}})
	ctx := context.Background()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	var e abi.EntryOut
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "f", &e); err != nil {
		t.Fatal(err)
	}
	var out abi.OpenOut
	if err := fs.Open(ctx, req(abi.OpOpen, e.NodeID), &abi.OpenIn{Flags: unix.O_RDWR}, &out); err != nil {
		t.Fatal(err)
	}
	var ce abi.EntryOut
	var cout abi.OpenOut
	if err := fs.Create(ctx, req(abi.OpCreate, 1), &abi.CreateIn{Flags: unix.O_WRONLY | unix.O_CREAT, Mode: 0o644}, "new", &ce, &cout); err != nil {
		t.Fatal(err)
	}
	want := []seen{{abi.OpLookup, "/f", 0}, {abi.OpOpen, "/f", unix.O_RDWR}, {abi.OpCreate, "/new", unix.O_WRONLY | unix.O_CREAT}}
	if len(got) != len(want) {
		t.Fatalf("gate saw %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("gate call %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestAccessStatNew(t *testing.T) {
	var news []Object
	fs, dir := newFS(t, Options{Check: func(ctx context.Context, a *Access) error {
		o, err := a.StatNew()
		if err != nil {
			return err
		}
		if a.Request.Opcode == abi.OpRename2 || a.Request.Opcode == abi.OpLink {
			news = append(news, o)
		}
		return nil
	}})
	ctx := context.Background()
	os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o640)
	os.WriteFile(filepath.Join(dir, "b"), []byte("b"), 0o600)
	var a abi.EntryOut
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "a", &a); err != nil {
		t.Fatal(err)
	}
	// RENAME a -> b: the target exists (mode 0600); then c -> d: it does not.
	if err := fs.Rename(ctx, req(abi.OpRename2, 1), &abi.Rename2In{Newdir: 1}, "a", "b"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "c"), nil, 0o644)
	if err := fs.Rename(ctx, req(abi.OpRename2, 1), &abi.Rename2In{Newdir: 1}, "c", "d"); err != nil {
		t.Fatal(err)
	}
	// LINK: the second file is the existing one (b, formerly a: 0640).
	var l abi.EntryOut
	if err := fs.Link(ctx, req(abi.OpLink, 1), &abi.LinkIn{OldNodeID: a.NodeID}, "e", &l); err != nil {
		t.Fatal(err)
	}
	if len(news) != 3 || !news[0].Exists || news[0].Mode&0o777 != 0o600 || news[1].Exists ||
		!news[2].Exists || news[2].Mode&0o777 != 0o640 {
		t.Errorf("second objects seen by the gate: %+v", news)
	}
}

func TestOpenNodesKeepDescriptors(t *testing.T) {
	fs, dir := newFS(t, Options{MaxDescriptors: 4})
	ctx := context.Background()
	os.WriteFile(filepath.Join(dir, "held"), []byte("x"), 0o644)
	var e abi.EntryOut
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "held", &e); err != nil {
		t.Fatal(err)
	}
	var o abi.OpenOut
	if err := fs.Open(ctx, req(abi.OpOpen, e.NodeID), &abi.OpenIn{Flags: unix.O_RDWR}, &o); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "held")) // unlinked, still open
	for i := 0; i < 20; i++ {             // push it out of the cache, were it evictable
		name := "f" + strconv.Itoa(i)
		os.WriteFile(filepath.Join(dir, name), nil, 0o644)
		var x abi.EntryOut
		fs.Lookup(ctx, req(abi.OpLookup, 1), name, &x)
		var a abi.AttrOut
		fs.Getattr(ctx, req(abi.OpGetattr, x.NodeID), &abi.GetattrIn{}, &a)
	}
	if _, err := fs.Listxattr(ctx, req(abi.OpListxattr, e.NodeID), nil); err != nil {
		t.Errorf("listxattr of an unlinked open file under descriptor pressure: %v", err)
	}
	fs.Release(ctx, req(abi.OpRelease, e.NodeID), &abi.ReleaseIn{Fh: o.Fh})
}

// A RELEASE that comes while a call on the handle still runs (the kernel
// gave up on it: its caller was interrupted) does not close the lower
// descriptor under that call; the call's end does.
func TestReleaseWaitsForCallsInFlight(t *testing.T) {
	ctx := context.Background()
	fs, dir := newFS(t, Options{Passthrough: PassthroughOff})
	os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644)
	var e abi.EntryOut
	if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "f", &e); err != nil {
		t.Fatal(err)
	}
	var o abi.OpenOut
	if err := fs.Open(ctx, req(abi.OpOpen, e.NodeID), &abi.OpenIn{Flags: unix.O_RDONLY}, &o); err != nil {
		t.Fatal(err)
	}
	h := fs.handle(o.Fh) // a READ still running
	fd := h.fd
	if err := fs.Release(ctx, req(abi.OpRelease, e.NodeID), &abi.ReleaseIn{Fh: o.Fh}); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("the descriptor was closed under a call still using it: %v", err)
	}
	if got, err := unix.Pread(fd, make([]byte, 4), 0); err != nil || got != 4 {
		t.Errorf("pread by the call in flight: %d, %v", got, err)
	}
	fs.putHandle(h)
	if h.fd != -1 {
		t.Error("the descriptor was not closed by the last call")
	}
	if fs.handle(o.Fh) != nil {
		t.Error("the handle is still in the table after RELEASE")
	}
}
