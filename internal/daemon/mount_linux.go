package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/config"
	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/internal/memstate"
	"github.com/fusegate/fusegate/passthrough"
	"github.com/fusegate/fusegate/policy"
)

// States of a mount or device.
const (
	stateStarting    = "starting"
	stateRunning     = "running"
	stateFailed      = "failed"      // did not start; see its error
	stateUnmounted   = "unmounted"   // unmounted (or aborted) from outside the daemon
	stateStopped     = "stopped"     // stopped by the daemon
	stateUnavailable = "unavailable" // a device without CUSE in the kernel
)

// initTimeout bounds the wait for the kernel's INIT after mount(2).
const initTimeout = 30 * time.Second

// mount is one configured mount: a passthrough mirror served on a /dev/fuse
// connection, under a policy engine of its own.
type mount struct {
	cfg config.Mount
	log logrus.FieldLogger

	policy atomic.Pointer[loadedPolicy]
	eng    *policy.Engine // the policy engine of the mount's file system (passthrough.Options.Policy)

	// Set once the mount exists; never changed after. The connection is
	// what a restart would hand to systemd's fd store.
	fs     *passthrough.FS
	conn   *fusedev.Conn
	srv    *fusedev.Server
	cancel context.CancelFunc // stops the serving loop (not the mount)
	done   chan struct{}      // closed when Serve returned (or never ran)
	served error              // Serve's result, set before done is closed
	rstate *memstate.Region   // restart state (restart_linux.go); nil: none kept
	// resumed: taken over from a previous process (restart_linux.go).
	resumed bool

	lifecycle // stopping: Serve's end is expected
}

// sameMount reports whether two configurations of a mount differ only in
// their policy (which a reload applies in place).
func sameMount(a, b config.Mount) bool {
	a.Policy, b.Policy = "", ""
	return reflect.DeepEqual(a, b)
}

// mountOptions turns a mount's options into fusedev's.
func mountOptions(mc config.Mount, ns fusedev.MountNamespace) (fusedev.MountOptions, error) {
	o := fusedev.MountOptions{FSName: mc.Source, Subtype: "fusegate", Namespace: ns}
	for _, opt := range mc.Options {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "allow_other":
			o.AllowOther = true
		case "default_permissions":
			o.DefaultPermissions = true
		case "ro":
			o.ReadOnly = true
		case "rw":
			o.ReadOnly = false
		case "noexec":
			o.NoExec = true
		case "exec":
			o.NoExec = false
		case "suid":
			o.Suid = true
		case "nosuid":
			o.Suid = false
		case "dev":
			o.Dev = true
		case "nodev":
			o.Dev = false
		case "fsname":
			o.FSName = v
		case "subtype":
			o.Subtype = v
		case "max_read":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 {
				return o, fmt.Errorf("mount %s: option %q: want max_read=BYTES", mc.Name, opt)
			}
			o.MaxRead = uint32(n)
		default:
			return o, fmt.Errorf("mount %s: unknown option %q", mc.Name, opt)
		}
	}
	return o, nil
}

func (d *Daemon) policyOptions(log logrus.FieldLogger) policy.Options {
	return policy.Options{Logger: log}
}

// startMount mounts mc and serves it. It returns once the kernel's INIT is
// answered, or with the reason it could not be; the mount it returns then
// says "failed".
func (d *Daemon) startMount(mc config.Mount, lp *loadedPolicy) (*mount, error) {
	m := &mount{cfg: mc, log: d.log.WithField("mount", mc.Name), done: make(chan struct{})}
	m.setState(stateStarting, "")
	m.setPolicy(lp)
	p := lp.p
	if p == nil {
		p = policy.Default() // kept for a later reload; off until then
	}
	m.eng = policy.NewEngine(p, d.policyOptions(m.log))
	err := d.resumeMount(m, d.stored)
	if err != nil && err != errNoResume { // stored, but not usable
		m.log.WithError(err).Warn("cannot take over the mount the previous process left in systemd's fd store; mounting it afresh")
		d.clearStored(mc.Name, mc.Mountpoint, nil)
	}
	if err == nil {
		m.setState(stateRunning, "")
		go d.watchMount(m)
		d.storeMount(m)
		return m, nil
	}
	if err := d.mountAndServe(m); err != nil {
		m.setState(stateFailed, err.Error())
		if m.srv == nil {
			close(m.done)
		}
		m.log.WithError(err).Error("mount failed")
		return m, err
	}
	m.setState(stateRunning, "")
	go d.watchMount(m)
	d.storeMount(m)
	pt := m.fs.Stats()
	f := logrus.Fields{"source": mc.Source, "mountpoint": mc.Mountpoint, "policy": lp.name(), "passthrough": pt.Passthrough}
	if neg := m.srv.Negotiated(); neg != nil {
		f["protocol"] = fmt.Sprintf("%d.%d", neg.Major, neg.Minor)
	}
	if pt.Fallback != "" {
		f["passthrough_fallback"] = pt.Fallback
	}
	m.log.WithFields(f).Info("mounted")
	return m, nil
}

