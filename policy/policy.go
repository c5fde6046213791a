// Package policy decides, for every request a FUSE file system receives,
// whether the calling process may do it: the per-caller permission engine of
// fusegate, modelled on the scoped storage that Android's MediaProvider
// FuseDaemon enforces on /storage/emulated.
//
// A Policy is compiled from a TOML file (see docs/POLICY.md, Parse and
// Default) into an immutable value. An Engine holds the current Policy behind
// an atomic pointer: Decide runs lock-free and allocation-free on every
// request, and Swap replaces the policy on reload with one pointer store.
//
// The package decides only. It must never do I/O in Decide (no stat, no
// /proc, no logging), never block, and never keep per-request state; the
// file system passes in what it knows about the caller and the object. The
// only I/O is in Load (reading the policy file) and in Audit (reading
// /proc/<pid>/comm and logging, only for denials that are actually logged).
package policy

import (
	"syscall"
	"time"
)

// Caller identifies the process making a request, as the kernel reports it
// in the FUSE request header (uid, gid, pid) plus, optionally, its
// supplementary groups (read by the file system from /proc when a policy
// trusts groups).
type Caller struct {
	UID, GID, PID uint32
	Groups        []uint32
}

// Op is the kind of access being decided. The file system maps every FUSE
// opcode onto one or more Ops. The zero Op is invalid and always denied.
type Op uint8

// The operations. Each names the path it is checked on.
const (
	// OpLookup resolves or inspects a name: lookup, getattr, access,
	// readlink, getxattr, listxattr, statx. The path is the name itself.
	OpLookup Op = iota + 1
	// OpReadDir lists a directory. The file system also filters each entry
	// with OpLookup, so that a caller lists only what it may look up.
	OpReadDir
	// OpRead opens a file for reading.
	OpRead
	// OpWrite opens a file for writing, truncates it, writes data, or
	// changes its xattrs or times.
	OpWrite
	// OpCreate creates a file, symlink, device node or hard link; the path
	// is the new name. For a hard link the file system should also check
	// OpRenameFrom on the existing name, since a link makes a file reachable
	// elsewhere just as a rename does.
	OpCreate
	// OpMkdir creates a directory at the path.
	OpMkdir
	// OpDelete unlinks a file or removes a directory.
	OpDelete
	// OpRenameFrom is the source end of a rename.
	OpRenameFrom
	// OpRenameTo is the target end of a rename. When the target exists
	// (and would be replaced), Object describes it.
	OpRenameTo
	// OpSetattr changes mode or ownership (chmod, chown).
	OpSetattr

	numOps // one past the last valid Op
)

// String returns the op's name as written in policy files ("rename_from").
func (o Op) String() string {
	switch o {
	case OpLookup:
		return "lookup"
	case OpReadDir:
		return "readdir"
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpCreate:
		return "create"
	case OpMkdir:
		return "mkdir"
	case OpDelete:
		return "delete"
	case OpRenameFrom:
		return "rename_from"
	case OpRenameTo:
		return "rename_to"
	case OpSetattr:
		return "setattr"
	}
	return "invalid"
}

// Valid reports whether o is one of the defined operations.
func (o Op) Valid() bool { return o > 0 && o < numOps }

// mutates reports whether o changes the file system (denied by read-only
// rules, even to trusted callers).
func (o Op) mutates() bool {
	switch o {
	case OpWrite, OpCreate, OpMkdir, OpDelete, OpRenameFrom, OpRenameTo, OpSetattr:
		return true
	}
	return false
}

// opens reports whether o is decided when a file is opened, so that the
// Passthrough and Redact fields of the decision mean something.
func (o Op) opens() bool { return o == OpRead || o == OpWrite || o == OpCreate }

// Object is what the decision is about.
type Object struct {
	// Path is relative to the mount root, '/'-separated and clean: no
	// leading or trailing '/', no empty, "." or ".." segment. "" is the
	// root. A path that is not clean is denied (EACCES, rule "invalid").
	Path string
	// Owner is the uid owning the existing object on the lower file system
	// (meaningful only when Exists). For "owner" rules to mean anything the
	// file system must create lower files owned by the calling uid.
	Owner uint32
	// Exists reports whether the object exists on the lower file system.
	Exists bool
	// Dir reports whether the object is (or, for OpMkdir, will be) a
	// directory.
	Dir bool
}

// Redaction is a set of content transformations a read must go through.
type Redaction uint8

// Redactions.
const (
	// RedactLocation: serve reads through the daemon with the file's
	// location metadata (EXIF GPS, see package policy/redact) zeroed.
	RedactLocation Redaction = 1 << iota
)

// String returns the redactions as a comma-separated list ("location").
func (r Redaction) String() string {
	if r == 0 {
		return "none"
	}
	s := ""
	if r&RedactLocation != 0 {
		s = "location"
	}
	if rest := r &^ RedactLocation; rest != 0 {
		if s != "" {
			s += ","
		}
		s += "unknown"
	}
	return s
}

// Decision is the answer to one request. THE ZERO DECISION DENIES (with
// EACCES).
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Errno is what the kernel should see when the request is denied:
	// EACCES, ENOENT (to hide that the path exists), EROFS (read-only
	// path) or EPERM. Zero means EACCES. Unused when Allowed.
	Errno syscall.Errno
	// Passthrough reports that this open (OpRead, OpWrite, OpCreate) may
	// use kernel FUSE passthrough. It is false whenever Redact is set,
	// since redacted bytes must come from the daemon.
	Passthrough bool
	// Redact lists the transformations reads through this open must
	// apply. Non-zero only for allowed OpRead/OpWrite opens of files.
	// Such an open must also bypass the kernel page cache
	// (FOPEN_DIRECT_IO): the cache of an inode is shared by every opener,
	// so redacted bytes must not be cached for others, nor may bytes
	// cached by an unredacted reader be served to this one.
	Redact Redaction
	// EntryTimeout and AttrTimeout are the kernel cache timeouts to reply
	// with for this path (for OpLookup: the entry and its attributes).
	// Zero on paths whose lookup answer depends on the caller, so that the
	// kernel's dentry cache, shared by all processes, cannot answer one
	// caller with what another one was allowed to see.
	EntryTimeout time.Duration
	AttrTimeout  time.Duration
	// Rule names the deciding rule, for audit logs and Explain: the label
	// of the first matching rule ("rule[3] app-data", "default"), or
	// "invalid" for a malformed request.
	Rule string
	// Trusted reports that the caller is trusted and bypassed the app
	// rules (only read-only rules still apply to it).
	Trusted bool
}

// Err returns nil when the request is allowed, else the errno for the
// kernel (EACCES when Errno is zero).
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	if d.Errno == 0 {
		return syscall.EACCES
	}
	return d.Errno
}

// parseErrno maps the errno names a policy file may use for denials.
func parseErrno(name string) (syscall.Errno, bool) {
	switch name {
	case "EACCES":
		return syscall.EACCES, true
	case "ENOENT":
		return syscall.ENOENT, true
	case "EPERM":
		return syscall.EPERM, true
	case "EROFS":
		return syscall.EROFS, true
	}
	return 0, false
}

// errnoName names an errno for logs and traces.
func errnoName(e syscall.Errno) string {
	switch e {
	case 0, syscall.EACCES:
		return "EACCES"
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EPERM:
		return "EPERM"
	case syscall.EROFS:
		return "EROFS"
	}
	return e.Error()
}
