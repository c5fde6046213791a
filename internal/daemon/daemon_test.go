package daemon

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"

	"github.com/fusegate/fusegate/config"
	"github.com/fusegate/fusegate/fusedev"
)

// Runs of the daemon itself are in tests/serve (host) and tests/systemd
// (under systemd in a qemu guest); these are its pure parts.

func TestSameMount(t *testing.T) {
	a := config.Mount{Name: "m", Source: "/a", Mountpoint: "/b", Policy: "default", Options: []string{"allow_other"}}
	b := a
	b.Policy = "/etc/p.toml"
	if !sameMount(a, b) {
		t.Error("a policy change counts as a different mount (it is applied in place)")
	}
	b.Options = []string{"allow_other", "ro"}
	if sameMount(a, b) {
		t.Error("an option change does not replace the mount")
	}
	c := a
	c.Passthrough = config.PassthroughOff
	if sameMount(a, c) {
		t.Error("a passthrough change does not replace the mount")
	}
}

func TestMountOptions(t *testing.T) {
	o, err := mountOptions(config.Mount{Name: "m", Source: "/src", Options: []string{
		"allow_other", "default_permissions", "ro", "noexec", "nosuid", "dev", "fsname=media", "max_read=131072"}}, fusedev.MountNamespace{})
	if err != nil {
		t.Fatal(err)
	}
	if !o.AllowOther || !o.DefaultPermissions || !o.ReadOnly || !o.NoExec || o.Suid || !o.Dev || o.FSName != "media" ||
		o.Subtype != "fusegate" || o.MaxRead != 131072 {
		t.Errorf("options: %+v", o)
	}
	o, _ = mountOptions(config.Mount{Name: "m", Source: "/src"}, fusedev.MountNamespace{})
	if o.FSName != "/src" || o.AllowOther || o.ReadOnly {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range []string{"max_read=x", "max_read=0", "turbo"} {
		if _, err := mountOptions(config.Mount{Name: "m", Options: []string{bad}}, fusedev.MountNamespace{}); err == nil {
			t.Errorf("option %q accepted", bad)
		}
	}
}

func TestLoadPolicy(t *testing.T) {
	none, err := loadPolicy("none")
	if err != nil || none.p != nil || none.name() != "none" {
		t.Fatalf("none: %+v, %v", none, err)
	}
	def, err := loadPolicy("default")
	if err != nil || def.p == nil || def.name() != "android-scoped-storage" {
		t.Fatalf("default: %+v, %v", def, err)
	}
	if def.same(none) || !def.same(&loadedPolicy{setting: "default"}) {
		t.Error("same() is wrong")
	}
	if _, err := loadPolicy("/nonexistent/policy.toml"); err == nil {
		t.Error("a missing policy file loaded")
	}
}

// An empty daemon (nothing started) answers status and metrics.
func TestEmptyDaemon(t *testing.T) {
	d := New(Options{Version: "test"})
	st := d.Status()
	if st.State != StateStarting || st.Version != "test" || len(st.Mounts) != 0 || !strings.HasPrefix(st.Summary, "0/0 mounts") {
		t.Errorf("status: %+v", st)
	}
	var b bytes.Buffer
	if err := d.WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(&b)
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, b.String())
	}
	if fams["fusegate_info"] == nil || fams["fusegate_reloads_total"] == nil {
		t.Errorf("metrics: %v", fams)
	}
	if _, err := d.Reload(t.Context(), "test"); err == nil {
		t.Error("reload before start succeeded")
	}
}
