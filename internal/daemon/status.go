package daemon

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/passthrough"
)

// Status is the answer to the control method "status".
type Status struct {
	Version       string        `json:"version"`
	PID           int           `json:"pid"`
	State         State         `json:"state"`
	Summary       string        `json:"summary"`
	Config        string        `json:"config"`
	ControlSocket string        `json:"control_socket"`
	Started       time.Time     `json:"started"`
	Uptime        string        `json:"uptime"`
	Watchdog      string        `json:"watchdog"`
	Mounts        []string      `json:"mounts"`  // one line each
	Devices       []string      `json:"devices"` // one line each
	ReloadsOK     uint64        `json:"reloads_ok"`
	ReloadsFailed uint64        `json:"reloads_failed"`
	LastReload    *ReloadResult `json:"last_reload,omitempty"`
}

// MountStatus is one mount in the answer to "mounts".
type MountStatus struct {
	Name        string              `json:"name"`
	Source      string              `json:"source"`
	Mountpoint  string              `json:"mountpoint"`
	State       string              `json:"state"`
	Error       string              `json:"error,omitempty"`
	Since       time.Time           `json:"since"`
	Policy      string              `json:"policy"`      // the setting: default, none or a file
	PolicyName  string              `json:"policy_name"` // the compiled policy's name
	Passthrough PassthroughStatus   `json:"passthrough"`
	Options     []string            `json:"options"`
	Readers     int                 `json:"readers"`
	Protocol    string              `json:"protocol,omitempty"` // negotiated, "7.45"
	Negotiated  *fusedev.Negotiated `json:"negotiated,omitempty"`
	Requests    uint64              `json:"requests"`
	Errors      uint64              `json:"errors"`
	Inflight    int                 `json:"inflight"`
	Denials     uint64              `json:"policy_denials"`
	FS          *passthrough.Stats  `json:"fs,omitempty"`
}

// PassthroughStatus is a mount's kernel passthrough.
type PassthroughStatus struct {
	Mode     string `json:"mode"`               // auto, on, off (configured)
	Active   bool   `json:"active"`             // opens may use it
	Fallback string `json:"fallback,omitempty"` // why not
}

func (s *MountStatus) passthroughLine() string {
	switch {
	case s.Passthrough.Active:
		return s.Passthrough.Mode + ", active"
	case s.Passthrough.Fallback != "":
		return s.Passthrough.Mode + ", not used: " + s.Passthrough.Fallback
	}
	return s.Passthrough.Mode
}

// DeviceStatus is one device in the answer to "devices".
type DeviceStatus struct {
	Name   string      `json:"name"`
	Kind   string      `json:"kind"`
	Path   string      `json:"path"`
	State  string      `json:"state"`
	Error  string      `json:"error,omitempty"`
	Since  time.Time   `json:"since"`
	Major  uint32      `json:"major,omitempty"`
	Minor  uint32      `json:"minor,omitempty"`
	Owner  string      `json:"owner"`
	Group  string      `json:"group"`
	Mode   string      `json:"mode"`
	Socket string      `json:"socket,omitempty"`
	Stats  *cuse.Stats `json:"stats,omitempty"`
}

func (m *mount) status() MountStatus {
	var st MountStatus
	st.State, st.Error, st.Since = m.snapshot()
	c := m.cfg
	st.Name, st.Source, st.Mountpoint = c.Name, c.Source, c.Mountpoint
	st.Options, st.Readers = c.Options, c.Readers
	if st.Options == nil {
		st.Options = []string{}
	}
	lp := m.policy.Load()
	st.Policy, st.PolicyName = lp.setting, lp.name()
	st.Passthrough.Mode = string(c.Passthrough)
	if e := m.engine(); e != nil {
		for _, r := range e.Stats() {
			st.Denials += r.Denials
		}
	}
	if m.srv != nil && m.fs != nil && st.State == stateRunning {
		if neg := m.srv.Negotiated(); neg != nil {
			st.Negotiated = neg
			st.Protocol = fmt.Sprintf("%d.%d", neg.Major, neg.Minor)
		}
		for _, o := range m.srv.Stats() {
			st.Requests += o.Count
			st.Errors += o.Errors
		}
		st.Inflight = m.srv.Inflight()
		fs := m.fs.Stats()
		st.FS = &fs
		st.Passthrough.Active, st.Passthrough.Fallback = fs.Passthrough, fs.Fallback
	}
	return st
}

