package passthrough

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/internal/memstate"
)

// Restart state: what a successor process needs to go on serving the
// kernel's connection, kept current in a memfd (memstate) that systemd's fd
// store holds. Every change the kernel can observe is stored BEFORE the
// reply that lets it observe it:
//
//   - a node id handed out (LOOKUP, CREATE, MKDIR...; READDIRPLUS entries),
//     with its lower identity (dev, ino, birth time), its parent id and
//     name, and its file handle once it has one;
//   - every change of a node's lookup count (a FORGET is stored when it is
//     handled: it gets no reply, and a count stored too high only keeps a
//     node alive, while one too low would make the kernel's id unknown);
//   - renames (parent id and name, double-buffered so a half-written name is
//     never read);
//   - open files and directories (fh, node, open flags, I/O mode), stored
//     before OPEN/CREATE is answered and removed before RELEASE is;
//   - the backing id registered for a node (kernel passthrough), stored
//     before the OPEN that uses it is answered and removed before the
//     backing file is closed.
//
// A successor (FS.Restore) rebuilds the node table from the records:
// nodes are reopened lazily from their file handle (checked against dev,
// ino and birth time) or by name in their parent, open files are reopened
// with their flags (less O_CREAT, O_EXCL and O_TRUNC), and backing ids are
// adopted, not registered again: they belong to the kernel connection, which
// outlived the process.

const (
	stateMagic   = "FGPT0001"
	stateVersion = 1

	handleRecSize = 64
	handleCap     = 1 << 22 // open files at once
	nodeRecSize   = 768
	nodeCap       = 1 << 23 // nodes the kernel holds at once (6 GiB of sparse memfd)

	intentRecSize = 32
	intentCap     = 1 << 14 // non-idempotent requests in flight at once

	handlesOff = memstate.HeaderSize
	intentsOff = handlesOff + handleRecSize*handleCap
	nodesOff   = intentsOff + intentRecSize*intentCap
	// StateSize is the size of a passthrough state memfd (sparse: only the
	// pages written use memory).
	StateSize = nodesOff + nodeRecSize*nodeCap

	// Header words.
	hwNodeHigh   = 0
	hwHandleHigh = 1
	hwNextID     = 2
	hwNextFh     = 3
	hwLost       = 4 // records that did not fit: the state is incomplete
	hwIntentHigh = 5
	hwHandedOver = 6 // 1: the process handed the connection over (MarkHandedOver)

	// Node record states.
	recLive   = 1 // a node the kernel holds
	recParent = 2 // a forgotten node kept as the parent of live ones

	// Handle record states.
	recFile = 1
	recDir  = 2
)

// nodeRec is the layout of a node record.
type nodeRec struct {
	state     uint64
	id        uint64
	dev       uint64
	ino       uint64
	btimeSec  int64
	btimeNsec uint32
	typ       uint32
	lookups   uint64
	backing   uint64 // int32 backing id, 0 none
	fhInfo    uint64 // handle bytes << 32 | uint32(handle type); 0: no handle
	nameSel   uint64 // which of names is current
	fh        [128]byte
	names     [2]nameRec
}

type nameRec struct {
	parent uint64
	len    uint64
	name   [256]byte
}

type handleRec struct {
	state uint64
	fh    uint64
	node  uint64
	flags uint64 // open flags | handlePT | handleCached | policyBits (policy_linux.go)
}

const (
	handlePT     = 1 << 32
	handleCached = 1 << 33
)

func init() {
	if unsafe.Sizeof(nodeRec{}) > nodeRecSize || unsafe.Sizeof(handleRec{}) > handleRecSize || unsafe.Sizeof(intentRec{}) > intentRecSize {
		panic("passthrough: state records outgrew their slots")
	}
}

