package policy

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

var standardTopLevel = []string{"Alarms", "Android", "Audiobooks", "DCIM", "Documents", "Download",
	"Movies", "Music", "Notifications", "Pictures", "Podcasts", "Recordings", "Ringtones"}

func TestDefaultParses(t *testing.T) {
	p, err := Parse("default.toml", DefaultFile())
	if err != nil {
		t.Fatalf("the built-in policy does not parse: %v", err)
	}
	if p.Name() != "android-scoped-storage" || !p.fold {
		t.Errorf("name %q fold %v", p.Name(), p.fold)
	}
	if got := Default().Rules(); strings.Join(got, ",") != strings.Join(p.Rules(), ",") {
		t.Errorf("Default() rules %v != parsed %v", got, p.Rules())
	}
}

// defaultWithApps is the built-in policy plus a few listed apps.
func defaultWithApps(t *testing.T) *Engine {
	extra := `
[[app]]
name = "camera"
uids = [10050]
packages = ["com.android.camera2"]
roles = ["media-location"]

[[app]]
name = "store"
uids = [10070]
packages = ["com.android.vending"]
roles = ["installer"]

[[app]]
name = "downloads"
uids = [10090]
packages = ["com.android.providers.downloads"]
roles = ["downloads-provider"]
`
	return testEngine(t, string(DefaultFile())+extra, Options{})
}

