// Package abi is the kernel FUSE/CUSE wire protocol, version 7.45 (Linux 6.18),
// as Go types: opcodes, request and reply structs, INIT flags (both words),
// notification codes, open/attr/lock flags and the /dev/fuse ioctl numbers.
//
// Every wire struct has fixed-width fields and explicit padding, and its size
// is a constant checked by tests against the kernel header's layout. Decoding
// is bounds-checked: Decode and DecodePrefix never read past the bytes they
// are given and never panic on short input.
//
// This package is the only place in fusegate that knows byte offsets and
// sizes of the protocol. It must never do I/O, allocate on the decode path
// beyond the value it returns, or depend on anything but the standard library.
package abi

// Protocol version implemented by this package.
const (
	KernelVersion      = 7  // FUSE_KERNEL_VERSION
	KernelMinorVersion = 45 // FUSE_KERNEL_MINOR_VERSION (Linux 6.18)

	// CuseMinorVersion is the minor answered in CUSE_INIT. CUSE needs 7.11 or later.
	CuseMinorMin = 11
)

// RootID is the node ID of the root inode.
const RootID = 1

// Limits and compatibility sizes from the kernel header.
const (
	MinReadBuffer = 8192 // FUSE_MIN_READ_BUFFER

	// NameMax is the longest name the kernel sends in a request (FUSE_NAME_MAX
	// in fs/fuse/fuse_i.h). Longer names are a protocol violation.
	NameMax = 1024
	// PathMax bounds symlink targets (PATH_MAX including the NUL).
	PathMax = 4096

	CompatEntryOutSize   = 120 // fuse_entry_out before 7.9
	CompatAttrOutSize    = 96  // fuse_attr_out before 7.9
	CompatMknodInSize    = 8   // fuse_mknod_in before 7.12
	CompatWriteInSize    = 24  // fuse_write_in before 7.9
	CompatStatfsSize     = 48  // fuse_statfs_out before 7.4
	CompatSetxattrInSize = 8   // fuse_setxattr_in without FUSE_SETXATTR_EXT
	CompatInitOutSize    = 8   // fuse_init_out before 7.5
	Compat22InitOutSize  = 24  // fuse_init_out before 7.23
	CompatInitInSize     = 16  // fuse_init_in before 7.36 (no flags2, no unused)

	CuseInitInfoMax = 4096 // CUSE_INIT_INFO_MAX: device info strings
	IoctlMaxIov     = 256  // FUSE_IOCTL_MAX_IOV: in_iovs + out_iovs

	// UniqueResend marks a request the kernel sent again after FUSE_NOTIFY_RESEND.
	UniqueResend = uint64(1) << 63
	// UniqueIntBit marks the unique of an INTERRUPT request (FUSE_INT_REQ_BIT).
	UniqueIntBit = uint64(1)

	// InvalidUIDGID is sent as header uid/gid when an idmapping cannot map the caller.
	InvalidUIDGID = ^uint32(0)
)
