package fusetest

import (
	"fmt"
	"syscall"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// Arg returns a copy of the wire bytes of v, for use as a request argument.
func Arg[T any](v T) []byte { return append([]byte(nil), abi.Bytes(&v)...) }

// CString returns s followed by a NUL, as names travel in requests.
func CString(s string) []byte { return append([]byte(s), 0) }

// Decode decodes a reply payload that must be exactly one T.
func Decode[T any](r Reply) (T, error) {
	var v T
	if r.Errno != 0 {
		return v, r.Errno
	}
	if len(r.Payload) != abi.SizeOf[T]() {
		return v, fmt.Errorf("fusetest: %v reply of %d bytes, want %d (%T)", r.Op, len(r.Payload), abi.SizeOf[T](), v)
	}
	err := abi.Decode(r.Payload, &v)
	return v, err
}

// decodeOut is Decode that fails the test on a malformed success reply.
func decodeOut[T any](k *Kernel, r Reply) (T, syscall.Errno) {
	k.t.Helper()
	if r.Errno != 0 {
		var zero T
		return zero, r.Errno
	}
	v, err := Decode[T](r)
	if err != nil {
		k.t.Fatal(err)
	}
	return v, 0
}

// expectEmpty fails the test when a success reply carries a payload.
func expectEmpty(k *Kernel, r Reply) syscall.Errno {
	k.t.Helper()
	if r.Errno == 0 && len(r.Payload) != 0 {
		k.t.Fatalf("fusetest: %v reply carries %d bytes, want none", r.Op, len(r.Payload))
	}
	return r.Errno
}

// InitReply is the server's answer to INIT.
type InitReply struct {
	Reply
	Out abi.InitOut // decoded from however many bytes the reply has
}

// InitIn returns the INIT request a kernel of major.minor sends, offering
// flags and a 128 KiB readahead.
func InitIn(major, minor uint32, flags abi.InitFlags) abi.InitIn {
	in := abi.InitIn{Major: major, Minor: minor, MaxReadahead: 128 << 10}
	in.Flags, in.Flags2 = flags.Words()
	return in
}

// Init sends INIT as a kernel speaking major.minor that offers flags, and
// waits for the reply. Kernels before 7.36 send the 16-byte fuse_init_in
// (no flags2), later ones the 64-byte one.
func (k *Kernel) Init(major, minor uint32, flags abi.InitFlags) InitReply {
	k.t.Helper()
	size := abi.SizeInitIn
	if major == abi.KernelVersion && minor < 36 {
		size = abi.CompatInitInSize
	}
	return k.InitWith(InitIn(major, minor, flags), size)
}

// InitWith sends the first size bytes of in as INIT and waits for the reply.
func (k *Kernel) InitWith(in abi.InitIn, size int) InitReply {
	k.t.Helper()
	r := k.Do(abi.OpInit, 0, abi.Bytes(&in)[:size])
	out := InitReply{Reply: r}
	if r.Errno == 0 {
		if len(r.Payload) > abi.SizeInitOut {
			k.t.Fatalf("fusetest: INIT reply of %d bytes, more than fuse_init_out", len(r.Payload))
		}
		abi.DecodeSized(r.Payload, len(r.Payload), &out.Out)
	}
	return out
}

// CuseInitReply is the server's answer to CUSE_INIT.
type CuseInitReply struct {
	Reply
	Out     abi.CuseInitOut
	DevInfo []byte // the NUL-separated KEY=VALUE strings after cuse_init_out
}

// CuseInit sends CUSE_INIT as a kernel speaking major.minor with the given
// CUSE flags (abi.CuseUnrestrictedIoctl) and waits for the reply.
func (k *Kernel) CuseInit(major, minor, flags uint32) CuseInitReply {
	k.t.Helper()
	in := abi.CuseInitIn{Major: major, Minor: minor, Flags: flags}
	r := k.Do(abi.OpCuseInit, 0, Arg(in))
	out := CuseInitReply{Reply: r}
	if r.Errno == 0 {
		if err := abi.Decode(r.Payload, &out.Out); err != nil {
			k.t.Fatalf("fusetest: CUSE_INIT reply: %v", err)
		}
		out.DevInfo = r.Payload[abi.SizeCuseInitOut:]
	}
	return out
}

// Lookup sends LOOKUP of name in parent.
func (k *Kernel) Lookup(parent uint64, name string) (abi.EntryOut, syscall.Errno) {
	k.t.Helper()
	return decodeOut[abi.EntryOut](k, k.Do(abi.OpLookup, parent, CString(name)))
}

// Forget sends FORGET (no reply is expected).
func (k *Kernel) Forget(node, nlookup uint64) uint64 {
	k.t.Helper()
	return k.Send(abi.OpForget, node, Arg(abi.ForgetIn{Nlookup: nlookup}))
}

// BatchForget sends BATCH_FORGET (no reply is expected).
func (k *Kernel) BatchForget(items []abi.ForgetOne) uint64 {
	k.t.Helper()
	args := [][]byte{Arg(abi.BatchForgetIn{Count: uint32(len(items))})}
	for _, it := range items {
		args = append(args, Arg(it))
	}
	return k.Send(abi.OpBatchForget, 0, args...)
}

// Getattr sends GETATTR for node.
func (k *Kernel) Getattr(node uint64) (abi.AttrOut, syscall.Errno) {
	k.t.Helper()
	return decodeOut[abi.AttrOut](k, k.Do(abi.OpGetattr, node, Arg(abi.GetattrIn{})))
}

// Setattr sends SETATTR for node.
func (k *Kernel) Setattr(node uint64, in abi.SetattrIn) (abi.AttrOut, syscall.Errno) {
	k.t.Helper()
	return decodeOut[abi.AttrOut](k, k.Do(abi.OpSetattr, node, Arg(in)))
}

// Readlink sends READLINK for node.
func (k *Kernel) Readlink(node uint64) (string, syscall.Errno) {
	k.t.Helper()
	r := k.Do(abi.OpReadlink, node)
	return string(r.Payload), r.Errno
}

// Mkdir sends MKDIR of name in parent.
func (k *Kernel) Mkdir(parent uint64, name string, mode, umask uint32) (abi.EntryOut, syscall.Errno) {
	k.t.Helper()
	return decodeOut[abi.EntryOut](k, k.Do(abi.OpMkdir, parent, Arg(abi.MkdirIn{Mode: mode, Umask: umask}), CString(name)))
}

// Unlink sends UNLINK of name in parent.
func (k *Kernel) Unlink(parent uint64, name string) syscall.Errno {
	k.t.Helper()
	return expectEmpty(k, k.Do(abi.OpUnlink, parent, CString(name)))
}

// Create sends CREATE of name in parent.
func (k *Kernel) Create(parent uint64, name string, in abi.CreateIn) (abi.EntryOut, abi.OpenOut, syscall.Errno) {
	k.t.Helper()
	r := k.Do(abi.OpCreate, parent, Arg(in), CString(name))
	if r.Errno != 0 {
		return abi.EntryOut{}, abi.OpenOut{}, r.Errno
	}
	if len(r.Payload) != abi.SizeEntryOut+abi.SizeOpenOut {
		k.t.Fatalf("fusetest: CREATE reply of %d bytes", len(r.Payload))
	}
	var e abi.EntryOut
	var o abi.OpenOut
	abi.Decode(r.Payload, &e)
	abi.Decode(r.Payload[abi.SizeEntryOut:], &o)
	return e, o, 0
}

// Open sends OPEN of node with open(2) flags.
func (k *Kernel) Open(node uint64, flags uint32) (abi.OpenOut, syscall.Errno) {
	k.t.Helper()
	return decodeOut[abi.OpenOut](k, k.Do(abi.OpOpen, node, Arg(abi.OpenIn{Flags: flags})))
}

// Opendir sends OPENDIR of node.
func (k *Kernel) Opendir(node uint64) (abi.OpenOut, syscall.Errno) {
	k.t.Helper()
	return decodeOut[abi.OpenOut](k, k.Do(abi.OpOpendir, node, Arg(abi.OpenIn{})))
}

// Read sends READ of size bytes at off.
func (k *Kernel) Read(node, fh, off uint64, size uint32) ([]byte, syscall.Errno) {
	k.t.Helper()
	r := k.Do(abi.OpRead, node, Arg(abi.ReadIn{Fh: fh, Offset: off, Size: size}))
	if r.Errno == 0 && len(r.Payload) > int(size) {
		k.t.Fatalf("fusetest: READ of %d bytes answered with %d", size, len(r.Payload))
	}
	return r.Payload, r.Errno
}

// Write sends WRITE of data at off and returns the size the server wrote.
func (k *Kernel) Write(node, fh, off uint64, data []byte) (uint32, syscall.Errno) {
	k.t.Helper()
	in := abi.WriteIn{Fh: fh, Offset: off, Size: uint32(len(data))}
	out, errno := decodeOut[abi.WriteOut](k, k.Do(abi.OpWrite, node, Arg(in), data))
	return out.Size, errno
}

// Release sends RELEASE.
func (k *Kernel) Release(node, fh uint64) syscall.Errno {
	k.t.Helper()
	return expectEmpty(k, k.Do(abi.OpRelease, node, Arg(abi.ReleaseIn{Fh: fh})))
}

// Releasedir sends RELEASEDIR.
func (k *Kernel) Releasedir(node, fh uint64) syscall.Errno {
	k.t.Helper()
	return expectEmpty(k, k.Do(abi.OpReleasedir, node, Arg(abi.ReleaseIn{Fh: fh})))
}

// Flush sends FLUSH.
func (k *Kernel) Flush(node, fh, lockOwner uint64) syscall.Errno {
	k.t.Helper()
	return expectEmpty(k, k.Do(abi.OpFlush, node, Arg(abi.FlushIn{Fh: fh, LockOwner: lockOwner})))
}

// Fsync sends FSYNC.
func (k *Kernel) Fsync(node, fh uint64, flags uint32) syscall.Errno {
	k.t.Helper()
	return expectEmpty(k, k.Do(abi.OpFsync, node, Arg(abi.FsyncIn{Fh: fh, FsyncFlags: flags})))
}

// Statfs sends STATFS.
func (k *Kernel) Statfs(node uint64) (abi.StatfsOut, syscall.Errno) {
	k.t.Helper()
	return decodeOut[abi.StatfsOut](k, k.Do(abi.OpStatfs, node))
}

// Getxattr sends GETXATTR of name with a buffer of size bytes (0: ask for
// the length). It returns the value, or with size 0 the length the server gave.
func (k *Kernel) Getxattr(node uint64, name string, size uint32) ([]byte, uint32, syscall.Errno) {
	k.t.Helper()
	r := k.Do(abi.OpGetxattr, node, Arg(abi.GetxattrIn{Size: size}), CString(name))
	if r.Errno != 0 {
		return nil, 0, r.Errno
	}
	if size == 0 {
		out, errno := decodeOut[abi.GetxattrOut](k, r)
		return nil, out.Size, errno
	}
	return r.Payload, uint32(len(r.Payload)), 0
}

// Setxattr sends SETXATTR (the 16-byte fuse_setxattr_in of SETXATTR_EXT when
// ext is set, else the 8-byte one).
func (k *Kernel) Setxattr(node uint64, name string, value []byte, flags uint32, ext bool) syscall.Errno {
	k.t.Helper()
	in := Arg(abi.SetxattrIn{Size: uint32(len(value)), Flags: flags})
	if !ext {
		in = in[:abi.CompatSetxattrInSize]
	}
	return expectEmpty(k, k.Do(abi.OpSetxattr, node, in, CString(name), value))
}

// Dirent is one decoded READDIR entry.
type Dirent struct {
	Ino  uint64
	Off  uint64
	Type uint32
	Name string
}

// DirentPlus is one decoded READDIRPLUS entry.
type DirentPlus struct {
	Entry abi.EntryOut
	Dirent
}

// ParseDirents decodes a READDIR reply, checking names and padding.
func ParseDirents(b []byte) ([]Dirent, error) {
	var out []Dirent
	for len(b) > 0 {
		var d abi.Dirent
		if err := abi.Decode(b, &d); err != nil {
			return out, err
		}
		size := abi.DirentSize(int(d.Namelen))
		if d.Namelen == 0 || d.Namelen > abi.NameMax || size > len(b) {
			return out, fmt.Errorf("dirent with name length %d in %d bytes", d.Namelen, len(b))
		}
		name := b[abi.SizeDirent : abi.SizeDirent+int(d.Namelen)]
		for _, p := range b[abi.SizeDirent+int(d.Namelen) : size] {
			if p != 0 {
				return out, fmt.Errorf("dirent %q: non-zero padding", name)
			}
		}
		out = append(out, Dirent{Ino: d.Ino, Off: d.Off, Type: d.Type, Name: string(name)})
		b = b[size:]
	}
	return out, nil
}

// ParseDirentplus decodes a READDIRPLUS reply.
func ParseDirentplus(b []byte) ([]DirentPlus, error) {
	var out []DirentPlus
	for len(b) > 0 {
		var d abi.Direntplus
		if err := abi.Decode(b, &d); err != nil {
			return out, err
		}
		size := abi.DirentplusSize(int(d.Dirent.Namelen))
		if d.Dirent.Namelen == 0 || d.Dirent.Namelen > abi.NameMax || size > len(b) {
			return out, fmt.Errorf("direntplus with name length %d in %d bytes", d.Dirent.Namelen, len(b))
		}
		name := b[abi.SizeDirentplus : abi.SizeDirentplus+int(d.Dirent.Namelen)]
		for _, p := range b[abi.SizeDirentplus+int(d.Dirent.Namelen) : size] {
			if p != 0 {
				return out, fmt.Errorf("direntplus %q: non-zero padding", name)
			}
		}
		out = append(out, DirentPlus{Entry: d.EntryOut,
			Dirent: Dirent{Ino: d.Dirent.Ino, Off: d.Dirent.Off, Type: d.Dirent.Type, Name: string(name)}})
		b = b[size:]
	}
	return out, nil
}

// Readdir sends READDIR and decodes the entries.
func (k *Kernel) Readdir(node, fh, off uint64, size uint32) ([]Dirent, syscall.Errno) {
	k.t.Helper()
	r := k.Do(abi.OpReaddir, node, Arg(abi.ReadIn{Fh: fh, Offset: off, Size: size}))
	if r.Errno != 0 {
		return nil, r.Errno
	}
	if len(r.Payload) > int(size) {
		k.t.Fatalf("fusetest: READDIR of %d bytes answered with %d", size, len(r.Payload))
	}
	ents, err := ParseDirents(r.Payload)
	if err != nil {
		k.t.Fatalf("fusetest: READDIR reply: %v", err)
	}
	return ents, 0
}

// Readdirplus sends READDIRPLUS and decodes the entries.
func (k *Kernel) Readdirplus(node, fh, off uint64, size uint32) ([]DirentPlus, syscall.Errno) {
	k.t.Helper()
	r := k.Do(abi.OpReaddirplus, node, Arg(abi.ReadIn{Fh: fh, Offset: off, Size: size}))
	if r.Errno != 0 {
		return nil, r.Errno
	}
	if len(r.Payload) > int(size) {
		k.t.Fatalf("fusetest: READDIRPLUS of %d bytes answered with %d", size, len(r.Payload))
	}
	ents, err := ParseDirentplus(r.Payload)
	if err != nil {
		k.t.Fatalf("fusetest: READDIRPLUS reply: %v", err)
	}
	return ents, 0
}

// IoctlReply is a decoded IOCTL answer.
type IoctlReply struct {
	Out abi.IoctlOut
	// With abi.IoctlRetry in Out.Flags: the ranges to copy in and out.
	InIovs, OutIovs []abi.IoctlIovec
	Data            []byte // output data otherwise
}

// ParseIoctl decodes an IOCTL reply payload.
func ParseIoctl(payload []byte) (IoctlReply, error) {
	var r IoctlReply
	if err := abi.Decode(payload, &r.Out); err != nil {
		return r, err
	}
	rest := payload[abi.SizeIoctlOut:]
	if r.Out.Flags&abi.IoctlRetry == 0 {
		r.Data = rest
		return r, nil
	}
	n := uint64(r.Out.InIovs) + uint64(r.Out.OutIovs)
	if n > abi.IoctlMaxIov {
		return r, fmt.Errorf("ioctl retry with %d iovecs, the kernel takes %d", n, abi.IoctlMaxIov)
	}
	if uint64(len(rest)) != n*abi.SizeIoctlIovec {
		return r, fmt.Errorf("ioctl retry with %d iovecs in %d bytes", n, len(rest))
	}
	iovs := make([]abi.IoctlIovec, n)
	for i := range iovs {
		abi.Decode(rest[i*abi.SizeIoctlIovec:], &iovs[i])
	}
	r.InIovs, r.OutIovs = iovs[:r.Out.InIovs], iovs[r.Out.InIovs:]
	return r, nil
}

// Ioctl sends IOCTL with in (InSize is set from data) and decodes the answer.
func (k *Kernel) Ioctl(node uint64, in abi.IoctlIn, data []byte) (IoctlReply, syscall.Errno) {
	k.t.Helper()
	in.InSize = uint32(len(data))
	r := k.Do(abi.OpIoctl, node, Arg(in), data)
	if r.Errno != 0 {
		return IoctlReply{}, r.Errno
	}
	out, err := ParseIoctl(r.Payload)
	if err != nil {
		k.t.Fatalf("fusetest: IOCTL reply: %v", err)
	}
	if out.Out.Flags&abi.IoctlRetry == 0 && len(out.Data) > int(in.OutSize) {
		k.t.Fatalf("fusetest: IOCTL reply with %d bytes, out_size %d", len(out.Data), in.OutSize)
	}
	return out, 0
}

// Poll sends POLL.
func (k *Kernel) Poll(node uint64, in abi.PollIn) (abi.PollOut, syscall.Errno) {
	k.t.Helper()
	return decodeOut[abi.PollOut](k, k.Do(abi.OpPoll, node, Arg(in)))
}

// NotifyReply answers a NotifyRetrieve notification as the kernel does: a
// NOTIFY_REPLY request with the notification's unique, the offset and the
// data (no reply is expected).
func (k *Kernel) NotifyReply(notifyUnique, node, offset uint64, data []byte) {
	k.t.Helper()
	in := abi.NotifyRetrieveIn{Offset: offset, Size: uint32(len(data))}
	k.SendReq(Req{Op: abi.OpNotifyReply, Node: node, Unique: notifyUnique, Args: [][]byte{Arg(in), data}})
}
