package passthrough

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
)

// credState is the daemon's own file system identity, restored after every
// operation done as a caller.
type credState struct {
	uid, gid uint32
	groups   []uint32 // the daemon's supplementary groups
	// canSwitch: the daemon may take any fsuid/fsgid (CAP_SETUID and
	// CAP_SETGID). Without it every operation runs as the daemon, as an
	// unprivileged FUSE server does.
	canSwitch bool
}

func (c *credState) init() {
	c.uid, c.gid = uint32(os.Geteuid()), uint32(os.Getegid())
	if gs, err := unix.Getgroups(); err == nil {
		for _, g := range gs {
			c.groups = append(c.groups, uint32(g))
		}
	}
	// Probe on a thread of its own: setfsuid reports failure only by not
	// changing anything.
	done := make(chan bool)
	go func() {
		runtime.LockOSThread()
		const probe = 65534
		ok := false
		if c.uid != probe {
			setfsuid(probe)
			ok = setfsuid(c.uid) == probe
		}
		if !ok || setfsuid(c.uid) != int(c.uid) {
			// Leave the thread locked: it dies with the goroutine.
			done <- false
			return
		}
		runtime.UnlockOSThread()
		done <- ok
	}()
	c.canSwitch = <-done
}

func setfsuid(uid uint32) int {
	r, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	return int(r)
}

func setfsgid(gid uint32) int {
	r, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
	return int(r)
}

// setgroups sets the supplementary groups of the calling thread only (the
// raw system call; Go's syscall.Setgroups changes every thread).
func setgroups(gs []uint32) unix.Errno {
	var p unsafe.Pointer
	if len(gs) > 0 {
		p = unsafe.Pointer(&gs[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(p), 0)
	return e
}

// asCaller is a switched identity to undo with done.
type asCaller struct{ switched, groups bool }

// become makes the calling goroutine's thread act with the caller's file
// system identity: fsuid, fsgid and (for callers other than root) the
// caller's supplementary groups. It locks the goroutine to its thread until
// done. Callers whose identity is the daemon's need no switch.
func (fs *FS) become(c *fusedev.Caller) asCaller {
	cs := &fs.creds
	if !cs.canSwitch || (c.UID == cs.uid && c.GID == cs.gid) {
		return asCaller{}
	}
	var groups []uint32
	setGroups := c.UID != 0 // root's groups do not matter: it has the capabilities
	if setGroups {
		groups = fs.groups.get(c.PID, c.UID, c.GID)
	}
	runtime.LockOSThread()
	if setGroups {
		if e := setgroups(groups); e != 0 {
			setgroups(nil)
		}
	}
	setfsgid(c.GID)
	setfsuid(c.UID)
	return asCaller{switched: true, groups: setGroups}
}

// done restores the daemon's identity and unlocks the thread. If the
// identity cannot be restored the thread stays locked and dies with its
// goroutine (the request's), so no other goroutine inherits it.
func (fs *FS) done(a asCaller) {
	if !a.switched {
		return
	}
	cs := &fs.creds
	setfsuid(cs.uid)
	setfsgid(cs.gid)
	ok := setfsuid(cs.uid) == int(cs.uid) && setfsgid(cs.gid) == int(cs.gid)
	if a.groups && setgroups(cs.groups) != 0 {
		ok = false
	}
	if ok {
		runtime.UnlockOSThread()
	}
}

// groupCache remembers callers' supplementary groups, read from
// /proc/PID/status, for a short time: reading them costs more than most
// operations. Entries are keyed by pid and checked against the uid and gid
// of the request, so a pid reused by another user misses.
type groupCache struct {
	mu      sync.Mutex
	entries map[uint32]groupEntry // guarded by mu
}

type groupEntry struct {
	uid, gid uint32
	groups   []uint32
	at       time.Time
}

const (
	groupTTL     = time.Second
	groupEntries = 4096
)

func (g *groupCache) init() { g.entries = make(map[uint32]groupEntry) }

func (g *groupCache) get(pid, uid, gid uint32) []uint32 {
	now := time.Now()
	g.mu.Lock()
	e, ok := g.entries[pid]
	g.mu.Unlock()
	if ok && e.uid == uid && e.gid == gid && now.Sub(e.at) < groupTTL {
		return e.groups
	}
	groups := readGroups(pid)
	g.mu.Lock()
	if len(g.entries) >= groupEntries {
		for p, e := range g.entries {
			if now.Sub(e.at) >= groupTTL {
				delete(g.entries, p)
			}
		}
		if len(g.entries) >= groupEntries {
			clear(g.entries)
		}
	}
	g.entries[pid] = groupEntry{uid: uid, gid: gid, groups: groups, at: now}
	g.mu.Unlock()
	return groups
}

// readGroups returns the "Groups:" of /proc/PID/status (the thread's own
// when pid is a thread id), or nil when the process is gone.
func readGroups(pid uint32) []uint32 {
	if pid == 0 {
		return nil
	}
	var buf [4096]byte
	fd, err := unix.Open("/proc/"+strconv.FormatUint(uint64(pid), 10)+"/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	n, _ := unix.Read(fd, buf[:])
	unix.Close(fd)
	if n <= 0 {
		return nil
	}
	b := buf[:n]
	i := bytes.Index(b, []byte("\nGroups:"))
	if i < 0 {
		return nil
	}
	b = b[i+len("\nGroups:"):]
	if j := bytes.IndexByte(b, '\n'); j >= 0 {
		b = b[:j]
	}
	var groups []uint32
	for _, f := range bytes.Fields(b) {
		v, err := strconv.ParseUint(string(f), 10, 32)
		if err == nil {
			groups = append(groups, uint32(v))
		}
	}
	return groups
}
