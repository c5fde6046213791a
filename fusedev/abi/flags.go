package abi

import (
	"math/bits"
	"strconv"
	"strings"
)

// InitFlags holds both words of the INIT capability flags: bits 0..31 travel in
// fuse_init_in/out.flags and bits 32..63 in flags2 (read by the kernel only
// when InitExt is set).
type InitFlags uint64

// INIT capability flags.
const (
	InitAsyncRead         InitFlags = 1 << 0
	InitPosixLocks        InitFlags = 1 << 1
	InitFileOps           InitFlags = 1 << 2
	InitAtomicOTrunc      InitFlags = 1 << 3
	InitExportSupport     InitFlags = 1 << 4
	InitBigWrites         InitFlags = 1 << 5
	InitDontMask          InitFlags = 1 << 6
	InitSpliceWrite       InitFlags = 1 << 7
	InitSpliceMove        InitFlags = 1 << 8
	InitSpliceRead        InitFlags = 1 << 9
	InitFlockLocks        InitFlags = 1 << 10
	InitHasIoctlDir       InitFlags = 1 << 11
	InitAutoInvalData     InitFlags = 1 << 12
	InitDoReaddirplus     InitFlags = 1 << 13
	InitReaddirplusAuto   InitFlags = 1 << 14
	InitAsyncDIO          InitFlags = 1 << 15
	InitWritebackCache    InitFlags = 1 << 16
	InitNoOpenSupport     InitFlags = 1 << 17
	InitParallelDirops    InitFlags = 1 << 18
	InitHandleKillpriv    InitFlags = 1 << 19
	InitPosixACL          InitFlags = 1 << 20
	InitAbortError        InitFlags = 1 << 21
	InitMaxPages          InitFlags = 1 << 22
	InitCacheSymlinks     InitFlags = 1 << 23
	InitNoOpendirSupport  InitFlags = 1 << 24
	InitExplicitInvalData InitFlags = 1 << 25
	InitMapAlignment      InitFlags = 1 << 26
	InitSubmounts         InitFlags = 1 << 27
	InitHandleKillprivV2  InitFlags = 1 << 28
	InitSetxattrExt       InitFlags = 1 << 29
	InitExt               InitFlags = 1 << 30 // flags2 is valid
	InitReserved          InitFlags = 1 << 31
	InitSecurityCtx       InitFlags = 1 << 32
	InitHasInodeDAX       InitFlags = 1 << 33
	InitCreateSuppGroup   InitFlags = 1 << 34
	InitHasExpireOnly     InitFlags = 1 << 35
	InitDirectIOAllowMmap InitFlags = 1 << 36
	InitPassthrough       InitFlags = 1 << 37 // 7.40
	InitNoExportSupport   InitFlags = 1 << 38
	InitHasResend         InitFlags = 1 << 39 // 7.40
	InitAllowIdmap        InitFlags = 1 << 40
	InitOverIOUring       InitFlags = 1 << 41 // 7.42
	InitRequestTimeout    InitFlags = 1 << 42 // 7.43

	// InitKnown has every flag protocol 7.45 defines.
	InitKnown = InitRequestTimeout<<1 - 1
)

var initFlagNames = [...]string{
	"ASYNC_READ", "POSIX_LOCKS", "FILE_OPS", "ATOMIC_O_TRUNC", "EXPORT_SUPPORT",
	"BIG_WRITES", "DONT_MASK", "SPLICE_WRITE", "SPLICE_MOVE", "SPLICE_READ", "FLOCK_LOCKS",
	"HAS_IOCTL_DIR", "AUTO_INVAL_DATA", "DO_READDIRPLUS", "READDIRPLUS_AUTO", "ASYNC_DIO",
	"WRITEBACK_CACHE", "NO_OPEN_SUPPORT", "PARALLEL_DIROPS", "HANDLE_KILLPRIV", "POSIX_ACL",
	"ABORT_ERROR", "MAX_PAGES", "CACHE_SYMLINKS", "NO_OPENDIR_SUPPORT", "EXPLICIT_INVAL_DATA",
	"MAP_ALIGNMENT", "SUBMOUNTS", "HANDLE_KILLPRIV_V2", "SETXATTR_EXT", "INIT_EXT",
	"INIT_RESERVED", "SECURITY_CTX", "HAS_INODE_DAX", "CREATE_SUPP_GROUP", "HAS_EXPIRE_ONLY",
	"DIRECT_IO_ALLOW_MMAP", "PASSTHROUGH", "NO_EXPORT_SUPPORT", "HAS_RESEND", "ALLOW_IDMAP",
	"OVER_IO_URING", "REQUEST_TIMEOUT",
}

