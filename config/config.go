// Package config reads fusegate's daemon configuration: the mounts (each a
// lower directory mirrored at a mount point under a policy) and the CUSE
// devices one `fusegate serve` process hosts, and the control socket.
//
// Parse is pure: it decodes strictly (unknown keys are errors) and checks
// everything that needs no file system: names, absolute paths, modes,
// duplicates, mounts nested in one another (a daemon touching its own mount
// can deadlock). Check additionally looks at the machine: lower directories
// and mount point parents exist, users and groups resolve, policy files
// parse; it never looks at a mount point where a FUSE file system is
// mounted (it may be the caller's own, or wedged). Every error names
// file:line:col and the field.
//
// The package must never create, mount or change anything.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/internal/tomlx"
	"github.com/fusegate/fusegate/policy"
)

// CurrentVersion is the configuration format version this package reads.
const CurrentVersion = 1

// MaxFileSize bounds a configuration file.
const MaxFileSize = 1 << 20

//go:embed default.toml
var defaultTOML []byte

// DefaultFile returns the embedded default configuration's text.
func DefaultFile() []byte { return append([]byte(nil), defaultTOML...) }

// Default returns the embedded default configuration: one policy-enforced
// media mount and one loopback CUSE device.
func Default() *Config {
	c, err := Parse("(embedded default)", defaultTOML)
	if err != nil {
		panic("embedded default configuration is invalid: " + err.Error())
	}
	return c
}

// Config is a parsed configuration.
type Config struct {
	Name    string // file name it was read from
	Control Control
	Daemon  Daemon
	Mounts  []Mount
	Devices []Device

	doc *tomlx.Document
}

// Control is the control socket.
type Control struct {
	// Socket is where the daemon listens when systemd did not pass the
	// socket (default /run/fusegate/control.sock).
	Socket string
	// AdminGroup may make changes (reload) besides root; "" means root only.
	AdminGroup string
	// Mode of the socket file the daemon creates (default 0660).
	Mode os.FileMode
}

// Daemon holds process-wide settings.
type Daemon struct {
	// WatchdogStall is how long a serving loop may be stuck before the
	// daemon stops petting systemd's watchdog (default 10s).
	WatchdogStall time.Duration
	// ShutdownGrace is how long a stop waits for requests in flight (default 5s).
	ShutdownGrace time.Duration
}

// Passthrough selects kernel FUSE passthrough for a mount.
type Passthrough string

const (
	PassthroughAuto Passthrough = "auto" // when the kernel and privileges allow
	PassthroughOn   Passthrough = "on"   // required: fail the mount without it
	PassthroughOff  Passthrough = "off"
)

// Mount mirrors Source at Mountpoint.
type Mount struct {
	Name        string      // unique; names the mount in logs, metrics and the fd store
	Source      string      // lower directory (absolute)
	Mountpoint  string      // absolute
	Create      bool        // create Source and Mountpoint when missing
	Policy      string      // "default" (built-in), "none", or a policy file path
	Passthrough Passthrough // auto, on, off
	Options     []string    // mount(8)-style options: allow_other, default_permissions, ro, ...
	Readers     int         // request readers (0: default)
}

// DeviceKind is a built-in CUSE device kind.
type DeviceKind string

const (
	KindLoopback DeviceKind = "loopback"
	KindSocket   DeviceKind = "socket"
)

// Device is a CUSE character device /dev/Name.
type Device struct {
	Name     string
	Kind     DeviceKind
	Owner    string // user name or uid of the node (default root)
	Group    string // group name or gid of the node (default root)
	Mode     os.FileMode
	Major    uint32 // 0: dynamic
	Minor    uint32
	Capacity int    // loopback: bytes buffered (default 64 KiB)
	Socket   string // socket: the driver's unix socket (absolute)
}

// file mirrors the TOML document.
type file struct {
	Version *int         `toml:"version"`
	Control *fileControl `toml:"control"`
	Daemon  *fileDaemon  `toml:"daemon"`
	Mount   []fileMount  `toml:"mount"`
	Device  []fileDevice `toml:"device"`
}

type fileControl struct {
	Socket     *string `toml:"socket"`
	AdminGroup *string `toml:"admin_group"`
	Mode       *string `toml:"mode"`
}

type fileDaemon struct {
	WatchdogStall *string `toml:"watchdog_stall"`
	ShutdownGrace *string `toml:"shutdown_grace"`
}

