package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/passthrough"
	"github.com/fusegate/fusegate/policy"
)

func init() {
	register(command{name: "mount", summary: "mount a file system in the foreground", run: runMount})
}

const mountDescription = `Mount a file system at MOUNTPOINT and serve it in the foreground until
SIGINT or SIGTERM, which unmount it. A stale mount left at MOUNTPOINT by a
killed fusegate is cleared first.

With SOURCE, the file system is a mirror of the directory SOURCE: each open
of a regular file registers the lower file with the kernel (FUSE
passthrough, Linux 6.9+), so its reads and writes bypass the daemon; every
other operation is done on the lower tree with the caller's uid, gid and
groups. With --demo it serves a small built-in read-only tree (no SOURCE).

MOUNTPOINT may be /dev/fd/N: N is then an open /dev/fuse descriptor already
mounted by a privileged helper (as fusermount3 does); fusegate serves it and
leaves unmounting to whoever mounted it.

Mount options (-o, comma-separated, as mount(8)):
  allow_other          let users other than the mounting one use the mount
                       (default for a SOURCE mirror mounted by root;
                       noallow_other turns it off)
  default_permissions  let the kernel check permission bits (default for a
                       SOURCE mirror: without it the kernel's cached entries
                       skip search-permission checks; nodefault_permissions
                       turns it off, leaving every check to the lower file
                       system)
  ro | rw              read-only or read-write
  noexec, suid, dev    exec and setuid/device node handling (default: exec, nosuid, nodev)
  fsname=NAME          source shown in /proc/mounts (default: SOURCE)
  subtype=NAME         file system type shown as fuse.NAME
  max_read=N           largest read request in bytes
  entry_timeout=SEC    how long the kernel caches names (default 1; 0: never)
  attr_timeout=SEC     how long the kernel caches attributes (default 1)
  negative_timeout=SEC how long the kernel caches absent names (default 1)

The daemon runs with umask 0: the kernel applies each caller's umask.

Policy: --policy FILE decides every request of a SOURCE mirror by the
caller's uid, gid and pid under the policy FILE ("default": the built-in
Android scoped-storage policy; see docs/POLICY.md and 'fusegate policy').
The policy then sets the cache timeouts (the *_timeout options are refused
with it). Denials are logged (rate-limited per caller and rule). SIGHUP
reloads FILE: a valid policy takes effect on the live mount at once (the
kernel's cached names are invalidated); an invalid one is rejected with the
reason and the old policy stays in force.

Counters: --stats-file PATH writes the per-operation request counters and
the mirror's counters (with the policy's per-rule counters) as JSON when
fusegate exits and on SIGUSR1.`

// mountFlags are the parsed options of fusegate mount.
type mountFlags struct {
	opts    fusedev.MountOptions
	readers int

	// Mirror options: nil means "not given" (the mirror's default applies).
	allowOther, defaultPerms *bool
	entryTimeout             *time.Duration
	attrTimeout              *time.Duration
	negativeTimeout          *time.Duration
	passthrough              passthrough.Mode
	locks                    passthrough.LockMode
	statsFile                string
	policyFile               string // --policy: a file, "default", or "" for none
}

// parseMirrorOptions applies one -o list to mf: the options of a SOURCE
// mirror here, the others by parseMountOptions.
func parseMirrorOptions(list string, mf *mountFlags) error {
	for _, o := range strings.Split(list, ",") {
		key, val, hasVal := strings.Cut(strings.TrimSpace(o), "=")
		yes, no := true, false
		switch {
		case key == "allow_other" && !hasVal:
			mf.allowOther = &yes
		case key == "noallow_other" && !hasVal:
			mf.allowOther = &no
		case key == "default_permissions" && !hasVal:
			mf.defaultPerms = &yes
		case key == "nodefault_permissions" && !hasVal:
			mf.defaultPerms = &no
		case key == "entry_timeout" || key == "attr_timeout" || key == "negative_timeout":
			f, err := strconv.ParseFloat(val, 64)
			if !hasVal || err != nil || f < 0 || f > 1e6 {
				return fmt.Errorf("%s=%s: want a number of seconds", key, val)
			}
			d := time.Duration(f * float64(time.Second))
			switch key {
			case "entry_timeout":
				mf.entryTimeout = &d
			case "attr_timeout":
				mf.attrTimeout = &d
			default:
				mf.negativeTimeout = &d
			}
		default:
			if err := parseMountOptions(o, &mf.opts); err != nil {
				return err
			}
		}
	}
	return nil
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

// loadMountPolicy reads the --policy setting: "default" is the built-in
// policy, anything else a policy file.
func loadMountPolicy(setting string) (*policy.Policy, error) {
	if setting == "default" {
		return policy.Default(), nil
	}
	return policy.Load(setting)
}

// policyReloader returns what SIGHUP does for a mount under --policy:
// read the file again and, if it is valid, make it the policy of the live
// file system (passthrough.FS.SetPolicy, which also invalidates the
// kernel's cached names); an invalid file changes nothing.
func policyReloader(e *env, setting string, pfs *passthrough.FS) func() {
	return func() {
		p, err := loadMountPolicy(setting)
		if err != nil {
			e.log.WithError(err).Error("policy reload rejected; the old policy stays in force")
			return
		}
		inv, err := pfs.SetPolicy(p)
		if err != nil {
			e.log.WithError(err).Error("policy reload failed; the old policy stays in force")
			return
		}
		e.log.WithFields(map[string]any{"policy": p.Name(), "file": setting, "invalidated": inv.String()}).Info("policy reloaded")
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