// MakeInitFlags joins the two 32-bit words of the wire format.
func MakeInitFlags(flags, flags2 uint32) InitFlags {
	return InitFlags(flags) | InitFlags(flags2)<<32
}

// Words splits f into the flags and flags2 words of the wire format.
func (f InitFlags) Words() (flags, flags2 uint32) {
	return uint32(f), uint32(f >> 32)
}

// Has reports whether every bit of want is set in f.
func (f InitFlags) Has(want InitFlags) bool { return f&want == want }

// String lists the set flags by their kernel names, e.g. "ASYNC_READ|INIT_EXT".
// Bits the protocol does not define print as BIT(n).
func (f InitFlags) String() string {
	if f == 0 {
		return "0"
	}
	var b strings.Builder
	for v := uint64(f); v != 0; v &= v - 1 {
		i := bits.TrailingZeros64(v)
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		if i < len(initFlagNames) {
			b.WriteString(initFlagNames[i])
		} else {
			b.WriteString("BIT(" + strconv.Itoa(i) + ")")
		}
	}
	return b.String()
}

// OpenFlags are the FOPEN_* flags of fuse_open_out.open_flags.
type OpenFlags uint32

// FOPEN_* flags.
const (
	FopenDirectIO             OpenFlags = 1 << 0
	FopenKeepCache            OpenFlags = 1 << 1
	FopenNonseekable          OpenFlags = 1 << 2
	FopenCacheDir             OpenFlags = 1 << 3
	FopenStream               OpenFlags = 1 << 4
	FopenNoflush              OpenFlags = 1 << 5
	FopenParallelDirectWrites OpenFlags = 1 << 6
	FopenPassthrough          OpenFlags = 1 << 7

	// FopenPassthroughAllowed are the only flags the kernel accepts together
	// with FopenPassthrough; any other makes the open fail with EIO.
	FopenPassthroughAllowed = FopenPassthrough | FopenDirectIO | FopenParallelDirectWrites | FopenNoflush
)

// SetattrValid are the FATTR_* bits of fuse_setattr_in.valid.
type SetattrValid uint32

// FATTR_* bits.
const (
	FattrMode        SetattrValid = 1 << 0
	FattrUID         SetattrValid = 1 << 1
	FattrGID         SetattrValid = 1 << 2
	FattrSize        SetattrValid = 1 << 3
	FattrAtime       SetattrValid = 1 << 4
	FattrMtime       SetattrValid = 1 << 5
	FattrFh          SetattrValid = 1 << 6
	FattrAtimeNow    SetattrValid = 1 << 7
	FattrMtimeNow    SetattrValid = 1 << 8
	FattrLockOwner   SetattrValid = 1 << 9
	FattrCtime       SetattrValid = 1 << 10
	FattrKillSuidgid SetattrValid = 1 << 11
)

// Flags of individual requests.
const (
	CuseUnrestrictedIoctl = 1 << 0 // cuse_init flags

	ReleaseFlush       = 1 << 0 // fuse_release_in.release_flags
	ReleaseFlockUnlock = 1 << 1

	GetattrFh = 1 << 0 // fuse_getattr_in.getattr_flags

	LkFlock = 1 << 0 // fuse_lk_in.lk_flags

	WriteCache       = 1 << 0 // fuse_write_in.write_flags
	WriteLockOwner   = 1 << 1
	WriteKillSuidgid = 1 << 2

	ReadLockOwner = 1 << 1 // fuse_read_in.read_flags

	IoctlCompat       = 1 << 0 // fuse_ioctl_in/out.flags
	IoctlUnrestricted = 1 << 1
	IoctlRetry        = 1 << 2
	Ioctl32Bit        = 1 << 3
	IoctlDir          = 1 << 4
	IoctlCompatX32    = 1 << 5

	PollScheduleNotify = 1 << 0 // fuse_poll_in.flags

	FsyncFdatasync = 1 << 0 // fuse_fsync_in.fsync_flags

	AttrSubmount = 1 << 0 // fuse_attr.flags
	AttrDAX      = 1 << 1

	OpenKillSuidgid = 1 << 0 // fuse_open_in/create_in.open_flags

	SetxattrACLKillSgid = 1 << 0 // fuse_setxattr_in.setxattr_flags

	ExpireOnly = 1 << 0 // fuse_notify_inval_entry_out.flags
)

// Extension types after a request (enum fuse_ext_type). Types 0..31 are
// security contexts.
const (
	MaxNrSecctx = 31
	ExtGroups   = 32
)
