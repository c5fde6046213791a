package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/config"
	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/internal/memstate"
	"github.com/fusegate/fusegate/passthrough"
)

// Restart without unmount (docs/RESTART.md).
//
// Under systemd every mount's /dev/fuse descriptors (the connection and its
// clones) and a memfd with the passthrough state, and every device's
// /dev/cuse descriptor and its state memfd, go into the unit's fd store
// (FDSTORE=1, FDNAME= below) once they serve. The state memfds are kept
// current as requests are answered, so whatever way the process ends, a
// successor started with the stored descriptors (LISTEN_FDS) restores the
// tables, skips INIT, asks the kernel to resend what was read but not
// answered (FUSE_NOTIFY_RESEND, Linux 6.9+) and serves on.
//
// At SIGTERM the daemon asks systemd whether the job stopping it is a
// restart: then it hands over (answers what finishes within a short grace,
// leaves waiting requests to the successor, unmounts nothing); otherwise it
// stops for good (answers, flushes, unmounts, removes devices).

// Names in the fd store.
func fuseFDName(mount string) string       { return "fuse/" + mount }
func fuseClonesFDName(mount string) string { return "fuse/" + mount + "/clones" }
func fuseStateFDName(mount string) string  { return "fuse/" + mount + "/state" }
func cuseFDName(dev string) string         { return "cuse/" + dev }
func cuseStateFDName(dev string) string    { return "cuse/" + dev + "/state" }

// mountExtra is the daemon's part of a mount's state header.
type mountExtra struct {
	Mount  json.RawMessage `json:"mount"`   // the mount's configuration, policy left out
	ConnID uint64          `json:"conn_id"` // the connection's device number (mountinfo)
	PID    int             `json:"pid"`     // the process that mounted it
}

// mountIdentity is a mount's configuration without what changes in place.
func mountIdentity(mc config.Mount) json.RawMessage {
	mc.Policy = ""
	mc.Readers = 0
	mc.Create = false
	b, _ := json.Marshal(mc)
	return b
}

// keepState reports whether mounts and devices keep restart state: only
// when a service manager can hold it.
func (d *Daemon) keepState() bool { return d.notify.Enabled() }

// stored are the descriptors systemd handed back, by fd store name. Mounts
// and devices take theirs at the same time (startAll), so it has a lock of
// its own. A nil *stored holds nothing.
type stored struct {
	mu    sync.Mutex
	files map[string][]*os.File // guarded by mu
}

// takeStored moves the fd store's descriptors out of the inherited set.
func takeStored(in interface {
	Names() []string
	Take(string) []*os.File
}) *stored {
	s := &stored{files: map[string][]*os.File{}}
	if in == nil {
		return s
	}
	for _, name := range in.Names() {
		if strings.HasPrefix(name, "fuse/") || strings.HasPrefix(name, "cuse/") {
			s.files[name] = in.Take(name)
		}
	}
	return s
}

func (s *stored) take(name string) []*os.File {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := s.files[name]
	delete(s.files, name)
	return fs
}

// names lists the names not taken yet, sorted.
func (s *stored) names() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.files))
	for n := range s.files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// storeMount hands a serving mount's descriptors to the fd store.
func (d *Daemon) storeMount(m *mount) {
	if m.rstate == nil || !d.keepState() {
		return
	}
	conns := m.srv.Conns()
	var clones []*os.File
	for _, c := range conns[1:] {
		clones = append(clones, c.File())
	}
	err := errors.Join(
		d.notify.StoreFDs(fuseStateFDName(m.cfg.Name), m.rstate.File()),
		d.notify.StoreFDs(fuseFDName(m.cfg.Name), conns[0].File()),
	)
	if len(clones) > 0 {
		err = errors.Join(err, d.notify.StoreFDs(fuseClonesFDName(m.cfg.Name), clones...))
	}
	if err != nil {
		m.log.WithError(err).Warn("cannot hand the mount to systemd's fd store: a restart will unmount it")
	}
}

