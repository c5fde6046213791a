// Package daemon is `fusegate serve`: one long-lived process that hosts
// every mount (a passthrough mirror of a lower directory, under a policy
// engine of its own) and every CUSE device of a configuration file. It
// reports to systemd (READY=1 once every mount answered INIT and every
// device CUSE_INIT, STATUS=, WATCHDOG=1 only while every serving loop makes
// progress, RELOADING=1, STOPPING=1), answers the control socket (status,
// mounts, devices, metrics, reload), and applies a changed configuration to
// the running mounts and devices.
//
// Structure: a Daemon owns the current configuration and one mount or
// device value per configured name. Start-up, reloads and shutdown are
// serialised (Daemon.opMu); readers (the control socket, the watchdog) take
// snapshots under Daemon.mu. Stopping a mount's serving loop is kept apart
// from unmounting it (mount.stopServing, mount.unmount) and each mount keeps
// its /dev/fuse connection, so a restart that hands the descriptors to
// systemd's fd store instead of unmounting can slot in.
//
// The daemon must never touch its own mounts: it creates directories before
// mounting and reads /proc/self/mountinfo, but never stats, opens or lists a
// mount point it serves (the Go runtime can deadlock serving a request its
// own system call caused). It never exits the process; cmd/fusegate does.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/config"
	"github.com/fusegate/fusegate/cuse/host"
	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/internal/control"
	"github.com/fusegate/fusegate/systemd"
)

// Options configure a Daemon. The zero value runs the embedded default
// configuration.
type Options struct {
	Logger logrus.FieldLogger // default: discard
	// ConfigPath is the configuration file; "" runs the embedded default
	// (config.Default).
	ConfigPath string
	// Version is reported by status and metrics.
	Version string
	// Stdout receives the start-up summary: where the mounts, devices and
	// the control socket are. Default: discard.
	Stdout io.Writer
	// Notifier talks to systemd (nil: $NOTIFY_SOCKET, a no-op without it).
	Notifier *systemd.Notifier
	// Inherited are the descriptors systemd passed (the control socket,
	// named "control"); nil: none.
	Inherited *systemd.Inherited
	// Namespace is where mounts are made and removed. Nil: PID 1's mount
	// namespace when the daemon runs in another one (a hardened systemd
	// service), else its own (fusedev.HostNamespace).
	Namespace *fusedev.MountNamespace
	// Devices moves /dev, /sys and /dev/cuse for devices (tests).
	Devices host.Options
	// RestartPending decides at a stop whether the service manager starts
	// the daemon again with the stored descriptors (hand over) or not (stop
	// for good). Nil: ask systemd which job stops the unit.
	RestartPending func() (bool, string)
}

// State is the daemon's life cycle state.
type State string

const (
	StateStarting  State = "starting"
	StateRunning   State = "running"
	StateReloading State = "reloading"
	StateStopping  State = "stopping"
)

// Daemon hosts the mounts and devices of one configuration.
type Daemon struct {
	opts    Options
	log     logrus.FieldLogger
	notify  *systemd.Notifier
	ns      fusedev.MountNamespace
	started time.Time

	// opMu serialises start-up, reloads and shutdown: at most one of them
	// changes mounts and devices at a time.
	opMu sync.Mutex

	mu         sync.Mutex
	cfg        *config.Config     // guarded by mu
	mounts     map[string]*mount  // guarded by mu; by name
	devices    map[string]*device // guarded by mu; by name
	state      State              // guarded by mu
	lastReload *ReloadResult      // guarded by mu
	unhealthy  string             // guarded by mu; why the watchdog is not petted ("" when healthy)
	watchdog   time.Duration      // guarded by mu; systemd's interval, 0 when off
	socketPath string             // guarded by mu; the control socket

	stall   atomic.Int64 // time.Duration: daemon.watchdog_stall
	grace   atomic.Int64 // time.Duration: daemon.shutdown_grace
	reloads struct{ ok, failed atomic.Uint64 }

	stored        *stored     // set under opMu at start; the fd store's descriptors not yet taken over
	handoverAsked atomic.Bool // RequestHandover
	sd            sdQuery     // systemd, asked at a stop whether it is a restart
}

