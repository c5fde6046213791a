// Package host runs fusegate's built-in CUSE devices from a declarative
// Spec: the foreground `fusegate device` command and the daemon (which
// hosts several from its config) both start devices here, stop them, and
// read their stats.
//
// A device that fails (no CUSE in the kernel, name taken, driver socket
// missing at open) reports an error for that device only: this package
// never exits the process, and it never touches the nodes it serves.
package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/cuse/loopback"
	"github.com/fusegate/fusegate/cuse/sockdev"
	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/internal/memstate"
)

// Kinds of built-in devices.
const (
	KindLoopback = "loopback" // a bounded in-memory pipe (cuse/loopback)
	KindSocket   = "socket"   // each open bridged to a driver's unix socket (cuse/sockdev)
)

// Kinds lists the built-in kinds, sorted.
func Kinds() []string { return []string{KindLoopback, KindSocket} }

// Spec describes one device. Name and Kind are required.
type Spec struct {
	Name string `json:"name"`
	Kind string `json:"kind"`

	// Major and Minor fix the device number (Major 0: the kernel picks).
	Major uint32 `json:"major,omitempty"`
	Minor uint32 `json:"minor,omitempty"`
	// UID and GID own the node once created, when set; Mode sets its
	// permission bits when not 0 (devtmpfs makes it root 0600).
	UID  *uint32     `json:"uid,omitempty"`
	GID  *uint32     `json:"gid,omitempty"`
	Mode os.FileMode `json:"mode,omitempty"`

	MaxRead  uint32 `json:"max_read,omitempty"`  // default cuse.DefaultMaxIO
	MaxWrite uint32 `json:"max_write,omitempty"` // default cuse.DefaultMaxIO
	// RestrictIoctl turns the unrestricted-ioctl retry protocol off.
	RestrictIoctl bool `json:"restrict_ioctl,omitempty"`

	// Capacity is the loopback pipe's size (default loopback.DefaultCapacity).
	Capacity int `json:"capacity,omitempty"`
	// Socket is the driver's listening unix socket (socket kind).
	Socket string `json:"socket,omitempty"`
	// Buffer bounds each socket-kind file's buffers (default 256 KiB).
	Buffer int `json:"buffer,omitempty"`
}

// Check reports the first problem with s.
func (s *Spec) Check() error {
	if err := cuse.CheckName(s.Name); err != nil {
		return err
	}
	if s.Mode&^os.ModePerm != 0 {
		return fmt.Errorf("device %s: mode %#o has bits beyond 0777", s.Name, uint32(s.Mode))
	}
	for _, v := range []struct {
		name string
		n    uint32
	}{{"max_read", s.MaxRead}, {"max_write", s.MaxWrite}} {
		if v.n != 0 && v.n < 4096 {
			return fmt.Errorf("device %s: %s %d is below 4096", s.Name, v.name, v.n)
		}
	}
	switch s.Kind {
	case KindLoopback:
		if s.Capacity < 0 {
			return fmt.Errorf("device %s: negative capacity", s.Name)
		}
		if s.Socket != "" || s.Buffer != 0 {
			return fmt.Errorf("device %s: socket and buffer are for the socket kind", s.Name)
		}
	case KindSocket:
		if s.Socket == "" {
			return fmt.Errorf("device %s: the socket kind needs a socket path", s.Name)
		}
		if s.Capacity != 0 {
			return fmt.Errorf("device %s: capacity is for the loopback kind", s.Name)
		}
		if s.Buffer < 0 {
			return fmt.Errorf("device %s: negative buffer", s.Name)
		}
	case "":
		return fmt.Errorf("device %s: no kind (one of %s)", s.Name, strings.Join(Kinds(), ", "))
	default:
		return fmt.Errorf("device %s: unknown kind %q (one of %s)", s.Name, s.Kind, strings.Join(Kinds(), ", "))
	}
	return nil
}

