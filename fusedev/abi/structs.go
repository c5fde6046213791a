package abi

// Wire structs. Field order, widths and padding follow the kernel header
// exactly; names drop the fuse_ prefix and use Go capitalisation. Sizes are
// the Size* constants below, checked by TestSizes.

// InHeader starts every request.
type InHeader struct {
	Len         uint32 // total length of the request, header included
	Opcode      Opcode
	Unique      uint64
	NodeID      uint64
	UID         uint32
	GID         uint32
	PID         uint32
	TotalExtlen uint16 // length of extensions in 8-byte units (7.38)
	Padding     uint16
}

// OutHeader starts every reply and notification.
type OutHeader struct {
	Len    uint32
	Error  int32 // negative errno in replies; the NotifyCode in notifications
	Unique uint64
}

// Attr is struct fuse_attr.
type Attr struct {
	Ino       uint64
	Size      uint64
	Blocks    uint64
	Atime     uint64
	Mtime     uint64
	Ctime     uint64
	Atimensec uint32
	Mtimensec uint32
	Ctimensec uint32
	Mode      uint32
	Nlink     uint32
	UID       uint32
	GID       uint32
	Rdev      uint32
	Blksize   uint32
	Flags     uint32
}

// SxTime is struct fuse_sx_time (statx timestamps).
type SxTime struct {
	Sec      int64
	Nsec     uint32
	Reserved int32
}

// Statx is struct fuse_statx, bit-compatible with struct statx.
type Statx struct {
	Mask           uint32
	Blksize        uint32
	Attributes     uint64
	Nlink          uint32
	UID            uint32
	GID            uint32
	Mode           uint16
	Spare0         [1]uint16
	Ino            uint64
	Size           uint64
	Blocks         uint64
	AttributesMask uint64
	Atime          SxTime
	Btime          SxTime
	Ctime          SxTime
	Mtime          SxTime
	RdevMajor      uint32
	RdevMinor      uint32
	DevMajor       uint32
	DevMinor       uint32
	Spare2         [14]uint64
}

// Kstatfs is struct fuse_kstatfs.
type Kstatfs struct {
	Blocks  uint64
	Bfree   uint64
	Bavail  uint64
	Files   uint64
	Ffree   uint64
	Bsize   uint32
	Namelen uint32
	Frsize  uint32
	Padding uint32
	Spare   [6]uint32
}

// FileLock is struct fuse_file_lock.
type FileLock struct {
	Start uint64
	End   uint64
	Type  uint32
	PID   uint32 // tgid
}

// EntryOut answers LOOKUP, MKNOD, MKDIR, SYMLINK, LINK and CREATE.
type EntryOut struct {
	NodeID         uint64
	Generation     uint64 // nodeid:generation must be unique for the fs's lifetime
	EntryValid     uint64 // seconds the name may be cached
	AttrValid      uint64 // seconds the attributes may be cached
	EntryValidNsec uint32
	AttrValidNsec  uint32
	Attr           Attr
}

type ForgetIn struct{ Nlookup uint64 }

type ForgetOne struct {
	NodeID  uint64
	Nlookup uint64
}

type BatchForgetIn struct {
	Count uint32
	Dummy uint32
}

type GetattrIn struct {
	GetattrFlags uint32
	Dummy        uint32
	Fh           uint64
}

type AttrOut struct {
	AttrValid     uint64
	AttrValidNsec uint32
	Dummy         uint32
	Attr          Attr
}

type StatxIn struct {
	GetattrFlags uint32
	Reserved     uint32
	Fh           uint64
	SxFlags      uint32
	SxMask       uint32
}

type StatxOut struct {
	AttrValid     uint64
	AttrValidNsec uint32
	Flags         uint32
	Spare         [2]uint64
	Stat          Statx
}

type MknodIn struct {
	Mode    uint32
	Rdev    uint32
	Umask   uint32
	Padding uint32
}

type MkdirIn struct {
	Mode  uint32
	Umask uint32
}

type RenameIn struct{ Newdir uint64 }

type Rename2In struct {
	Newdir  uint64
	Flags   uint32
	Padding uint32
}

type LinkIn struct{ OldNodeID uint64 }

type SetattrIn struct {
	Valid     SetattrValid
	Padding   uint32
	Fh        uint64
	Size      uint64
	LockOwner uint64
	Atime     uint64
	Mtime     uint64
	Ctime     uint64
	Atimensec uint32
	Mtimensec uint32
	Ctimensec uint32
	Mode      uint32
	Unused4   uint32
	UID       uint32
	GID       uint32
	Unused5   uint32
}

type OpenIn struct {
	Flags     uint32 // open(2) flags
	OpenFlags uint32 // OpenKillSuidgid
}

type CreateIn struct {
	Flags     uint32
	Mode      uint32
	Umask     uint32
	OpenFlags uint32
}

type OpenOut struct {
	Fh        uint64
	OpenFlags OpenFlags
	BackingID int32 // with FopenPassthrough (7.40)
}

