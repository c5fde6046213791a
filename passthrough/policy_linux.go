package passthrough

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/policy"
	"github.com/fusegate/fusegate/policy/redact"
)

// This file is the per-caller policy enforcement of the mirror
// (Options.Policy): which policy operations each request needs (requestOps),
// the object they are decided on (its path, and its owner and type from the
// lower file system), the decision, its audit, the filtering of listings,
// redaction, and the swap of the policy with the invalidation of what the
// kernel cached under the old one (SetPolicy). The rules are in
// docs/POLICY.md ("What the file system must do").

// enforcer is the policy in force; FS.pol holds it (nil: no policy).
type enforcer struct {
	// eng decides every request, counts the decisions and audits denials.
	eng *policy.Engine
	// probe holds the same policy and is asked, without counting, whether
	// an unredacted open is of a file some other caller would read
	// redacted (redactable).
	probe *policy.Engine
}

// policyState is the FS's policy: what SetPolicy swaps.
type policyState struct {
	pol  atomic.Pointer[enforcer]
	eng  *policy.Engine // Options.Policy: kept while the policy is off
	mu   sync.Mutex     // serialises SetPolicy
	tree sync.RWMutex   // directory renames (write) against entry creation (read); see renameDir
}

// probeUID is the caller the probe engine is asked about: an app uid no
// policy lists or trusts in practice, owning nothing.
const probeUID = math.MaxUint32 - 1

// Policy returns the engine deciding requests, or nil when no policy is in
// force (none was given, or SetPolicy(nil) turned it off).
func (fs *FS) Policy() *policy.Engine {
	if e := fs.ps.pol.Load(); e != nil {
		return e.eng
	}
	return nil
}

// initPolicy sets up Options.Policy at New.
func (fs *FS) initPolicy() {
	fs.ps.eng = fs.opts.Policy
	if fs.ps.eng != nil {
		fs.ps.pol.Store(newEnforcer(fs.ps.eng))
	}
}

func newEnforcer(eng *policy.Engine) *enforcer {
	l := logrus.New()
	l.Out = discard{}
	return &enforcer{eng: eng, probe: policy.NewEngine(eng.Policy(), policy.Options{Logger: l})}
}

// ErrNoPolicyEngine is returned by SetPolicy when the FS was made without
// Options.Policy.
var ErrNoPolicyEngine = errors.New("passthrough: no policy engine (Options.Policy is nil)")