// stateDoc is the header document of a state memfd.
type stateDoc struct {
	Version    int                 `json:"version"`
	Source     string              `json:"source"`
	RootDev    uint64              `json:"root_dev"`
	RootIno    uint64              `json:"root_ino"`
	RootBtime  [2]int64            `json:"root_btime"`
	Generation uint64              `json:"generation"`
	Negotiated *fusedev.Negotiated `json:"negotiated"`
	Extra      json.RawMessage     `json:"extra,omitempty"`
}

// stateTracker writes the records. A nil *stateTracker tracks nothing.
type stateTracker struct {
	r       *memstate.Region
	nodes   *memstate.Table
	handles *memstate.Table
	intents *memstate.Table

	imu   sync.Mutex
	prior map[uint64]priorIntent // guarded by imu; the predecessor's intents, by unique
	// priorEnd is when prior's records stop waiting for their resent
	// requests; guarded by imu.
	priorEnd time.Time
	extra    []byte
	source   string
	lostLog  sync.Once
	written  atomic.Bool // the header is written
}

// TrackState makes the FS keep its restart state in r (a region of at
// least StateSize bytes, e.g. memstate.Create("...", passthrough.StateSize))
// from now on; extra is stored in the header for the caller (Restore
// returns it). Call it before serving; the header is written once INIT is
// negotiated.
func (fs *FS) TrackState(r *memstate.Region, extra []byte) error {
	if r.Size() < StateSize {
		return fmt.Errorf("passthrough: state region of %d bytes; need %d", r.Size(), StateSize)
	}
	st := newTracker(r)
	st.extra = append([]byte(nil), extra...)
	st.source = fs.source
	fs.st = st
	return nil
}

func newTracker(r *memstate.Region) *stateTracker {
	return &stateTracker{
		r:       r,
		nodes:   memstate.NewTable(r, nodesOff, nodeRecSize, nodeCap, r.HeaderWord(hwNodeHigh)),
		handles: memstate.NewTable(r, handlesOff, handleRecSize, handleCap, r.HeaderWord(hwHandleHigh)),
		intents: memstate.NewTable(r, intentsOff, intentRecSize, intentCap, r.HeaderWord(hwIntentHigh)),
	}
}