// unstoreMount removes a mount's descriptors from the fd store (it is
// stopped for good).
func (d *Daemon) unstoreMount(name string) {
	if !d.keepState() {
		return
	}
	for _, n := range []string{fuseFDName(name), fuseClonesFDName(name), fuseStateFDName(name)} {
		d.notify.RemoveFDs(n)
	}
}

// resumeMount takes over a mount whose descriptors and state systemd kept.
// It returns errNoResume (wrapped) when there is nothing usable to resume:
// the caller then clears what is left and mounts afresh.
func (d *Daemon) resumeMount(m *mount, st *stored) error {
	mc := m.cfg
	fuseFiles := st.take(fuseFDName(mc.Name))
	cloneFiles := st.take(fuseClonesFDName(mc.Name))
	stateFiles := st.take(fuseStateFDName(mc.Name))
	if len(fuseFiles) == 0 {
		closeFiles(cloneFiles)
		closeFiles(stateFiles)
		return errNoResume
	}
	t0 := time.Now()
	giveUp := func(why error) error {
		closeFiles(fuseFiles)
		closeFiles(cloneFiles)
		closeFiles(stateFiles)
		return fmt.Errorf("%w: %v", errNoResume, why)
	}
	if len(fuseFiles) != 1 || len(stateFiles) != 1 {
		return giveUp(fmt.Errorf("the fd store holds %d connections and %d states", len(fuseFiles), len(stateFiles)))
	}
	region, err := memstate.Open(stateFiles[0])
	if err != nil {
		closeFiles(fuseFiles)
		closeFiles(cloneFiles)
		return fmt.Errorf("%w: %v", errNoResume, err)
	}
	stateFiles = nil
	fail := func(why error) error {
		region.Close()
		return giveUp(why)
	}
	pfs, err := d.newFS(m)
	if err != nil {
		return fail(err)
	}
	info, err := pfs.Restore(region)
	if err != nil {
		pfs.Close()
		return fail(err)
	}
	var extra mountExtra
	if err := json.Unmarshal(info.Extra, &extra); err != nil {
		pfs.Close()
		return fail(fmt.Errorf("state header: %w", err))
	}
	if string(extra.Mount) != string(mountIdentity(mc)) {
		pfs.Close()
		return fail(fmt.Errorf("the mount's configuration changed (was %s)", extra.Mount))
	}
	mi, ok, err := fusedev.FindMount(mc.Mountpoint)
	if err != nil || !ok || (extra.ConnID != 0 && mi.ConnID() != extra.ConnID) {
		pfs.Close()
		return fail(fmt.Errorf("%s is no longer the mount of this connection (%v)", mc.Mountpoint, err))
	}
	conn, err := fusedev.NewConn(fuseFiles[0])
	fuseFiles = nil
	if err != nil {
		pfs.Close()
		return fail(err)
	}
	var clones []*fusedev.Conn
	for _, f := range cloneFiles {
		if c, err := fusedev.NewConn(f); err == nil {
			clones = append(clones, c)
		}
	}
	cloneFiles = nil
	srv := fusedev.NewServer(conn, pfs, fusedev.Options{
		Logger:        m.log,
		Readers:       mc.Readers,
		Flags:         pfs.InitFlags(),
		ShutdownGrace: d.shutdownGrace(),
		Resume:        info.Negotiated,
		Clones:        clones,
	})
	ctx, cancel := context.WithCancel(context.Background())
	m.fs, m.conn, m.srv, m.cancel, m.rstate = pfs, conn, srv, cancel, region
	go func() {
		m.served = srv.Serve(ctx)
		close(m.done)
	}()
	select {
	case <-srv.Ready():
	case <-m.done:
		// The connection is gone (unmounted meanwhile): mount afresh.
		region.Close()
		conn.Close()
		m.fs, m.conn, m.srv, m.cancel, m.rstate = nil, nil, nil, nil, nil
		m.done = make(chan struct{})
		return fmt.Errorf("%w: the connection ended: %v", errNoResume, m.served)
	}
	m.resumed = true
	f := logrus.Fields{"nodes": info.Nodes, "open_files": info.Handles, "backing_ids": pfs.Stats().BackingIDs, "took": time.Since(t0).Round(time.Microsecond),
		"protocol": fmt.Sprintf("%d.%d", info.Negotiated.Major, info.Negotiated.Minor), "mounted_by_pid": extra.PID}
	if info.Lost > 0 {
		f["open_files_lost"] = info.Lost
	}
	if !info.Negotiated.KernelFlags.Has(abi.InitHasResend) {
		m.log.WithFields(f).Warn("resumed the mount, but this kernel cannot resend requests (FUSE_NOTIFY_RESEND needs Linux 6.9): requests the previous process read and did not answer are never answered, and their callers hang until the mount is aborted ('fusegate umount --abort')")
	} else {
		m.log.WithFields(f).Info("resumed the mount: the kernel resends what the previous process left unanswered")
	}
	return nil
}

