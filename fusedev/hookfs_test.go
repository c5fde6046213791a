package fusedev_test

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

// hookFS answers ENOSYS except where a test sets a hook. It records
// forgets, Init and Destroy calls.
type hookFS struct {
	fusedev.NotImplemented

	init        func(ctx context.Context, s *fusedev.Server) error
	lookup      func(ctx context.Context, r *fusedev.Request, name string, out *abi.EntryOut) error
	getattr     func(ctx context.Context, r *fusedev.Request, in *abi.GetattrIn, out *abi.AttrOut) error
	read        func(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error)
	write       func(ctx context.Context, r *fusedev.Request, in *abi.WriteIn, data []byte) (uint32, error)
	readdir     func(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error
	readdirplus func(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error
	ioctl       func(ctx context.Context, r *fusedev.Request, in *abi.IoctlIn, data []byte, out *fusedev.IoctlOut) error
	mkdir       func(ctx context.Context, r *fusedev.Request, in *abi.MkdirIn, name string, out *abi.EntryOut) error
	setxattr    func(ctx context.Context, r *fusedev.Request, in *abi.SetxattrIn, name string, value []byte) error

	inits, destroys atomic.Int32

	mu      sync.Mutex
	forgets []abi.ForgetOne // guarded by mu
}

func (f *hookFS) Init(ctx context.Context, s *fusedev.Server) error {
	f.inits.Add(1)
	if f.init != nil {
		return f.init(ctx, s)
	}
	return nil
}

func (f *hookFS) Destroy() { f.destroys.Add(1) }

func (f *hookFS) Forget(node, n uint64) {
	f.mu.Lock()
	f.forgets = append(f.forgets, abi.ForgetOne{NodeID: node, Nlookup: n})
	f.mu.Unlock()
}

func (f *hookFS) forgotten() []abi.ForgetOne {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]abi.ForgetOne(nil), f.forgets...)
}

func (f *hookFS) Lookup(ctx context.Context, r *fusedev.Request, name string, out *abi.EntryOut) error {
	if f.lookup != nil {
		return f.lookup(ctx, r, name, out)
	}
	return syscall.ENOSYS
}

func (f *hookFS) Getattr(ctx context.Context, r *fusedev.Request, in *abi.GetattrIn, out *abi.AttrOut) error {
	if f.getattr != nil {
		return f.getattr(ctx, r, in, out)
	}
	out.Attr = abi.Attr{Ino: r.NodeID, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}
	return nil
}

func (f *hookFS) Read(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
	if f.read != nil {
		return f.read(ctx, r, in, dest)
	}
	return nil, syscall.ENOSYS
}

func (f *hookFS) Write(ctx context.Context, r *fusedev.Request, in *abi.WriteIn, data []byte) (uint32, error) {
	if f.write != nil {
		return f.write(ctx, r, in, data)
	}
	return 0, syscall.ENOSYS
}

func (f *hookFS) Readdir(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	if f.readdir != nil {
		return f.readdir(ctx, r, in, out)
	}
	return syscall.ENOSYS
}

func (f *hookFS) Readdirplus(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	if f.readdirplus != nil {
		return f.readdirplus(ctx, r, in, out)
	}
	return syscall.ENOSYS
}

func (f *hookFS) Ioctl(ctx context.Context, r *fusedev.Request, in *abi.IoctlIn, data []byte, out *fusedev.IoctlOut) error {
	if f.ioctl != nil {
		return f.ioctl(ctx, r, in, data, out)
	}
	return syscall.ENOSYS
}

func (f *hookFS) Mkdir(ctx context.Context, r *fusedev.Request, in *abi.MkdirIn, name string, out *abi.EntryOut) error {
	if f.mkdir != nil {
		return f.mkdir(ctx, r, in, name, out)
	}
	return syscall.ENOSYS
}

func (f *hookFS) Setxattr(ctx context.Context, r *fusedev.Request, in *abi.SetxattrIn, name string, value []byte) error {
	if f.setxattr != nil {
		return f.setxattr(ctx, r, in, name, value)
	}
	return syscall.ENOSYS
}

// startInit starts a server for fs and completes INIT as a 7.45 kernel
// offering every flag.
func startInit(t *testing.T, fs fusedev.FileSystem, opts fusedev.Options) *fusetest.Kernel {
	t.Helper()
	k := fusetest.Start(t, fs, opts)
	if r := k.Init(7, abi.KernelMinorVersion, abi.InitKnown); r.Errno != 0 {
		t.Fatalf("INIT: %v", r.Errno)
	}
	select {
	case <-k.Server().Ready():
	case <-time.After(k.Timeout()):
		t.Fatal("Ready not closed after INIT")
	}
	return k
}

// waitIdle waits until the server has no request in flight: every reply is
// written and counted in Stats.
func waitIdle(t *testing.T, k *fusetest.Kernel) {
	t.Helper()
	deadline := time.Now().Add(k.Timeout())
	for k.Server().Inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still in flight", k.Server().Inflight())
		}
		time.Sleep(time.Millisecond)
	}
}

// blocker is a handler body that blocks until released or its context is
// cancelled, and tells when it started.
type blocker struct {
	started chan uint64   // the unique of each request that started
	release chan struct{} // closed to let handlers return nil
}

func newBlocker() *blocker {
	return &blocker{started: make(chan uint64, 64), release: make(chan struct{})}
}

func (b *blocker) wait(ctx context.Context, r *fusedev.Request) error {
	b.started <- r.Unique
	if ctx.Err() != nil { // interrupted before it started
		return ctx.Err()
	}
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return syscall.ETIMEDOUT // the test failed to interrupt or release us
	}
}

func (b *blocker) waitStarted(t *testing.T, unique uint64) {
	t.Helper()
	select {
	case u := <-b.started:
		if u != unique {
			t.Fatalf("handler started for unique %d, want %d", u, unique)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("handler for unique %d did not start", unique)
	}
}

func timeNowPlus(ms int) time.Time { return time.Now().Add(time.Duration(ms) * time.Millisecond) }

func timeZero() time.Time { return time.Time{} }