// writeHeader stores what does not change: the lower root, the node
// generation and the negotiated INIT parameters (FS.Init).
func (st *stateTracker) writeHeader(fs *FS, neg *fusedev.Negotiated) error {
	if st == nil || st.written.Load() {
		return nil
	}
	doc := stateDoc{
		Version: stateVersion, Source: st.source,
		RootDev: fs.root.key.dev, RootIno: fs.root.key.ino,
		RootBtime:  [2]int64{fs.root.btime.Sec, int64(fs.root.btime.Nsec)},
		Generation: fs.gen, Negotiated: neg, Extra: st.extra,
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	if err := st.r.WriteHeader(stateMagic, b); err != nil {
		return err
	}
	st.written.Store(true)
	return nil
}

func (st *stateTracker) lost(fs *FS, err error) {
	st.r.HeaderWord(hwLost).Add(1)
	st.lostLog.Do(func() {
		fs.log.WithError(err).Error("restart state: a record did not fit; a restart will not be able to resume this mount")
	})
}

func (st *stateTracker) node(slot uint32) *nodeRec {
	return (*nodeRec)(unsafe.Pointer(unsafe.SliceData(st.nodes.Record(slot))))
}

func (st *stateTracker) handle(slot uint32) *handleRec {
	return (*handleRec)(unsafe.Pointer(unsafe.SliceData(st.handles.Record(slot))))
}

// newNode stores a node the kernel is about to learn. fs.mu is held; n's
// parent and name are set and not yet visible to others.
func (st *stateTracker) newNode(fs *FS, n *node) {
	if st == nil {
		return
	}
	slot, err := st.nodes.Alloc()
	if err != nil {
		st.lost(fs, err)
		return
	}
	n.slot = slot + 1
	r := st.node(slot)
	r.id, r.dev, r.ino = n.id, n.key.dev, n.key.ino
	r.btimeSec, r.btimeNsec = n.btime.Sec, n.btime.Nsec
	r.typ = n.typ
	r.lookups = n.lookups
	r.nameSel = 0
	setName(&r.names[0], n.parent, n.name)
	st.nodes.State(slot).Store(recLive)
	st.r.HeaderWord(hwNextID).Store(fs.nextID)
	if n.parent != nil {
		n.parent.kids.Add(1)
	}
}

func setName(nr *nameRec, parent *node, name string) {
	var pid uint64 = 1
	if parent != nil {
		pid = parent.id
	}
	nr.parent = pid
	nr.len = uint64(copy(nr.name[:], name))
}

// lookups stores n's lookup count. fs.mu is held.
func (st *stateTracker) lookups(n *node) {
	if st == nil || n.slot == 0 {
		return
	}
	atomic.StoreUint64(&st.node(n.slot-1).lookups, n.lookups)
}

// renamed stores n's new parent and name. fs.treeMu is held for writing;
// old is the previous parent.
func (st *stateTracker) renamed(fs *FS, n, old *node) {
	if st == nil {
		return
	}
	if n.parent != nil {
		n.parent.kids.Add(1)
	}
	if old != nil {
		old.kids.Add(-1)
		st.release(fs, old)
	}
	if n.slot == 0 {
		return
	}
	r := st.node(n.slot - 1)
	next := atomic.LoadUint64(&r.nameSel) ^ 1
	setName(&r.names[next], n.parent, n.name)
	atomic.StoreUint64(&r.nameSel, next)
}

// dropped removes the record of n, which left the node table: it stays as
// a parent record while nodes in the table name it as their parent.
func (st *stateTracker) dropped(fs *FS, n *node) {
	if st == nil {
		return
	}
	fs.treeMu.Lock()
	n.gone = true
	st.release(fs, n)
	fs.treeMu.Unlock()
}

// release frees the record of a node that left the table once no node
// names it as parent, and so on up its ancestors. fs.treeMu is held.
func (st *stateTracker) release(fs *FS, n *node) {
	for n != nil && n != fs.root && n.gone {
		if n.kids.Load() > 0 {
			if n.slot != 0 {
				st.nodes.State(n.slot - 1).Store(recParent)
			}
			return
		}
		if n.slot != 0 {
			st.nodes.Free(n.slot - 1)
			n.slot = 0
		}
		p := n.parent
		if p == nil {
			return
		}
		p.kids.Add(-1)
		n = p
	}
}

// fileHandle stores n's file handle. fdCache.mu is held.
func (st *stateTracker) fileHandle(n *node) {
	if st == nil || n.slot == 0 || n.fh == nil {
		return
	}
	r := st.node(n.slot - 1)
	b := n.fh.Bytes()
	if len(b) > len(r.fh) {
		return
	}
	copy(r.fh[:], b)
	atomic.StoreUint64(&r.fhInfo, uint64(len(b))<<32|uint64(uint32(n.fh.Type())))
}

// backing stores the backing id registered for n (0: none). n.io.mu is held.
func (st *stateTracker) backing(n *node, id int32) {
	if st == nil || n.slot == 0 {
		return
	}
	atomic.StoreUint64(&st.node(n.slot-1).backing, uint64(uint32(id)))
}

// openHandle stores an open file or directory.
func (st *stateTracker) openHandle(fs *FS, fh uint64, h *handle) {
	if st == nil {
		return
	}
	slot, err := st.handles.Alloc()
	if err != nil {
		st.lost(fs, err)
		return
	}
	h.slot = slot + 1
	r := st.handle(slot)
	r.fh, r.node = fh, h.n.id
	r.flags = uint64(h.flags)
	if h.pt {
		r.flags |= handlePT
	}
	if h.cached {
		r.flags |= handleCached
	}
	r.flags |= h.policyBits()
	state := uint64(recFile)
	if h.dir {
		state = recDir
	}
	st.handles.State(slot).Store(state)
	st.r.HeaderWord(hwNextFh).Store(fh + 1)
}

// closeHandle removes an open file's record.
func (st *stateTracker) closeHandle(h *handle) {
	if st == nil || h.slot == 0 {
		return
	}
	st.handles.Free(h.slot - 1)
	h.slot = 0
}

// noteFd gives n a file handle made from its freshly opened descriptor fd,
// so that a successor can find the inode again whatever its name becomes.
func (fs *FS) noteFd(n *node, fd int) {
	if fs.st == nil || n == fs.root {
		return
	}
	c := &fs.fdc
	c.mu.Lock()
	done := n.fh != nil || n.sticky || n.noHandle
	c.mu.Unlock()
	if done {
		return
	}
	h, mnt, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		n.noHandle = true
		return
	}
	if n.fh == nil {
		if _, ok := c.mounts[mnt]; ok {
			n.fh, n.mnt = &h, mnt
		} else {
			// A submount: the handle is kept for the successor only (the
			// descriptor cache learns the mount at the first eviction).
			n.noHandle = true
			n.rfh = &h
		}
	}
	fs.st.fileHandle(n)
	if n.rfh != nil {
		fs.st.fileHandleOf(n, n.rfh)
	}
}

