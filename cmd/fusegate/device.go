package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/cuse/host"
)

func init() {
	register(command{name: "device", summary: "serve a CUSE character device in the foreground", run: runDevice})
}

const deviceDescription = `Create the character device /dev/NAME through /dev/cuse and serve it in the
foreground until SIGINT or SIGTERM, which remove it. SIGUSR1 logs its stats.

Kinds:
  loopback  a bounded in-memory pipe: what is written can be read back;
            poll, O_NONBLOCK and a few ioctls work (see docs/DEVICES.md)
  socket    each open connects to the unix socket --socket where a driver
            process listens; reads, writes, poll and ioctls are bridged with
            the framing of docs/DEVICES.md

The kernel creates the node owned by root with mode 0600; --owner and --mode
change that once it exists (numeric ids: there may be no user database).
Needs root (or access to /dev/cuse) and a kernel with CUSE (modprobe cuse).`

func runDevice(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("device", "--name NAME --kind KIND [options]", deviceDescription)
	var spec host.Spec
	fs.StringVar(&spec.Name, "name", "", "device `NAME`: the node is /dev/NAME")
	fs.StringVar(&spec.Kind, "kind", "", "device `KIND`: "+strings.Join(host.Kinds(), " or "))
	fs.Func("major", "fixed major `NUMBER` (default: the kernel picks one)", uintFlag(&spec.Major))
	fs.Func("minor", "minor `NUMBER` (default 0)", uintFlag(&spec.Minor))
	fs.Func("owner", "give the node to `UID[:GID]` (numeric)", func(s string) error {
		uid, gid, err := host.ParseOwner(s)
		spec.UID, spec.GID = uid, gid
		return err
	})
	fs.Func("mode", "set the node's permission bits to `OCTAL`, e.g. 0660", func(s string) error {
		m, err := host.ParseMode(s)
		spec.Mode = m
		return err
	})
	fs.Func("max-read", "largest read request in `BYTES` (default 131072)", uintFlag(&spec.MaxRead))
	fs.Func("max-write", "largest write request in `BYTES` (default 131072)", uintFlag(&spec.MaxWrite))
	fs.BoolVar(&spec.RestrictIoctl, "restrict-ioctl", false, "do not negotiate unrestricted ioctls (no pointer-following retries)")
	fs.IntVar(&spec.Capacity, "capacity", 0, "loopback: pipe size in `BYTES` (default 65536)")
	fs.StringVar(&spec.Socket, "socket", "", "socket: the driver's listening unix socket `PATH`")
	fs.IntVar(&spec.Buffer, "buffer", 0, "socket: per-open buffer in `BYTES` each way (default 262144)")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return e.usageError(fs, "unexpected arguments %q", pos)
	}
	if spec.Name == "" {
		return e.usageError(fs, "--name is required")
	}
	if err := spec.Check(); err != nil {
		return e.usageError(fs, "%v", err)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	startCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := make(chan struct{})
	go func() {
		// A signal during Start (e.g. waiting on a slow kernel) cancels it.
		select {
		case sig := <-sigs:
			if sig != syscall.SIGUSR1 {
				cancel()
			}
		case <-started:
		}
	}()
	dev, err := host.Start(startCtx, spec, host.Options{Logger: e.log})
	close(started)
	if err != nil {
		return e.fail("device %s: %v", spec.Name, err)
	}
	major, minor := dev.DevNum()
	e.log.WithFields(logrus.Fields{"device": spec.Name, "kind": spec.Kind, "path": dev.Path(),
		"major": major, "minor": minor}).Info("device ready")

	logStats := func(msg string) {
		st := dev.Stats()
		e.log.WithFields(logrus.Fields{"device": spec.Name, "opens": st.Opens, "open_now": st.OpenNow,
			"reads": st.Reads, "writes": st.Writes, "bytes_read": st.BytesRead, "bytes_written": st.BytesWritten,
			"ioctls": st.Ioctls, "ioctl_retries": st.IoctlRetries, "polls": st.Polls, "wakeups": st.Wakeups,
			"interrupted": st.Interrupted}).Info(msg)
	}
	for {
		select {
		case <-dev.Done():
			logStats("device stopped")
			if err := dev.Err(); err != nil {
				return e.fail("device %s: %v", spec.Name, err)
			}
			return exitOK
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				logStats("device stats")
				continue
			}
			e.log.WithField("signal", sig).Info("removing the device")
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := dev.Stop(sctx)
			scancel()
			logStats("device removed")
			if err != nil {
				return e.fail("device %s: stopping: %v", spec.Name, err)
			}
			return exitOK
		}
	}
}

// uintFlag parses a uint32 flag value into p.
func uintFlag(p *uint32) func(string) error {
	return func(s string) error {
		n, err := parseUint32(s)
		*p = n
		return err
	}
}

func parseUint32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number from 0 to %d", s, uint32(1<<32-1))
	}
	return uint32(n), nil
}
