package fusedev_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// requireFuse skips unless this process can mount FUSE file systems itself.
func requireFuse(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real-mount tests mount with mount(2) and need root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// mountTemp mounts a FUSE file system on a fresh directory, unmounted (lazily
// if need be) at cleanup.
func mountTemp(t *testing.T) (string, *fusedev.Conn) {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := fusedev.Mount(mp, fusedev.MountOptions{FSName: "fusedev-test"})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if _, ok, _ := fusedev.FindMount(mp); ok {
			fusedev.Unmount(mp, fusedev.UnmountOptions{Lazy: true})
		}
		c.Close()
	})
	return mp, c
}

func TestCloneOnRealMount(t *testing.T) {
	requireFuse(t)
	mp, c := mountTemp(t)
	clone, err := c.Clone()
	if err != nil {
		t.Fatalf("Clone on a real mount: %v", err)
	}
	defer clone.Close()
	if clone.Fd() == c.Fd() {
		t.Fatal("clone shares the descriptor")
	}
	// The clone shares the connection's queue: it reads the mount's INIT.
	buf := make([]byte, 1<<20+4096)
	clone.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := clone.Read(buf)
	if err != nil {
		t.Fatalf("reading INIT on the clone: %v", err)
	}
	var h abi.InHeader
	if err := abi.Decode(buf[:n], &h); err != nil || h.Opcode != abi.OpInit {
		t.Fatalf("first request %v (%v), want INIT", h.Opcode, err)
	}
	// Nothing else is queued: a read wakes at its deadline without unmounting.
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read on an idle /dev/fuse: %v, want a deadline error", err)
	}
	c.SetReadDeadline(time.Time{})
	clone.SetReadDeadline(time.Time{})
	if err := fusedev.Unmount(mp, fusedev.UnmountOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, conn := range map[string]*fusedev.Conn{"mount fd": c, "clone": clone} {
		if _, err := conn.Read(buf); !errors.Is(err, fusedev.ErrClosed) {
			t.Errorf("%s: Read after unmount: %v, want ErrClosed", name, err)
		}
	}
}

// tinyFS is a root directory holding one file.
type tinyFS struct {
	fusedev.NotImplemented
}

const tinyContent = "hello, fuse\n"

func (tinyFS) attr(ino uint64, a *abi.Attr) error {
	switch ino {
	case abi.RootID:
		*a = abi.Attr{Ino: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}
	case 2:
		*a = abi.Attr{Ino: 2, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: uint64(len(tinyContent)), Blocks: 1}
	default:
		return syscall.ENOENT
	}
	return nil
}

func (f tinyFS) Lookup(_ context.Context, r *fusedev.Request, name string, out *abi.EntryOut) error {
	if r.NodeID != abi.RootID || name != "hello" {
		return syscall.ENOENT
	}
	out.NodeID, out.Generation = 2, 1
	return f.attr(2, &out.Attr)
}

func (f tinyFS) Getattr(_ context.Context, r *fusedev.Request, _ *abi.GetattrIn, out *abi.AttrOut) error {
	return f.attr(r.NodeID, &out.Attr)
}

func (tinyFS) Open(_ context.Context, r *fusedev.Request, _ *abi.OpenIn, out *abi.OpenOut) error {
	if r.NodeID != 2 {
		return syscall.EISDIR
	}
	return nil
}

func (tinyFS) Read(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
	if in.Offset >= uint64(len(tinyContent)) {
		return nil, nil
	}
	return dest[:copy(dest, tinyContent[in.Offset:])], nil
}

func (tinyFS) Release(context.Context, *fusedev.Request, *abi.ReleaseIn) error { return nil }
func (tinyFS) Opendir(context.Context, *fusedev.Request, *abi.OpenIn, *abi.OpenOut) error {
	return nil
}
func (tinyFS) Releasedir(context.Context, *fusedev.Request, *abi.ReleaseIn) error { return nil }

func (f tinyFS) Readdir(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	ents := []struct {
		name string
		ino  uint64
		typ  uint32
	}{{".", 1, syscall.DT_DIR}, {"..", 1, syscall.DT_DIR}, {"hello", 2, syscall.DT_REG}}
	for i := int(in.Offset); i < len(ents); i++ {
		e := ents[i]
		if out.Plus() {
			eo := out.AddPlus(e.name, e.ino, e.typ, uint64(i+1))
			if eo == nil {
				break
			}
			if e.ino == 2 { // a lookup reference, as LOOKUP would give
				eo.NodeID, eo.Generation = 2, 1
				f.attr(2, &eo.Attr)
			}
		} else if !out.Add(e.name, e.ino, e.typ, uint64(i+1)) {
			break
		}
	}
	return nil
}

func (f tinyFS) Readdirplus(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	return f.Readdir(ctx, r, in, out)
}

// run runs a command in a child process (this process serves the mount and
// must not touch it) and returns its output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestServeRealMount(t *testing.T) {
	requireFuse(t)
	for _, tool := range []string{"cat", "ls", "stat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s in PATH", tool)
		}
	}
	mp, c := mountTemp(t)
	srv := fusedev.NewServer(c, tinyFS{}, fusedev.Options{Readers: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no INIT from the kernel")
	}
	neg := srv.Negotiated()
	t.Logf("kernel 7.%d, negotiated 7.%d, granted %v, max_write %d", neg.KernelMinor, neg.Minor, neg.Flags, neg.MaxWrite)
	if neg.Minor < fusedev.MinMinor || !neg.Flags.Has(abi.InitAsyncRead) {
		t.Errorf("negotiated %+v", neg)
	}

	if got := run(t, "cat", filepath.Join(mp, "hello")); got != tinyContent {
		t.Errorf("cat: %q", got)
	}
	if got := run(t, "ls", mp); got != "hello\n" {
		t.Errorf("ls: %q", got)
	}
	if got := run(t, "stat", "-c", "%s %F", filepath.Join(mp, "hello")); got != "12 regular file\n" {
		t.Errorf("stat: %q", got)
	}

	// Graceful stop leaves the mount; a resumed server carries on.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop")
	}
	if _, ok, _ := fusedev.FindMount(mp); !ok {
		t.Fatal("graceful stop lost the mount")
	}
	srv2 := fusedev.NewServer(c, tinyFS{}, fusedev.Options{Readers: 2, Resume: neg})
	go func() { done <- srv2.Serve(context.Background()) }()
	if got := run(t, "cat", filepath.Join(mp, "hello")); got != tinyContent {
		t.Errorf("cat after resume: %q", got)
	}
	var st []fusedev.OpStats = srv2.Stats()
	if len(st) == 0 {
		t.Error("the resumed server served nothing")
	}

	if err := fusedev.Unmount(mp, fusedev.UnmountOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after unmount: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after unmount")
	}
}