// line is the mount in one line, for "status".
func (s *MountStatus) line() string {
	b := lineStart(s.Name, s.State, s.Error)
	fmt.Fprintf(b, ", %s -> %s, policy %s", s.Source, s.Mountpoint, s.PolicyName)
	if s.State == stateRunning {
		fmt.Fprintf(b, ", passthrough %s, protocol %s, %d requests, %d denied", s.passthroughLine(), s.Protocol, s.Requests, s.Denials)
	}
	return b.String()
}

func (dv *device) status() DeviceStatus {
	var st DeviceStatus
	st.State, st.Error, st.Since = dv.snapshot()
	c := dv.cfg
	st.Name, st.Kind, st.Path = c.Name, string(c.Kind), "/dev/"+c.Name
	st.Owner, st.Group, st.Mode, st.Socket = c.Owner, c.Group, fmt.Sprintf("%04o", uint32(c.Mode)), c.Socket
	if dv.dev != nil && st.State == stateRunning {
		st.Path = dv.dev.Path()
		st.Major, st.Minor = dv.dev.DevNum()
		s := dv.dev.Stats()
		st.Stats = &s
	}
	return st
}

func (s *DeviceStatus) line() string {
	b := lineStart(s.Name, s.State, s.Error)
	fmt.Fprintf(b, ", %s (%s)", s.Path, s.Kind)
	if s.Stats != nil {
		fmt.Fprintf(b, ", %d:%d, %d opens, %d bytes read, %d written, %d ioctls",
			s.Major, s.Minor, s.Stats.Opens, s.Stats.BytesRead, s.Stats.BytesWritten, s.Stats.Ioctls)
	}
	return b.String()
}

// lineStart begins the one-line status of a mount or device:
// "NAME: STATE (ERROR)".
func lineStart(name, state, err string) *strings.Builder {
	b := new(strings.Builder)
	fmt.Fprintf(b, "%s: %s", name, state)
	if err != "" {
		fmt.Fprintf(b, " (%s)", err)
	}
	return b
}

// Mounts returns the status of every mount, by name.
func (d *Daemon) Mounts() []MountStatus {
	d.mu.Lock()
	ms := sortedByName(d.mounts)
	d.mu.Unlock()
	out := make([]MountStatus, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.status())
	}
	return out
}

// Devices returns the status of every device, by name.
func (d *Daemon) Devices() []DeviceStatus {
	d.mu.Lock()
	ds := sortedByName(d.devices)
	d.mu.Unlock()
	out := make([]DeviceStatus, 0, len(ds))
	for _, dv := range ds {
		out = append(out, dv.status())
	}
	return out
}

// Status returns the daemon's status.
func (d *Daemon) Status() Status {
	summary := d.summary()
	d.mu.Lock()
	st := Status{
		Version: d.opts.Version, PID: os.Getpid(), State: d.state, Summary: summary,
		Config: d.configName(), ControlSocket: d.socketPath, Started: d.started,
		Uptime:     time.Since(d.started).Round(time.Second).String(),
		LastReload: d.lastReload,
	}
	switch {
	case d.watchdog == 0:
		st.Watchdog = "off (not started by systemd with WatchdogSec=)"
	case d.unhealthy != "":
		st.Watchdog = fmt.Sprintf("every %v; NOT PETTED: %s", d.watchdog, d.unhealthy)
	default:
		st.Watchdog = fmt.Sprintf("every %v; petted: every serving loop makes progress", d.watchdog)
	}
	d.mu.Unlock()
	st.ReloadsOK, st.ReloadsFailed = d.reloads.ok.Load(), d.reloads.failed.Load()
	st.Mounts, st.Devices = []string{}, []string{}
	for _, m := range d.Mounts() {
		st.Mounts = append(st.Mounts, m.line())
	}
	for _, dv := range d.Devices() {
		st.Devices = append(st.Devices, dv.line())
	}
	return st
}