// fileHandleOf stores a handle other than n.fh. fdCache.mu is held.
func (st *stateTracker) fileHandleOf(n *node, h *unix.FileHandle) {
	if n.slot == 0 {
		return
	}
	r := st.node(n.slot - 1)
	b := h.Bytes()
	if len(b) > len(r.fh) {
		return
	}
	copy(r.fh[:], b)
	atomic.StoreUint64(&r.fhInfo, uint64(len(b))<<32|uint64(uint32(h.Type())))
}

// RestoreInfo is what Restore found.
type RestoreInfo struct {
	Negotiated *fusedev.Negotiated
	Extra      json.RawMessage
	Nodes      int // nodes the kernel holds
	Handles    int // open files and directories
	Lost       int // open files that could not be reopened
	Unresolved int // nodes whose inode could not be found again
}

// ErrNoState means a state memfd holds nothing to resume (its process died
// before INIT was answered, or it is not a passthrough state).
var ErrNoState = errors.New("no restart state")

// ErrUnclean means the process that kept a state ended without handing the
// connection over (killed, crashed) on a kernel without FUSE_NOTIFY_RESEND:
// the requests it read and did not answer can never be answered, so the
// connection is not worth resuming (ending it ends their callers' wait).
var ErrUnclean = errors.New("the previous process ended without handing over, and this kernel cannot resend the requests it left unanswered (FUSE_NOTIFY_RESEND, Linux 6.9)")

// MarkHandedOver records in the state that this process handed the
// connection over: nothing it read is left unanswered (call it once the
// server's Serve returned after Handover). A successor on a kernel without
// FUSE_NOTIFY_RESEND resumes only such a state.
func (fs *FS) MarkHandedOver() {
	if fs.st != nil {
		fs.st.r.HeaderWord(hwHandedOver).Store(1)
	}
}

