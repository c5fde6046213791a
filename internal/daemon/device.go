package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/config"
	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/cuse/host"
)

// errNoCuse marks a device that could not be created because the kernel
// has no CUSE: a warning, not a failure of the daemon.
var errNoCuse = cuse.ErrNoCuse

// device is one configured CUSE device.
type device struct {
	cfg  config.Device
	spec host.Spec
	log  logrus.FieldLogger
	dev  *host.Device // set once started; never changed after

	lifecycle
}

// specOf turns a device's configuration into cuse/host's Spec.
func specOf(dc config.Device) (host.Spec, error) {
	s := host.Spec{
		Name: dc.Name, Kind: string(dc.Kind), Major: dc.Major, Minor: dc.Minor,
		Mode: dc.Mode, Capacity: dc.Capacity, Socket: dc.Socket,
	}
	uid, err := config.LookupUID(dc.Owner)
	if err != nil {
		return s, fmt.Errorf("device %s: owner: %w", dc.Name, err)
	}
	gid, err := config.LookupGID(dc.Group)
	if err != nil {
		return s, fmt.Errorf("device %s: group: %w", dc.Name, err)
	}
	s.UID, s.GID = &uid, &gid
	if err := s.Check(); err != nil {
		return s, err
	}
	return s, nil
}

// startDevice creates the device and returns once its node exists with its
// owner and mode. Without CUSE in the kernel it returns an error wrapping
// errNoCuse and a device in state "unavailable".
func (d *Daemon) startDevice(dc config.Device) (*device, error) {
	dv := &device{cfg: dc, log: d.log.WithField("device", dc.Name)}
	dv.setState(stateStarting, "")
	spec, err := specOf(dc)
	if err != nil {
		dv.setState(stateFailed, err.Error())
		return dv, err
	}
	dv.spec = spec
	opts := d.opts.Devices
	opts.Logger = dv.log
	opts.KeepState = d.keepState()
	if dev := d.resumeDevice(dv, opts); dev != nil {
		dv.dev = dev
		dv.setState(stateRunning, "")
		go d.watchDevice(dv)
		d.storeDevice(dv)
		return dv, nil
	}
	// The device lives until stopDevice: its context is not the caller's.
	dev, err := host.Start(context.Background(), spec, opts)
	if err != nil {
		if errors.Is(err, errNoCuse) {
			dv.setState(stateUnavailable, err.Error())
			return dv, err
		}
		dv.setState(stateFailed, err.Error())
		dv.log.WithError(err).Error("device failed")
		return dv, err
	}
	dv.dev = dev
	dv.setState(stateRunning, "")
	major, minor := dev.DevNum()
	dv.log.WithFields(logrus.Fields{"path": dev.Path(), "kind": dc.Kind, "major": major, "minor": minor}).Info("device ready")
	go d.watchDevice(dv)
	d.storeDevice(dv)
	return dv, nil
}

// watchDevice notices a device that ends without the daemon asking.
func (d *Daemon) watchDevice(dv *device) {
	<-dv.dev.Done()
	if dv.stopExpected() {
		return
	}
	why := "the kernel closed the device"
	if err := dv.dev.Err(); err != nil {
		why = err.Error()
	}
	dv.setState(stateFailed, why)
	dv.log.Warnf("device ended: %s; a reload creates it again", why)
	d.notify.Status(d.summary())
}

// stopDevice removes the device: requests in flight are answered (within
// the shutdown grace), then /dev/cuse is closed and the kernel removes the
// node.
func (d *Daemon) stopDevice(dv *device) {
	if wasRunning := dv.markStopping(); !wasRunning || dv.dev == nil {
		return
	}
	// systemd's copy of /dev/cuse goes first: the node lives while any
	// descriptor of it does.
	d.unstoreDevice(dv.cfg.Name)
	ctx, cancel := context.WithTimeout(context.Background(), d.shutdownGrace()+5*time.Second)
	defer cancel()
	if err := dv.dev.Stop(ctx); err != nil {
		dv.log.WithError(err).Error("removing the device")
	}
	dv.dev.CloseState()
	dv.setState(stateStopped, "")
	dv.log.Info("device removed")
}

// handoverDevice leaves a device, its open files and contents to the
// successor.
func (d *Daemon) handoverDevice(dv *device) {
	if wasRunning := dv.markStopping(); !wasRunning || dv.dev == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.shutdownGrace()+5*time.Second)
	defer cancel()
	if err := dv.dev.Handover(ctx); err != nil {
		dv.log.WithError(err).Error("handing the device over")
	}
}

// storeDevice hands a device's descriptors to the fd store.
func (d *Daemon) storeDevice(dv *device) {
	if !d.keepState() || dv.dev.StateFile() == nil || dv.dev.ConnFile() == nil {
		return
	}
	if err := errors.Join(
		d.notify.StoreFDs(cuseStateFDName(dv.cfg.Name), dv.dev.StateFile()),
		d.notify.StoreFDs(cuseFDName(dv.cfg.Name), dv.dev.ConnFile()),
	); err != nil {
		dv.log.WithError(err).Warn("cannot hand the device to systemd's fd store: a restart will remove it")
	}
}

func (d *Daemon) unstoreDevice(name string) {
	if d.keepState() {
		d.notify.RemoveFDs(cuseFDName(name))
		d.notify.RemoveFDs(cuseStateFDName(name))
	}
}

// resumeDevice takes over a device the previous process left in the fd
// store, or returns nil (then what was stored is dropped: the node goes
// when systemd closes its descriptor, and the device is created afresh).
func (d *Daemon) resumeDevice(dv *device, opts host.Options) *host.Device {
	conns := d.stored.take(cuseFDName(dv.cfg.Name))
	states := d.stored.take(cuseStateFDName(dv.cfg.Name))
	if len(conns) == 0 && len(states) == 0 {
		return nil
	}
	if len(conns) != 1 || len(states) != 1 {
		closeFiles(conns)
		closeFiles(states)
		d.unstoreDevice(dv.cfg.Name)
		return nil
	}
	t0 := time.Now()
	dev, err := host.Resume(context.Background(), dv.spec, opts, conns[0], states[0])
	if err != nil {
		dv.log.WithError(err).Warn("cannot take over the device the previous process left in systemd's fd store; creating it afresh")
		d.unstoreDevice(dv.cfg.Name)
		// The node goes once systemd closed its descriptor; wait a little
		// for the name to be free.
		for i := 0; i < 100; i++ {
			if _, err := os.Stat("/dev/" + dv.cfg.Name); err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	st := dev.Stats()
	dv.log.WithFields(logrus.Fields{"path": dev.Path(), "open_files": st.OpenNow, "took": time.Since(t0).Round(time.Microsecond)}).
		Info("resumed the device: open files and buffered bytes kept")
	return dev
}
