package fusedev

import (
	"context"
	"syscall"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// Caller identifies the process a request comes from, as the kernel put it
// in the request header (uid/gid/pid in the server's pid namespace).
type Caller struct {
	UID uint32
	GID uint32
	PID uint32
}

// Request is what a handler knows about the request it serves besides its
// decoded arguments. It is valid only during the handler call.
type Request struct {
	Opcode abi.Opcode
	Unique uint64
	NodeID uint64 // the node the request is about (the parent for name operations)
	Caller
	// SuppGroups is the FUSE_EXT_GROUPS extension (7.38, CREATE_SUPP_GROUP):
	// on creating requests, the caller's supplementary group matching the
	// parent directory's group, when the kernel sent one.
	SuppGroups []uint32

	after func() // AfterReply's
}

// Resent reports whether the kernel sends this request again after
// FUSE_NOTIFY_RESEND: an earlier server process read it and did not answer
// (Unique then carries abi.UniqueResend).
func (r *Request) Resent() bool { return r.Unique&abi.UniqueResend != 0 }

// AfterReply makes f run once the kernel took the reply (not when the
// request is left to a successor at a handover, nor when the kernel no
// longer waited for it: after FUSE_NOTIFY_RESEND it comes again). A handler
// whose effects must happen exactly once across a restart uses it to drop
// what it kept to answer a resent request the same way.
func (r *Request) AfterReply(f func()) { r.after = f }

// FileSystem has one method per FUSE opcode over decoded arguments. A
// handler fills its out value and returns; the Server writes the reply,
// exactly once. Returning a syscall.Errno (possibly wrapped) sends that
// errno; any other error sends EIO and is logged. ctx is cancelled when the
// kernel sends INTERRUPT for the request or the server is shutting down.
// Like r, ctx and the argument and out pointers are valid only during the
// call: the server reuses them for later requests.
//
// Embed NotImplemented to answer ENOSYS for the operations a file system
// does not implement.
type FileSystem interface {
	// Init is called once INIT is negotiated, before the reply is sent
	// (s.Negotiated() is set), or when Serve starts with Options.Resume.
	// An error fails the mount.
	Init(ctx context.Context, s *Server) error
	// Destroy is called once after a successful Init: on FUSE_DESTROY (sent
	// for fuseblk mounts) or when Serve returns, whichever comes first.
	Destroy()

	Lookup(ctx context.Context, r *Request, name string, out *abi.EntryOut) error
	// Forget drops nlookup references to nodeID. It gets no reply.
	Forget(nodeID, nlookup uint64)
	Getattr(ctx context.Context, r *Request, in *abi.GetattrIn, out *abi.AttrOut) error
	Setattr(ctx context.Context, r *Request, in *abi.SetattrIn, out *abi.AttrOut) error
	Readlink(ctx context.Context, r *Request) (string, error)
	Symlink(ctx context.Context, r *Request, target, name string, out *abi.EntryOut) error
	Mknod(ctx context.Context, r *Request, in *abi.MknodIn, name string, out *abi.EntryOut) error
	Mkdir(ctx context.Context, r *Request, in *abi.MkdirIn, name string, out *abi.EntryOut) error
	Unlink(ctx context.Context, r *Request, name string) error
	Rmdir(ctx context.Context, r *Request, name string) error
	// Rename serves RENAME (Flags 0) and RENAME2 (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT).
	Rename(ctx context.Context, r *Request, in *abi.Rename2In, oldName, newName string) error
	Link(ctx context.Context, r *Request, in *abi.LinkIn, name string, out *abi.EntryOut) error
	Open(ctx context.Context, r *Request, in *abi.OpenIn, out *abi.OpenOut) error
	// Read returns the data read; it may be dest[:n] (dest has in.Size
	// bytes) or any other slice of at most in.Size bytes.
	Read(ctx context.Context, r *Request, in *abi.ReadIn, dest []byte) ([]byte, error)
	// Write returns how many bytes of data it wrote.
	Write(ctx context.Context, r *Request, in *abi.WriteIn, data []byte) (uint32, error)
	Statfs(ctx context.Context, r *Request, out *abi.StatfsOut) error
	Release(ctx context.Context, r *Request, in *abi.ReleaseIn) error
	Fsync(ctx context.Context, r *Request, in *abi.FsyncIn) error
	Setxattr(ctx context.Context, r *Request, in *abi.SetxattrIn, name string, value []byte) error
	// Getxattr copies the value into dest and returns its length. With an
	// empty dest it returns the value's length only; when dest is too small
	// it returns ERANGE.
	Getxattr(ctx context.Context, r *Request, name string, dest []byte) (int, error)
	// Listxattr is Getxattr for the NUL-separated list of names.
	Listxattr(ctx context.Context, r *Request, dest []byte) (int, error)
	Removexattr(ctx context.Context, r *Request, name string) error
	Flush(ctx context.Context, r *Request, in *abi.FlushIn) error
	Opendir(ctx context.Context, r *Request, in *abi.OpenIn, out *abi.OpenOut) error
	Readdir(ctx context.Context, r *Request, in *abi.ReadIn, out *DirList) error
	// Readdirplus fills entries with AddPlus; each entry with a non-zero
	// NodeID counts as one lookup of that node, as LOOKUP does.
	Readdirplus(ctx context.Context, r *Request, in *abi.ReadIn, out *DirList) error
	Releasedir(ctx context.Context, r *Request, in *abi.ReleaseIn) error
	Fsyncdir(ctx context.Context, r *Request, in *abi.FsyncIn) error
	Getlk(ctx context.Context, r *Request, in *abi.LkIn, out *abi.LkOut) error
	Setlk(ctx context.Context, r *Request, in *abi.LkIn) error
	// Setlkw waits for the lock; ctx is cancelled if the waiter is interrupted.
	Setlkw(ctx context.Context, r *Request, in *abi.LkIn) error
	Access(ctx context.Context, r *Request, in *abi.AccessIn) error
	Create(ctx context.Context, r *Request, in *abi.CreateIn, name string, entry *abi.EntryOut, open *abi.OpenOut) error
	Bmap(ctx context.Context, r *Request, in *abi.BmapIn, out *abi.BmapOut) error
	Ioctl(ctx context.Context, r *Request, in *abi.IoctlIn, data []byte, out *IoctlOut) error
	Poll(ctx context.Context, r *Request, in *abi.PollIn, out *abi.PollOut) error
	Fallocate(ctx context.Context, r *Request, in *abi.FallocateIn) error
	Lseek(ctx context.Context, r *Request, in *abi.LseekIn, out *abi.LseekOut) error
	// CopyFileRange serves COPY_FILE_RANGE and COPY_FILE_RANGE_64 and
	// returns the number of bytes copied.
	CopyFileRange(ctx context.Context, r *Request, in *abi.CopyFileRangeIn) (uint64, error)
	Syncfs(ctx context.Context, r *Request) error
	// Tmpfile creates an unnamed file in the directory r.NodeID (O_TMPFILE).
	Tmpfile(ctx context.Context, r *Request, in *abi.CreateIn, entry *abi.EntryOut, open *abi.OpenOut) error
	Statx(ctx context.Context, r *Request, in *abi.StatxIn, out *abi.StatxOut) error
}

// IoctlOut is the answer to an IOCTL request.
type IoctlOut struct {
	Result int32  // the ioctl's return value
	Data   []byte // output data, at most in.OutSize bytes

	// Retry, for unrestricted ioctls (CUSE), asks the kernel to repeat the
	// request with these user memory ranges copied in (InIovs) and made
	// writable (OutIovs). At most abi.IoctlMaxIov ranges in all.
	Retry   bool
	InIovs  []abi.IoctlIovec
	OutIovs []abi.IoctlIovec

	buf  func(n int) []byte // the request's reply buffer (Buffer)
	iovs [4]abi.IoctlIovec  // room for the first few Iovecs
	nIov int                // of iovs used
}

// Iovecs returns n iovecs (zeroed) to fill for InIovs or OutIovs: memory
// kept with the request for the first few, so that a retry allocates
// nothing. It is valid until the reply has been written.
func (o *IoctlOut) Iovecs(n int) []abi.IoctlIovec {
	if o.nIov+n > len(o.iovs) {
		return make([]abi.IoctlIovec, n)
	}
	v := o.iovs[o.nIov : o.nIov+n : o.nIov+n]
	o.nIov += n
	clear(v)
	return v
}

// Buffer returns n bytes (not zeroed) for Data: the server's own reply
// buffer, so that a handler filling it allocates nothing. It is valid
// until the handler returns.
func (o *IoctlOut) Buffer(n int) []byte {
	if o.buf == nil {
		return make([]byte, n)
	}
	return o.buf(n)
}

// NotImplemented answers ENOSYS to every operation (and ignores Forget).
// Embed it in a FileSystem and override what you implement.
type NotImplemented struct{}

var _ FileSystem = NotImplemented{}

const enosys = syscall.ENOSYS

func (NotImplemented) Init(context.Context, *Server) error { return nil }
func (NotImplemented) Destroy()                            {}
func (NotImplemented) Lookup(context.Context, *Request, string, *abi.EntryOut) error {
	return enosys
}
func (NotImplemented) Forget(uint64, uint64) {}
func (NotImplemented) Getattr(context.Context, *Request, *abi.GetattrIn, *abi.AttrOut) error {
	return enosys
}
func (NotImplemented) Setattr(context.Context, *Request, *abi.SetattrIn, *abi.AttrOut) error {
	return enosys
}
func (NotImplemented) Readlink(context.Context, *Request) (string, error) { return "", enosys }
func (NotImplemented) Symlink(context.Context, *Request, string, string, *abi.EntryOut) error {
	return enosys
}
func (NotImplemented) Mknod(context.Context, *Request, *abi.MknodIn, string, *abi.EntryOut) error {
	return enosys
}
func (NotImplemented) Mkdir(context.Context, *Request, *abi.MkdirIn, string, *abi.EntryOut) error {
	return enosys
}
func (NotImplemented) Unlink(context.Context, *Request, string) error { return enosys }
func (NotImplemented) Rmdir(context.Context, *Request, string) error  { return enosys }
func (NotImplemented) Rename(context.Context, *Request, *abi.Rename2In, string, string) error {
	return enosys
}
func (NotImplemented) Link(context.Context, *Request, *abi.LinkIn, string, *abi.EntryOut) error {
	return enosys
}
func (NotImplemented) Open(context.Context, *Request, *abi.OpenIn, *abi.OpenOut) error {
	return enosys
}
func (NotImplemented) Read(context.Context, *Request, *abi.ReadIn, []byte) ([]byte, error) {
	return nil, enosys
}
func (NotImplemented) Write(context.Context, *Request, *abi.WriteIn, []byte) (uint32, error) {
	return 0, enosys
}
func (NotImplemented) Statfs(context.Context, *Request, *abi.StatfsOut) error { return enosys }
func (NotImplemented) Release(context.Context, *Request, *abi.ReleaseIn) error {
	return enosys
}
func (NotImplemented) Fsync(context.Context, *Request, *abi.FsyncIn) error { return enosys }
func (NotImplemented) Setxattr(context.Context, *Request, *abi.SetxattrIn, string, []byte) error {
	return enosys
}
func (NotImplemented) Getxattr(context.Context, *Request, string, []byte) (int, error) {
	return 0, enosys
}
func (NotImplemented) Listxattr(context.Context, *Request, []byte) (int, error) {
	return 0, enosys
}
func (NotImplemented) Removexattr(context.Context, *Request, string) error { return enosys }
func (NotImplemented) Flush(context.Context, *Request, *abi.FlushIn) error { return enosys }
func (NotImplemented) Opendir(context.Context, *Request, *abi.OpenIn, *abi.OpenOut) error {
	return enosys
}
func (NotImplemented) Readdir(context.Context, *Request, *abi.ReadIn, *DirList) error {
	return enosys
}
func (NotImplemented) Readdirplus(context.Context, *Request, *abi.ReadIn, *DirList) error {
	return enosys
}
func (NotImplemented) Releasedir(context.Context, *Request, *abi.ReleaseIn) error {
	return enosys
}
func (NotImplemented) Fsyncdir(context.Context, *Request, *abi.FsyncIn) error { return enosys }
func (NotImplemented) Getlk(context.Context, *Request, *abi.LkIn, *abi.LkOut) error {
	return enosys
}
func (NotImplemented) Setlk(context.Context, *Request, *abi.LkIn) error      { return enosys }
func (NotImplemented) Setlkw(context.Context, *Request, *abi.LkIn) error     { return enosys }
func (NotImplemented) Access(context.Context, *Request, *abi.AccessIn) error { return enosys }
func (NotImplemented) Create(context.Context, *Request, *abi.CreateIn, string, *abi.EntryOut, *abi.OpenOut) error {
	return enosys
}
func (NotImplemented) Bmap(context.Context, *Request, *abi.BmapIn, *abi.BmapOut) error {
	return enosys
}
func (NotImplemented) Ioctl(context.Context, *Request, *abi.IoctlIn, []byte, *IoctlOut) error {
	return enosys
}
func (NotImplemented) Poll(context.Context, *Request, *abi.PollIn, *abi.PollOut) error {
	return enosys
}
func (NotImplemented) Fallocate(context.Context, *Request, *abi.FallocateIn) error {
	return enosys
}
func (NotImplemented) Lseek(context.Context, *Request, *abi.LseekIn, *abi.LseekOut) error {
	return enosys
}
func (NotImplemented) CopyFileRange(context.Context, *Request, *abi.CopyFileRangeIn) (uint64, error) {
	return 0, enosys
}
func (NotImplemented) Syncfs(context.Context, *Request) error { return enosys }
func (NotImplemented) Tmpfile(context.Context, *Request, *abi.CreateIn, *abi.EntryOut, *abi.OpenOut) error {
	return enosys
}
func (NotImplemented) Statx(context.Context, *Request, *abi.StatxIn, *abi.StatxOut) error {
	return enosys
}

// DirList collects the entries of a READDIR or READDIRPLUS reply in the
// kernel's format, up to the size the kernel asked for.
type DirList struct {
	buf  []byte // len: bytes used; cap: the kernel's size
	plus bool
}

// Plus reports whether this is a READDIRPLUS reply (use AddPlus).
func (d *DirList) Plus() bool { return d.plus }

// Len returns the number of bytes filled so far.
func (d *DirList) Len() int { return len(d.buf) }

// Add appends a READDIR entry: name, inode number, DT_* type and the offset
// of the next entry (what a later READDIR passes back as in.Offset). It
// returns false, adding nothing, when the entry does not fit.
func (d *DirList) Add(name string, ino uint64, typ uint32, off uint64) bool {
	if d.plus {
		e := d.AddPlus(name, ino, typ, off)
		return e != nil
	}
	size := abi.DirentSize(len(name))
	start := len(d.buf)
	if start+size > cap(d.buf) || len(name) == 0 || len(name) > abi.NameMax {
		return false
	}
	d.buf = d.buf[:start+size]
	ent := abi.Dirent{Ino: ino, Off: off, Namelen: uint32(len(name)), Type: typ}
	copy(d.buf[start:], abi.Bytes(&ent))
	n := copy(d.buf[start+abi.SizeDirent:], name)
	clear(d.buf[start+abi.SizeDirent+n : start+size])
	return true
}

// AddPlus appends a READDIRPLUS entry and returns its EntryOut for the
// caller to fill (leave NodeID 0 to give the kernel no lookup reference), or
// nil, adding nothing, when it does not fit. Check for nil before taking a
// lookup reference.
func (d *DirList) AddPlus(name string, ino uint64, typ uint32, off uint64) *abi.EntryOut {
	size := abi.DirentplusSize(len(name))
	start := len(d.buf)
	if start+size > cap(d.buf) || len(name) == 0 || len(name) > abi.NameMax {
		return nil
	}
	d.buf = d.buf[:start+size]
	ent := abi.Direntplus{Dirent: abi.Dirent{Ino: ino, Off: off, Namelen: uint32(len(name)), Type: typ}}
	copy(d.buf[start:], abi.Bytes(&ent))
	n := copy(d.buf[start+abi.SizeDirentplus:], name)
	clear(d.buf[start+abi.SizeDirentplus+n : start+size])
	return (*abi.EntryOut)(unsafePointerAt(d.buf, start))
}