// Options are how devices are hosted; the zero value works.
type Options struct {
	Logger logrus.FieldLogger // default: discard
	// DevDir, SysDir and CuseDev move /dev, /sys and /dev/cuse (tests).
	DevDir, SysDir, CuseDev string
	// KeepState keeps the device's restart state in a memfd (StateFile):
	// its open files and, for the loopback kind, the bytes buffered.
	KeepState bool
}

// Device is a running device.
type Device struct {
	spec  Spec
	srv   *cuse.Server
	state *memstate.Region // restart state, or nil
}

// Start creates the device of spec and returns once its node exists with
// its owner and mode. The device runs until Stop or ctx is cancelled.
func Start(ctx context.Context, spec Spec, opts Options) (*Device, error) {
	if err := spec.Check(); err != nil {
		return nil, err
	}
	log := deviceLogger(spec, opts)
	var region *memstate.Region
	if opts.KeepState {
		r, err := memstate.Create("fusegate-cuse-"+spec.Name, cuse.StateSize(deviceStateSize(spec)))
		if err != nil {
			return nil, fmt.Errorf("device %s: restart state: %w", spec.Name, err)
		}
		region = r
	}
	srv, err := newServer(spec, log, opts, region, false)
	if err != nil {
		if region != nil {
			region.Close()
		}
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		if region != nil {
			region.Close()
		}
		return nil, err
	}
	return &Device{spec: spec, srv: srv, state: region}, nil
}

// deviceStateSize is what a device of spec keeps in its state memfd.
func deviceStateSize(spec Spec) int {
	if spec.Kind == KindLoopback {
		return loopback.StateSize(spec.Capacity)
	}
	return 0
}

// newServer makes the cuse.Server of spec; with region, its state (and the
// loopback's ring) live there, adopted when restore is set.
func newServer(spec Spec, log logrus.FieldLogger, opts Options, region *memstate.Region, restore bool) (*cuse.Server, error) {
	var dev cuse.Device
	switch spec.Kind {
	case KindLoopback:
		lo := loopback.Options{Capacity: spec.Capacity}
		if region != nil {
			lo.State, lo.Restore = cuse.DeviceArea(region), restore
		}
		dev = loopback.New(lo)
	case KindSocket:
		d, err := sockdev.New(sockdev.Options{Socket: spec.Socket, Buffer: spec.Buffer, Logger: log})
		if err != nil {
			return nil, err
		}
		dev = d
	}
	copts := cuse.Options{
		Name: spec.Name, Major: spec.Major, Minor: spec.Minor,
		MaxRead: spec.MaxRead, MaxWrite: spec.MaxWrite, RestrictIoctl: spec.RestrictIoctl,
		Mode: spec.Mode, Logger: log,
		DevDir: opts.DevDir, SysDir: opts.SysDir, CuseDev: opts.CuseDev,
	}
	if spec.UID != nil || spec.GID != nil {
		o := &cuse.Owner{UID: -1, GID: -1}
		if spec.UID != nil {
			o.UID = int(*spec.UID)
		}
		if spec.GID != nil {
			o.GID = int(*spec.GID)
		}
		copts.Owner = o
	}
	srv, err := cuse.New(dev, copts)
	if err != nil {
		return nil, err
	}
	if region != nil && !restore {
		extra, _ := json.Marshal(spec)
		srv.KeepState(region, extra)
	}
	return srv, nil
}