// Restore adopts the state a predecessor kept in r (from TrackState) and
// goes on keeping it there. Call it on a fresh FS, before serving the
// connection with fusedev.Options.Resume set to the returned Negotiated.
func (fs *FS) Restore(r *memstate.Region) (*RestoreInfo, error) {
	if r.Size() < StateSize {
		return nil, fmt.Errorf("%w: state of %d bytes", ErrNoState, r.Size())
	}
	b, err := r.ReadHeader(stateMagic)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoState, err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("restart state header: %w", err)
	}
	if doc.Version != stateVersion || doc.Negotiated == nil {
		return nil, fmt.Errorf("%w: version %d", ErrNoState, doc.Version)
	}
	if doc.RootDev != fs.root.key.dev || doc.RootIno != fs.root.key.ino ||
		doc.RootBtime != [2]int64{fs.root.btime.Sec, int64(fs.root.btime.Nsec)} {
		return nil, fmt.Errorf("restart state is of another lower directory (%s, inode %d:%d)", doc.Source, doc.RootDev, doc.RootIno)
	}
	if lost := r.HeaderWord(hwLost).Load(); lost > 0 {
		return nil, fmt.Errorf("restart state is incomplete: %d records did not fit", lost)
	}
	if r.HeaderWord(hwHandedOver).Load() != 1 && !doc.Negotiated.CanResend() {
		return nil, ErrUnclean
	}
	// From now on this process serves: until it hands over in turn, an end
	// is not clean.
	r.HeaderWord(hwHandedOver).Store(0)
	st := newTracker(r)
	st.source = fs.source
	st.written.Store(true)
	info := &RestoreInfo{Negotiated: doc.Negotiated, Extra: doc.Extra}
	fs.gen = doc.Generation

	// Nodes, then their parents.
	type pending struct {
		n      *node
		parent uint64
	}
	var nodes []pending
	all := map[uint64]*node{}
	rootMnt := -1
	if _, mnt, err := unix.NameToHandleAt(fs.root.fd, "", unix.AT_EMPTY_PATH); err == nil {
		rootMnt = mnt
	}
	st.nodes.Scan(func(slot uint32, state uint64, rec []byte) {
		nr := (*nodeRec)(unsafe.Pointer(unsafe.SliceData(rec)))
		n := &node{id: nr.id, key: nodeKey{dev: nr.dev, ino: nr.ino}, typ: nr.typ, fd: -1,
			btime: unix.StatxTimestamp{Sec: nr.btimeSec, Nsec: nr.btimeNsec}, slot: slot + 1}
		n.lookups = atomic.LoadUint64(&nr.lookups)
		nm := &nr.names[atomic.LoadUint64(&nr.nameSel)&1]
		n.name = string(nm.name[:min(nm.len, uint64(len(nm.name)))])
		if info := atomic.LoadUint64(&nr.fhInfo); info != 0 {
			size := int(info >> 32)
			if size <= len(nr.fh) {
				h := unix.NewFileHandle(int32(uint32(info)), append([]byte(nil), nr.fh[:size]...))
				if n.key.dev == fs.rootDev && rootMnt >= 0 {
					n.fh, n.mnt = &h, rootMnt
				} else {
					n.rfh = &h
					n.noHandle = true
				}
			}
		}
		if id := int32(uint32(atomic.LoadUint64(&nr.backing))); id != 0 {
			n.io.backing = id
		}
		n.gone = state != recLive
		nodes = append(nodes, pending{n, nm.parent})
		all[n.id] = n
	})
	fs.mu.Lock()
	fs.nextID = max(fs.nextID, r.HeaderWord(hwNextID).Load())
	for _, p := range nodes {
		n := p.n
		if p.parent == 1 {
			n.parent = fs.root
		} else if par := all[p.parent]; par != nil {
			n.parent = par
			par.kids.Add(1)
		}
		fs.nextID = max(fs.nextID, n.id+1)
		if n.gone {
			continue
		}
		info.Nodes++
		fs.nodes[n.id] = n
		if old := fs.byKey[n.key]; old == nil || old.id < n.id {
			fs.byKey[n.key] = n
		}
	}
	fs.mu.Unlock()
	fs.st = st

	// Non-idempotent requests the predecessor had started: the kernel
	// resends those it did not answer (intent, below); the others were
	// answered, and are dropped once the resent requests had time to come.
	st.prior = map[uint64]priorIntent{}
	st.intents.Scan(func(slot uint32, state uint64, rec []byte) {
		ir := *(*intentRec)(unsafe.Pointer(unsafe.SliceData(rec)))
		st.prior[ir.unique] = priorIntent{ir, slot}
	})
	st.priorEnd = time.Now().Add(priorGrace)

	// Open files: reopened as they were opened.
	var handles []*handleRec
	var hslots []uint32
	st.handles.Scan(func(slot uint32, state uint64, rec []byte) {
		hr := *(*handleRec)(unsafe.Pointer(unsafe.SliceData(rec)))
		handles = append(handles, &hr)
		hslots = append(hslots, slot)
	})
	fs.hmu.Lock()
	fs.nextFh = max(fs.nextFh, r.HeaderWord(hwNextFh).Load())
	fs.hmu.Unlock()
	for i, hr := range handles {
		n := all[hr.node]
		if n == nil || n.gone {
			st.handles.Free(hslots[i])
			continue
		}
		h := &handle{n: n, fd: -1, dir: hr.state == recDir, flags: uint32(hr.flags),
			pt: hr.flags&handlePT != 0, cached: hr.flags&handleCached != 0, slot: hslots[i] + 1}
		if h.dir {
			h.ds = &dirStream{}
		}
		if err := fs.reopenHandle(h); err != nil {
			info.Lost++
			fs.log.WithError(err).WithField("path", fs.pathOf(n, "")).Warn("restart: an open file could not be reopened; its reads and writes fail")
		}
		if h.pt {
			n.io.ptOpens++
		}
		if h.cached {
			n.io.cachedOpens++
		}
		h.restorePolicyBits(hr.flags)
		fs.openRef(n)
		h.refs.Store(1)
		fs.hmu.Lock()
		fs.handles[hr.fh] = h
		fs.nextFh = max(fs.nextFh, hr.fh+1)
		fs.hmu.Unlock()
		info.Handles++
	}
	// A backing id whose opens were all released between storing it and
	// the release's record is kept: the next open of the node reuses it.
	for _, p := range nodes {
		n := p.n
		if n.io.backing != 0 {
			fs.stats.backingIDs.Add(1)
		}
		if n.gone && n.kids.Load() == 0 {
			fs.treeMu.Lock()
			st.release(fs, n)
			fs.treeMu.Unlock()
		}
		if !n.gone && n.parent == nil {
			info.Unresolved++
		}
	}
	return info, nil
}

