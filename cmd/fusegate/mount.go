package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/internal/demofs"
)

func init() {
	register(command{name: "mount", summary: "mount a file system in the foreground", run: runMount})
}

const mountDescription = `Mount a file system at MOUNTPOINT and serve it in the foreground until
SIGINT or SIGTERM, which unmount it. With --demo it serves a small built-in
read-only tree (no SOURCE). A stale mount left at MOUNTPOINT by a killed
fusegate is cleared first.

Mount options (-o, comma-separated, as mount(8)):
  allow_other          let users other than the mounting one use the mount
  default_permissions  let the kernel check permission bits
  ro | rw              read-only or read-write
  noexec, suid, dev    exec and setuid/device node handling (default: exec, nosuid, nodev)
  fsname=NAME          source shown in /proc/mounts
  subtype=NAME         file system type shown as fuse.NAME
  max_read=N           largest read request in bytes`

// mountFlags are the parsed mount(8)-style options.
type mountFlags struct {
	opts    fusedev.MountOptions
	readers int
}

// parseMountOptions applies one -o list to m.
func parseMountOptions(list string, m *fusedev.MountOptions) error {
	for _, o := range strings.Split(list, ",") {
		key, val, hasVal := strings.Cut(strings.TrimSpace(o), "=")
		switch {
		case key == "":
		case key == "allow_other" && !hasVal:
			m.AllowOther = true
		case key == "default_permissions" && !hasVal:
			m.DefaultPermissions = true
		case key == "ro" && !hasVal:
			m.ReadOnly = true
		case key == "rw" && !hasVal:
			m.ReadOnly = false
		case key == "noexec" && !hasVal:
			m.NoExec = true
		case key == "exec" && !hasVal:
			m.NoExec = false
		case key == "suid" && !hasVal:
			m.Suid = true
		case key == "nosuid" && !hasVal:
			m.Suid = false
		case key == "dev" && !hasVal:
			m.Dev = true
		case key == "nodev" && !hasVal:
			m.Dev = false
		case key == "fsname" && hasVal && val != "":
			m.FSName = val
		case key == "subtype" && hasVal && val != "":
			m.Subtype = val
		case key == "max_read" && hasVal:
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil || n < 4096 {
				return fmt.Errorf("max_read=%s: want a number of bytes of at least 4096", val)
			}
			m.MaxRead = uint32(n)
		default:
			return fmt.Errorf("unknown mount option %q", o)
		}
	}
	return nil
}

func runMount(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("mount", "[options] --demo MOUNTPOINT", mountDescription)
	var mf mountFlags
	demo := fs.Bool("demo", false, "serve the built-in demo tree")
	fs.Func("o", "mount `OPTIONS`, comma-separated (repeatable)", func(s string) error {
		return parseMountOptions(s, &mf.opts)
	})
	fs.IntVar(&mf.readers, "readers", 0, "request reader goroutines, each on its own cloned /dev/fuse fd (default: one per 4 CPUs, 1 to 4)")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	if !*demo {
		return e.usageError(fs, "nothing to mount: give --demo")
	}
	if len(pos) != 1 {
		return e.usageError(fs, "want exactly one MOUNTPOINT, got %d arguments", len(pos))
	}
	if mf.readers < 0 {
		return e.usageError(fs, "--readers must not be negative")
	}
	mountpoint := pos[0]
	if mf.opts.FSName == "" {
		mf.opts.FSName = "fusegate-demo"
	}
	mf.opts.ReadOnly = true
	return serveMount(ctx, e, mountpoint, &mf, demofs.New())
}

// clearStale unmounts a FUSE mount at mountpoint whose server is gone. It
// refuses to touch a mount that is served.
func clearStale(e *env, mountpoint string) error {
	state, err := fusedev.Probe(mountpoint, 2*time.Second)
	if err != nil {
		return err
	}
	switch state {
	case fusedev.NotMounted:
		return nil
	case fusedev.Stale:
		e.log.WithField("mountpoint", mountpoint).Warn("clearing a stale FUSE mount left by a server that died")
		if err := fusedev.Unmount(mountpoint, fusedev.UnmountOptions{}); err != nil {
			return fusedev.Unmount(mountpoint, fusedev.UnmountOptions{Lazy: true})
		}
		return nil
	default:
		return fmt.Errorf("%s is already a FUSE mount (%s); unmount it first with 'fusegate umount %s'", mountpoint, state, mountpoint)
	}
}

// signalName names sig as in kill(1) ("SIGTERM"); a number (as in JSON
// logs) would need a table to read.
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok && unix.SignalName(s) != "" {
		return unix.SignalName(s)
	}
	return sig.String()
}

// serveMount mounts fsys and serves it until a signal or an external unmount.
func serveMount(ctx context.Context, e *env, mountpoint string, mf *mountFlags, fsys fusedev.FileSystem) int {
	if err := clearStale(e, mountpoint); err != nil {
		return e.fail("%v", err)
	}
	conn, err := fusedev.Mount(mountpoint, mf.opts)
	if err != nil {
		return e.fail("%v", err)
	}
	defer conn.Close()
	srv := fusedev.NewServer(conn, fsys, fusedev.Options{Logger: e.log, Readers: mf.readers})

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	select {
	case <-srv.Ready():
		e.log.WithField("mountpoint", mountpoint).Info("mounted")
	case err := <-served:
		fusedev.Unmount(mountpoint, fusedev.UnmountOptions{Lazy: true})
		return e.fail("serving %s: %v", mountpoint, err)
	}
	for {
		select {
		case err := <-served:
			if err != nil {
				return e.fail("serving %s: %v", mountpoint, err)
			}
			e.log.WithField("mountpoint", mountpoint).Info("unmounted")
			return exitOK
		case sig := <-sigs:
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
