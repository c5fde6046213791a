package abi

// ioctl number encoding of asm-generic/ioctl.h (x86, arm64, riscv; not
// mips/powerpc/sparc, which fusegate does not build for).
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
)

func ioc(dir, typ, nr, size uint32) uint32 { return dir<<30 | size<<16 | typ<<8 | nr }

// DevIocMagic is the ioctl type byte of /dev/fuse.
const DevIocMagic = 229

// Ioctls on /dev/fuse.
var (
	// DevIocClone attaches a newly opened /dev/fuse fd to the connection of
	// the fd passed as its uint32 argument, giving it its own request queue reader.
	DevIocClone = ioc(iocRead, DevIocMagic, 0, 4)
	// DevIocBackingOpen registers a backing file (BackingMap) for passthrough
	// and returns its backing id.
	DevIocBackingOpen = ioc(iocWrite, DevIocMagic, 1, SizeBackingMap)
	// DevIocBackingClose releases a backing id (uint32 argument).
	DevIocBackingClose = ioc(iocWrite, DevIocMagic, 2, 4)
	// DevIocSyncInit asks for INIT to be processed synchronously (Linux 6.18).
	DevIocSyncInit = ioc(iocNone, DevIocMagic, 3, 0)
)
