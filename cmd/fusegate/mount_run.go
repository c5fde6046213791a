package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/internal/daemon"
	"github.com/fusegate/fusegate/internal/demofs"
	"github.com/fusegate/fusegate/passthrough"
	"github.com/fusegate/fusegate/policy"
)

func runMount(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("mount", "[options] SOURCE MOUNTPOINT | [options] --demo MOUNTPOINT", mountDescription)
	var mf mountFlags
	demo := fs.Bool("demo", false, "serve the built-in demo tree instead of a SOURCE directory")
	fs.Func("o", "mount `OPTIONS`, comma-separated (repeatable)", func(s string) error {
		return parseMirrorOptions(s, &mf)
	})
	fs.IntVar(&mf.readers, "readers", 0, "request reader goroutines, each on its own cloned /dev/fuse fd (default: 1 for a SOURCE mirror, else CPUs, at most 4)")
	ptMode := fs.String("passthrough", "auto", "kernel passthrough for a SOURCE mirror: `MODE` is auto (when the kernel and privileges allow), on (required) or off")
	lockMode := fs.String("locks", "kernel", "where a SOURCE mirror's POSIX and flock locks live: `WHERE` is kernel (exact between the mount's users) or lower (on the lower files, so they also exclude the lower directory's direct users)")
	fs.StringVar(&mf.statsFile, "stats-file", "", "write request and mirror counters as JSON to `PATH` on exit and on SIGUSR1")
	fs.StringVar(&mf.policyFile, "policy", "", "decide every request of a SOURCE mirror by the policy `FILE` (\"default\": the built-in one); SIGHUP reloads it")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	mode, err := passthrough.ParseMode(*ptMode)
	if err != nil {
		return e.usageError(fs, "--passthrough: %v", err)
	}
	mf.passthrough = mode
	if mf.locks, err = passthrough.ParseLockMode(*lockMode); err != nil {
		return e.usageError(fs, "--locks: %v", err)
	}
	if mf.readers < 0 {
		return e.usageError(fs, "--readers must not be negative")
	}
	if *demo {
		if mf.policyFile != "" {
			return e.usageError(fs, "--policy applies to a SOURCE mirror, not --demo")
		}
		if len(pos) != 1 {
			return e.usageError(fs, "want exactly one MOUNTPOINT, got %d arguments", len(pos))
		}
		if mf.opts.FSName == "" {
			mf.opts.FSName = "fusegate-demo"
		}
		mf.opts.AllowOther = mf.allowOther != nil && *mf.allowOther
		mf.opts.DefaultPermissions = mf.defaultPerms != nil && *mf.defaultPerms
		mf.opts.ReadOnly = true
		return serveMount(ctx, e, pos[0], &mf, func(string) (served, error) {
			return served{fsys: demofs.New()}, nil
		})
	}
	switch {
	case len(pos) < 2:
		return e.usageError(fs, "nothing to mount: give --demo MOUNTPOINT or SOURCE MOUNTPOINT")
	case len(pos) > 2:
		return e.usageError(fs, "want SOURCE and MOUNTPOINT, got %d arguments", len(pos))
	}
	source, err := filepath.Abs(pos[0])
	if err != nil {
		return e.fail("%v", err)
	}
	if st, err := os.Stat(source); err != nil {
		return e.fail("source: %v", err)
	} else if !st.IsDir() {
		return e.fail("source %s is not a directory", source)
	}
	var pol *policy.Policy
	if mf.policyFile != "" {
		if mf.entryTimeout != nil || mf.attrTimeout != nil || mf.negativeTimeout != nil {
			return e.usageError(fs, "-o entry_timeout, attr_timeout and negative_timeout do not go with --policy: the policy sets the cache timeouts")
		}
		if pol, err = loadMountPolicy(mf.policyFile); err != nil {
			return e.fail("%v", err)
		}
	}
	if mf.opts.FSName == "" {
		mf.opts.FSName = source
	}
	if mf.opts.Subtype == "" {
		mf.opts.Subtype = "fusegate"
	}
	mf.opts.DefaultPermissions = mf.defaultPerms == nil || *mf.defaultPerms
	if mf.readers == 0 {
		// Handlers run concurrently whatever the number of readers; more
		// readers only wake each other for every request (strace of 2000
		// LOOKUPs with 2 readers: 1.8 reads failing EAGAIN, 2.5 futex
		// calls per request; with one: 1 and 1.8), and a mirror's
		// metadata round trips got faster with one.
		mf.readers = 1
	}
	mf.opts.AllowOther = mf.allowOther != nil && *mf.allowOther || mf.allowOther == nil && os.Geteuid() == 0
	raiseFileLimit(e)
	return serveMount(ctx, e, pos[1], &mf, func(mountpoint string) (served, error) {
		popts := passthrough.Options{Logger: e.log, Passthrough: mf.passthrough, Locks: mf.locks, Mountpoint: mountpoint}
		if mf.entryTimeout != nil {
			popts.EntryTimeout = noCache(*mf.entryTimeout)
		}
		if mf.attrTimeout != nil {
			popts.AttrTimeout = noCache(*mf.attrTimeout)
		}
		if mf.negativeTimeout != nil {
			popts.NegativeTimeout = noCache(*mf.negativeTimeout)
		}
		if pol != nil {
			popts.Policy = policy.NewEngine(pol, policy.Options{Logger: e.log})
			// Tests of the invalidation older kernels get (no INC_EPOCH).
			popts.InvalidateEntries = os.Getenv("FUSEGATE_TEST_ONLY_INVAL_ENTRIES") == "1"
		}
		pfs, err := passthrough.New(source, popts)
		if err != nil {
			return served{}, err
		}
		sv := served{fsys: pfs, flags: pfs.InitFlags(), stats: func() any { return pfs.Stats() }, readahead: true}
		if pol != nil {
			e.log.WithFields(map[string]any{"policy": pol.Name(), "file": mf.policyFile}).Info("policy in force")
			sv.reload = policyReloader(e, mf.policyFile, pfs)
		}
		return sv, nil
	})
}