type fileMount struct {
	Name        *string  `toml:"name"`
	Source      *string  `toml:"source"`
	Mountpoint  *string  `toml:"mountpoint"`
	Create      *bool    `toml:"create"`
	Policy      *string  `toml:"policy"`
	Passthrough *string  `toml:"passthrough"`
	Options     []string `toml:"options"`
	Readers     *int     `toml:"readers"`
}

type fileDevice struct {
	Name     *string `toml:"name"`
	Kind     *string `toml:"kind"`
	Owner    *string `toml:"owner"`
	Group    *string `toml:"group"`
	Mode     *string `toml:"mode"`
	Major    *int64  `toml:"major"`
	Minor    *int64  `toml:"minor"`
	Capacity *int    `toml:"capacity"`
	Socket   *string `toml:"socket"`
}

// Load reads and parses a configuration file.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d a configuration may have", path, st.Size(), MaxFileSize)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, err
	}
	return Parse(path, data)
}

// parser collects located errors.
type parser struct {
	doc  *tomlx.Document
	errs tomlx.Errors
}

func (p *parser) errf(field, format string, a ...any) {
	if len(p.errs) < 20 {
		p.errs = append(p.errs, p.doc.Errorf(field, format, a...))
	}
}

// Parse decodes and validates a configuration document named name.
func Parse(name string, data []byte) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: more than %d bytes", name, MaxFileSize)
	}
	var f file
	doc, err := tomlx.Decode(name, data, &f)
	if err != nil {
		return nil, err
	}
	p := &parser{doc: doc}
	c := &Config{Name: name, doc: doc}
	switch {
	case f.Version == nil:
		p.errf("version", "missing: the first line should be `version = %d`", CurrentVersion)
	case *f.Version != CurrentVersion:
		p.errf("version", "version %d is not supported (this fusegate reads version %d)", *f.Version, CurrentVersion)
	}
	p.control(f.Control, &c.Control)
	p.daemon(f.Daemon, &c.Daemon)
	for i := range f.Mount {
		c.Mounts = append(c.Mounts, p.mount(i, &f.Mount[i]))
	}
	for i := range f.Device {
		c.Devices = append(c.Devices, p.device(i, &f.Device[i]))
	}
	p.crossChecks(c)
	if err := p.errs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

