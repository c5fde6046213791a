package passthrough

import (
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nodeKey identifies a lower inode.
type nodeKey struct{ dev, ino uint64 }

// node is one lower inode the kernel holds a node id for. Its identity is
// its key and a file handle (name_to_handle_at); an O_PATH descriptor of it
// is kept in a bounded cache (fdCache) and reopened from the handle when
// needed again, so the kernel may hold many more nodes than the daemon may
// hold descriptors.
type node struct {
	id      uint64
	key     nodeKey
	typ     uint32              // S_IFMT bits
	btime   unix.StatxTimestamp // birth time, to tell a reused inode number (zero when unknown)
	lookups uint64              // guarded by FS.mu: the kernel's lookup count

	sticky     bool             // guarded by fdCache.mu: no usable handle; the descriptor stays
	fh         *unix.FileHandle // guarded by fdCache.mu: made when the descriptor is first evicted
	mnt        int              // guarded by fdCache.mu: mount id of fh
	fd         int              // guarded by fdCache.mu: O_PATH|O_NOFOLLOW descriptor, -1 when not open
	pins       int              // guarded by fdCache.mu: operations using fd now
	dead       bool             // guarded by fdCache.mu: forgotten; close fd once unpinned
	prev, next *node            // guarded by fdCache.mu: LRU list of evictable descriptors

	parent *node  // guarded by FS.treeMu: the directory it was last found in
	name   string // guarded by FS.treeMu: its name there

	attrTTL atomic.Int64 // nanoseconds the kernel may cache its attributes
	inUse   atomic.Int32 // open handles: changed under FS.mu, read without it (eviction skips such nodes)

	io    ioState   // regular files: how opens do their I/O; directories: listing cache
	locks lockState // LocksLower: the lock owners of the file

	// Restart state (state_linux.go).
	slot     uint32           // guarded by FS.mu: record slot + 1, 0 when none
	kids     atomic.Int32     // nodes whose parent this is
	gone     bool             // guarded by FS.treeMu: left the node table
	noHandle bool             // guarded by fdCache.mu: no handle usable here (rfh may hold one for a successor)
	rfh      *unix.FileHandle // guarded by fdCache.mu: a handle on another mount, for a successor
}

// ioState tracks the opens of one inode so that every open gets an I/O mode
// the kernel accepts (see iomode.c: an inode with passthrough opens refuses
// non-passthrough ones, an inode with cached opens refuses passthrough).
type ioState struct {
	mu          sync.Mutex
	backing     int32 // guarded by mu: backing id registered for the inode, 0 if none
	ptOpens     int   // guarded by mu: opens answered with FOPEN_PASSTHROUGH
	cachedOpens int   // guarded by mu: opens using the kernel page cache
	redacted    int   // guarded by mu: redacted opens (FOPEN_DIRECT_IO, reads zeroed in ranges)
	stamp       stamp // guarded by mu: the lower file when the page cache was last known good
	stampOK     bool  // guarded by mu
}

// stamp is what tells whether a lower file changed.
type stamp struct {
	mtime, ctime unix.StatxTimestamp
	size         uint64
}

func stampOf(st *unix.Statx_t) stamp {
	return stamp{mtime: st.Mtime, ctime: st.Ctime, size: st.Size}
}

func keyOf(st *unix.Statx_t) nodeKey { return nodeKey{dev: devOf(st), ino: st.Ino} }

func devOf(st *unix.Statx_t) uint64 { return unix.Mkdev(st.Dev_major, st.Dev_minor) }

func btimeOf(st *unix.Statx_t) unix.StatxTimestamp {
	if st.Mask&unix.STATX_BTIME == 0 {
		return unix.StatxTimestamp{}
	}
	return st.Btime
}

// node returns the node with the kernel's node id.
func (fs *FS) node(id uint64) (*node, error) {
	if id == 1 {
		return fs.root, nil
	}
	fs.mu.Lock()
	n := fs.nodes[id]
	fs.mu.Unlock()
	if n == nil {
		fs.log.WithField("node", id).Debug("request for an unknown node id")
		return nil, syscall.ESTALE
	}
	return n, nil
}

// get returns the node with the kernel's node id and a descriptor of it,
// pinned until put(n). It must be called with the daemon's own identity
// (reopening from a file handle needs CAP_DAC_READ_SEARCH).
func (fs *FS) get(id uint64) (*node, int, error) {
	n, err := fs.node(id)
	if err != nil {
		return nil, -1, err
	}
	fd, err := fs.pin(n)
	if err != nil {
		return nil, -1, err
	}
	return n, fd, nil
}

// put unpins the descriptor get or pin returned.
func (fs *FS) put(n *node) { fs.unpin(n) }

// adopt returns the node for the lower inode st (found as name in parent),
// taking one lookup reference. fd is an O_PATH descriptor of it that adopt
// owns (it becomes the node's descriptor, or is closed when the inode
// already has a node), or -1: the node then opens one by name when first
// used.
func (fs *FS) adopt(parent *node, name string, fd int, st *unix.Statx_t) *node {
	key := keyOf(st)
	if n := fs.existing(key, st); n != nil {
		closeFd(fd)
		fs.rename(n, parent, name)
		return n
	}
	n := &node{key: key, typ: uint32(st.Mode) & unix.S_IFMT, btime: btimeOf(st), fd: -1,
		lookups: 1, parent: parent, name: name}
	fs.mu.Lock()
	if old := fs.byKey[key]; old != nil && old.btime == n.btime {
		// Found by a concurrent lookup meanwhile.
		old.lookups++
		fs.st.lookups(old)
		fs.mu.Unlock()
		closeFd(fd)
		fs.rename(old, parent, name)
		return old
	}
	n.id = fs.nextID
	fs.nextID++
	fs.nodes[n.id] = n
	fs.byKey[key] = n
	fs.st.newNode(fs, n)
	fs.mu.Unlock()
	if fd >= 0 {
		fs.fdc.insert(fs, n, fd)
		fs.noteFd(n, fd)
	}
	return n
}

func closeFd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// existing returns the node of key with one more lookup reference, or nil.
// A node whose inode number was reused by a new inode (its birth time
// differs) is no longer found by key.
func (fs *FS) existing(key nodeKey, st *unix.Statx_t) *node {
	bt := btimeOf(st)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := fs.byKey[key]
	if n == nil {
		return nil
	}
	if n.btime != bt {
		delete(fs.byKey, key)
		return nil
	}
	n.lookups++
	fs.st.lookups(n)
	return n
}

// handleOf gives n its file handle, made from its open descriptor fd
// just before that descriptor is evicted, and reports whether it has one.
// Nodes of a lower file system without handles, or of a mount with no
// directory descriptor to open them against, keep their descriptor.
// fdCache.mu must be held.
func (c *fdCache) handleOf(fs *FS, n *node, fd int) bool {
	if n.fh != nil {
		return true
	}
	if n.sticky {
		return false
	}
	h, mnt, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		n.sticky = true
		return false
	}
	if _, ok := c.mounts[mnt]; !ok {
		if n.typ != unix.S_IFDIR {
			n.sticky = true
			return false
		}
		mfd, err := openRetry(procPath(fd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			n.sticky = true
			return false
		}
		c.mounts[mnt] = mfd
	}
	n.fh, n.mnt = &h, mnt
	fs.st.fileHandle(n)
	return true
}

// ref takes one more lookup reference on n (LINK of an existing node).
func (fs *FS) ref(n *node) {
	fs.mu.Lock()
	n.lookups++
	fs.st.lookups(n)
	fs.mu.Unlock()
}

// Forget drops nlookup references; a node forgotten to zero (and not open)
// leaves the tables and closes its descriptor.
func (fs *FS) Forget(id, nlookup uint64) {
	if id == 1 {
		return
	}
	fs.mu.Lock()
	n := fs.nodes[id]
	if n == nil {
		fs.mu.Unlock()
		return
	}
	n.lookups -= min(nlookup, n.lookups)
	fs.st.lookups(n)
	drop := fs.dropLocked(n)
	fs.mu.Unlock()
	if drop {
		fs.fdc.kill(n)
		fs.st.dropped(fs, n)
	}
}

// dropLocked removes n from the tables when nothing holds it any more and
// reports whether it did. fs.mu must be held.
func (fs *FS) dropLocked(n *node) bool {
	if n.lookups > 0 || n.inUse.Load() > 0 || n == fs.root {
		return false
	}
	delete(fs.nodes, n.id)
	if fs.byKey[n.key] == n {
		delete(fs.byKey, n.key)
	}
	return true
}

// openRef notes one more handle using n.
func (fs *FS) openRef(n *node) {
	fs.mu.Lock()
	n.inUse.Add(1)
	fs.mu.Unlock()
}

// openUnref notes a handle of n closed.
func (fs *FS) openUnref(n *node) {
	fs.mu.Lock()
	last := n.inUse.Add(-1) == 0
	drop := fs.dropLocked(n)
	fs.mu.Unlock()
	if last {
		fs.dropOwners(n)
	}
	if drop {
		fs.fdc.kill(n)
		fs.st.dropped(fs, n)
	}
}

// rename records that n is now called name in parent.
func (fs *FS) rename(n *node, parent *node, name string) {
	if n == fs.root {
		return
	}
	fs.treeMu.RLock()
	same := n.parent == parent && n.name == name
	fs.treeMu.RUnlock()
	if same {
		return
	}
	fs.treeMu.Lock()
	old := n.parent
	n.parent, n.name = parent, name
	fs.st.renamed(fs, n, old)
	fs.treeMu.Unlock()
}

// pathOf returns the path of name in n (of n itself when name is empty),
// relative to the lower root and starting with "/". Nodes whose name was
// removed keep their last path.
func (fs *FS) pathOf(n *node, name string) string {
	var parts [64]string
	names := parts[:0]
	if name != "" {
		names = append(names, name)
	}
	fs.treeMu.RLock()
	for p := n; p != nil && p != fs.root; p = p.parent {
		names = append(names, p.name)
		if len(names) > 4096 {
			break // a cycle would be a bug; never loop forever
		}
	}
	fs.treeMu.RUnlock()
	if len(names) == 0 {
		return "/"
	}
	size := 0
	for _, s := range names {
		size += 1 + len(s)
	}
	b := make([]byte, 0, size)
	for i := len(names) - 1; i >= 0; i-- {
		b = append(b, '/')
		b = append(b, names[i]...)
	}
	return string(b)
}

// procPath returns /proc/self/fd/N for a descriptor: the way to reach an
// O_PATH descriptor's inode with calls that take only a path (open,
// truncate, xattrs, link). The magic link resolves to the inode itself,
// never through the lower tree.
func procPath(fd int) string {
	var b [32]byte
	p := append(b[:0], "/proc/self/fd/"...)
	p = strconv.AppendInt(p, int64(fd), 10)
	return string(p)
}

// ttl splits a duration into the seconds and nanoseconds of a reply.
func ttl(d time.Duration) (uint64, uint32) {
	if d <= 0 {
		return 0, 0
	}
	return uint64(d / time.Second), uint32(d % time.Second)
}
