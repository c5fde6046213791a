package main

import (
	"context"
	"errors"
	"syscall"

	"github.com/fusegate/fusegate/fusedev"
)

func init() {
	register(command{name: "umount", summary: "unmount a FUSE mount, also a stale one", run: runUmount})
}

const umountDescription = `Unmount the FUSE file system at MOUNTPOINT, whether its server is running
or gone (a stale mount left by a killed daemon answers "Transport endpoint
is not connected"). A running fusegate serving it exits.`

func runUmount(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("umount", "[options] MOUNTPOINT", umountDescription)
	lazy := fs.Bool("lazy", false, "detach now, clean up when no longer busy (umount -l)")
	fs.BoolVar(lazy, "z", false, "same as --lazy")
	abort := fs.Bool("abort", false, "abort the connection first, failing every pending request (root)")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return e.usageError(fs, "want exactly one MOUNTPOINT, got %d arguments", len(pos))
	}
	mp := pos[0]
	if _, found, err := fusedev.FindMount(mp); err != nil {
		return e.fail("%v", err)
	} else if !found {
		return e.fail("%s: no FUSE file system is mounted there", mp)
	}
	if *abort {
		if err := fusedev.Abort(mp); err != nil {
			return e.fail("%v", err)
		}
	}
	if err := fusedev.Unmount(mp, fusedev.UnmountOptions{Lazy: *lazy}); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return e.fail("%v (files are open; retry with --lazy)", err)
		}
		return e.fail("%v", err)
	}
	return exitOK
}