// New returns a Daemon; Run starts it.
func New(opts Options) *Daemon {
	if opts.Logger == nil {
		l := logrus.New()
		l.Out = io.Discard
		opts.Logger = l
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Notifier == nil {
		opts.Notifier = &systemd.Notifier{}
	}
	d := &Daemon{
		opts:    opts,
		log:     opts.Logger,
		notify:  opts.Notifier,
		mounts:  map[string]*mount{},
		devices: map[string]*device{},
		state:   StateStarting,
		started: time.Now(),
	}
	if opts.Namespace != nil {
		d.ns = *opts.Namespace
	} else {
		d.ns = fusedev.HostNamespace()
		if d.ns.Path == "" {
			if _, err := os.Stat(pid1Namespace); err != nil && !errors.Is(err, os.ErrNotExist) {
				// HostNamespace cannot tell: PID 1's namespace is out of
				// reach. Under a hardened unit the mounts would then be made
				// in the service's own namespace, invisible to everyone else.
				// (By hand, in a container, PID 1 is simply not ours.)
				log := d.log.WithError(err)
				if os.Getenv("INVOCATION_ID") != "" { // a systemd service
					log.Warn("cannot look at PID 1's mount namespace: mounts are made in this process's own; if the unit gives it a private one (PrivateTmp=, ProtectHome=...), nobody else sees them (the unit needs CAP_SYS_PTRACE and CAP_SYS_CHROOT besides CAP_SYS_ADMIN)")
				} else {
					log.Debug("cannot look at PID 1's mount namespace; mounting in this process's own")
				}
			}
		}
	}
	if d.ns.Path != "" {
		d.log.WithField("namespace", d.ns.Path).Info("this process runs in a mount namespace of its own: mounting in PID 1's")
	}
	return d
}

// pid1Namespace is the mount namespace mounts are made in under a hardened
// systemd unit.
const pid1Namespace = "/proc/1/ns/mnt"

// loaded is a configuration that passed every check, with its policies.
type loaded struct {
	cfg      *config.Config
	policies map[string]*loadedPolicy // by mount name
	adminGID *uint32
}

// load reads, parses and checks the configuration and every policy it
// names. Nothing is changed: an error leaves the running state as it is.
func (d *Daemon) load() (*loaded, error) {
	var cfg *config.Config
	if d.opts.ConfigPath == "" {
		cfg = config.Default()
	} else {
		c, err := config.Load(d.opts.ConfigPath)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	l := &loaded{cfg: cfg, policies: map[string]*loadedPolicy{}}
	for _, m := range cfg.Mounts {
		if _, err := mountOptions(m, fusedev.MountNamespace{}); err != nil {
			return nil, err
		}
		p, err := loadPolicy(m.Policy)
		if err != nil {
			return nil, fmt.Errorf("mount %s: %w", m.Name, err)
		}
		l.policies[m.Name] = p
	}
	for _, dc := range cfg.Devices {
		if _, err := specOf(dc); err != nil {
			return nil, err
		}
	}
	if g := cfg.Control.AdminGroup; g != "" {
		gid, err := config.LookupGID(g)
		if err != nil {
			return nil, fmt.Errorf("control.admin_group: %w", err)
		}
		l.adminGID = &gid
	}
	return l, nil
}

func (d *Daemon) configName() string {
	if d.opts.ConfigPath == "" {
		return "(embedded default)"
	}
	return d.opts.ConfigPath
}

// Run loads the configuration, opens the control socket, starts every
// mount and device, reports READY=1, and serves until ctx is cancelled;
// then it reports STOPPING=1, removes the devices, unmounts the mounts
// (answering requests in flight) and returns. It returns an error when
// start-up failed; what had started is stopped again.
func (d *Daemon) Run(ctx context.Context) error {
	d.opMu.Lock()
	l, err := d.load()
	if err != nil {
		d.opMu.Unlock()
		return err // it names the file (file:line:col: field: ...)
	}
	d.applySettings(l.cfg)
	lis, created, err := d.listen(l)
	if err != nil {
		d.opMu.Unlock()
		return fmt.Errorf("control socket: %w", err)
	}
	if d.opts.Inherited != nil {
		d.stored = takeStored(d.opts.Inherited)
		for _, name := range d.opts.Inherited.Names() {
			d.log.WithField("name", name).Warn("closing a descriptor systemd passed that this daemon does not use")
		}
		d.opts.Inherited.CloseRest()
	}
	ctlCtx, ctlStop := context.WithCancel(context.WithoutCancel(ctx))
	ctlDone := make(chan struct{})
	srv := control.NewServer(d.methods(), control.Options{Logger: d.log, AdminGID: l.adminGID})
	go func() {
		defer close(ctlDone)
		if err := srv.Serve(ctlCtx, lis); err != nil {
			d.log.WithError(err).Error("control socket failed")
		}
	}()
	defer func() {
		ctlStop()
		<-ctlDone
		if created {
			os.Remove(lis.Addr().String())
		}
	}()

	wdCtx, wdStop := context.WithCancel(ctx)
	defer wdStop()
	go d.watchdogLoop(wdCtx)

	d.mu.Lock()
	d.cfg = l.cfg
	d.mu.Unlock()
	d.notify.Status("starting: " + d.planLine(l.cfg))
	err = d.startAll(l)
	d.dropLeftovers(d.stored)
	if err != nil {
		d.shutdown()
		d.opMu.Unlock()
		return err
	}
	d.setState(StateRunning)
	d.notify.Ready(d.summary())
	d.prepareStop()
	d.printWhere()
	d.opMu.Unlock()

	<-ctx.Done()
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if handover, why := d.stopMode(); handover {
		d.handover(why)
	} else {
		d.log.WithField("why", why).Info("stopping for good: unmounting and removing devices")
		d.shutdown()
	}
	return nil
}

// startAll starts every mount and every device of a start-up, the devices
// alongside the mounts: after a restart each resumes as soon as it can, so
// a device's clients do not also wait for the mounts. A mount that fails
// fails the start; a device fails it too unless the kernel has no CUSE
// (then the devices are left out with one warning).
func (d *Daemon) startAll(l *loaded) error {
	devErr := make(chan error, 1)
	go func() { devErr <- d.startDevices(l.cfg.Devices) }()
	var mountErr error
	for _, mc := range l.cfg.Mounts {
		m, err := d.startMount(mc, l.policies[mc.Name])
		d.mu.Lock()
		d.mounts[mc.Name] = m
		d.mu.Unlock()
		if err != nil {
			mountErr = fmt.Errorf("mount %s: %w", mc.Name, err)
			break
		}
	}
	return errors.Join(mountErr, <-devErr)
}

// startDevices starts the devices of a start-up, one after the other.
func (d *Daemon) startDevices(dcs []config.Device) error {
	var noCuse []string
	var why error
	for _, dc := range dcs {
		dv, err := d.startDevice(dc)
		d.mu.Lock()
		d.devices[dc.Name] = dv
		d.mu.Unlock()
		if errors.Is(err, errNoCuse) {
			noCuse = append(noCuse, "/dev/"+dc.Name)
			why = err
			continue
		}
		if err != nil {
			return fmt.Errorf("device %s: %w", dc.Name, err)
		}
	}
	if len(noCuse) > 0 {
		d.log.WithError(why).Warnf("the kernel has no CUSE: %s not created; everything else runs", strings.Join(noCuse, ", "))
	}
	return nil
}

// shutdown reports STOPPING=1, removes every device and unmounts every
// mount, in parallel, each answering its requests in flight first.
func (d *Daemon) shutdown() {
	d.setState(StateStopping)
	d.notify.Stopping()
	d.notify.Status("stopping: removing devices and unmounting")
	d.mu.Lock()
	ms := sortedByName(d.mounts)
	ds := sortedByName(d.devices)
	d.mu.Unlock()
	d.stopAll(ds, ms)
	d.log.Info("stopped: devices removed, mounts unmounted")
}

// stopAll stops the devices and mounts in parallel and returns when every
// one has stopped.
func (d *Daemon) stopAll(ds []*device, ms []*mount) {
	var wg sync.WaitGroup
	for _, dv := range ds {
		wg.Go(func() { d.stopDevice(dv) })
	}
	for _, m := range ms {
		wg.Go(func() { d.stopMount(m) })
	}
	wg.Wait()
}

// applySettings takes the daemon-wide settings of a configuration.
func (d *Daemon) applySettings(c *config.Config) {
	d.stall.Store(int64(c.Daemon.WatchdogStall))
	d.grace.Store(int64(c.Daemon.ShutdownGrace))
}

func (d *Daemon) shutdownGrace() time.Duration { return time.Duration(d.grace.Load()) }

func (d *Daemon) setState(s State) {
	d.mu.Lock()
	d.state = s
	d.mu.Unlock()
}

// listen returns the control socket: the one systemd passed (fusegate.socket,
// FileDescriptorName=control), else a socket the daemon creates at
// control.socket (created reports that, so it is removed at exit).
func (d *Daemon) listen(l *loaded) (lis net.Listener, created bool, err error) {
	if d.opts.Inherited != nil {
		for _, name := range []string{"control", "fusegate.socket"} {
			lis, err := d.opts.Inherited.Listener(name)
			if err == nil {
				d.mu.Lock()
				d.socketPath = lis.Addr().String()
				d.mu.Unlock()
				d.log.WithField("socket", lis.Addr().String()).Info("control socket passed by systemd")
				return lis, false, nil
			}
			if !errors.Is(err, systemd.ErrNotPassed) {
				return nil, false, err
			}
		}
	}
	c := l.cfg.Control
	lis, err = control.Listen(c.Socket, c.Mode, l.adminGID)
	if err != nil {
		return nil, false, err
	}
	d.mu.Lock()
	d.socketPath = c.Socket
	d.mu.Unlock()
	return lis, true, nil
}

// printWhere prints where the mounts, devices and control socket are.
func (d *Daemon) printWhere() {
	d.mu.Lock()
	ms := sortedByName(d.mounts)
	ds := sortedByName(d.devices)
	sock := d.socketPath
	d.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "fusegate serve: %s (config %s)\n", d.summary(), d.configName())
	for _, m := range ms {
		st := m.status()
		fmt.Fprintf(&b, "  mount  %-14s %s -> %s (policy %s, passthrough %s)\n", st.Name, st.Source, st.Mountpoint, st.PolicyName, st.passthroughLine())
	}
	for _, dv := range ds {
		st := dv.status()
		if st.State == stateRunning {
			fmt.Fprintf(&b, "  device %-14s %s (%s, mode %s)\n", st.Name, st.Path, st.Kind, st.Mode)
		} else {
			fmt.Fprintf(&b, "  device %-14s not created: %s\n", st.Name, st.Error)
		}
	}
	fmt.Fprintf(&b, "  control socket %s (fusegate ctl status|mounts|devices|metrics|reload)\n", sock)
	io.WriteString(d.opts.Stdout, b.String())
}

// summary is the one-line status for systemd and `ctl status`.
func (d *Daemon) summary() string {
	d.mu.Lock()
	ms := sortedByName(d.mounts)
	ds := sortedByName(d.devices)
	unhealthy := d.unhealthy
	d.mu.Unlock()
	var mountsUp, devsUp int
	var problems []string
	for _, m := range ms {
		if state := m.currentState(); state == stateRunning {
			mountsUp++
		} else {
			problems = append(problems, fmt.Sprintf("mount %s %s", m.cfg.Name, state))
		}
	}
	for _, dv := range ds {
		if state := dv.currentState(); state == stateRunning {
			devsUp++
		} else {
			problems = append(problems, fmt.Sprintf("device %s %s", dv.cfg.Name, state))
		}
	}
	s := fmt.Sprintf("%d/%d mounts, %d/%d devices serving", mountsUp, len(ms), devsUp, len(ds))
	if len(problems) > 0 {
		s += "; " + strings.Join(problems, ", ")
	}
	if unhealthy != "" {
		s += "; STUCK: " + unhealthy
	}
	return s
}

// planLine names what a configuration asks for, for the starting status.
func (d *Daemon) planLine(c *config.Config) string {
	return fmt.Sprintf("%d mounts, %d devices from %s", len(c.Mounts), len(c.Devices), d.configName())
}

// sortedByName returns the values of d.mounts or d.devices (keyed by
// name) in the order of their names.
func sortedByName[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}