// SetPolicy makes p the policy deciding requests from now on (nil: none;
// every request is let through) and then makes sure no decision of the
// previous policy survives in the kernel's caches: it asks the kernel to
// consider every cached name stale (FUSE_NOTIFY_INC_EPOCH, Linux 6.16+), or,
// on older kernels, invalidates the entry of every node the kernel holds
// (FUSE_NOTIFY_INVAL_ENTRY, one per node). Requests being decided finish with
// the previous policy; files already open stay open.
//
// It is how both `fusegate mount --policy` (on SIGHUP) and the daemon (on
// reload) change the policy of a live mount. The engine (Options.Policy)
// keeps its identity, audit state and rate limits; its counters start again.
func (fs *FS) SetPolicy(p *policy.Policy) (Invalidation, error) {
	ps := &fs.ps
	if ps.eng == nil {
		if p == nil {
			return Invalidation{}, nil
		}
		return Invalidation{}, ErrNoPolicyEngine
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p == nil {
		ps.pol.Store(nil)
	} else {
		ps.eng.Swap(p)
		ps.pol.Store(newEnforcer(ps.eng))
	}
	return fs.invalidateAll(), nil
}

// Invalidation says how SetPolicy dropped the kernel's cached names.
type Invalidation struct {
	// Epoch: the kernel was asked to treat every cached name as stale.
	Epoch bool
	// Entries is the number of names invalidated one by one (kernels
	// without FUSE_NOTIFY_INC_EPOCH); Failed counts the notifications the
	// kernel refused for another reason than not having the name cached.
	Entries, Failed int
	// Err is why nothing could be invalidated (not mounted yet, ...).
	Err error `json:"-"`
}

func (i Invalidation) String() string {
	switch {
	case i.Err != nil:
		return "none (" + i.Err.Error() + ")"
	case i.Epoch:
		return "epoch"
	}
	return fmt.Sprintf("%d entries", i.Entries)
}

// invalidateAll drops the kernel's cached names.
func (fs *FS) invalidateAll() Invalidation {
	srv := fs.srv.Load()
	if srv == nil || srv.Negotiated() == nil {
		return Invalidation{Err: fusedev.ErrNotReady}
	}
	if fs.opts.InvalidateEntries {
		return fs.invalEntries(srv)
	}
	err := srv.NotifyIncEpoch()
	if err == nil {
		return Invalidation{Epoch: true}
	}
	if !errors.Is(err, syscall.ENOSYS) && !errors.Is(err, syscall.EINVAL) {
		fs.log.WithError(err).Warn("policy: FUSE_NOTIFY_INC_EPOCH failed; invalidating cached names one by one")
	}
	return fs.invalEntries(srv)
}

// invalEntries invalidates the kernel's entry of every node it holds (a
// lookup count above zero), by parent and name: what the kernel may have
// cached under the previous policy. Negative entries (names answered absent
// with a timeout, only where the policy lets every caller look them up) are
// not known to the FS and expire with their timeout.
func (fs *FS) invalEntries(srv *fusedev.Server) Invalidation {
	type entry struct {
		parent uint64
		name   string
	}
	var ents []entry
	fs.mu.Lock()
	fs.treeMu.RLock()
	for _, n := range fs.nodes {
		if n == fs.root || n.lookups == 0 || n.parent == nil || n.name == "" {
			continue
		}
		ents = append(ents, entry{n.parent.id, n.name})
	}
	fs.treeMu.RUnlock()
	fs.mu.Unlock()
	inv := Invalidation{}
	// No lock is held here: the kernel takes the parent directory's lock
	// for each notification, which a request in flight may hold.
	for _, e := range ents {
		err := srv.NotifyInvalEntry(e.parent, e.name, fusedev.InvalEntryOptions{})
		switch {
		case err == nil:
			inv.Entries++
		case errors.Is(err, syscall.ENOENT):
			// Not cached (any more).
		default:
			inv.Failed++
		}
	}
	return inv
}

// policyPath turns pathOf's "/a/b" into the policy's "a/b" ("" for the root).
func policyPath(p string) string { return strings.TrimPrefix(p, "/") }

// objectOf describes a file for the policy: st is its attributes on the
// lower file system, nil when it does not exist.
func objectOf(path string, st *unix.Statx_t) policy.Object {
	o := policy.Object{Path: path}
	if st != nil {
		o.Exists = true
		o.Dir = st.Mode&unix.S_IFMT == unix.S_IFDIR
		o.Owner = st.Uid
	}
	return o
}

// callerOf is the caller of r as the policy sees it: the request header's
// uid, gid and pid, and the supplementary groups of the process (read from
// /proc, cached briefly), which policies may trust.
func (fs *FS) callerOf(r *fusedev.Request) policy.Caller {
	return policy.Caller{UID: r.UID, GID: r.GID, PID: r.PID, Groups: fs.groups.get(r.PID, r.UID, r.GID)}
}

// opPair is the policy operations one object of a request needs, in the
// order they are decided; unused slots are 0.
type opPair [2]policy.Op

// reqArgs is what besides the opcode decides a request's operations.
type reqArgs struct {
	openFlags   uint32           // OPEN, CREATE: open(2) flags
	setattrMask abi.SetattrValid // SETATTR: FATTR_* valid bits
	renameFlags uint32           // RENAME2: RENAME_* flags
	exists      bool             // CREATE: the name exists (the request opens it)
}

// requestOps maps a request onto the policy operations it needs: first on
// the object the request is about (the name it carries, or its node), second
// on its other object (the target of RENAME, the existing file of LINK).
// Requests that map to nothing are decided when their file was opened (READ,
// WRITE, FLUSH, RELEASE, FSYNC, LSEEK, locks), forget nothing, or are
// refused under a policy (TMPFILE).
func requestOps(op abi.Opcode, x reqArgs) (first, second opPair) {
	switch op {
	case abi.OpLookup, abi.OpGetattr, abi.OpStatx, abi.OpAccess, abi.OpReadlink,
		abi.OpGetxattr, abi.OpListxattr, abi.OpStatfs, abi.OpSyncfs:
		return opPair{policy.OpLookup}, opPair{}
	case abi.OpOpendir, abi.OpReaddir, abi.OpReaddirplus:
		return opPair{policy.OpReadDir}, opPair{}
	case abi.OpOpen:
		return openOps(x.openFlags), opPair{}
	case abi.OpCreate:
		if x.exists {
			// O_CREAT of an existing name opens it.
			return openOps(x.openFlags), opPair{}
		}
		return opPair{policy.OpCreate}, opPair{}
	case abi.OpMknod, abi.OpSymlink:
		return opPair{policy.OpCreate}, opPair{}
	case abi.OpMkdir:
		return opPair{policy.OpMkdir}, opPair{}
	case abi.OpLink:
		// The new name is created; the linked file becomes reachable
		// elsewhere, as by a rename away from its path.
		return opPair{policy.OpCreate}, opPair{policy.OpRenameFrom}
	case abi.OpUnlink, abi.OpRmdir:
		return opPair{policy.OpDelete}, opPair{}
	case abi.OpRename, abi.OpRename2:
		if x.renameFlags&unix.RENAME_EXCHANGE != 0 {
			// Each file moves to the other's path.
			return opPair{policy.OpRenameFrom, policy.OpRenameTo}, opPair{policy.OpRenameTo, policy.OpRenameFrom}
		}
		return opPair{policy.OpRenameFrom}, opPair{policy.OpRenameTo}
	case abi.OpSetattr:
		return setattrOps(x.setattrMask), opPair{}
	case abi.OpSetxattr, abi.OpRemovexattr, abi.OpFallocate, abi.OpCopyFileRange:
		return opPair{policy.OpWrite}, opPair{}
	}
	return opPair{}, opPair{}
}

// openOps are the operations of an open with open(2) flags f: read, write
// or both by the access mode; O_TRUNC writes.
func openOps(f uint32) opPair {
	switch f & unix.O_ACCMODE {
	case unix.O_RDONLY:
		if f&unix.O_TRUNC != 0 {
			return opPair{policy.OpRead, policy.OpWrite}
		}
		return opPair{policy.OpRead}
	case unix.O_WRONLY:
		return opPair{policy.OpWrite}
	}
	return opPair{policy.OpRead, policy.OpWrite}
}

// setattrOps are the operations of a SETATTR: chmod and chown are setattr;
// truncation and times are writes; a SETATTR changing nothing (what the
// kernel sends to clear set-id bits after a write) is a write too.
func setattrOps(valid abi.SetattrValid) opPair {
	var p opPair
	i := 0
	if valid&(abi.FattrMode|abi.FattrUID|abi.FattrGID) != 0 {
		p[i] = policy.OpSetattr
		i++
	}
	const writes = abi.FattrSize | abi.FattrAtime | abi.FattrMtime | abi.FattrAtimeNow | abi.FattrMtimeNow
	if valid&writes != 0 || i == 0 {
		p[i] = policy.OpWrite
	}
	return p
}

// decide decides ops on obj for c. The first denial is audited and
// returned with its errno. For two allowed opens (O_RDWR) the open may use
// passthrough only if both say so, and gets both redactions.
func (e *enforcer) decide(ctx context.Context, c *policy.Caller, ops opPair, obj policy.Object) (policy.Decision, error) {
	var d policy.Decision
	for i, op := range ops {
		if op == 0 {
			break
		}
		di := e.eng.Decide(ctx, *c, op, obj)
		if !di.Allowed {
			e.eng.Audit(*c, op, obj, di)
			return di, di.Err()
		}
		if i == 0 {
			d = di
			continue
		}
		d.Passthrough = d.Passthrough && di.Passthrough
		d.Redact |= di.Redact
	}
	return d, nil
}

// target is an object of a request, name in n (n itself when name is ""),
// with what tells its lower attributes: st when known, else a stat of name
// in the directory descriptor fd (of fd itself when name is "") when fd is
// >= 0; with neither, the object does not exist.
type target struct {
	n    *node
	name string
	st   *unix.Statx_t
	fd   int
}

// attrs returns the target's lower attributes (nil: it does not exist),
// statting into buf when needed.
func (t *target) attrs(buf *unix.Statx_t) *unix.Statx_t {
	if t.st != nil || t.fd < 0 {
		return t.st
	}
	var err error
	if t.name != "" {
		err = statxAt(t.fd, t.name, buf)
	} else {
		err = statxFd(t.fd, buf)
	}
	if err != nil {
		return nil
	}
	return buf
}

// object describes the target for the policy.
func (fs *FS) object(t *target, buf *unix.Statx_t) policy.Object {
	return objectOf(policyPath(fs.pathOf(t.n, t.name)), t.attrs(buf))
}

// admit is the gate of a request about one object: the policy (when one is
// in force) decides the request's operations (requestOps) on it, a denial
// is audited and answers the request; then Options.Check is asked. The
// decision has an empty Rule when no policy decided.
func (fs *FS) admit(ctx context.Context, r *fusedev.Request, t target, x reqArgs) (policy.Decision, error) {
	var d policy.Decision
	if e := fs.ps.pol.Load(); e != nil {
		if ops, _ := requestOps(r.Opcode, x); ops[0] != 0 {
			var buf unix.Statx_t
			c := fs.callerOf(r)
			obj := fs.object(&t, &buf)
			if r.Opcode == abi.OpMkdir {
				obj.Dir = true
			}
			var err error
			if d, err = e.decide(ctx, &c, ops, obj); err != nil {
				return d, err
			}
		}
	}
	if fs.opts.Check == nil {
		return d, nil
	}
	return d, fs.opts.Check(ctx, &Access{Request: r, Name: t.name, OpenFlags: x.openFlags, fs: fs, n: t.n})
}

// admit2 is admit for requests about two objects: RENAME (t to t2) and
// LINK (the new name t of the existing file t2).
func (fs *FS) admit2(ctx context.Context, r *fusedev.Request, t, t2 target, x reqArgs) (policy.Decision, error) {
	var d policy.Decision
	if e := fs.ps.pol.Load(); e != nil {
		first, second := requestOps(r.Opcode, x)
		var buf, buf2 unix.Statx_t
		c := fs.callerOf(r)
		obj, obj2 := fs.object(&t, &buf), fs.object(&t2, &buf2)
		if r.Opcode != abi.OpLink {
			// A free name is described as what moves there.
			if !obj2.Exists {
				obj2.Dir = obj.Dir
			}
			if !obj.Exists {
				obj.Dir = obj2.Dir
			}
		}
		var err error
		if d, err = e.decide(ctx, &c, first, obj); err != nil {
			return d, err
		}
		if _, err = e.decide(ctx, &c, second, obj2); err != nil {
			return d, err
		}
	}
	if fs.opts.Check == nil {
		return d, nil
	}
	return d, fs.opts.Check(ctx, &Access{Request: r, Name: t.name, NewName: t2.name, fs: fs, n: t.n, newParent: t2.n})
}

// entryLock holds off the check of a directory rename (renameDir) while an
// entry is made under a policy; it returns the unlock.
func (fs *FS) entryLock() func() {
	if fs.ps.pol.Load() == nil {
		return func() {}
	}
	fs.ps.tree.RLock()
	return fs.ps.tree.RUnlock
}

// redone is the decision for a request a predecessor process already did
// (resent after a restart, its intent record says done): it is not decided
// again, since what it changed would now decide it differently; only its
// entry's cache timeouts are needed, from the probe engine, which counts
// and audits nothing.
func (fs *FS) redone(ctx context.Context, r *fusedev.Request, t target) policy.Decision {
	e := fs.ps.pol.Load()
	if e == nil {
		return policy.Decision{}
	}
	var buf unix.Statx_t
	d := e.probe.Decide(ctx, fs.callerOf(r), policy.OpLookup, fs.object(&t, &buf))
	d.Allowed = true
	return d
}

// decided reports whether d came from a policy.
func decided(d *policy.Decision) bool { return d.Rule != "" }

// timeoutsOf are the cache timeouts of a decided entry.
func timeoutsOf(d *policy.Decision) Timeouts {
	return Timeouts{Entry: d.EntryTimeout, Attr: d.AttrTimeout}
}

// visible decides whether caller c may see name (attributes st, nil when it
// vanished) in directory n, for filtering a listing: a lookup decision,
// never audited (an entry the caller may not see is left out silently).
func (e *enforcer) visible(ctx context.Context, fs *FS, c *policy.Caller, n *node, name string, st *unix.Statx_t) policy.Decision {
	return e.eng.Decide(ctx, *c, policy.OpLookup, objectOf(policyPath(fs.pathOf(n, name)), st))
}

// redactable reports whether some caller other than the owner would read
// the file obj redacted: the probe (an app with no roles that owns nothing)
// is. Every open of such a file is served by the daemon with FOPEN_DIRECT_IO
// (see ioMode).
func (e *enforcer) redactable(ctx context.Context, obj policy.Object) bool {
	uid := uint32(probeUID)
	if obj.Owner == uid {
		uid--
	}
	return e.probe.Decide(ctx, policy.Caller{UID: uid, GID: uid}, policy.OpRead, obj).Redact != 0
}

// ioMode is how an open does its I/O, as the policy decided it.
type ioMode int

const (
	// ioAny: kernel passthrough when allowed, else the page cache.
	ioAny ioMode = iota
	// ioDaemon: no passthrough; the page cache (the decision forbids
	// passthrough, e.g. passthrough = false).
	ioDaemon
	// ioDirect: no passthrough and no page cache (FOPEN_DIRECT_IO): an
	// unredacted open of a redactable file, so that its bytes never enter
	// the inode's page cache that a redacted open could map.
	ioDirect
	// ioRedact: ioDirect, and reads return zeros over the redacted ranges.
	ioRedact
)

// ioModeOf is the I/O mode an allowed open gets.
func (e *enforcer) ioModeOf(ctx context.Context, d *policy.Decision, obj policy.Object) ioMode {
	switch {
	case d.Redact != 0:
		return ioRedact
	case e.redactable(ctx, obj):
		return ioDirect
	case !d.Passthrough:
		return ioDaemon
	}
	return ioAny
}

// redaction is what a redacted open zeroes: the ranges of the lower file,
// computed again when the file changed.
type redaction struct {
	what   policy.Redaction
	mu     sync.Mutex
	stamp  stamp          // guarded by mu: the file the ranges were computed for
	ranges []redact.Range // guarded by mu
	ok     bool           // guarded by mu: ranges computed
}

// fdReader reads a descriptor at offsets (io.ReaderAt).
type fdReader int

func (f fdReader) ReadAt(p []byte, off int64) (int, error) {
	got := 0
	for got < len(p) {
		n, err := unix.Pread(int(f), p[got:], off+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return got, err
		}
		if n == 0 {
			return got, io.EOF
		}
		got += n
	}
	return got, nil
}

// rangesFor returns the ranges to zero in reads of fd, computing them when
// the file changed since the last time (a writer may have changed its
// metadata), and the stamp of the file they are for. A file whose ranges cannot be computed (an I/O error) is
// refused rather than served unredacted.
func (rd *redaction) rangesFor(fd int) ([]redact.Range, stamp, error) {
	var st unix.Statx_t
	if err := statxFd(fd, &st); err != nil {
		return nil, stamp{}, err
	}
	s := stampOf(&st)
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.ok && rd.stamp == s {
		return rd.ranges, s, nil
	}
	var rs []redact.Range
	if rd.what&policy.RedactLocation != 0 {
		var err error
		rs, err = redact.LocationRanges(fdReader(fd), int64(st.Size))
		if err != nil && !errors.Is(err, redact.ErrMalformed) {
			return nil, s, syscall.EIO
		}
		// A malformed file comes with ranges that hide whatever could
		// not be parsed: apply them.
	}
	rd.ranges, rd.stamp, rd.ok = rs, s, true
	return rs, s, nil
}

// A redacted open stays redacted across a restart: its handle's record in
// the restart state (state_linux.go) carries these bits above the open
// flags and the I/O mode bits.
const (
	handleRedacted = 1 << 40
	redactShift    = 41 // the policy.Redaction bits
)

// policyBits are the bits of h's restart record that say it is redacted.
func (h *handle) policyBits() uint64 {
	if h.rd == nil {
		return 0
	}
	return handleRedacted | uint64(h.rd.what)<<redactShift
}

// restorePolicyBits makes a handle restored from its record (bits) as
// redacted as it was. Called before the handle is published.
func (h *handle) restorePolicyBits(bits uint64) {
	if bits&handleRedacted == 0 {
		return
	}
	h.rd = &redaction{what: policy.Redaction(bits >> redactShift)}
	h.n.io.mu.Lock()
	h.n.io.redacted++
	h.n.io.mu.Unlock()
}

// maxRenameWalk bounds the entries below a directory that an app renames
// (see renameDir); beyond it the rename answers EXDEV, and mv(1) and the
// like copy and delete file by file, each decided on its own.
const maxRenameWalk = 10000

// renameDir checks, for an untrusted caller renaming a directory (fd, at
// path from) to the path to, every entry below it: each must be allowed
// rename_from at its path and rename_to at the path it will have, or a
// rename of a directory would move files the caller may not move (another
// app's photos in a shared album, say) across an ownership boundary. A
// denial answers EACCES (not ENOENT, whatever the entry's rule says: the
// caller can see the directory), and is audited. It is called with
// ps.tree held for writing, so that nothing is created in the tree
// meanwhile.
func (fs *FS) renameDir(ctx context.Context, e *enforcer, c *policy.Caller, fd int, from, to string) error {
	left := maxRenameWalk
	return fs.walkRename(ctx, e, c, fd, from, to, &left, 0)
}

func (fs *FS) walkRename(ctx context.Context, e *enforcer, c *policy.Caller, dirfd int, from, to string, left *int, depth int) error {
	if depth > 256 {
		return syscall.EXDEV
	}
	fd, err := fs.openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	self := fs.selfDev.Load()
	for {
		if err := ctx.Err(); err != nil {
			return syscall.EINTR
		}
		n, err := unix.Getdents(fd, *bp)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for b := (*bp)[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := direntName(b[19:reclen])
			b = b[reclen:]
			if name == "." || name == ".." {
				continue
			}
			if *left--; *left < 0 {
				return syscall.EXDEV
			}
			var st unix.Statx_t
			if err := statxAt(fd, name, &st); err != nil {
				if err == unix.ENOENT {
					continue
				}
				return err
			}
			if self != 0 && devOf(&st) == self {
				return syscall.ELOOP
			}
			src, dst := from+"/"+name, to+"/"+name
			for _, step := range [2]struct {
				op   policy.Op
				path string
			}{{policy.OpRenameFrom, src}, {policy.OpRenameTo, dst}} {
				obj := objectOf(step.path, &st)
				if d := e.eng.Decide(ctx, *c, step.op, obj); !d.Allowed {
					e.eng.Audit(*c, step.op, obj, d)
					return syscall.EACCES
				}
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				cfd, err := openPath(fd, name)
				if err != nil {
					return err
				}
				err = fs.walkRename(ctx, e, c, cfd, src, dst, left, depth+1)
				unix.Close(cfd)
				if err != nil {
					return err
				}
			}
		}
	}
}

// direntName is the NUL-terminated name of a linux_dirent64.
func direntName(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// PolicyStats are the policy's counters of an FS (for --stats-file and the
// control socket).
type PolicyStats struct {
	Policy        string             `json:"policy"`
	Rules         []policy.RuleStats `json:"rules"`
	RedactedOpens uint64             `json:"redacted_opens"` // opens whose reads are redacted
	DirectOpens   uint64             `json:"direct_opens"`   // unredacted opens of redactable files (FOPEN_DIRECT_IO)
	Filtered      uint64             `json:"filtered"`       // directory entries left out of listings
}

// PolicyStats returns the policy's counters, nil without a policy.
func (fs *FS) PolicyStats() *PolicyStats {
	e := fs.ps.pol.Load()
	if e == nil {
		return nil
	}
	return &PolicyStats{
		Policy:        e.eng.Policy().Name(),
		Rules:         e.eng.Stats(),
		RedactedOpens: fs.stats.redactedOpens.Load(),
		DirectOpens:   fs.stats.directOpens.Load(),
		Filtered:      fs.stats.filtered.Load(),
	}
}
