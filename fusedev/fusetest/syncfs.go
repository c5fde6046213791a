package fusetest

import (
	"context"
	"sync"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// syncFS passes every call through to the file system under test, taking
// and releasing the fake kernel's lock before and after it. The kernel takes
// the same lock when it sends a request and when it reads a reply, so the
// race detector sees the ordering the socket really provides (a handler's
// writes happen before the test reads them after the reply; a test's writes
// before a request happen before the handler runs). Handlers still race
// with each other, and with a test that does not wait for their reply,
// exactly as they would without it.
type syncFS struct {
	fs fusedev.FileSystem
	mu *sync.Mutex
}

var _ fusedev.FileSystem = syncFS{}

func (f syncFS) edge() {
	f.mu.Lock()
	f.mu.Unlock() // an empty critical section: only the ordering matters
}

func (f syncFS) Init(ctx context.Context, s *fusedev.Server) error {
	f.edge()
	defer f.edge()
	return f.fs.Init(ctx, s)
}

func (f syncFS) Destroy() {
	f.edge()
	defer f.edge()
	f.fs.Destroy()
}

func (f syncFS) Lookup(ctx context.Context, r *fusedev.Request, name string, out *abi.EntryOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Lookup(ctx, r, name, out)
}

func (f syncFS) Forget(nodeID, nlookup uint64) {
	f.edge()
	defer f.edge()
	f.fs.Forget(nodeID, nlookup)
}

func (f syncFS) Getattr(ctx context.Context, r *fusedev.Request, in *abi.GetattrIn, out *abi.AttrOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Getattr(ctx, r, in, out)
}

func (f syncFS) Setattr(ctx context.Context, r *fusedev.Request, in *abi.SetattrIn, out *abi.AttrOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Setattr(ctx, r, in, out)
}

func (f syncFS) Readlink(ctx context.Context, r *fusedev.Request) (string, error) {
	f.edge()
	defer f.edge()
	return f.fs.Readlink(ctx, r)
}

func (f syncFS) Symlink(ctx context.Context, r *fusedev.Request, target, name string, out *abi.EntryOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Symlink(ctx, r, target, name, out)
}

func (f syncFS) Mknod(ctx context.Context, r *fusedev.Request, in *abi.MknodIn, name string, out *abi.EntryOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Mknod(ctx, r, in, name, out)
}

func (f syncFS) Mkdir(ctx context.Context, r *fusedev.Request, in *abi.MkdirIn, name string, out *abi.EntryOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Mkdir(ctx, r, in, name, out)
}

func (f syncFS) Unlink(ctx context.Context, r *fusedev.Request, name string) error {
	f.edge()
	defer f.edge()
	return f.fs.Unlink(ctx, r, name)
}

func (f syncFS) Rmdir(ctx context.Context, r *fusedev.Request, name string) error {
	f.edge()
	defer f.edge()
	return f.fs.Rmdir(ctx, r, name)
}

func (f syncFS) Rename(ctx context.Context, r *fusedev.Request, in *abi.Rename2In, oldName, newName string) error {
	f.edge()
	defer f.edge()
	return f.fs.Rename(ctx, r, in, oldName, newName)
}

func (f syncFS) Link(ctx context.Context, r *fusedev.Request, in *abi.LinkIn, name string, out *abi.EntryOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Link(ctx, r, in, name, out)
}

func (f syncFS) Open(ctx context.Context, r *fusedev.Request, in *abi.OpenIn, out *abi.OpenOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Open(ctx, r, in, out)
}

func (f syncFS) Read(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
	f.edge()
	defer f.edge()
	return f.fs.Read(ctx, r, in, dest)
}

func (f syncFS) Write(ctx context.Context, r *fusedev.Request, in *abi.WriteIn, data []byte) (uint32, error) {
	f.edge()
	defer f.edge()
	return f.fs.Write(ctx, r, in, data)
}

func (f syncFS) Statfs(ctx context.Context, r *fusedev.Request, out *abi.StatfsOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Statfs(ctx, r, out)
}

func (f syncFS) Release(ctx context.Context, r *fusedev.Request, in *abi.ReleaseIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Release(ctx, r, in)
}

func (f syncFS) Fsync(ctx context.Context, r *fusedev.Request, in *abi.FsyncIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Fsync(ctx, r, in)
}

func (f syncFS) Setxattr(ctx context.Context, r *fusedev.Request, in *abi.SetxattrIn, name string, value []byte) error {
	f.edge()
	defer f.edge()
	return f.fs.Setxattr(ctx, r, in, name, value)
}

func (f syncFS) Getxattr(ctx context.Context, r *fusedev.Request, name string, dest []byte) (int, error) {
	f.edge()
	defer f.edge()
	return f.fs.Getxattr(ctx, r, name, dest)
}

func (f syncFS) Listxattr(ctx context.Context, r *fusedev.Request, dest []byte) (int, error) {
	f.edge()
	defer f.edge()
	return f.fs.Listxattr(ctx, r, dest)
}

func (f syncFS) Removexattr(ctx context.Context, r *fusedev.Request, name string) error {
	f.edge()
	defer f.edge()
	return f.fs.Removexattr(ctx, r, name)
}

func (f syncFS) Flush(ctx context.Context, r *fusedev.Request, in *abi.FlushIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Flush(ctx, r, in)
}

func (f syncFS) Opendir(ctx context.Context, r *fusedev.Request, in *abi.OpenIn, out *abi.OpenOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Opendir(ctx, r, in, out)
}

func (f syncFS) Readdir(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	f.edge()
	defer f.edge()
	return f.fs.Readdir(ctx, r, in, out)
}

func (f syncFS) Readdirplus(ctx context.Context, r *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	f.edge()
	defer f.edge()
	return f.fs.Readdirplus(ctx, r, in, out)
}

func (f syncFS) Releasedir(ctx context.Context, r *fusedev.Request, in *abi.ReleaseIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Releasedir(ctx, r, in)
}

func (f syncFS) Fsyncdir(ctx context.Context, r *fusedev.Request, in *abi.FsyncIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Fsyncdir(ctx, r, in)
}

func (f syncFS) Getlk(ctx context.Context, r *fusedev.Request, in *abi.LkIn, out *abi.LkOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Getlk(ctx, r, in, out)
}

func (f syncFS) Setlk(ctx context.Context, r *fusedev.Request, in *abi.LkIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Setlk(ctx, r, in)
}

func (f syncFS) Setlkw(ctx context.Context, r *fusedev.Request, in *abi.LkIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Setlkw(ctx, r, in)
}

func (f syncFS) Access(ctx context.Context, r *fusedev.Request, in *abi.AccessIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Access(ctx, r, in)
}

func (f syncFS) Create(ctx context.Context, r *fusedev.Request, in *abi.CreateIn, name string, entry *abi.EntryOut, open *abi.OpenOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Create(ctx, r, in, name, entry, open)
}

func (f syncFS) Bmap(ctx context.Context, r *fusedev.Request, in *abi.BmapIn, out *abi.BmapOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Bmap(ctx, r, in, out)
}

func (f syncFS) Ioctl(ctx context.Context, r *fusedev.Request, in *abi.IoctlIn, data []byte, out *fusedev.IoctlOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Ioctl(ctx, r, in, data, out)
}

func (f syncFS) Poll(ctx context.Context, r *fusedev.Request, in *abi.PollIn, out *abi.PollOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Poll(ctx, r, in, out)
}

func (f syncFS) Fallocate(ctx context.Context, r *fusedev.Request, in *abi.FallocateIn) error {
	f.edge()
	defer f.edge()
	return f.fs.Fallocate(ctx, r, in)
}

func (f syncFS) Lseek(ctx context.Context, r *fusedev.Request, in *abi.LseekIn, out *abi.LseekOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Lseek(ctx, r, in, out)
}

func (f syncFS) CopyFileRange(ctx context.Context, r *fusedev.Request, in *abi.CopyFileRangeIn) (uint64, error) {
	f.edge()
	defer f.edge()
	return f.fs.CopyFileRange(ctx, r, in)
}

func (f syncFS) Syncfs(ctx context.Context, r *fusedev.Request) error {
	f.edge()
	defer f.edge()
	return f.fs.Syncfs(ctx, r)
}

func (f syncFS) Tmpfile(ctx context.Context, r *fusedev.Request, in *abi.CreateIn, entry *abi.EntryOut, open *abi.OpenOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Tmpfile(ctx, r, in, entry, open)
}

func (f syncFS) Statx(ctx context.Context, r *fusedev.Request, in *abi.StatxIn, out *abi.StatxOut) error {
	f.edge()
	defer f.edge()
	return f.fs.Statx(ctx, r, in, out)
}
