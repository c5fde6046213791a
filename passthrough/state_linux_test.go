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
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/internal/memstate"
)

// successor maps the same state memfd as r, as a restarted process would
// after systemd handed the descriptor back.
func successor(t *testing.T, r *memstate.Region) *memstate.Region {
	t.Helper()
	fd, err := unix.Dup(int(r.File().Fd()))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := memstate.Open(os.NewFile(uintptr(fd), "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	return r2
}

func trackedFS(t *testing.T, dir string) (*FS, *memstate.Region) {
	t.Helper()
	fs, err := New(dir, Options{Passthrough: PassthroughOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	r, err := memstate.Create("test", StateSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := fs.TrackState(r, []byte(`{"who":"test"}`)); err != nil {
		t.Fatal(err)
	}
	neg := &fusedev.Negotiated{Major: 7, Minor: 41, MaxWrite: 1 << 20}
	if err := fs.st.writeHeader(fs, neg); err != nil {
		t.Fatal(err)
	}
	return fs, r
}

// A successor that restores the state resolves every node id the kernel
// holds to the same inode, with the same lookup count, and serves the
// files that were open, whatever happened to their names meanwhile.
func TestStateRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a/b"), 0o755)
	for i := 0; i < 20; i++ {
		os.WriteFile(filepath.Join(dir, "a/b", "f"+strconv.Itoa(i)), []byte("data "+strconv.Itoa(i)), 0o644)
	}
	fs1, r := trackedFS(t, dir)

	lookup := func(fs *FS, parent uint64, name string) abi.EntryOut {
		t.Helper()
		var out abi.EntryOut
		if err := fs.Lookup(ctx, req(abi.OpLookup, parent), name, &out); err != nil {
			t.Fatalf("lookup %s: %v", name, err)
		}
		return out
	}
	a := lookup(fs1, 1, "a")
	b := lookup(fs1, a.NodeID, "b")
	lookup(fs1, a.NodeID, "b") // lookups 2
	ids := map[string]abi.EntryOut{}
	for i := 0; i < 20; i++ {
		name := "f" + strconv.Itoa(i)
		ids[name] = lookup(fs1, b.NodeID, name)
	}
	// Used (a descriptor, so a file handle), renamed, forgotten, opened.
	var attr abi.AttrOut
	if err := fs1.Getattr(ctx, req(abi.OpGetattr, ids["f1"].NodeID), &abi.GetattrIn{}, &attr); err != nil {
		t.Fatal(err)
	}
	if err := fs1.Rename(ctx, req(abi.OpRename, b.NodeID), &abi.Rename2In{Newdir: a.NodeID}, "f1", "moved"); err != nil {
		t.Fatal(err)
	}
	fs1.Forget(ids["f2"].NodeID, 1)
	var oo abi.OpenOut
	if err := fs1.Open(ctx, req(abi.OpOpen, ids["f3"].NodeID), &abi.OpenIn{Flags: unix.O_RDWR}, &oo); err != nil {
		t.Fatal(err)
	}
	var do abi.OpenOut
	if err := fs1.Opendir(ctx, req(abi.OpOpendir, b.NodeID), &abi.OpenIn{}, &do); err != nil {
		t.Fatal(err)
	}
	var co abi.OpenOut
	var ce abi.EntryOut
	if err := fs1.Create(ctx, req(abi.OpCreate, a.NodeID), &abi.CreateIn{Flags: unix.O_WRONLY | unix.O_TRUNC | unix.O_CREAT, Mode: 0o644}, "new", &ce, &co); err != nil {
		t.Fatal(err)
	}
	if n, err := fs1.Write(ctx, req(abi.OpWrite, ce.NodeID), &abi.WriteIn{Fh: co.Fh}, []byte("before")); err != nil || n != 6 {
		t.Fatal(n, err)
	}
	// Renamed behind the daemon's back: the handle still finds it.
	os.Rename(filepath.Join(dir, "a/moved"), filepath.Join(dir, "elsewhere"))

	// kill -9: nothing is torn down; a successor adopts the memfd.
	fs2, err := New(dir, Options{Passthrough: PassthroughOff})
	if err != nil {
		t.Fatal(err)
	}
	defer fs2.Close()
	info, err := fs2.Restore(successor(t, r))
	if err != nil {
		t.Fatal(err)
	}
	if info.Negotiated.Minor != 41 || string(info.Extra) != `{"who":"test"}` {
		t.Errorf("restored %+v", info)
	}
	// a, b, 19 files, new (the root is not stored).
	if info.Nodes != 22 || info.Handles != 3 || info.Lost != 0 {
		t.Errorf("restored %d nodes, %d handles (%d lost); want 22, 3", info.Nodes, info.Handles, info.Lost)
	}
	for name, e := range ids {
		var got abi.AttrOut
		err := fs2.Getattr(ctx, req(abi.OpGetattr, e.NodeID), &abi.GetattrIn{}, &got)
		switch {
		case name == "f2":
			if err == nil {
				t.Errorf("forgotten node %d still resolves", e.NodeID)
			}
		case err != nil:
			t.Errorf("%s (node %d): %v", name, e.NodeID, err)
		case got.Attr.Ino != e.Attr.Ino:
			t.Errorf("%s: node %d is inode %d now, was %d", name, e.NodeID, got.Attr.Ino, e.Attr.Ino)
		}
	}
	if n := fs2.nodes[b.NodeID]; n == nil || n.lookups != 2 || fs2.pathOf(n, "") != "/a/b" {
		t.Errorf("node b: %+v", n)
	}
	if n := fs2.nodes[ids["f1"].NodeID]; n == nil || fs2.pathOf(n, "") != "/a/moved" {
		t.Errorf("renamed node: %v", fs2.pathOf(n, ""))
	}
	// Open files: read and written through their old fh.
	buf := make([]byte, 64)
	if got, err := fs2.Read(ctx, req(abi.OpRead, ids["f3"].NodeID), &abi.ReadIn{Fh: oo.Fh, Size: 64}, buf); err != nil || string(got) != "data 3" {
		t.Errorf("read restored handle: %q, %v", got, err)
	}
	if _, err := fs2.Write(ctx, req(abi.OpWrite, ce.NodeID), &abi.WriteIn{Fh: co.Fh, Offset: 6}, []byte(" after")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a/new")); string(b) != "before after" {
		t.Errorf("created file holds %q (O_TRUNC must not be repeated)", b)
	}
	// New ids and fhs never collide with old ones.
	nf := lookup(fs2, b.NodeID, "f2")
	for _, e := range ids {
		if nf.NodeID == e.NodeID && e.NodeID != ids["f2"].NodeID {
			t.Errorf("new node id %d reused", nf.NodeID)
		}
	}
	var oo2 abi.OpenOut
	if err := fs2.Open(ctx, req(abi.OpOpen, nf.NodeID), &abi.OpenIn{}, &oo2); err != nil || oo2.Fh <= co.Fh {
		t.Errorf("new fh %d after %d: %v", oo2.Fh, co.Fh, err)
	}
	// Releases and forgets free the records: a third process sees them gone.
	fs2.Release(ctx, req(abi.OpRelease, ids["f3"].NodeID), &abi.ReleaseIn{Fh: oo.Fh})
	fs2.Releasedir(ctx, req(abi.OpReleasedir, b.NodeID), &abi.ReleaseIn{Fh: do.Fh})
	for name, e := range ids {
		if name != "f2" {
			fs2.Forget(e.NodeID, 1)
		}
	}
	fs3, err := New(dir, Options{Passthrough: PassthroughOff})
	if err != nil {
		t.Fatal(err)
	}
	defer fs3.Close()
	info3, err := fs3.Restore(successor(t, r))
	if err != nil {
		t.Fatal(err)
	}
	// a, b, new, the new f2; open: new and the new f2's open.
	if info3.Nodes != 4 || info3.Handles != 2 {
		t.Errorf("third process: %d nodes, %d handles; want 4, 2", info3.Nodes, info3.Handles)
	}
}

// A state of another lower directory, or one whose INIT never completed,
// is refused.
func TestStateRestoreRefuses(t *testing.T) {
	dir := t.TempDir()
	fs1, r := trackedFS(t, dir)
	_ = fs1
	other, err := New(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Restore(successor(t, r)); err == nil {
		t.Error("restored the state of another directory")
	}
	blank, err := memstate.Create("blank", StateSize)
	if err != nil {
		t.Fatal(err)
	}
	defer blank.Close()
	fs2, _ := New(dir, Options{})
	defer fs2.Close()
	if _, err := fs2.Restore(blank); err == nil {
		t.Error("restored a state without header")
	}
}

// A non-idempotent request done by a process killed before it answered is
// resent by the kernel to the successor, which must not fail it (EEXIST,
// ENOENT) nor do it twice.
func TestStateResentOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gone"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "from"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "log"), nil, 0o644)
	fs1, r := trackedFS(t, dir)
	with := func(op abi.Opcode, unique uint64) *fusedev.Request {
		q := req(op, 1)
		q.Unique = unique
		return q
	}
	// Done, not answered (the process dies before the reply).
	if err := fs1.Unlink(ctx, with(abi.OpUnlink, 10), "gone"); err != nil {
		t.Fatal(err)
	}
	var e abi.EntryOut
	if err := fs1.Mkdir(ctx, with(abi.OpMkdir, 12), &abi.MkdirIn{Mode: 0o755}, "d", &e); err != nil {
		t.Fatal(err)
	}
	if err := fs1.Rename(ctx, with(abi.OpRename, 14), &abi.Rename2In{Newdir: 1}, "from", "to"); err != nil {
		t.Fatal(err)
	}
	var le abi.EntryOut
	if err := fs1.Lookup(ctx, with(abi.OpLookup, 19), "log", &le); err != nil {
		t.Fatal(err)
	}
	var lo abi.OpenOut
	oq := with(abi.OpOpen, 20)
	oq.NodeID = le.NodeID
	if err := fs1.Open(ctx, oq, &abi.OpenIn{Flags: unix.O_WRONLY | unix.O_APPEND}, &lo); err != nil {
		t.Fatal(err)
	}
	appendTo := func(fs *FS, unique uint64, data string) (uint32, error) {
		q := with(abi.OpWrite, unique)
		q.NodeID = le.NodeID
		return fs.Write(ctx, q, &abi.WriteIn{Fh: lo.Fh}, []byte(data))
	}
	if n, err := appendTo(fs1, 22, "once;"); n != 5 || err != nil {
		t.Fatalf("append: %d, %v", n, err)
	}
	// Answered: its record goes.
	q := with(abi.OpUnlink, 16)
	fs1.Unlink(ctx, q, "nothing")
	fs2, err := New(dir, Options{Passthrough: PassthroughOff})
	if err != nil {
		t.Fatal(err)
	}
	defer fs2.Close()
	if _, err := fs2.Restore(successor(t, r)); err != nil {
		t.Fatal(err)
	}
	if err := fs2.Unlink(ctx, with(abi.OpUnlink, 10|abi.UniqueResend), "gone"); err != nil {
		t.Errorf("resent UNLINK: %v", err)
	}
	var e2 abi.EntryOut
	if err := fs2.Mkdir(ctx, with(abi.OpMkdir, 12|abi.UniqueResend), &abi.MkdirIn{Mode: 0o755}, "d", &e2); err != nil || e2.Attr.Ino != e.Attr.Ino {
		t.Errorf("resent MKDIR: %v, inode %d (was %d)", err, e2.Attr.Ino, e.Attr.Ino)
	}
	if err := fs2.Rename(ctx, with(abi.OpRename, 14|abi.UniqueResend), &abi.Rename2In{Newdir: 1}, "from", "to"); err != nil {
		t.Errorf("resent RENAME: %v", err)
	}
	if n, err := appendTo(fs2, 22|abi.UniqueResend, "once;"); n != 5 || err != nil {
		t.Errorf("resent append WRITE: %d, %v", n, err)
	}
	if n, err := appendTo(fs2, 24, "then;"); n != 5 || err != nil {
		t.Errorf("append WRITE: %d, %v", n, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "log")); string(b) != "once;then;" {
		t.Errorf("appended file holds %q, want %q", b, "once;then;")
	}
	// A request the predecessor never started gets its true answer.
	if err := fs2.Unlink(ctx, with(abi.OpUnlink, 18|abi.UniqueResend), "gone"); err != syscall.ENOENT {
		t.Errorf("resent UNLINK never started: %v, want ENOENT", err)
	}
	// The predecessor's records no resent request claimed (its answered
	// UNLINK of "nothing", unique 16) go once their time is up, at the next
	// request. (Without a server nothing runs AfterReply here: the records
	// of the requests above stay.)
	has16 := func() (found bool) {
		fs2.st.intents.Scan(func(_ uint32, _ uint64, rec []byte) {
			found = found || (*intentRec)(unsafe.Pointer(unsafe.SliceData(rec))).unique == 16
		})
		return found
	}
	if !has16() {
		t.Fatal("the predecessor's record of unique 16 is not there to drop")
	}
	fs2.Unlink(ctx, with(abi.OpUnlink, 30), "nothing")
	if !has16() {
		t.Error("dropped before its time")
	}
	fs2.st.imu.Lock()
	fs2.st.priorEnd = time.Now().Add(-time.Second)
	fs2.st.imu.Unlock()
	fs2.Unlink(ctx, with(abi.OpUnlink, 32), "nothing")
	if has16() {
		t.Error("the unclaimed record is still there after its time")
	}
}

// On a kernel without FUSE_NOTIFY_RESEND a state is resumed only after a
// hand-over: after a crash, what the process read and did not answer can
// never be answered. The successor owns the state from then on, so its own
// crash is not clean either.
func TestStateUncleanWithoutResend(t *testing.T) {
	dir := t.TempDir()
	fs1, err := New(dir, Options{Passthrough: PassthroughOff})
	if err != nil {
		t.Fatal(err)
	}
	defer fs1.Close()
	r, err := memstate.Create("test", StateSize)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := fs1.TrackState(r, nil); err != nil {
		t.Fatal(err)
	}
	if err := fs1.st.writeHeader(fs1, &fusedev.Negotiated{Major: 7, Minor: 38, MaxWrite: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	restore := func() error {
		fs, err := New(dir, Options{Passthrough: PassthroughOff})
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Close()
		_, err = fs.Restore(successor(t, r))
		return err
	}
	if err := restore(); !errors.Is(err, ErrUnclean) {
		t.Errorf("restore after a crash on 7.38: %v, want ErrUnclean", err)
	}
	fs1.MarkHandedOver()
	if err := restore(); err != nil {
		t.Errorf("restore after a hand-over on 7.38: %v", err)
	}
	if err := restore(); !errors.Is(err, ErrUnclean) {
		t.Errorf("restore after the successor's crash: %v, want ErrUnclean", err)
	}
}