// errNoResume means a mount or device could not be taken over.
var errNoResume = errors.New("cannot resume")

// clearStored ends what the fd store kept for a mount that is not resumed:
// the mount point is unmounted (lazily) if it is still that connection's,
// and the descriptors are dropped from the store and closed.
func (d *Daemon) clearStored(name, mountpoint string, files []*os.File) {
	if mountpoint != "" {
		if _, ok, _ := fusedev.FindMount(mountpoint); ok {
			d.log.WithField("mount", name).Warnf("unmounting %s, which the previous process left in systemd's fd store and this one does not resume", mountpoint)
			fusedev.Unmount(mountpoint, fusedev.UnmountOptions{Lazy: true, Namespace: d.ns})
		}
	}
	closeFiles(files)
	d.unstoreMount(name)
}

// dropLeftovers clears stored descriptors no configured mount or device
// took (they were removed from the configuration while the daemon was
// down).
func (d *Daemon) dropLeftovers(st *stored) {
	for _, n := range st.names() {
		files := st.take(n)
		if len(files) == 0 {
			continue
		}
		d.log.WithField("fdname", n).Warn("dropping descriptors the previous process stored for a mount or device this configuration does not have")
		if rest, ok := strings.CutPrefix(n, "fuse/"); ok && !strings.Contains(rest, "/") {
			// The connection: the mount point is in its state, which may
			// be gone already; unmounting is left to the stale-mount check
			// of whoever mounts there next.
			closeFiles(files)
			d.unstoreMount(rest)
			continue
		}
		closeFiles(files)
		d.notify.RemoveFDs(n)
	}
}

// stopMode decides at SIGTERM whether to hand the mounts and devices over
// to a successor (true) or stop for good.
func (d *Daemon) stopMode() (handover bool, why string) {
	if d.handoverAsked.Load() {
		return true, "hand-over requested (SIGUSR1)"
	}
	if !d.keepState() {
		return false, "no service manager holds the descriptors"
	}
	if d.opts.RestartPending != nil {
		return d.opts.RestartPending()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	restart, job, err := systemdRestartPending(ctx, &d.sd)
	took := time.Since(t0).Round(time.Microsecond)
	switch {
	case err != nil:
		d.log.WithError(err).Warn("cannot ask systemd whether this is a restart; stopping for good (unmounting)")
		return false, "systemd did not say"
	case restart:
		return true, fmt.Sprintf("systemd job %q (asked in %v)", job, took)
	case job == "":
		return false, fmt.Sprintf("no systemd job (asked in %v)", took)
	}
	return false, fmt.Sprintf("systemd job %q (asked in %v)", job, took)
}

// prepareStop connects to systemd ahead of a stop (see sdQuery); errors
// are retried at the stop.
func (d *Daemon) prepareStop() {
	if !d.keepState() || d.opts.RestartPending != nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.sd.connect(ctx); err != nil {
			d.log.WithError(err).Warn("cannot reach systemd over D-Bus yet; trying again at the stop")
		} else if n := d.sd.resentCalls(); n > 0 {
			d.log.WithField("resent", n).Info("systemd answered on D-Bus only after the call was sent again")
		}
	}()
}