func TestDefaultPolicy(t *testing.T) {
	e := defaultWithApps(t)
	ctx := context.Background()
	const a, b = 10001, 10002 // unlisted apps: packages uid10001, uid10002
	check := func(name string, c Caller, op Op, obj Object, allowed bool, errno syscall.Errno) {
		t.Helper()
		d := e.Decide(ctx, c, op, obj)
		if d.Allowed != allowed || (!allowed && d.Err() != errno) {
			_, tr := e.Explain(c, op, obj)
			t.Errorf("%s: %s %+v = %+v, want allowed=%v errno=%v\n  %s", name, op, obj, d, allowed, errno, strings.Join(tr, "\n  "))
		}
	}
	// Trusted: uid < 10000, root, the daemon.
	check("system", caller(1000), OpDelete, file("Android/data/uid10001/x", a), true, 0)
	check("root", caller(0), OpDelete, dir("DCIM", 0), true, 0)
	check("daemon", caller(daemonUID), OpRead, file("Android/data/uid10001/x", a), true, 0)
	check("first app uid", caller(10000), OpRead, file("Android/data/uid10001/x", a), false, syscall.ENOENT)

	// Private data and obb.
	check("own data", caller(a), OpWrite, file("Android/data/uid10001/f", a), true, 0)
	check("own obb", caller(a), OpCreate, absent("Android/obb/uid10001/main.obb"), true, 0)
	check("other's data", caller(b), OpLookup, dir("Android/data/uid10001", a), false, syscall.ENOENT)
	check("other's obb", caller(b), OpRead, file("Android/obb/uid10001/main.obb", a), false, syscall.ENOENT)
	check("installer obb", caller(10070), OpWrite, file("Android/obb/uid10001/main.obb", a), true, 0)
	check("installer not data", caller(10070), OpRead, file("Android/data/uid10001/f", a), false, syscall.ENOENT)
	check("listed package", caller(10050), OpRead, file("Android/data/com.android.camera2/f", 10050), true, 0)
	check(".nomedia", caller(b), OpRead, file("Android/data/.nomedia", 0), true, 0)
	check(".nomedia read-only", caller(b), OpDelete, file("Android/data/.nomedia", 0), false, syscall.EACCES)
	check("Android/data listable", caller(b), OpReadDir, dir("Android/data", 0), true, 0)
	check("Android/data undeletable", caller(b), OpDelete, dir("Android/data", 0), false, syscall.EACCES)
	check("no mkdir under Android", caller(b), OpMkdir, absent("Android/other"), false, syscall.EACCES)
	check("Android/media own", caller(a), OpCreate, absent("Android/media/uid10001/x.jpg"), true, 0)
	check("Android/media other read", caller(b), OpRead, file("Android/media/uid10001/x.mp4", a), true, 0)
	check("Android/media other write", caller(b), OpWrite, file("Android/media/uid10001/x.mp4", a), false, syscall.EACCES)

	// Top level: the standard directories may be created, never deleted or renamed.
	for _, name := range standardTopLevel {
		check("mkdir "+name, caller(a), OpMkdir, Object{Path: name, Dir: true}, true, 0)
		check("rmdir "+name, caller(a), OpDelete, dir(name, a), false, syscall.EACCES)
		check("rename "+name, caller(a), OpRenameFrom, dir(name, a), false, syscall.EACCES)
		check("list "+name, caller(a), OpReadDir, dir(name, 0), true, 0)
	}
	check("mkdir nonstandard", caller(a), OpMkdir, Object{Path: "Games", Dir: true}, false, syscall.EACCES)
	check("create file at root", caller(a), OpCreate, absent("x.txt"), false, syscall.EACCES)
	check("rename to root", caller(a), OpRenameTo, absent("x.txt"), false, syscall.EACCES)

	// Shared media.
	check("B reads A's photo", caller(b), OpRead, file("DCIM/Camera/IMG_1.jpg", a), true, 0)
	check("B writes A's photo", caller(b), OpWrite, file("DCIM/Camera/IMG_1.jpg", a), false, syscall.EACCES)
	check("B deletes A's photo", caller(b), OpDelete, file("DCIM/Camera/IMG_1.jpg", a), false, syscall.EACCES)
	check("B renames A's photo", caller(b), OpRenameFrom, file("DCIM/Camera/IMG_1.jpg", a), false, syscall.EACCES)
	check("B replaces A's photo", caller(b), OpRenameTo, file("DCIM/Camera/IMG_1.jpg", a), false, syscall.EACCES)
	check("A deletes own photo", caller(a), OpDelete, file("DCIM/Camera/IMG_1.jpg", a), true, 0)
	check("B creates in Pictures", caller(b), OpCreate, absent("Pictures/b.png"), true, 0)
	check("downloads provider", caller(10090), OpDelete, file("Download/a.pdf", a), true, 0)
	check("B deletes A's download", caller(b), OpDelete, file("Download/a.pdf", a), false, syscall.EACCES)

	// Redaction, passthrough and timeouts.
	d := e.Decide(ctx, caller(b), OpRead, file("DCIM/Camera/IMG_1.jpg", a))
	if d.Redact != RedactLocation || d.Passthrough {
		t.Errorf("B reading A's JPEG: %+v, want location redaction without passthrough", d)
	}
	if d := e.Decide(ctx, caller(10050), OpRead, file("DCIM/Camera/IMG_1.jpg", a)); d.Redact != 0 || !d.Passthrough {
		t.Errorf("media-location app reading A's JPEG: %+v, want no redaction, passthrough", d)
	}
	if d := e.Decide(ctx, caller(a), OpRead, file("DCIM/Camera/IMG_1.JPG", a)); d.Redact != 0 || !d.Passthrough {
		t.Errorf("owner reading own JPEG: %+v", d)
	}
	if d := e.Decide(ctx, caller(b), OpRead, file("Download/x.jpeg", a)); d.Redact != RedactLocation {
		t.Errorf("B reading A's downloaded JPEG: %+v", d)
	}
	if d := e.Decide(ctx, caller(b), OpRead, file("Android/media/uid10001/x.jpg", a)); d.Redact != RedactLocation {
		t.Errorf("B reading A's Android/media JPEG: %+v", d)
	}
	if d := e.Decide(ctx, caller(b), OpRead, file("Music/x.mp3", a)); d.Redact != 0 || !d.Passthrough || d.EntryTimeout != time.Second || d.AttrTimeout != time.Second {
		t.Errorf("shared MP3: %+v, want passthrough, 1s timeouts", d)
	}
	for _, path := range []string{"Android/data/uid10001", "Android/data/uid10001/f", "Android/obb/uid10001/x"} {
		for _, c := range []Caller{caller(a), caller(b), caller(0)} {
			if d := e.Decide(ctx, c, OpLookup, file(path, a)); d.EntryTimeout != 0 || d.AttrTimeout != 0 {
				t.Errorf("uid %d lookup %s: timeouts %v/%v, want 0", c.UID, path, d.EntryTimeout, d.AttrTimeout)
			}
		}
	}
}