// Resume takes over a device a predecessor created with KeepState: conn is
// its /dev/cuse descriptor and state its state memfd (from systemd's fd
// store; Resume owns both). The spec must be the one it was created with.
func Resume(ctx context.Context, spec Spec, opts Options, conn, state *os.File) (*Device, error) {
	if err := spec.Check(); err != nil {
		conn.Close()
		state.Close()
		return nil, err
	}
	log := deviceLogger(spec, opts)
	region, err := memstate.Open(state)
	if err != nil {
		conn.Close()
		return nil, err
	}
	fail := func(err error) (*Device, error) {
		region.Close()
		conn.Close()
		return nil, err
	}
	extra, err := cuse.StateExtra(region)
	if err != nil {
		return fail(err)
	}
	want, _ := json.Marshal(spec)
	if string(extra) != string(want) {
		return fail(fmt.Errorf("device %s: its configuration changed (was %s)", spec.Name, extra))
	}
	if region.Size() < cuse.StateSize(deviceStateSize(spec)) {
		return fail(fmt.Errorf("device %s: state of %d bytes", spec.Name, region.Size()))
	}
	srv, err := newServer(spec, log, opts, region, true)
	if err != nil {
		return fail(err)
	}
	c, err := fusedev.NewConn(conn)
	if err != nil {
		region.Close()
		return nil, err
	}
	if err := srv.Resume(ctx, c, region); err != nil {
		region.Close()
		c.Close()
		return nil, err
	}
	return &Device{spec: spec, srv: srv, state: region}, nil
}

// Handover stops serving and leaves the device to a successor (Resume).
func (d *Device) Handover(ctx context.Context) error { return d.srv.Handover(ctx) }

// ConnFile is the /dev/cuse descriptor, for systemd's fd store.
func (d *Device) ConnFile() *os.File {
	if c := d.srv.Conn(); c != nil {
		return c.File()
	}
	return nil
}

// StateFile is the state memfd (nil without KeepState).
func (d *Device) StateFile() *os.File {
	if d.state == nil {
		return nil
	}
	return d.state.File()
}

// CloseState releases the state memfd of a device stopped for good.
func (d *Device) CloseState() {
	if d.state != nil {
		d.state.Close()
		d.state = nil
	}
}

// deviceLogger is opts.Logger (by default one that discards) naming spec's device.
func deviceLogger(spec Spec, opts Options) logrus.FieldLogger {
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.Out = discard{}
		log = l
	}
	return log.WithFields(logrus.Fields{"device": spec.Name, "kind": spec.Kind})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Spec returns the device's spec.
func (d *Device) Spec() Spec { return d.spec }

// Path returns the device node's path.
func (d *Device) Path() string { return d.srv.Path() }

// DevNum returns the device number the kernel gave.
func (d *Device) DevNum() (major, minor uint32) { return d.srv.DevNum() }

// Stats returns the device's counters.
func (d *Device) Stats() cuse.Stats { return d.srv.Stats() }

// Stop removes the device and waits for it to be gone, or for ctx.
func (d *Device) Stop(ctx context.Context) error { return d.srv.Stop(ctx) }

// Done is closed once the device stopped (Stop, ctx, or the kernel closed it).
func (d *Device) Done() <-chan struct{} { return d.srv.Done() }

// Err says why the device stopped (nil: stopped on request).
func (d *Device) Err() error { return d.srv.Err() }

// ParseOwner parses "UID", "UID:GID" or ":GID" (numbers only: the guest may
// have no user database).
func ParseOwner(s string) (uid, gid *uint32, err error) {
	u, g, hasG := strings.Cut(s, ":")
	num := func(what, v string) (*uint32, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("owner %q: %s %q is not a number", s, what, v)
		}
		x := uint32(n)
		return &x, nil
	}
	if u != "" {
		if uid, err = num("uid", u); err != nil {
			return nil, nil, err
		}
	}
	if hasG && g != "" {
		if gid, err = num("gid", g); err != nil {
			return nil, nil, err
		}
	}
	if uid == nil && gid == nil {
		return nil, nil, errors.New("owner: want UID, UID:GID or :GID")
	}
	return uid, gid, nil
}

// ParseMode parses an octal permission mode such as 0660.
func ParseMode(s string) (os.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return 0, fmt.Errorf("mode %q: want octal permission bits, e.g. 0660", s)
	}
	return os.FileMode(n), nil
}
