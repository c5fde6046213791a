package cuse

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// IoctlCmd is an ioctl request number. Well-formed numbers encode a
// direction, a type byte, a number and the size of the argument struct
// (asm-generic/ioctl.h: the encoding of x86, arm64 and riscv).
type IoctlCmd uint32

// Ioctl directions (the kernel's _IOC_NONE, _IOC_WRITE, _IOC_READ), seen
// from the caller: Write means the caller passes data in, Read that it gets
// data back.
const (
	IocNone  = 0
	IocWrite = 1
	IocRead  = 2
)

// Ioc encodes an ioctl number as the kernel's _IOC macro does: dir is
// IocNone, IocWrite, IocRead or both; size must be below 16 KiB.
func Ioc(dir, typ, nr, size uint32) IoctlCmd {
	return IoctlCmd(dir<<30 | (size&0x3fff)<<16 | (typ&0xff)<<8 | nr&0xff)
}

// Dir is the direction bits of a well-formed number.
func (c IoctlCmd) Dir() uint32 { return uint32(c) >> 30 }

// Size is the argument size encoded in a well-formed number.
func (c IoctlCmd) Size() int { return int(uint32(c)>>16) & 0x3fff }

// Type is the type ("magic") byte.
func (c IoctlCmd) Type() uint8 { return uint8(c >> 8) }

// Nr is the number within the type.
func (c IoctlCmd) Nr() uint8 { return uint8(c) }

func (c IoctlCmd) String() string {
	return fmt.Sprintf("%#x(dir=%d type=%#x nr=%d size=%d)", uint32(c), c.Dir(), c.Type(), c.Nr(), c.Size())
}

// Region is a range of the calling process's memory.
type Region struct {
	Addr uint64
	Len  int
}

// Limits of one ioctl call, set by the kernel: at most IoctlMaxRegions
// regions in all, and at most IoctlMaxBytes bytes in each direction (CUSE
// connections are limited to 32 pages per request).
const (
	IoctlMaxRegions = abi.IoctlMaxIov
	IoctlMaxBytes   = 32 * 4096
)

// ErrIoctlRetry is returned by IoctlRequest.In and Out when the kernel must
// first copy the caller's memory: return it (or any error wrapping it) from
// Ioctl, and the Server asks the kernel to call again with every region asked
// for so far.
var ErrIoctlRetry = errors.New("cuse: ioctl needs the caller's memory; retrying")

// IoctlFlags describe the calling process.
type IoctlFlags uint32

// Ioctl flags, as the kernel sends them.
const (
	IoctlCompat       IoctlFlags = abi.IoctlCompat       // a 32-bit syscall on a 64-bit kernel
	IoctlUnrestricted IoctlFlags = abi.IoctlUnrestricted // retries are allowed
	Ioctl32Bit        IoctlFlags = abi.Ioctl32Bit        // the caller's pointers and longs are 32-bit
	IoctlCompatX32    IoctlFlags = abi.IoctlCompatX32    // an x32 caller
)

// IoctlRequest is one ioctl(2) call. The kernel copies the caller's memory
// only when asked, so a handler reads the argument struct with In, the
// buffers it points to with more In calls, and reserves what it writes back
// with Out. The first time a region is asked for, In or Out returns
// ErrIoctlRetry; the handler returns it, the kernel copies every region asked
// for and the Server runs the handler again from the start, and this time
// In and Out return the memory. Ask for everything you already know you
// need before checking the errors: every retry is one more round trip.
//
//	func (h *handle) Ioctl(ctx context.Context, op cuse.Op, req *cuse.IoctlRequest) (int32, error) {
//		arg, err := req.In(req.ArgRegion()) // struct { buf uint64; len uint32; _ uint32 }
//		if err != nil {
//			return 0, err
//		}
//		buf := binary.LittleEndian.Uint64(arg)
//		n := int(binary.LittleEndian.Uint32(arg[8:]))
//		data, err := req.In(cuse.Region{Addr: buf, Len: n})
//		if err != nil {
//			return 0, err
//		}
//		return int32(h.consume(data)), nil
//	}
//
// Regions come back in the order asked; the handler must ask for the same
// regions in the same order each round given the same memory, and should
// act (change state) only once it has everything. Without unrestricted
// ioctls (Options.RestrictIoctl, or a FUSE file) the kernel copies only what
// the number encodes (ArgRegion, per Cmd.Dir) and asking for anything else
// fails with EINVAL.
type IoctlRequest struct {
	Cmd   IoctlCmd
	Arg   uint64 // the argument: a pointer into the caller's memory, or a number
	Flags IoctlFlags

	in      []byte // the memory the kernel copied, regions concatenated
	inPos   int
	outSize int // how much the kernel lets us write back
	outPos  int
	out     []byte // reply data, outPos bytes used
	trim    int    // < 0: no trim

	inRegs, outRegs []Region // asked for this round, in order
	inBytes         int
	missing         bool
	err             error

	alloc *fusedev.IoctlOut // memory for out (the server's reply buffer), or nil
}

// Is32Bit reports whether the caller is a 32-bit process, whose pointers
// and longs in argument structs are 4 bytes.
func (r *IoctlRequest) Is32Bit() bool { return r.Flags&Ioctl32Bit != 0 }

// ArgRegion is the argument struct of a well-formed ioctl number: Arg with
// the size encoded in Cmd.
func (r *IoctlRequest) ArgRegion() Region { return Region{Addr: r.Arg, Len: r.Cmd.Size()} }

func (r *IoctlRequest) unrestricted() bool { return r.Flags&IoctlUnrestricted != 0 }