// RequestHandover makes the next stop a hand-over: mounts and devices are
// left to a successor that gets the descriptors from the fd store (what a
// supervisor other than systemd asks with SIGUSR1 before SIGTERM). It
// acknowledges with STATUS=HandoverStatus on the notify socket, which the
// supervisor may wait for before it sends SIGTERM.
func (d *Daemon) RequestHandover() {
	d.handoverAsked.Store(true)
	d.notify.Status(HandoverStatus)
}

// HandoverStatus is the STATUS= a daemon sends when asked to hand over at
// its next stop.
const HandoverStatus = "hand-over requested: the next stop leaves mounts and devices to a successor"

// handover stops serving every mount and device and leaves them, with
// their state, to the successor.
func (d *Daemon) handover(why string) {
	d.setState(StateStopping)
	d.notify.Stopping()
	d.notify.Status("restarting: handing mounts and devices over (" + why + ")")
	t0 := time.Now()
	d.mu.Lock()
	ms := sortedByName(d.mounts)
	ds := sortedByName(d.devices)
	d.mu.Unlock()
	done := make(chan struct{}, len(ms)+len(ds))
	for _, m := range ms {
		go func() {
			defer func() { done <- struct{}{} }()
			if wasRunning := m.markStopping(); !wasRunning || m.srv == nil {
				return
			}
			m.srv.Handover()
			m.stopServing()
			m.fs.MarkHandedOver() // nothing left unanswered: see passthrough.ErrUnclean
		}()
	}
	for _, dv := range ds {
		go func() {
			defer func() { done <- struct{}{} }()
			d.handoverDevice(dv)
		}()
	}
	for range len(ms) + len(ds) {
		<-done
	}
	d.log.WithFields(logrus.Fields{"why": why, "took": time.Since(t0).Round(time.Microsecond)}).
		Info("handed over: mounts and devices stay, with their state, for the next process")
}

// newFS makes the passthrough file system of a mount.
func (d *Daemon) newFS(m *mount) (*passthrough.FS, error) {
	mode, err := passthrough.ParseMode(string(m.cfg.Passthrough))
	if err != nil {
		return nil, err
	}
	pfs, err := passthrough.New(m.cfg.Source, passthrough.Options{
		Logger:      m.log,
		Passthrough: mode,
		Mountpoint:  m.cfg.Mountpoint,
		Policy:      m.eng,
	})
	if err != nil {
		return nil, err
	}
	if m.policy.Load().p == nil {
		pfs.SetPolicy(nil) // policy "none"
	}
	return pfs, nil
}

// trackState gives a freshly mounted FS its state memfd.
func (d *Daemon) trackState(m *mount, pfs *passthrough.FS) {
	if !d.keepState() {
		return
	}
	region, err := memstate.Create("fusegate-mount-"+m.cfg.Name, passthrough.StateSize)
	if err != nil {
		m.log.WithError(err).Warn("no restart state: a restart will unmount this mount")
		return
	}
	var conn uint64
	if mi, ok, _ := fusedev.FindMount(m.cfg.Mountpoint); ok {
		conn = mi.ConnID()
	}
	extra, _ := json.Marshal(mountExtra{Mount: mountIdentity(m.cfg), ConnID: conn, PID: os.Getpid()})
	if err := pfs.TrackState(region, extra); err != nil {
		region.Close()
		m.log.WithError(err).Warn("no restart state: a restart will unmount this mount")
		return
	}
	m.rstate = region
}