func str(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func (p *parser) absPath(field, path string) string {
	if path == "" {
		p.errf(field, "missing")
		return ""
	}
	if !filepath.IsAbs(path) {
		p.errf(field, "%q is not an absolute path", path)
		return path
	}
	if clean := filepath.Clean(path); clean != path && clean+"/" != path {
		p.errf(field, "%q is not a clean path (did you mean %q?)", path, clean)
	}
	return filepath.Clean(path)
}

func (p *parser) duration(field string, s *string, def time.Duration) time.Duration {
	if s == nil {
		return def
	}
	d, err := time.ParseDuration(*s)
	if err != nil || d <= 0 {
		p.errf(field, "%q is not a positive duration like \"10s\"", *s)
		return def
	}
	return d
}

func (p *parser) mode(field string, s *string, def os.FileMode) os.FileMode {
	if s == nil {
		return def
	}
	v, err := strconv.ParseUint(*s, 8, 32)
	if err != nil || v > 0o777 {
		p.errf(field, "%q is not an octal permission mode like \"0660\"", *s)
		return def
	}
	return os.FileMode(v)
}

func (p *parser) control(f *fileControl, c *Control) {
	if f == nil {
		f = &fileControl{}
	}
	c.Socket = p.absPath("control.socket", str(f.Socket, "/run/fusegate/control.sock"))
	c.AdminGroup = str(f.AdminGroup, "")
	c.Mode = p.mode("control.mode", f.Mode, 0o660)
}

func (p *parser) daemon(f *fileDaemon, d *Daemon) {
	if f == nil {
		f = &fileDaemon{}
	}
	d.WatchdogStall = p.duration("daemon.watchdog_stall", f.WatchdogStall, 10*time.Second)
	d.ShutdownGrace = p.duration("daemon.shutdown_grace", f.ShutdownGrace, 5*time.Second)
}

// validName accepts names usable in logs, metric labels and fd store
// names: letters, digits, '-', '_' and '.', at most 64 bytes.
func validName(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// knownMountOptions are the -o options a mount accepts.
var knownMountOptions = map[string]bool{
	"allow_other": true, "default_permissions": true, "ro": true, "rw": true,
	"noexec": true, "exec": true, "suid": true, "nosuid": true, "dev": true, "nodev": true,
}

func (p *parser) mount(i int, f *fileMount) Mount {
	at := func(k string) string { return fmt.Sprintf("mount[%d].%s", i, k) }
	m := Mount{
		Name:        str(f.Name, ""),
		Create:      f.Create != nil && *f.Create,
		Policy:      str(f.Policy, "default"),
		Passthrough: Passthrough(str(f.Passthrough, string(PassthroughAuto))),
		Options:     f.Options,
	}
	if !validName(m.Name) {
		p.errf(at("name"), "%q: want 1 to 64 letters, digits, '-', '_' or '.'", m.Name)
	}
	m.Source = p.absPath(at("source"), str(f.Source, ""))
	m.Mountpoint = p.absPath(at("mountpoint"), str(f.Mountpoint, ""))
	switch m.Passthrough {
	case PassthroughAuto, PassthroughOn, PassthroughOff:
	default:
		p.errf(at("passthrough"), "%q: want auto, on or off", m.Passthrough)
	}
	if m.Policy != "default" && m.Policy != "none" {
		m.Policy = p.absPath(at("policy"), m.Policy)
	}
	for j, o := range m.Options {
		key, _, _ := strings.Cut(o, "=")
		if !knownMountOptions[key] && key != "fsname" && key != "subtype" && key != "max_read" {
			p.errf(fmt.Sprintf("mount[%d].options[%d]", i, j), "unknown mount option %q", o)
		}
	}
	if f.Readers != nil {
		if *f.Readers < 0 || *f.Readers > 64 {
			p.errf(at("readers"), "%d: want 0 (default) to 64", *f.Readers)
		}
		m.Readers = *f.Readers
	}
	return m
}

func (p *parser) device(i int, f *fileDevice) Device {
	at := func(k string) string { return fmt.Sprintf("device[%d].%s", i, k) }
	d := Device{
		Name:  str(f.Name, ""),
		Kind:  DeviceKind(str(f.Kind, "")),
		Owner: str(f.Owner, "root"),
		Group: str(f.Group, "root"),
		Mode:  p.mode(at("mode"), f.Mode, 0o600),
	}
	if !validName(d.Name) {
		p.errf(at("name"), "%q: want 1 to 64 letters, digits, '-', '_' or '.' (the node is /dev/NAME)", d.Name)
	}
	for _, v := range []struct {
		k   string
		val *int64
		dst *uint32
	}{{"major", f.Major, &d.Major}, {"minor", f.Minor, &d.Minor}} {
		if v.val != nil {
			if *v.val < 0 || *v.val > 1<<20-1 {
				p.errf(at(v.k), "%d: want 0 to %d", *v.val, 1<<20-1)
			} else {
				*v.dst = uint32(*v.val)
			}
		}
	}
	switch d.Kind {
	case KindLoopback:
		d.Capacity = 64 << 10
		if f.Capacity != nil {
			if *f.Capacity < 1 || *f.Capacity > 64<<20 {
				p.errf(at("capacity"), "%d: want 1 byte to 64 MiB", *f.Capacity)
			} else {
				d.Capacity = *f.Capacity
			}
		}
		if f.Socket != nil {
			p.errf(at("socket"), "only a socket device has a socket")
		}
	case KindSocket:
		d.Socket = p.absPath(at("socket"), str(f.Socket, ""))
		if f.Capacity != nil {
			p.errf(at("capacity"), "only a loopback device has a capacity")
		}
	case "":
		p.errf(at("kind"), "missing: want loopback or socket")
	default:
		p.errf(at("kind"), "%q: want loopback or socket", d.Kind)
	}
	return d
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/") || dir == "/"
}

func (p *parser) crossChecks(c *Config) {
	names := map[string]int{}
	mps := map[string]int{}
	for i, m := range c.Mounts {
		if j, dup := names[m.Name]; dup && m.Name != "" {
			p.errf(fmt.Sprintf("mount[%d].name", i), "%q is also the name of mount[%d]", m.Name, j)
		}
		names[m.Name] = i
		if j, dup := mps[m.Mountpoint]; dup && m.Mountpoint != "" {
			p.errf(fmt.Sprintf("mount[%d].mountpoint", i), "%s is also the mount point of mount[%d]", m.Mountpoint, j)
		}
		mps[m.Mountpoint] = i
		if m.Source == "" || m.Mountpoint == "" {
			continue
		}
		if within(m.Mountpoint, m.Source) || within(m.Source, m.Mountpoint) {
			p.errf(fmt.Sprintf("mount[%d].mountpoint", i), "%s and its source %s contain one another", m.Mountpoint, m.Source)
		}
		for j, o := range c.Mounts {
			if i == j || o.Mountpoint == "" {
				continue
			}
			// The daemon must never touch its own mounts: a source or mount
			// point inside another mount would make it do just that.
			if within(m.Source, o.Mountpoint) {
				p.errf(fmt.Sprintf("mount[%d].source", i), "%s is inside mount[%d]'s mount point %s: fusegate would serve requests on its own mount", m.Source, j, o.Mountpoint)
			}
			if m.Mountpoint != o.Mountpoint && within(m.Mountpoint, o.Mountpoint) {
				p.errf(fmt.Sprintf("mount[%d].mountpoint", i), "%s is inside mount[%d]'s mount point %s", m.Mountpoint, j, o.Mountpoint)
			}
		}
	}
	devs := map[string]int{}
	for i, d := range c.Devices {
		if j, dup := devs[d.Name]; dup && d.Name != "" {
			p.errf(fmt.Sprintf("device[%d].name", i), "%q is also the name of device[%d]", d.Name, j)
		}
		devs[d.Name] = i
		if d.Kind == KindSocket {
			for j, m := range c.Mounts {
				if m.Mountpoint != "" && within(d.Socket, m.Mountpoint) {
					p.errf(fmt.Sprintf("device[%d].socket", i), "%s is inside mount[%d]'s mount point", d.Socket, j)
				}
			}
		}
	}
	for j, m := range c.Mounts {
		if m.Mountpoint != "" && within(c.Control.Socket, m.Mountpoint) {
			p.errf("control.socket", "%s is inside mount[%d]'s mount point", c.Control.Socket, j)
		}
	}
}

// Check validates c against this machine: lower directories exist (or may
// be created), mount point parents exist, users and groups resolve, and
// policy files parse. It returns every problem found.
func (c *Config) Check() error {
	p := &parser{doc: c.doc}
	for i, m := range c.Mounts {
		at := func(k string) string { return fmt.Sprintf("mount[%d].%s", i, k) }
		for _, d := range []struct{ field, path string }{{"source", m.Source}, {"mountpoint", m.Mountpoint}} {
			if d.field == "mountpoint" && fuseMounted(d.path) {
				// A FUSE file system is mounted there: a directory, and one
				// that may belong to the daemon asking (which must never
				// touch its own mounts) or to a wedged server (stat would
				// hang). Do not look.
				continue
			}
			st, err := os.Stat(d.path)
			switch {
			case err == nil && !st.IsDir():
				p.errf(at(d.field), "%s is not a directory", d.path)
			case errors.Is(err, os.ErrNotExist) && m.Create:
				if !createdByParent(d.path) {
					p.errf(at(d.field), "%s does not exist and cannot be created: a parent is not a directory", d.path)
				}
			case errors.Is(err, os.ErrNotExist):
				p.errf(at(d.field), "%s does not exist (set create = true to create it)", d.path)
			case err != nil:
				p.errf(at(d.field), "%s: %v", d.path, err)
			}
		}
		if m.Policy != "default" && m.Policy != "none" {
			if _, err := policy.Load(m.Policy); err != nil {
				p.errs = append(p.errs, c.doc.Wrap(at("policy"), err))
			}
		}
	}
	for i, d := range c.Devices {
		if _, err := LookupUID(d.Owner); err != nil {
			p.errf(fmt.Sprintf("device[%d].owner", i), "%v", err)
		}
		if _, err := LookupGID(d.Group); err != nil {
			p.errf(fmt.Sprintf("device[%d].group", i), "%v", err)
		}
	}
	if c.Control.AdminGroup != "" {
		if _, err := LookupGID(c.Control.AdminGroup); err != nil {
			p.errf("control.admin_group", "%v", err)
		}
	}
	return p.errs.Err()
}

// fuseMounted reports whether /proc/self/mountinfo lists a FUSE mount at
// path (read without touching the mount).
func fuseMounted(path string) bool {
	_, ok, err := fusedev.FindMount(path)
	return err == nil && ok
}

// createdByParent reports whether MkdirAll could create path: it creates
// every missing parent, so only an ancestor that is not a directory (or
// cannot be examined) makes creation impossible.
func createdByParent(path string) bool {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err == nil {
			return st.IsDir()
		}
		if dir == "/" || !errors.Is(err, os.ErrNotExist) {
			return false
		}
	}
}

// LookupUID resolves a user name or numeric uid.
func LookupUID(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Errorf("no user %q", s)
	}
	n, _ := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), nil
}

// LookupGID resolves a group name or numeric gid.
func LookupGID(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("no group %q", s)
	}
	n, _ := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(n), nil
}
