package passthrough

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
)

// FS mirrors a lower directory. It implements fusedev.FileSystem.
type FS struct {
	fusedev.NotImplemented // BMAP, IOCTL and POLL answer ENOSYS

	opts    Options
	log     logrus.FieldLogger
	root    *node
	rootDev uint64 // st_dev of the lower root
	syncFd  int    // a readable descriptor of the lower root, for SYNCFS
	gen     uint64 // generation of every node id handed out by this FS
	creds   credState

	srv     atomic.Pointer[fusedev.Server]
	selfDev atomic.Uint64 // st_dev of our own mount, once known
	pt      ptState

	mu     sync.Mutex
	nodes  map[uint64]*node  // guarded by mu; by node id
	byKey  map[nodeKey]*node // guarded by mu; by lower (dev, ino)
	nextID uint64            // guarded by mu
	devIdx map[uint64]uint64 // guarded by mu; lower devices other than rootDev → small index

	// treeMu guards every node's parent and name.
	treeMu sync.RWMutex

	hmu     sync.RWMutex
	handles map[uint64]*handle // guarded by hmu
	nextFh  uint64             // guarded by hmu

	fdc    fdCache
	groups groupCache
	stats  counters
	ps     policyState // Options.Policy and SetPolicy

	source string        // the lower directory as given to New
	st     *stateTracker // restart state (state_linux.go); nil: none kept
}

var _ fusedev.FileSystem = (*FS)(nil)

// New opens source (a directory) and returns an FS mirroring it. It sets
// the process umask to 0 (see the package doc). Close releases the
// descriptors of an FS that was never served; a served FS releases them
// when Serve returns (Destroy).
func New(source string, opts Options) (*FS, error) {
	if opts.Logger == nil {
		l := logrus.New()
		l.Out = discard{}
		opts.Logger = l
	}
	fd, err := unix.Open(source, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open source %s: %w", source, err)
	}
	var st unix.Statx_t
	if err := statxFd(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat source %s: %w", source, err)
	}
	syncFd, err := unix.Open(source, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open source %s: %w", source, err)
	}
	unix.Umask(0)
	fs := &FS{
		opts:    opts,
		log:     opts.Logger,
		rootDev: devOf(&st),
		syncFd:  syncFd,
		gen:     uint64(time.Now().UnixNano()),
		nodes:   make(map[uint64]*node),
		byKey:   make(map[nodeKey]*node),
		nextID:  2,
		devIdx:  make(map[uint64]uint64),
		handles: make(map[uint64]*handle),
		nextFh:  1,
		source:  source,
	}
	fs.root = &node{id: 1, key: keyOf(&st), btime: btimeOf(&st), fd: fd, typ: unix.S_IFDIR, lookups: 1 << 62}
	fs.root.attrTTL.Store(int64(opts.timeout(opts.AttrTimeout)))
	fs.nodes[1] = fs.root
	fs.byKey[fs.root.key] = fs.root
	fs.fdc.init(maxDescriptors(opts.MaxDescriptors))
	if _, mnt, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH); err == nil {
		if mfd, err := unix.Open(source, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			fs.fdc.addMount(mnt, mfd)
		}
	}
	fs.creds.init()
	fs.groups.init()
	fs.initPolicy()
	if opts.Passthrough == PassthroughOff {
		fs.pt.disable("off")
	}
	return fs, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// InitFlags returns the INIT capabilities to ask the kernel for
// (fusedev.Options.Flags): fusedev's defaults, kernel passthrough unless the
// mode is off, cached symlinks, and HANDLE_KILLPRIV_V2.
//
// POSIX and flock locks are left to the kernel unless Options.Locks is
// LocksLower (see LockMode).
//
// With HANDLE_KILLPRIV_V2 the kernel marks the super block SB_NOSEC, so a
// write no longer costs a GETXATTR of security.capability, and leaves
// clearing set-id bits and capabilities to the daemon: writes flagged
// FUSE_WRITE_KILL_SUIDGID, and truncations and chowns, are done with the
// caller's identity, so the lower file system clears them as it would
// natively. Passthrough writes never reach the daemon, so writable opens
// of set-id or capability-carrying files by callers other than root do not
// use passthrough (setupIO).
func (fs *FS) InitFlags() abi.InitFlags {
	f := fusedev.DefaultFlags | abi.InitCacheSymlinks | abi.InitHandleKillprivV2
	if fs.opts.Passthrough != PassthroughOff {
		f |= abi.InitPassthrough
	}
	if fs.opts.Locks == LocksLower {
		f |= abi.InitPosixLocks | abi.InitFlockLocks
	}
	return f
}

// Init records the server and checks whether kernel passthrough can be used.
func (fs *FS) Init(ctx context.Context, s *fusedev.Server) error {
	fs.srv.Store(s)
	if err := fs.st.writeHeader(fs, s.Negotiated()); err != nil {
		return fmt.Errorf("restart state: %w", err)
	}
	if fs.opts.Mountpoint != "" {
		if mi, ok, err := fusedev.FindMount(fs.opts.Mountpoint); err == nil && ok {
			fs.selfDev.Store(unix.Mkdev(mi.Major, mi.Minor))
		}
	}
	if fs.opts.Passthrough == PassthroughOff {
		fs.log.Info("passthrough: off; reads and writes are served by the daemon")
		return nil
	}
	neg := s.Negotiated()
	reason := ""
	switch {
	case neg == nil || !neg.Flags.Has(abi.InitPassthrough):
		reason = "the kernel does not offer FUSE passthrough (Linux 6.9+, CONFIG_FUSE_PASSTHROUGH)"
	case !hasCapSysAdmin():
		reason = "registering backing files needs CAP_SYS_ADMIN"
	}
	if reason != "" {
		if fs.opts.Passthrough == PassthroughOn {
			return fmt.Errorf("passthrough=on: %s", reason)
		}
		fs.pt.disable(reason)
		fs.log.Warnf("passthrough: unavailable (%s); reads and writes are served by the daemon", reason)
		return nil
	}
	fs.log.Info("passthrough: kernel passthrough enabled; opens register backing files")
	return nil
}

