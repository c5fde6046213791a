package passthrough

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/policy"
)

// Mode says whether opens use kernel passthrough.
type Mode int

const (
	// PassthroughAuto uses kernel passthrough when the kernel offers it and
	// the daemon may register backing files (CAP_SYS_ADMIN); otherwise reads
	// and writes are served by the daemon, and the log says so once.
	PassthroughAuto Mode = iota
	// PassthroughOn requires kernel passthrough: INIT fails when the kernel
	// does not offer it or the daemon lacks the privilege.
	PassthroughOn
	// PassthroughOff serves every read and write in the daemon.
	PassthroughOff
)

// ParseMode parses "auto", "on" or "off".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto", "":
		return PassthroughAuto, nil
	case "on":
		return PassthroughOn, nil
	case "off":
		return PassthroughOff, nil
	}
	return 0, fmt.Errorf("passthrough mode %q: want auto, on or off", s)
}

func (m Mode) String() string {
	switch m {
	case PassthroughAuto:
		return "auto"
	case PassthroughOn:
		return "on"
	case PassthroughOff:
		return "off"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// LockMode says where POSIX record locks and flock locks live.
type LockMode int

const (
	// LocksKernel leaves locks to the kernel, which keeps them exactly
	// (owners, pids, deadlock detection, release on close) between the
	// processes using the mount, but not against processes that use the
	// lower directory directly. The daemon sees no lock requests.
	LocksKernel LockMode = iota
	// LocksLower takes the locks on the lower files (GETLK, SETLK,
	// SETLKW, flock), so they also exclude users of the lower directory.
	// The kernel then sends FLUSH on every close.
	LocksLower
)

// ParseLockMode parses "kernel" or "lower".
func ParseLockMode(s string) (LockMode, error) {
	switch s {
	case "kernel", "":
		return LocksKernel, nil
	case "lower":
		return LocksLower, nil
	}
	return 0, fmt.Errorf("lock mode %q: want kernel or lower", s)
}

func (m LockMode) String() string {
	if m == LocksLower {
		return "lower"
	}
	return "kernel"
}

// Timeouts are how long the kernel may cache an entry (the name → node
// binding, or a name's absence) and a node's attributes.
type Timeouts struct {
	Entry time.Duration
	Attr  time.Duration
}

// Options configure an FS. The zero value works.
type Options struct {
	Logger logrus.FieldLogger // default: discard

	// Passthrough is the kernel passthrough mode (default auto).
	Passthrough Mode

	// Locks says where locks live (default: the kernel's).
	Locks LockMode

	// AllowPassthrough is asked on every open and create of a regular file
	// while kernel passthrough is available: false makes that open serve its
	// reads and writes in the daemon (where they can be inspected or
	// transformed). nil allows every open.
	AllowPassthrough func(ctx context.Context, o *OpenInfo) bool

	// Timeouts decides the cache timeouts of every entry the kernel is
	// given (LOOKUP, CREATE, MKDIR, MKNOD, SYMLINK, LINK, READDIRPLUS) and
	// of negative lookups (EntryInfo.Exists false). The attribute timeout
	// is remembered in the node for later GETATTR/SETATTR replies. nil uses
	// EntryTimeout, AttrTimeout and NegativeTimeout.
	Timeouts func(ctx context.Context, e *EntryInfo) Timeouts

	// Default timeouts: zero means one second; a negative value means no
	// caching.
	EntryTimeout    time.Duration
	AttrTimeout     time.Duration
	NegativeTimeout time.Duration

	// Policy, when set, decides every request from the caller's uid, gid,
	// groups and pid (policy_linux.go, docs/POLICY.md): requests are mapped
	// onto policy operations on the paths they touch, denials answer the
	// policy's errno and are audited, listings leave out what the caller
	// may not look up, entries carry the policy's cache timeouts (the
	// Timeouts hook and the default timeouts are then unused), opens use
	// passthrough only where the policy allows it, and redacted opens are
	// served by the daemon with the redacted bytes zeroed. SetPolicy
	// replaces the policy of a live mount.
	Policy *policy.Engine

	// InvalidateEntries makes SetPolicy invalidate the kernel's cached
	// names one by one (FUSE_NOTIFY_INVAL_ENTRY), as it does on kernels
	// without FUSE_NOTIFY_INC_EPOCH (before Linux 6.16), even where the
	// kernel has it: for testing that path on a current kernel.
	InvalidateEntries bool

	// Check is the gate every request passes before it touches the lower
	// tree, after the Policy: a non-nil error (a syscall.Errno) answers the
	// request. nil lets everything through.
	Check func(ctx context.Context, a *Access) error

	// MaxDescriptors bounds the O_PATH descriptors kept for nodes; beyond
	// it the least recently used are closed and reopened from their file
	// handles when needed. Default: three quarters of RLIMIT_NOFILE.
	MaxDescriptors int

	// Mountpoint is where the FS is mounted. When set, lookups refuse to
	// descend into that mount (a lower tree that contains its own mount
	// point), which would make the daemon call into itself.
	Mountpoint string
}

func (o *Options) timeout(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return time.Second
	case d < 0:
		return 0
	}
	return d
}

// OpenInfo describes an open for the AllowPassthrough hook.
type OpenInfo struct {
	Caller fusedev.Caller
	Flags  uint32 // open(2) flags
	Create bool   // CREATE or TMPFILE rather than OPEN

	fs *FS
	n  *node
}

// Path returns the path of the file being opened, relative to the lower
// root and starting with "/".
func (o *OpenInfo) Path() string { return o.fs.pathOf(o.n, "") }

// EntryInfo describes an entry for the Timeouts hook.
type EntryInfo struct {
	Caller fusedev.Caller
	Name   string
	Exists bool   // false for a negative lookup
	Mode   uint32 // st_mode of the entry (0 when !Exists)

	fs     *FS
	parent *node
}

// Path returns the entry's path relative to the lower root, starting with
// "/".
func (e *EntryInfo) Path() string { return e.fs.pathOf(e.parent, e.Name) }

// Access describes a request at the gate (Options.Check).
type Access struct {
	Request *fusedev.Request // opcode and caller
	// Name is the name the request is about within the node (LOOKUP,
	// CREATE, UNLINK, the old name of RENAME, ...); empty when the request
	// is about the node itself.
	Name string
	// NewName and NewParent describe the second name of RENAME and LINK
	// (LINK: Name is the new name in the node, the linked node is NewParent).
	NewName string
	// OpenFlags are the open(2) flags of OPEN, CREATE and TMPFILE (0 for
	// other requests), so the gate can tell an open for reading from one
	// for writing.
	OpenFlags uint32

	fs        *FS
	n         *node
	newParent *node
}

// Path returns the path the request is about, relative to the lower root
// and starting with "/".
func (a *Access) Path() string { return a.fs.pathOf(a.n, a.Name) }

// NewPath returns the destination of RENAME, or the existing file of LINK.
func (a *Access) NewPath() string {
	if a.newParent == nil {
		return ""
	}
	return a.fs.pathOf(a.newParent, a.NewName)
}