// reopenHandle opens the lower file of a restored open file.
func (fs *FS) reopenHandle(h *handle) error {
	nfd, err := fs.pin(h.n)
	if err != nil {
		return err
	}
	defer fs.unpin(h.n)
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if !h.dir {
		flags = openFlags(h.flags) &^ unix.O_TRUNC
	}
	fd, err := fs.openat(unix.AT_FDCWD, procPath(nfd), flags, 0)
	if err != nil {
		return err
	}
	h.fd = fd
	return nil
}

// StateFile returns the memfd the FS keeps its restart state in, or nil.
func (fs *FS) StateFile() *memstate.Region {
	if fs.st == nil {
		return nil
	}
	return fs.st.r
}

// Non-idempotent requests (MKDIR, MKNOD, SYMLINK, LINK, UNLINK, RMDIR,
// RENAME, CREATE, and WRITE to a file opened O_APPEND) must not be done twice when the kernel resends one that
// a killed predecessor had done but not answered: the second try would fail
// (EEXIST, ENOENT) where the first succeeded. Each is recorded (intent)
// before its system call and its outcome after it; the record goes once the
// reply is written. A resent request finds its predecessor's record: a
// known outcome is answered again, an unknown one (killed during the call)
// is done again and EEXIST or ENOENT taken for the first try's success
// (an append write cut short by the crash is appended again: nothing tells
// whether the first try reached the file).

type intentRec struct {
	state  uint64 // intentStarted, intentDone
	unique uint64
	opcode uint64
	errno  uint64 // or, for a write that succeeded, intentWrote | bytes written
}

// intentWrote marks the errno word of a write that succeeded.
const intentWrote = 1 << 63