// Destroy closes every descriptor of the lower tree.
func (fs *FS) Destroy() {
	fs.hmu.Lock()
	for fh, h := range fs.handles {
		fs.putHandle(h) // the table's reference
		delete(fs.handles, fh)
	}
	fs.hmu.Unlock()
	fs.mu.Lock()
	fs.fdc.closeAll(fs.nodes)
	clear(fs.nodes)
	clear(fs.byKey)
	fs.mu.Unlock()
	if fs.syncFd >= 0 {
		unix.Close(fs.syncFd)
		fs.syncFd = -1
	}
}

// Close releases the FS's descriptors; the FS must not be served after.
func (fs *FS) Close() error {
	fs.Destroy()
	return nil
}

// Stats are counters of an FS, for tests and the control socket.
type Stats struct {
	Nodes       int    `json:"nodes"`        // nodes the kernel holds (root included)
	Handles     int    `json:"handles"`      // open files and directories
	BackingIDs  int64  `json:"backing_ids"`  // backing files registered now
	BackingOpen uint64 `json:"backing_open"` // BACKING_OPEN calls that succeeded
	PTOpens     uint64 `json:"pt_opens"`     // opens answered with kernel passthrough
	DaemonOpens uint64 `json:"daemon_opens"` // opens whose I/O the daemon serves
	Passthrough bool   `json:"passthrough"`  // kernel passthrough in use
	Fallback    string `json:"fallback,omitempty"`
	NodeFds     int    `json:"node_fds"` // evictable node descriptors open now
	MaxNodeFds  int    `json:"max_node_fds"`
	Reopens     uint64 `json:"reopens"`   // node descriptors reopened from a file handle
	Evictions   uint64 `json:"evictions"` // node descriptors closed to stay under the bound
	// Policy: the policy's counters, when one is in force.
	Policy *PolicyStats `json:"policy,omitempty"`
}

// Stats returns the FS's counters.
func (fs *FS) Stats() Stats {
	fs.mu.Lock()
	nodes := len(fs.nodes)
	fs.mu.Unlock()
	fs.hmu.RLock()
	handles := len(fs.handles)
	fs.hmu.RUnlock()
	fs.fdc.mu.Lock()
	nfds, maxfds, reopens, evictions := fs.fdc.count, fs.fdc.max, fs.fdc.reopens, fs.fdc.evictions
	fs.fdc.mu.Unlock()
	return Stats{
		NodeFds: nfds, MaxNodeFds: maxfds, Reopens: reopens, Evictions: evictions,
		Nodes: nodes, Handles: handles,
		BackingIDs:  fs.stats.backingIDs.Load(),
		BackingOpen: fs.stats.backingOpen.Load(),
		PTOpens:     fs.stats.ptOpens.Load(),
		DaemonOpens: fs.stats.daemonOpens.Load(),
		Passthrough: fs.pt.enabled(),
		Fallback:    fs.pt.reason(),
		Policy:      fs.PolicyStats(),
	}
}

type counters struct {
	backingIDs    atomic.Int64
	backingOpen   atomic.Uint64
	ptOpens       atomic.Uint64
	daemonOpens   atomic.Uint64
	redactedOpens atomic.Uint64
	directOpens   atomic.Uint64
	filtered      atomic.Uint64
}

// ptState is whether kernel passthrough is in use, and why not.
type ptState struct {
	off     atomic.Bool
	mu      sync.Mutex
	why     string          // guarded by mu
	errSeen map[string]bool // guarded by mu; backing errors already logged
}

func (p *ptState) enabled() bool { return !p.off.Load() }

func (p *ptState) disable(why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.why == "" {
		p.why = why
	}
	p.off.Store(true)
}

func (p *ptState) reason() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.why
}

// backingFailed handles a BACKING_OPEN failure: EPERM turns passthrough
// off for good (said once in the log); any other error makes this open
// fall back, and is logged once per errno.
func (fs *FS) backingFailed(err error, path func() string) {
	p := &fs.pt
	if errors.Is(err, syscall.EPERM) {
		if !p.off.Load() {
			p.disable("the kernel refused to register a backing file (EPERM)")
			fs.log.Warn("passthrough: the kernel refused to register a backing file (EPERM: needs CAP_SYS_ADMIN); reads and writes are served by the daemon from now on")
		}
		return
	}
	p.mu.Lock()
	if p.errSeen == nil {
		p.errSeen = make(map[string]bool)
	}
	seen := p.errSeen[err.Error()]
	p.errSeen[err.Error()] = true
	p.mu.Unlock()
	if !seen {
		fs.log.WithError(err).WithField("path", path()).Warn("passthrough: cannot register a backing file; this open (and others failing the same way) is served by the daemon")
	}
}

// validName rejects names a sane kernel never sends: they would escape the
// directory they are resolved in.
func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.IndexByte(name, '/') >= 0 {
		return syscall.EINVAL
	}
	return nil
}

func hasCapSysAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &caps); err != nil {
				return false
			}
			return caps&(1<<unix.CAP_SYS_ADMIN) != 0
		}
	}
	return false
}

// maxDescriptors is the bound of the node descriptor cache: the option, or
// three quarters of RLIMIT_NOFILE, leaving the rest to open files.
func maxDescriptors(opt int) int {
	if opt > 0 {
		return opt
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil || lim.Cur < 1024 {
		return 512
	}
	return int(min(lim.Cur, 1<<22)) * 3 / 4
}