// noCache maps a timeout of zero (no caching) to passthrough's "negative
// means none".
func noCache(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// raiseFileLimit lets the mirror hold a descriptor for every inode the
// kernel caches: the soft limit goes to the hard one (Go does that), and
// root raises the hard limit towards fs.nr_open.
func raiseFileLimit(e *env) {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	want := lim.Max
	if os.Geteuid() == 0 {
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n > want {
				want = min(n, 1<<22)
			}
		}
	}
	if lim.Cur >= want {
		return
	}
	lim.Cur, lim.Max = want, max(lim.Max, want)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		e.log.WithError(err).Debug("cannot raise the open file limit")
	}
}

// served is a file system to serve and what its server needs.
type served struct {
	fsys      fusedev.FileSystem
	flags     abi.InitFlags // INIT flags to ask for; 0: fusedev's defaults
	stats     func() any    // extra counters for --stats-file
	readahead bool          // raise the mount's readahead to max_write
	reload    func()        // what SIGHUP does (nil: nothing to reload)
}

// raiseReadahead sets the readahead of the mount's backing device info to
// the negotiated max_write, so sequential reads the daemon serves come as
// few large READs rather than many of the kernel's default 128 KiB. The
// kernel offers its default at INIT and only lets the server lower it; as
// root the daemon raises it afterwards in sysfs (never touching the mount
// itself).
func raiseReadahead(e *env, mountpoint string, srv *fusedev.Server) {
	neg := srv.Negotiated()
	mi, ok, err := fusedev.FindMount(mountpoint)
	if err != nil || !ok || neg == nil || os.Geteuid() != 0 {
		return
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", mi.Major, mi.Minor)
	if err := os.WriteFile(path, []byte(strconv.Itoa(int(neg.MaxWrite/1024))), 0); err != nil {
		e.log.WithError(err).Debug("cannot raise the mount's readahead")
	}
}

// devFdConn returns the connection of a mountpoint given as /dev/fd/N.
func devFdConn(mountpoint string) (*fusedev.Conn, bool, error) {
	s, ok := strings.CutPrefix(mountpoint, "/dev/fd/")
	if !ok {
		return nil, false, nil
	}
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 0 {
		return nil, true, fmt.Errorf("%s: not a descriptor number", mountpoint)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, true, fmt.Errorf("%s: %w", mountpoint, err)
	}
	unix.CloseOnExec(fd)
	c, err := fusedev.NewConnFD(fd, "/dev/fuse")
	return c, true, err
}

// serveMount mounts the file system build returns and serves it until a
// signal or an external unmount.
func serveMount(ctx context.Context, e *env, mountpoint string, mf *mountFlags, build func(mountpoint string) (served, error)) int {
	conn, premounted, err := devFdConn(mountpoint)
	if err != nil {
		return e.fail("%v", err)
	}
	if !premounted {
		abs, err := filepath.Abs(mountpoint)
		if err != nil {
			return e.fail("%v", err)
		}
		mountpoint = abs
		if err := daemon.ClearStale(mountpoint, fusedev.MountNamespace{}, e.log); err != nil {
			return e.fail("%v", err)
		}
	}
	var sv served
	if premounted {
		sv, err = build("")
	} else {
		sv, err = build(mountpoint)
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return e.fail("%v", err)
	}
	if !premounted {
		conn, err = fusedev.Mount(mountpoint, mf.opts)
		if err != nil {
			sv.fsys.Destroy()
			return e.fail("%v", err)
		}
	}
	defer conn.Close()
	srv := fusedev.NewServer(conn, sv.fsys, fusedev.Options{Logger: e.log, Readers: mf.readers, Flags: sv.flags})

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)
	writeStats := func() {
		if mf.statsFile == "" {
			return
		}
		if err := saveStats(mf.statsFile, srv, sv.stats); err != nil {
			e.log.WithError(err).Error("writing --stats-file failed")
		}
	}
	defer writeStats()

	serveCtx, stop := context.WithCancel(ctx)
	defer stop()
	servedCh := make(chan error, 1)
	go func() { servedCh <- srv.Serve(serveCtx) }()

	select {
	case <-srv.Ready():
		e.log.WithField("mountpoint", mountpoint).Info("mounted")
		if sv.readahead && !premounted {
			raiseReadahead(e, mountpoint, srv)
		}
	case err := <-servedCh:
		if !premounted {
			fusedev.Unmount(mountpoint, fusedev.UnmountOptions{Lazy: true})
		}
		return e.fail("serving %s: %v", mountpoint, err)
	}
	for {
		select {
		case err := <-servedCh:
			if err != nil {
				return e.fail("serving %s: %v", mountpoint, err)
			}
			e.log.WithField("mountpoint", mountpoint).Info("unmounted")
			return exitOK
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				writeStats()
				continue
			}
			if sig == syscall.SIGHUP {
				if sv.reload == nil {
					e.log.Info("SIGHUP: nothing to reload (no --policy)")
				} else {
					sv.reload()
				}
				continue
			}
			if premounted {
				e.log.WithField("signal", signalName(sig)).Info("stopping; the mount stays until its owner unmounts it")
				stop()
				<-servedCh
				return exitOK
			}
			e.log.WithField("signal", signalName(sig)).Info("unmounting")
			if err := fusedev.Unmount(mountpoint, fusedev.UnmountOptions{}); err != nil {
				if !errors.Is(err, syscall.EBUSY) {
					e.log.WithError(err).Error("unmount failed")
					continue
				}
				e.log.Warn("mount is busy; detaching it lazily: serving continues until the last open file closes")
				if err := fusedev.Unmount(mountpoint, fusedev.UnmountOptions{Lazy: true}); err != nil {
					e.log.WithError(err).Error("lazy unmount failed")
				}
			}
		}
	}
}

// statsDoc is the --stats-file format.
type statsDoc struct {
	Time       time.Time           `json:"time"`
	Negotiated *fusedev.Negotiated `json:"negotiated,omitempty"`
	Ops        map[string]statsOp  `json:"ops"` // by opcode name
	FS         any                 `json:"fs,omitempty"`
}

type statsOp struct {
	Count  uint64 `json:"count"`
	Errors uint64 `json:"errors"`
	Nanos  int64  `json:"total_ns"`
}

// saveStats writes the counters to path atomically (a reader never sees a
// partial file).
func saveStats(path string, srv *fusedev.Server, extra func() any) error {
	doc := statsDoc{Time: time.Now(), Negotiated: srv.Negotiated(), Ops: map[string]statsOp{}}
	for _, s := range srv.Stats() {
		doc.Ops[s.Op.String()] = statsOp{Count: s.Count, Errors: s.Errors, Nanos: int64(s.Total)}
	}
	if extra != nil {
		doc.FS = extra()
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