type ReleaseIn struct {
	Fh           uint64
	Flags        uint32
	ReleaseFlags uint32
	LockOwner    uint64
}

type FlushIn struct {
	Fh        uint64
	Unused    uint32
	Padding   uint32
	LockOwner uint64
}

type ReadIn struct {
	Fh        uint64
	Offset    uint64
	Size      uint32
	ReadFlags uint32
	LockOwner uint64
	Flags     uint32
	Padding   uint32
}

type WriteIn struct {
	Fh         uint64
	Offset     uint64
	Size       uint32
	WriteFlags uint32
	LockOwner  uint64
	Flags      uint32
	Padding    uint32
}

type WriteOut struct {
	Size    uint32
	Padding uint32
}

type StatfsOut struct{ St Kstatfs }

type FsyncIn struct {
	Fh         uint64
	FsyncFlags uint32
	Padding    uint32
}

type SetxattrIn struct {
	Size          uint32
	Flags         uint32
	SetxattrFlags uint32 // only with InitSetxattrExt
	Padding       uint32
}

type GetxattrIn struct {
	Size    uint32
	Padding uint32
}

type GetxattrOut struct {
	Size    uint32
	Padding uint32
}

type LkIn struct {
	Fh      uint64
	Owner   uint64
	Lk      FileLock
	LkFlags uint32
	Padding uint32
}

type LkOut struct{ Lk FileLock }

type AccessIn struct {
	Mask    uint32
	Padding uint32
}

// InitIn is the full 7.36+ INIT request; older kernels send only the first
// CompatInitInSize bytes.
type InitIn struct {
	Major        uint32
	Minor        uint32
	MaxReadahead uint32
	Flags        uint32
	Flags2       uint32
	Unused       [11]uint32
}

// InitOut is the INIT reply.
type InitOut struct {
	Major               uint32
	Minor               uint32
	MaxReadahead        uint32
	Flags               uint32
	MaxBackground       uint16
	CongestionThreshold uint16
	MaxWrite            uint32
	TimeGran            uint32
	MaxPages            uint16
	MapAlignment        uint16
	Flags2              uint32
	MaxStackDepth       uint32 // 7.40
	RequestTimeout      uint16 // 7.43, seconds
	Unused              [11]uint16
}

type CuseInitIn struct {
	Major  uint32
	Minor  uint32
	Unused uint32
	Flags  uint32
}

type CuseInitOut struct {
	Major    uint32
	Minor    uint32
	Unused   uint32
	Flags    uint32
	MaxRead  uint32
	MaxWrite uint32
	DevMajor uint32
	DevMinor uint32
	Spare    [10]uint32
}

type InterruptIn struct{ Unique uint64 }

type BmapIn struct {
	Block     uint64
	Blocksize uint32
	Padding   uint32
}

type BmapOut struct{ Block uint64 }

type IoctlIn struct {
	Fh      uint64
	Flags   uint32
	Cmd     uint32
	Arg     uint64
	InSize  uint32
	OutSize uint32
}

type IoctlIovec struct {
	Base uint64
	Len  uint64
}

type IoctlOut struct {
	Result  int32
	Flags   uint32
	InIovs  uint32
	OutIovs uint32
}

type PollIn struct {
	Fh     uint64
	Kh     uint64
	Flags  uint32
	Events uint32
}

type PollOut struct {
	Revents uint32
	Padding uint32
}

type NotifyPollWakeupOut struct{ Kh uint64 }

type FallocateIn struct {
	Fh      uint64
	Offset  uint64
	Length  uint64
	Mode    uint32
	Padding uint32
}

// Dirent is the fixed part of a directory entry; Namelen name bytes follow,
// and the record is padded to 8 bytes.
type Dirent struct {
	Ino     uint64
	Off     uint64
	Namelen uint32
	Type    uint32
}

// Direntplus is the fixed part of a READDIRPLUS entry.
type Direntplus struct {
	EntryOut EntryOut
	Dirent   Dirent
}

type NotifyInvalInodeOut struct {
	Ino uint64
	Off int64
	Len int64
}

type NotifyInvalEntryOut struct {
	Parent  uint64
	Namelen uint32
	Flags   uint32
}

type NotifyDeleteOut struct {
	Parent  uint64
	Child   uint64
	Namelen uint32
	Padding uint32
}

type NotifyStoreOut struct {
	NodeID  uint64
	Offset  uint64
	Size    uint32
	Padding uint32
}

type NotifyRetrieveOut struct {
	NotifyUnique uint64
	NodeID       uint64
	Offset       uint64
	Size         uint32
	Padding      uint32
}

// NotifyRetrieveIn heads the NOTIFY_REPLY request that answers a retrieve.
type NotifyRetrieveIn struct {
	Dummy1 uint64
	Offset uint64
	Size   uint32
	Dummy2 uint32
	Dummy3 uint64
	Dummy4 uint64
}

type NotifyPruneOut struct {
	Count   uint32
	Padding uint32
	Spare   uint64
}

