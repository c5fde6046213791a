package passthrough

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdCache bounds the O_PATH descriptors held for nodes: the least recently
// used descriptors of nodes that have a file handle are closed beyond max,
// and reopened from the handle (open_by_handle_at) when used again. A
// descriptor in use (pinned) is never closed; nodes without a handle keep
// theirs.
type fdCache struct {
	mu         sync.Mutex
	head, tail *node       // guarded by mu: LRU list, most recent first
	count      int         // guarded by mu: descriptors in the list
	max        int         // evict beyond this many
	mounts     map[int]int // guarded by mu: mount id → a readable directory descriptor on it
	byHandle   bool        // guarded by mu: open_by_handle_at works (CAP_DAC_READ_SEARCH)
	reopens    uint64      // guarded by mu
	evictions  uint64      // guarded by mu
}

func (c *fdCache) init(max int) {
	c.max = max
	c.mounts = make(map[int]int)
	c.byHandle = true
}

func (c *fdCache) hasMount(mnt int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.mounts[mnt]
	return ok
}

func (c *fdCache) addMount(mnt, fd int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.mounts[mnt]; ok {
		unix.Close(fd)
		return
	}
	c.mounts[mnt] = fd
}

// closeAll closes every descriptor (Destroy).
func (c *fdCache) closeAll(nodes map[uint64]*node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range nodes {
		if n.fd >= 0 {
			unix.Close(n.fd)
			n.fd = -1
		}
	}
	for m, fd := range c.mounts {
		unix.Close(fd)
		delete(c.mounts, m)
	}
	c.head, c.tail, c.count = nil, nil, 0
}

func (c *fdCache) pushFront(n *node) {
	n.prev, n.next = nil, c.head
	if c.head != nil {
		c.head.prev = n
	}
	c.head = n
	if c.tail == nil {
		c.tail = n
	}
	c.count++
}

func (c *fdCache) unlink(n *node) {
	if n.prev != nil {
		n.prev.next = n.next
	} else if c.head == n {
		c.head = n.next
	} else {
		return // not in the list
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		c.tail = n.prev
	}
	n.prev, n.next = nil, nil
	c.count--
}

// evictable reports whether n's descriptor may be closed and reopened
// later, as far as is known before trying to make its handle.
func evictable(n *node) bool { return !n.sticky }

// insert gives n its first descriptor (adopt).
func (c *fdCache) insert(fs *FS, n *node, fd int) {
	c.mu.Lock()
	n.fd = fd
	if evictable(n) {
		c.pushFront(n)
	}
	victims := c.evictLocked(fs)
	c.mu.Unlock()
	closeAll(victims)
}

// evictLocked takes descriptors off the cold end of the list until at
// most max remain; it returns them for the caller to close outside the
// lock.
func (c *fdCache) evictLocked(fs *FS) []int {
	if c.count <= c.max {
		return nil
	}
	var victims []int
	for n := c.tail; n != nil && c.count > c.max; {
		prev := n.prev
		// An open file keeps its node's descriptor: it may be unlinked,
		// and not every file system opens such an inode from its handle.
		if n.pins == 0 && n != fs.root && n.inUse.Load() == 0 && c.handleOf(fs, n, n.fd) {
			c.unlink(n)
			victims = append(victims, n.fd)
			n.fd = -1
			c.evictions++
		}
		n = prev
	}
	return victims
}

// shrink closes unpinned descriptors down to half of max: the answer to
// running out of descriptors (EMFILE).
func (c *fdCache) shrink(fs *FS) {
	c.mu.Lock()
	max := c.max
	c.max /= 2
	victims := c.evictLocked(fs)
	c.max = max
	c.mu.Unlock()
	closeAll(victims)
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// kill closes n's descriptor once nothing uses it (the node was forgotten).
func (c *fdCache) kill(n *node) {
	c.mu.Lock()
	n.dead = true
	fd := -1
	if n.pins == 0 && n.fd >= 0 {
		c.unlink(n)
		fd, n.fd = n.fd, -1
	}
	c.mu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
}

// pin returns a descriptor of n that stays open until unpin.
func (fs *FS) pin(n *node) (int, error) {
	c := &fs.fdc
	c.mu.Lock()
	if n.fd >= 0 {
		n.pins++
		if evictable(n) && c.head != n {
			c.unlink(n)
			c.pushFront(n)
		}
		fd := n.fd
		c.mu.Unlock()
		return fd, nil
	}
	c.mu.Unlock()
	fd, err := fs.reopen(n)
	if err != nil {
		return -1, err
	}
	c.mu.Lock()
	if n.fd >= 0 { // reopened concurrently
		n.pins++
		cur := n.fd
		c.mu.Unlock()
		unix.Close(fd)
		return cur, nil
	}
	n.fd = fd
	n.pins++
	c.pushFront(n)
	c.reopens++
	note := fs.st != nil && n.fh == nil && !n.sticky && !n.noHandle
	victims := c.evictLocked(fs)
	c.mu.Unlock()
	closeAll(victims)
	if note {
		fs.noteFd(n, fd)
	}
	return fd, nil
}

func (fs *FS) unpin(n *node) {
	c := &fs.fdc
	c.mu.Lock()
	n.pins--
	fd := -1
	if n.pins == 0 && n.dead && n.fd >= 0 {
		c.unlink(n)
		fd, n.fd = n.fd, -1
	}
	c.mu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
}

// reopen opens n: from its file handle (made when its descriptor was
// evicted), or else by its name in its parent, checking that the name still
// refers to the same inode (a node found by lookup gets no descriptor until
// it is used; a daemon without CAP_DAC_READ_SEARCH cannot open handles).
func (fs *FS) reopen(n *node) (int, error) {
	c := &fs.fdc
	c.mu.Lock()
	mfd, ok := c.mounts[n.mnt]
	byHandle := c.byHandle
	fh := n.fh
	c.mu.Unlock()
	if fh != nil && ok && byHandle {
		for {
			fd, err := unix.OpenByHandleAt(mfd, *fh, unix.O_PATH|unix.O_CLOEXEC)
			switch err {
			case nil:
				return fd, nil
			case unix.EINTR:
				continue
			case unix.EMFILE, unix.ENFILE:
				c.shrink(fs)
				continue
			case unix.EPERM:
				c.mu.Lock()
				c.byHandle = false
				c.mu.Unlock()
				fs.log.Info("open_by_handle_at is not permitted (no CAP_DAC_READ_SEARCH); nodes are reopened by name")
			case unix.ESTALE:
				return -1, err
			}
			break
		}
	}
	fs.treeMu.RLock()
	parent, name := n.parent, n.name
	fs.treeMu.RUnlock()
	if parent == nil || name == "" {
		return -1, syscall.ESTALE
	}
	pfd, err := fs.pin(parent)
	if err != nil {
		return -1, err
	}
	defer fs.unpin(parent)
	for try := 0; ; try++ {
		fd, err := openPath(pfd, name)
		if (err == unix.EMFILE || err == unix.ENFILE) && try == 0 {
			c.shrink(fs)
			continue
		}
		if err != nil {
			return -1, syscall.ESTALE
		}
		var st unix.Statx_t
		if statxFd(fd, &st) != nil || keyOf(&st) != n.key || btimeOf(&st) != n.btime {
			unix.Close(fd)
			return -1, syscall.ESTALE
		}
		return fd, nil
	}
}