// check validates a new region against the kernel's limits.
func (r *IoctlRequest) check(reg Region, bytes int) error {
	switch {
	case r.Is32Bit() && (reg.Addr > 0xffffffff || reg.Addr+uint64(reg.Len) > 1<<32):
		return syscall.EFAULT
	case reg.Addr+uint64(reg.Len) < reg.Addr:
		return syscall.EFAULT
	case len(r.inRegs)+len(r.outRegs) >= IoctlMaxRegions:
		return syscall.ENOMEM
	case bytes+reg.Len > IoctlMaxBytes:
		return syscall.ENOMEM
	}
	return nil
}

// In returns the caller's memory at reg, or ErrIoctlRetry when the kernel has
// not copied it yet. It fails with ENOMEM beyond the kernel's limits, EFAULT
// for a region a 32-bit caller cannot have, and EINVAL when the kernel cannot
// be asked (restricted ioctls). The slice is valid during the call.
func (r *IoctlRequest) In(reg Region) ([]byte, error) {
	if b, done, err := r.settled(reg); done {
		return b, err
	}
	if !r.missing && r.inPos+reg.Len <= len(r.in) {
		b := r.in[r.inPos : r.inPos+reg.Len : r.inPos+reg.Len]
		r.inPos += reg.Len
		r.inRegs = append(r.inRegs, reg)
		r.inBytes += reg.Len
		return b, nil
	}
	if err := r.askKernel(reg, r.inBytes); err != nil {
		return nil, err
	}
	r.inRegs = append(r.inRegs, reg)
	r.inBytes += reg.Len
	return nil, ErrIoctlRetry
}

// Out reserves reg to be written back to the caller and returns the buffer
// to fill (zeroed), or ErrIoctlRetry when the kernel has not mapped it yet.
// Buffers are copied to the caller in the order reserved when Ioctl returns
// without an error. Errors are In's.
func (r *IoctlRequest) Out(reg Region) ([]byte, error) {
	if b, done, err := r.settled(reg); done {
		return b, err
	}
	if !r.missing && r.outPos+reg.Len <= r.outSize {
		if cap(r.out) < r.outPos+reg.Len {
			var grown []byte
			if r.alloc != nil {
				grown = r.alloc.Buffer(r.outSize)[:r.outPos]
			} else {
				grown = make([]byte, r.outPos, max(r.outSize, 64))
			}
			copy(grown, r.out)
			r.out = grown
		}
		r.out = r.out[:r.outPos+reg.Len]
		b := r.out[r.outPos : r.outPos+reg.Len : r.outPos+reg.Len]
		clear(b)
		r.outPos += reg.Len
		r.outRegs = append(r.outRegs, reg)
		return b, nil
	}
	if err := r.askKernel(reg, r.outPos+r.pendingOut()); err != nil {
		return nil, err
	}
	r.outRegs = append(r.outRegs, reg)
	return nil, ErrIoctlRetry
}

// settled answers In and Out for a region that needs no buffer: after an
// earlier error (which sticks), for a negative length (EINVAL), and for an
// empty region (an empty slice). done is false when reg needs the real work.
func (r *IoctlRequest) settled(reg Region) (b []byte, done bool, err error) {
	switch {
	case r.err != nil:
		return nil, true, r.err
	case reg.Len < 0:
		r.err = syscall.EINVAL
		return nil, true, r.err
	case reg.Len == 0:
		return []byte{}, true, nil
	}
	return nil, false, nil
}

// askKernel decides that reg, not supplied with the request, is to be asked
// for in an unrestricted-ioctl retry; used is what the direction already
// has. It fails (and the error sticks) when the region is beyond the
// kernel's limits or the kernel cannot be asked; otherwise the caller
// records reg and returns ErrIoctlRetry.
func (r *IoctlRequest) askKernel(reg Region, used int) error {
	if err := r.check(reg, used); err != nil {
		r.err = err
		return err
	}
	if !r.unrestricted() {
		r.err = syscall.EINVAL
		return r.err
	}
	r.missing = true
	return nil
}

// pendingOut sums the out regions asked for beyond those available.
func (r *IoctlRequest) pendingOut() int {
	n := -r.outPos
	for _, reg := range r.outRegs {
		n += reg.Len
	}
	return n
}

// Trim limits what is copied back to the caller to the first n bytes of the
// buffers Out returned so far, so a handler that reserved a whole buffer but
// filled only its start leaves the rest of the caller's memory untouched.
func (r *IoctlRequest) Trim(n int) {
	if n >= 0 {
		r.trim = n
	}
}

// reset prepares r for one round.
func (r *IoctlRequest) reset(in *abi.IoctlIn, data []byte) {
	*r = IoctlRequest{
		Cmd: IoctlCmd(in.Cmd), Arg: in.Arg, Flags: IoctlFlags(in.Flags),
		in: data, outSize: int(in.OutSize), trim: -1,
		inRegs: r.inRegs[:0], outRegs: r.outRegs[:0],
	}
}

// iovecs returns the retry iovecs asking for regs, in out's memory.
func (r *IoctlRequest) iovecs(out *fusedev.IoctlOut, regs []Region) []abi.IoctlIovec {
	v := out.Iovecs(len(regs))
	for i, reg := range regs {
		v[i] = abi.IoctlIovec{Base: reg.Addr, Len: uint64(reg.Len)}
	}
	return v
}

// output returns the reply data of a completed round.
func (r *IoctlRequest) output() []byte {
	out := r.out[:r.outPos]
	if r.trim >= 0 && r.trim < len(out) {
		out = out[:r.trim]
	}
	return out
}
