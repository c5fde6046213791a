package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	c := Default()
	if len(c.Mounts) != 1 || len(c.Devices) != 1 {
		t.Fatalf("default has %d mounts, %d devices", len(c.Mounts), len(c.Devices))
	}
	m := c.Mounts[0]
	if m.Source != "/var/lib/fusegate/media" || m.Mountpoint != "/run/fusegate/media" || !m.Create ||
		m.Policy != "default" || m.Passthrough != PassthroughAuto {
		t.Errorf("default mount %+v", m)
	}
	d := c.Devices[0]
	if d.Name != "fusegate-loop" || d.Kind != KindLoopback || d.Mode != 0o666 || d.Capacity != 64<<10 {
		t.Errorf("default device %+v", d)
	}
	if c.Control.Socket != "/run/fusegate/control.sock" || c.Control.Mode != 0o660 {
		t.Errorf("default control %+v", c.Control)
	}
	if c.Daemon.WatchdogStall != 10*time.Second {
		t.Errorf("default daemon %+v", c.Daemon)
	}
}

func TestFull(t *testing.T) {
	c, err := Parse("full.toml", []byte(`version = 1
[control]
socket = "/run/x/ctl.sock"
admin_group = "adm"
mode = "0600"
[daemon]
watchdog_stall = "3s"
shutdown_grace = "1s"
[[mount]]
name = "a"
source = "/srv/a"
mountpoint = "/mnt/a"
passthrough = "off"
policy = "/etc/fusegate/a.toml"
options = ["allow_other", "ro", "fsname=media"]
readers = 2
[[device]]
name = "drv"
kind = "socket"
socket = "/run/drv.sock"
owner = "1000"
group = "1000"
mode = "0660"
major = 240
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Control.AdminGroup != "adm" || c.Control.Mode != 0o600 || c.Daemon.ShutdownGrace != time.Second {
		t.Errorf("%+v %+v", c.Control, c.Daemon)
	}
	m, d := c.Mounts[0], c.Devices[0]
	if m.Passthrough != PassthroughOff || m.Readers != 2 || len(m.Options) != 3 || m.Create {
		t.Errorf("%+v", m)
	}
	if d.Kind != KindSocket || d.Socket != "/run/drv.sock" || d.Major != 240 || d.Mode != 0o660 {
		t.Errorf("%+v", d)
	}
}

func TestErrors(t *testing.T) {
	const mount = "[[mount]]\nname = \"m\"\nsource = \"/srv/m\"\nmountpoint = \"/mnt/m\"\n"
	for _, c := range []struct {
		doc  string
		want string // substring, including line:col and field
	}{
		{"", "version: missing"},
		{"version = 2", "1:11: version: version 2 is not supported"},
		{"version = 1\nbogus = 1", "2:1: bogus: unknown field"},
		{"version = 1\n[[mount]]\nname = \"m\"\nsourc = \"/x\"", "4:1: mount[0].sourc: unknown field"},
		{"version = 1\n[[mount]]\nname = \"a b\"\nsource = \"/s\"\nmountpoint = \"/m\"", "3:8: mount[0].name"},
		{"version = 1\n[[mount]]\nname = \"m\"\nsource = \"rel\"\nmountpoint = \"/m\"", "4:10: mount[0].source: \"rel\" is not an absolute path"},
		{"version = 1\n[[mount]]\nname = \"m\"\nsource = \"/s\"", "mount[0].mountpoint: missing"},
		{"version = 1\n" + mount + "passthrough = \"maybe\"", "mount[0].passthrough: \"maybe\""},
		{"version = 1\n" + mount + "options = [\"allow_other\", \"exotic\"]", "mount[0].options[1]: unknown mount option"},
		{"version = 1\n" + mount + mount, "mount[1].name: \"m\" is also the name of mount[0]"},
		{"version = 1\n" + mount + "[[mount]]\nname = \"n\"\nsource = \"/srv/n\"\nmountpoint = \"/mnt/m\"", "mount[1].mountpoint: /mnt/m is also the mount point of mount[0]"},
		{"version = 1\n" + mount + "[[mount]]\nname = \"n\"\nsource = \"/mnt/m/sub\"\nmountpoint = \"/mnt/n\"", "serve requests on its own mount"},
		{"version = 1\n[[mount]]\nname = \"m\"\nsource = \"/a\"\nmountpoint = \"/a/b\"", "contain one another"},
		{"version = 1\n[[device]]\nname = \"d\"", "device[0].kind: missing"},
		{"version = 1\n[[device]]\nname = \"d\"\nkind = \"tty\"", "device[0].kind: \"tty\""},
		{"version = 1\n[[device]]\nname = \"d\"\nkind = \"loopback\"\nmode = \"rw\"", "device[0].mode: \"rw\" is not an octal"},
		{"version = 1\n[[device]]\nname = \"d\"\nkind = \"socket\"", "device[0].socket: missing"},
		{"version = 1\n[[device]]\nname = \"d\"\nkind = \"loopback\"\n[[device]]\nname = \"d\"\nkind = \"loopback\"", "device[1].name: \"d\" is also"},
		{"version = 1\n[[device]]\nname = \"d\"\nkind = \"loopback\"\ncapacity = 0", "device[0].capacity"},
		{"version = 1\n[daemon]\nwatchdog_stall = \"soon\"", "daemon.watchdog_stall: \"soon\""},
		{"version = 1\nversion = 1", "version"},
		{"version = \"1\"", "version"},
	} {
		_, err := Parse("c.toml", []byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "c.toml:") {
			t.Errorf("%q:\n got %v\nwant %q", c.doc, err, c.want)
		}
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	badPolicy := filepath.Join(dir, "p.toml")
	os.WriteFile(badPolicy, []byte("version = 1\nnope = 2\n"), 0o644)
	doc := `version = 1
[control]
admin_group = "no-such-group-fusegate"
[[mount]]
name = "ok"
source = "` + src + `"
mountpoint = "` + filepath.Join(dir, "new/mnt") + `"
create = true
[[mount]]
name = "missing"
source = "` + filepath.Join(dir, "absent") + `"
mountpoint = "` + file + `"
policy = "` + badPolicy + `"
[[device]]
name = "d"
kind = "loopback"
owner = "no-such-user-fusegate"
`
	c, err := Parse("c.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check()
	if err == nil {
		t.Fatal("Check passed")
	}
	for _, want := range []string{
		"mount[1].source: " + filepath.Join(dir, "absent") + " does not exist (set create = true",
		"mount[1].mountpoint: " + file + " is not a directory",
		"p.toml:2:1: nope: unknown field",
		"device[0].owner: no user",
		"control.admin_group: no group",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "mount[0]") {
		t.Errorf("mount[0] is fine (created on start), got:\n%v", err)
	}
}

// TestDocExample keeps docs/CONFIG.md's example valid.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	start := strings.Index(s, "```toml\n")
	end := strings.Index(s[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no toml example in docs/CONFIG.md")
	}
	c, err := Parse("CONFIG.md", []byte(s[start+8:start+8+end]))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Mounts) != 1 || len(c.Devices) != 2 || c.Control.AdminGroup != "fusegate" {
		t.Errorf("example parsed to %+v", c)
	}
}