type priorIntent struct {
	intentRec
	slot uint32
}

const (
	intentStarted = 1
	intentDone    = 2
)

// intent is one non-idempotent request being done.
type intent struct {
	st   *stateTracker
	slot uint32 // +1; 0: not recorded
	// Done: the predecessor did it and its outcome was err (and n bytes
	// written, for a write). Uncertain: it may have done it.
	done, uncertain bool
	err             error
	n               int
}

// begin records that r is about to be done, or finds the predecessor's
// record of it.
func (st *stateTracker) begin(r *fusedev.Request) *intent {
	it := &intent{st: st}
	if st == nil {
		return it
	}
	st.dropPriorLater()
	if r.Resent() {
		st.imu.Lock()
		prev, ok := st.prior[r.Unique&^abi.UniqueResend]
		delete(st.prior, r.Unique&^abi.UniqueResend)
		st.imu.Unlock()
		if ok {
			it.slot = prev.slot + 1
			if prev.state == intentDone {
				it.done = true
				if prev.errno&intentWrote != 0 {
					it.n = int(prev.errno &^ intentWrote)
				} else if prev.errno != 0 {
					it.err = syscall.Errno(prev.errno)
				}
			} else {
				it.uncertain = true
			}
			r.AfterReply(it.free)
			return it
		}
	}
	slot, err := st.intents.Alloc()
	if err != nil {
		return it // not recorded: a crash now may repeat it
	}
	it.slot = slot + 1
	ir := (*intentRec)(unsafe.Pointer(unsafe.SliceData(st.intents.Record(slot))))
	ir.unique, ir.opcode = r.Unique&^abi.UniqueResend, uint64(r.Opcode)
	st.intents.State(slot).Store(intentStarted)
	r.AfterReply(it.free)
	return it
}

// finish records the outcome of the system call.
func (it *intent) finish(err error) {
	if it.slot == 0 {
		return
	}
	ir := (*intentRec)(unsafe.Pointer(unsafe.SliceData(it.st.intents.Record(it.slot - 1))))
	var e syscall.Errno
	if errors.As(err, &e) {
		ir.errno = uint64(e)
	} else if err != nil {
		ir.errno = uint64(syscall.EIO)
	} else {
		ir.errno = 0
	}
	it.st.intents.State(it.slot - 1).Store(intentDone)
}

// finishWrite records the outcome of a write: n bytes written, or err.
func (it *intent) finishWrite(n int, err error) {
	if it.slot == 0 || err != nil {
		it.finish(err)
		return
	}
	ir := (*intentRec)(unsafe.Pointer(unsafe.SliceData(it.st.intents.Record(it.slot - 1))))
	ir.errno = intentWrote | uint64(n)
	it.st.intents.State(it.slot - 1).Store(intentDone)
}

// free drops the record once the reply is written.
func (it *intent) free() {
	if it.slot != 0 {
		it.st.intents.Free(it.slot - 1)
		it.slot = 0
	}
}

// priorGrace is how long the predecessor's intent records wait for their
// resent requests; the kernel resends at once when the successor starts.
const priorGrace = 30 * time.Second

// dropPriorLater frees, once their time is up, the predecessor's records
// no resent request claimed (their requests were answered). It is checked
// as requests begin, which only happens while the state is mapped.
func (st *stateTracker) dropPriorLater() {
	st.imu.Lock()
	if len(st.prior) == 0 || time.Now().Before(st.priorEnd) {
		st.imu.Unlock()
		return
	}
	prior := st.prior
	st.prior = nil
	st.imu.Unlock()
	for _, ir := range prior {
		st.intents.Free(ir.slot)
	}
}

// tolerate turns the error of a redone request whose first try may have
// succeeded into that success.
func (it *intent) tolerate(err error, already syscall.Errno) error {
	if it.uncertain && errors.Is(err, already) {
		return nil
	}
	return err
}
