package abi

import "strconv"

// Opcode identifies a request (enum fuse_opcode).
type Opcode uint32

// Request opcodes. 7 and 19 are unused by the protocol.
const (
	OpLookup          Opcode = 1
	OpForget          Opcode = 2 // no reply
	OpGetattr         Opcode = 3
	OpSetattr         Opcode = 4
	OpReadlink        Opcode = 5
	OpSymlink         Opcode = 6
	OpMknod           Opcode = 8
	OpMkdir           Opcode = 9
	OpUnlink          Opcode = 10
	OpRmdir           Opcode = 11
	OpRename          Opcode = 12
	OpLink            Opcode = 13
	OpOpen            Opcode = 14
	OpRead            Opcode = 15
	OpWrite           Opcode = 16
	OpStatfs          Opcode = 17
	OpRelease         Opcode = 18
	OpFsync           Opcode = 20
	OpSetxattr        Opcode = 21
	OpGetxattr        Opcode = 22
	OpListxattr       Opcode = 23
	OpRemovexattr     Opcode = 24
	OpFlush           Opcode = 25
	OpInit            Opcode = 26
	OpOpendir         Opcode = 27
	OpReaddir         Opcode = 28
	OpReleasedir      Opcode = 29
	OpFsyncdir        Opcode = 30
	OpGetlk           Opcode = 31
	OpSetlk           Opcode = 32
	OpSetlkw          Opcode = 33
	OpAccess          Opcode = 34
	OpCreate          Opcode = 35
	OpInterrupt       Opcode = 36
	OpBmap            Opcode = 37
	OpDestroy         Opcode = 38
	OpIoctl           Opcode = 39
	OpPoll            Opcode = 40
	OpNotifyReply     Opcode = 41 // no reply
	OpBatchForget     Opcode = 42 // no reply
	OpFallocate       Opcode = 43
	OpReaddirplus     Opcode = 44
	OpRename2         Opcode = 45
	OpLseek           Opcode = 46
	OpCopyFileRange   Opcode = 47
	OpSetupmapping    Opcode = 48
	OpRemovemapping   Opcode = 49
	OpSyncfs          Opcode = 50
	OpTmpfile         Opcode = 51
	OpStatx           Opcode = 52
	OpCopyFileRange64 Opcode = 53

	// OpMax is the highest FUSE opcode of protocol 7.45.
	OpMax = OpCopyFileRange64

	OpCuseInit Opcode = 4096 // CUSE_INIT: first request on /dev/cuse

	// Byte-swapped INIT opcodes, reserved so a server can detect a peer of the
	// other endianness.
	OpCuseInitBswapReserved Opcode = 1048576   // CUSE_INIT << 8
	OpInitBswapReserved     Opcode = 436207616 // FUSE_INIT << 24
)

var opNames = [...]string{
	OpLookup: "LOOKUP", OpForget: "FORGET", OpGetattr: "GETATTR", OpSetattr: "SETATTR",
	OpReadlink: "READLINK", OpSymlink: "SYMLINK", OpMknod: "MKNOD", OpMkdir: "MKDIR",
	OpUnlink: "UNLINK", OpRmdir: "RMDIR", OpRename: "RENAME", OpLink: "LINK", OpOpen: "OPEN",
	OpRead: "READ", OpWrite: "WRITE", OpStatfs: "STATFS", OpRelease: "RELEASE", OpFsync: "FSYNC",
	OpSetxattr: "SETXATTR", OpGetxattr: "GETXATTR", OpListxattr: "LISTXATTR",
	OpRemovexattr: "REMOVEXATTR", OpFlush: "FLUSH", OpInit: "INIT", OpOpendir: "OPENDIR",
	OpReaddir: "READDIR", OpReleasedir: "RELEASEDIR", OpFsyncdir: "FSYNCDIR", OpGetlk: "GETLK",
	OpSetlk: "SETLK", OpSetlkw: "SETLKW", OpAccess: "ACCESS", OpCreate: "CREATE",
	OpInterrupt: "INTERRUPT", OpBmap: "BMAP", OpDestroy: "DESTROY", OpIoctl: "IOCTL",
	OpPoll: "POLL", OpNotifyReply: "NOTIFY_REPLY", OpBatchForget: "BATCH_FORGET",
	OpFallocate: "FALLOCATE", OpReaddirplus: "READDIRPLUS", OpRename2: "RENAME2",
	OpLseek: "LSEEK", OpCopyFileRange: "COPY_FILE_RANGE", OpSetupmapping: "SETUPMAPPING",
	OpRemovemapping: "REMOVEMAPPING", OpSyncfs: "SYNCFS", OpTmpfile: "TMPFILE", OpStatx: "STATX",
	OpCopyFileRange64: "COPY_FILE_RANGE_64",
}

// String returns the kernel's name for the opcode without the FUSE_ prefix,
// or "OPCODE(n)" for a number the protocol does not define.
func (o Opcode) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	switch o {
	case OpCuseInit:
		return "CUSE_INIT"
	case OpCuseInitBswapReserved:
		return "CUSE_INIT_BSWAP_RESERVED"
	case OpInitBswapReserved:
		return "INIT_BSWAP_RESERVED"
	}
	return "OPCODE(" + strconv.FormatUint(uint64(o), 10) + ")"
}

// Valid reports whether o is an opcode defined by protocol 7.45.
func (o Opcode) Valid() bool {
	return (int(o) < len(opNames) && opNames[o] != "") || o == OpCuseInit
}

// NoReply reports whether the kernel expects no reply to a request with this opcode.
func (o Opcode) NoReply() bool {
	return o == OpForget || o == OpBatchForget || o == OpNotifyReply
}

// NotifyCode identifies a notification written to the device (enum fuse_notify_code).
// It travels in the error field of an out header whose unique is 0.
type NotifyCode int32

// Notification codes.
const (
	NotifyPoll       NotifyCode = 1
	NotifyInvalInode NotifyCode = 2
	NotifyInvalEntry NotifyCode = 3
	NotifyStore      NotifyCode = 4
	NotifyRetrieve   NotifyCode = 5
	NotifyDelete     NotifyCode = 6
	NotifyResend     NotifyCode = 7 // 7.40
	NotifyIncEpoch   NotifyCode = 8 // 7.44
	NotifyPrune      NotifyCode = 9 // 7.45
)

var notifyNames = [...]string{
	NotifyPoll: "POLL", NotifyInvalInode: "INVAL_INODE", NotifyInvalEntry: "INVAL_ENTRY",
	NotifyStore: "STORE", NotifyRetrieve: "RETRIEVE", NotifyDelete: "DELETE",
	NotifyResend: "RESEND", NotifyIncEpoch: "INC_EPOCH", NotifyPrune: "PRUNE",
}

func (c NotifyCode) String() string {
	if c > 0 && int(c) < len(notifyNames) {
		return notifyNames[c]
	}
	return "NOTIFY(" + strconv.Itoa(int(c)) + ")"
}

// MinMinor is the protocol minor version that introduced the notification.
func (c NotifyCode) MinMinor() uint32 {
	switch c {
	case NotifyPoll:
		return 11
	case NotifyInvalInode, NotifyInvalEntry:
		return 12
	case NotifyStore, NotifyRetrieve:
		return 15
	case NotifyDelete:
		return 18
	case NotifyResend:
		return 40
	case NotifyIncEpoch:
		return 44
	case NotifyPrune:
		return 45
	}
	return ^uint32(0)
}