// BackingMap is the argument of the BACKING_OPEN ioctl.
type BackingMap struct {
	Fd      int32
	Flags   uint32
	Padding uint64
}

type LseekIn struct {
	Fh      uint64
	Offset  uint64
	Whence  uint32
	Padding uint32
}

type LseekOut struct{ Offset uint64 }

type CopyFileRangeIn struct {
	FhIn      uint64
	OffIn     uint64
	NodeIDOut uint64
	FhOut     uint64
	OffOut    uint64
	Len       uint64
	Flags     uint64
}

type CopyFileRangeOut struct{ BytesCopied uint64 }

type SetupmappingIn struct {
	Fh      uint64
	Foffset uint64
	Len     uint64
	Flags   uint64
	Moffset uint64
}

type RemovemappingIn struct{ Count uint32 }

type RemovemappingOne struct {
	Moffset uint64
	Len     uint64
}

type SyncfsIn struct{ Padding uint64 }

type Secctx struct {
	Size    uint32
	Padding uint32
}

type SecctxHeader struct {
	Size     uint32
	NrSecctx uint32
}

// ExtHeader heads each request extension (7.38).
type ExtHeader struct {
	Size uint32 // of the extension, this header included
	Type uint32
}

// SuppGroups is the fixed part of the ExtGroups extension; NrGroups uint32
// group IDs follow.
type SuppGroups struct{ NrGroups uint32 }

// FUSE-over-io_uring (7.42).
const (
	UringInOutHeaderSize = 128
	UringOpInOutSize     = 128

	UringCmdInvalid        = 0
	UringCmdRegister       = 1
	UringCmdCommitAndFetch = 2
)

type UringEntInOut struct {
	Flags     uint64
	CommitID  uint64
	PayloadSz uint32
	Padding   uint32
	Reserved  uint64
}

type UringReqHeader struct {
	InOut        [UringInOutHeaderSize]byte
	OpIn         [UringOpInOutSize]byte
	RingEntInOut UringEntInOut
}

type UringCmdReq struct {
	Flags    uint64
	CommitID uint64
	Qid      uint16
	Padding  [6]uint8
}

// Sizes of the wire structs, from the kernel header.
const (
	SizeInHeader            = 40
	SizeOutHeader           = 16
	SizeAttr                = 88
	SizeStatx               = 256
	SizeKstatfs             = 80
	SizeFileLock            = 24
	SizeEntryOut            = 128
	SizeForgetIn            = 8
	SizeForgetOne           = 16
	SizeBatchForgetIn       = 8
	SizeGetattrIn           = 16
	SizeAttrOut             = 104
	SizeStatxIn             = 24
	SizeStatxOut            = 288
	SizeMknodIn             = 16
	SizeMkdirIn             = 8
	SizeRenameIn            = 8
	SizeRename2In           = 16
	SizeLinkIn              = 8
	SizeSetattrIn           = 88
	SizeOpenIn              = 8
	SizeCreateIn            = 16
	SizeOpenOut             = 16
	SizeReleaseIn           = 24
	SizeFlushIn             = 24
	SizeReadIn              = 40
	SizeWriteIn             = 40
	SizeWriteOut            = 8
	SizeStatfsOut           = 80
	SizeFsyncIn             = 16
	SizeSetxattrIn          = 16
	SizeGetxattrIn          = 8
	SizeGetxattrOut         = 8
	SizeLkIn                = 48
	SizeLkOut               = 24
	SizeAccessIn            = 8
	SizeInitIn              = 64
	SizeInitOut             = 64
	SizeCuseInitIn          = 16
	SizeCuseInitOut         = 72
	SizeInterruptIn         = 8
	SizeBmapIn              = 16
	SizeBmapOut             = 8
	SizeIoctlIn             = 32
	SizeIoctlIovec          = 16
	SizeIoctlOut            = 16
	SizePollIn              = 24
	SizePollOut             = 8
	SizeNotifyPollWakeupOut = 8
	SizeFallocateIn         = 32
	SizeDirent              = 24
	SizeDirentplus          = 152
	SizeNotifyInvalInodeOut = 24
	SizeNotifyInvalEntryOut = 16
	SizeNotifyDeleteOut     = 24
	SizeNotifyStoreOut      = 24
	SizeNotifyRetrieveOut   = 32
	SizeNotifyRetrieveIn    = 40
	SizeNotifyPruneOut      = 16
	SizeBackingMap          = 16
	SizeLseekIn             = 24
	SizeLseekOut            = 8
	SizeCopyFileRangeIn     = 56
	SizeCopyFileRangeOut    = 8
	SizeSetupmappingIn      = 40
	SizeRemovemappingIn     = 4
	SizeRemovemappingOne    = 16
	SizeSyncfsIn            = 8
	SizeExtHeader           = 8
	SizeSuppGroups          = 4
	SizeUringEntInOut       = 32
	SizeUringReqHeader      = 288
	SizeUringCmdReq         = 24
)