func (d *Daemon) mountAndServe(m *mount) error {
	mc := m.cfg
	mopts, err := mountOptions(mc, d.ns)
	if err != nil {
		return err
	}
	if err := ClearStale(mc.Mountpoint, d.ns, m.log); err != nil {
		return err
	}
	if mc.Create {
		// Directories only: never a stat of a mount this daemon serves
		// (clearStale made sure nothing is mounted at the mount point).
		for _, dir := range []string{mc.Source, mc.Mountpoint} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
		}
	}
	pfs, err := d.newFS(m)
	if err != nil {
		return err
	}
	if m.policy.Load().p == nil {
		pfs.SetPolicy(nil) // policy "none"
	}
	conn, err := fusedev.Mount(mc.Mountpoint, mopts)
	if err != nil {
		pfs.Close()
		return err
	}
	d.trackState(m, pfs)
	srv := fusedev.NewServer(conn, pfs, fusedev.Options{
		Logger:        m.log,
		Readers:       mc.Readers,
		Flags:         pfs.InitFlags(),
		ShutdownGrace: d.shutdownGrace(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	m.fs, m.conn, m.srv, m.cancel = pfs, conn, srv, cancel
	go func() {
		m.served = srv.Serve(ctx)
		close(m.done)
	}()
	var initErr error
	select {
	case <-srv.Ready():
		if srv.Negotiated() != nil {
			return nil
		}
		<-m.done
		initErr = m.served
	case <-m.done:
		initErr = m.served
	case <-time.After(initTimeout):
		initErr = fmt.Errorf("the kernel sent no INIT within %v", initTimeout)
	}
	if initErr == nil {
		initErr = errors.New("the connection ended before INIT")
	}
	m.markStopping()
	cancel()
	fusedev.Unmount(mc.Mountpoint, fusedev.UnmountOptions{Lazy: true, Namespace: d.ns})
	<-m.done
	conn.Close()
	if m.rstate != nil {
		m.rstate.Close()
		m.rstate = nil
	}
	return fmt.Errorf("answering INIT: %w", initErr)
}

// ClearStale makes sure no FUSE file system is mounted at mountpoint: one
// whose server died (a crash, a watchdog kill) is unmounted (lazily, in ns);
// one that is served by another process is an error. It asks the mount, so
// the caller must not serve anything there. `fusegate mount` uses it too.
func ClearStale(mountpoint string, ns fusedev.MountNamespace, log logrus.FieldLogger) error {
	state, err := fusedev.Probe(mountpoint, 2*time.Second)
	if err != nil {
		return err
	}
	switch state {
	case fusedev.NotMounted:
		return nil
	case fusedev.Stale:
		log.WithField("mountpoint", mountpoint).Warn("clearing a stale FUSE mount left by a server that died")
		if err := fusedev.Unmount(mountpoint, fusedev.UnmountOptions{Lazy: true, Namespace: ns}); err != nil {
			return fmt.Errorf("clearing the stale mount at %s: %w", mountpoint, err)
		}
		return nil
	}
	return fmt.Errorf("%s is already a FUSE mount (%s) of another process; unmount it first ('fusegate umount %s')", mountpoint, state, mountpoint)
}

// watchMount notices a mount that ends without the daemon asking: an
// unmount from outside, or an aborted connection.
func (d *Daemon) watchMount(m *mount) {
	<-m.done
	if m.stopExpected() {
		return
	}
	why := "unmounted from outside the daemon"
	if m.served != nil {
		why = m.served.Error()
	}
	m.setState(stateUnmounted, why)
	m.conn.Close()
	d.unstoreMount(m.cfg.Name)
	m.log.WithField("mountpoint", m.cfg.Mountpoint).Warnf("mount ended: %s; a reload mounts it again", why)
	d.notify.Status(d.summary())
}

// stopServing stops the serving loop (requests in flight get the shutdown
// grace) and leaves the mount and its connection as they are: what a
// restart that keeps its mounts does.
func (m *mount) stopServing() {
	m.markStopping()
	if m.cancel != nil {
		m.cancel()
	}
	<-m.done
}

// unmount unmounts the mount point: at once when nothing on it is in use,
// else lazily (detached now, gone when the last file is closed).
func (m *mount) unmount(ns fusedev.MountNamespace) error {
	mp := m.cfg.Mountpoint
	err := fusedev.Unmount(mp, fusedev.UnmountOptions{Namespace: ns})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EBUSY):
		m.log.Warn("mount is busy; detaching it lazily: open files keep being served until the shutdown grace ends")
		return fusedev.Unmount(mp, fusedev.UnmountOptions{Lazy: true, Namespace: ns})
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOENT):
		return nil // not mounted any more
	}
	return err
}

// stopMount ends a mount for good: unmount, let the requests still coming
// (releases, flushes of files open on a detached mount) be answered for up
// to the shutdown grace, stop serving, close the connection, and sync the
// lower file system.
func (d *Daemon) stopMount(m *mount) {
	if wasRunning := m.markStopping(); !wasRunning || m.srv == nil {
		if m.conn != nil {
			m.conn.Close()
		}
		return
	}
	grace := d.shutdownGrace()
	if err := m.unmount(d.ns); err != nil {
		m.log.WithError(err).Error("unmount failed")
	}
	select {
	case <-m.done:
	case <-time.After(grace):
		m.log.Warnf("files still open on the detached mount after %v; closing its connection", grace)
	}
	m.stopServing()
	m.conn.Close()
	d.unstoreMount(m.cfg.Name)
	if m.rstate != nil {
		m.rstate.Close()
	}
	syncLower(m.cfg.Source, grace)
	m.setState(stateStopped, "")
	m.log.Info("unmounted")
}

// syncLower flushes the lower file system (syncfs), waiting at most limit.
func syncLower(dir string, limit time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return
		}
		unix.Syncfs(fd)
		unix.Close(fd)
	}()
	select {
	case <-done:
	case <-time.After(limit):
	}
}
