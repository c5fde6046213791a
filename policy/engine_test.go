package policy

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testPolicy is the default layout plus listed apps, a read-only and a
// hidden path, and trust by gid.
const testPolicy = `
version = 1
name = "test"
case_insensitive = true
roles = ["installer", "media-location", "all-files", "downloads-provider"]

[trust]
below_uid = 10000
uids = [20000]
gids = [3000]

[apps]
unknown = "app_{uid}"

[[app]]
name = "camera"
uids = [10050]
packages = ["com.cam"]
roles = ["media-location"]

[[app]]
name = "gallery"
uids = ["10100-10199"]
packages = ["com.gallery"]

[[app]]
name = "suite"            # a shared uid with several packages
uids = [10060]
packages = ["com.suite.mail", "com.suite.docs"]

[[app]]
name = "store"
uids = [10070]
packages = ["com.store"]

[[app]]
name = "files"
uids = [10080]
packages = ["com.files"]
roles = ["all-files"]

[[group]]
name = "installers"
apps = ["store"]
roles = ["installer"]

[[rule]]
name = "firmware"
path = "Firmware/**"
allow.view = ["apps"]
read_only = true

[[rule]]
name = "secrets"
paths = [".transforms/**", "**/.hidden_by_policy"]
hidden = true

[[rule]]
name = "app-data"
path = "Android/data/{pkg}/**"
allow.any = ["{pkg}"]
deny = "ENOENT"

[[rule]]
name = "app-obb"
path = "Android/obb/{pkg}/**"
allow.any = ["{pkg}", "role:installer"]
deny = "ENOENT"
passthrough = false

[[rule]]
name = "top-level"
paths = ["Alarms", "Android", "DCIM", "Download", "Music", "Pictures"]
allow.view = ["apps"]
allow.mkdir = ["apps"]

[[rule]]
name = "android"
path = "Android/**"
allow.view = ["apps"]

[[rule]]
name = "root"
path = ""
allow.view = ["apps"]

[[rule]]
name = "root-entries"
path = "*"
allow.view = ["apps"]
allow.modify = ["owner"]

[default]
allow.view = ["apps"]
allow.make = ["apps"]
allow.rename_to = ["absent", "owner", "role:all-files"]
allow.modify = ["owner", "role:all-files"]
entry_timeout = "5s"
attr_timeout = "2s"
redact = ["location"]
redact_names = ["*.jpg", "*.jpeg", "*.heic"]
redact_exempt = ["owner", "role:media-location"]
`

const (
	uidCamera  = 10050
	uidGallery = 10123 // in the range 10100-10199
	uidSuite   = 10060
	uidStore   = 10070
	uidFiles   = 10080
	uidUnknown = 10999
	daemonUID  = 4242
)

func testEngine(t testing.TB, src string, opts Options) *Engine {
	t.Helper()
	p, err := Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if opts.DaemonUID == nil {
		u := uint32(daemonUID)
		opts.DaemonUID = &u
	}
	return NewEngine(p, opts)
}

func caller(uid uint32) Caller { return Caller{UID: uid, GID: uid, PID: 1} }

func file(path string, owner uint32) Object {
	return Object{Path: path, Owner: owner, Exists: true}
}

func dir(path string, owner uint32) Object {
	return Object{Path: path, Owner: owner, Exists: true, Dir: true}
}

func absent(path string) Object { return Object{Path: path} }

type want struct {
	allowed bool
	errno   syscall.Errno // when denied
	rule    string        // substring of Decision.Rule; "" = don't check
}

var (
	allow   = want{allowed: true}
	eacces  = want{errno: syscall.EACCES}
	enoent  = want{errno: syscall.ENOENT}
	erofs   = want{errno: syscall.EROFS}
	allowBy = func(rule string) want { return want{allowed: true, rule: rule} }
)

func TestDecide(t *testing.T) {
	e := testEngine(t, testPolicy, Options{})
	ctx := context.Background()
	camData := "Android/data/com.cam/files/a.txt"
	suiteData := "Android/data/com.suite.docs/cache"
	for _, tc := range []struct {
		name string
		c    Caller
		op   Op
		obj  Object
		want want
	}{
		// Trusted callers bypass app rules.
		{"root reads other app data", caller(0), OpRead, file(camData, uidCamera), allowBy("app-data")},
		{"system uid deletes top-level", caller(1000), OpDelete, dir("DCIM", 0), allow},
		{"daemon uid", caller(daemonUID), OpWrite, file(camData, uidCamera), allow},
		{"trust.uids", caller(20000), OpDelete, file(camData, uidCamera), allow},
		{"trust.gids by gid", Caller{UID: 10500, GID: 3000}, OpDelete, file(camData, uidCamera), allow},
		{"trust.gids by supplementary group", Caller{UID: 10500, GID: 10500, Groups: []uint32{5, 3000}}, OpRead, file(camData, 1), allow},
		{"other group not trusted", Caller{UID: 10500, GID: 10500, Groups: []uint32{5}}, OpRead, file(camData, 1), enoent},

		// App-private data: owner yes, every other app ENOENT.
		{"owner reads own data", caller(uidCamera), OpRead, file(camData, uidCamera), allow},
		{"owner creates in own data", caller(uidCamera), OpCreate, absent("Android/data/com.cam/new"), allow},
		{"owner mkdir own pkg dir", caller(uidCamera), OpMkdir, absent("Android/data/com.cam"), allow},
		{"other app lookup", caller(uidGallery), OpLookup, file(camData, uidCamera), enoent},
		{"other app lookup pkg dir", caller(uidGallery), OpLookup, dir("Android/data/com.cam", uidCamera), enoent},
		{"other app read", caller(uidGallery), OpRead, file(camData, uidCamera), enoent},
		{"other app create", caller(uidGallery), OpCreate, absent("Android/data/com.cam/x"), enoent},
		{"other app mkdir pkg dir", caller(uidGallery), OpMkdir, absent("Android/data/com.cam"), enoent},
		{"other app delete", caller(uidGallery), OpDelete, file(camData, uidGallery), enoent},
		{"case folded other app", caller(uidGallery), OpRead, file("android/DATA/COM.CAM/files/a.txt", uidCamera), enoent},
		{"case folded owner", caller(uidCamera), OpRead, file("ANDROID/data/Com.Cam/x", uidCamera), allow},
		{"zero-width space does not escape", caller(uidGallery), OpRead, file("Android/da\u200bta/com.cam/x", uidCamera), enoent},
		{"kelvin sign folds", caller(uidGallery), OpLookup, file("Android/data/com.\u212aam/x", uidCamera), enoent},
		{"Android/data itself visible", caller(uidGallery), OpReadDir, dir("Android/data", 0), allowBy("android")},
		{"Android/data not deletable", caller(uidGallery), OpDelete, dir("Android/data", 0), eacces},
		{"mkdir in Android denied", caller(uidGallery), OpMkdir, absent("Android/foo"), eacces},

		// Shared uid with several packages.
		{"shared uid pkg 1", caller(uidSuite), OpWrite, file("Android/data/com.suite.mail/x", uidSuite), allow},
		{"shared uid pkg 2", caller(uidSuite), OpRead, file(suiteData, uidSuite), allow},
		{"shared uid not others", caller(uidSuite), OpRead, file(camData, uidCamera), enoent},

		// Uid ranges.
		{"range low end", caller(10100), OpRead, file("Android/data/com.gallery/x", 10100), allow},
		{"range high end", caller(10199), OpRead, file("Android/data/com.gallery/x", 10100), allow},
		{"past range is unknown", caller(10200), OpRead, file("Android/data/com.gallery/x", 10100), enoent},

		// Unlisted app uids are named after the template.
		{"unknown app own dir", caller(uidUnknown), OpCreate, absent("Android/data/app_10999/f"), allow},
		{"unknown app own dir folded", caller(uidUnknown), OpRead, file("Android/data/APP_10999/f", uidUnknown), allow},
		{"unknown app other number", caller(uidUnknown), OpRead, file("Android/data/app_10998/f", 10998), enoent},
		{"unknown app prefix only", caller(uidUnknown), OpRead, file("Android/data/app_/f", 1), enoent},
		{"unknown app listed name", caller(uidUnknown), OpRead, file(camData, uidCamera), enoent},
		{"listed app cannot use its uid name", caller(uidCamera), OpRead, file("Android/data/app_10050/f", uidCamera), enoent},

		// OBB: owner, installer role (via group), nobody else.
		{"obb owner", caller(uidGallery), OpRead, file("Android/obb/com.gallery/main.obb", uidGallery), allow},
		{"obb installer writes", caller(uidStore), OpWrite, file("Android/obb/com.gallery/main.obb", uidGallery), allow},
		{"obb installer creates", caller(uidStore), OpCreate, absent("Android/obb/com.cam/patch.obb"), allow},
		{"obb other app", caller(uidCamera), OpLookup, file("Android/obb/com.gallery/main.obb", uidGallery), enoent},
		{"installer not in data", caller(uidStore), OpRead, file(camData, uidCamera), enoent},

		// Shared media: readable by all, modifiable by owner (or all-files).
		{"DCIM read by other", caller(uidGallery), OpRead, file("DCIM/Camera/IMG_1.mp4", uidCamera), allow},
		{"DCIM list", caller(uidGallery), OpReadDir, dir("DCIM/Camera", uidCamera), allow},
		{"DCIM write by other", caller(uidGallery), OpWrite, file("DCIM/Camera/IMG_1.mp4", uidCamera), eacces},
		{"DCIM delete by other", caller(uidGallery), OpDelete, file("DCIM/Camera/IMG_1.mp4", uidCamera), eacces},
		{"DCIM setattr by other", caller(uidGallery), OpSetattr, file("DCIM/Camera/IMG_1.mp4", uidCamera), eacces},
		{"DCIM rename from by other", caller(uidGallery), OpRenameFrom, file("DCIM/Camera/IMG_1.mp4", uidCamera), eacces},
		{"DCIM write by owner", caller(uidCamera), OpWrite, file("DCIM/Camera/IMG_1.mp4", uidCamera), allow},
		{"DCIM delete by owner", caller(uidCamera), OpDelete, file("DCIM/Camera/IMG_1.mp4", uidCamera), allow},
		{"DCIM delete by all-files", caller(uidFiles), OpDelete, file("DCIM/Camera/IMG_1.mp4", uidCamera), allow},
		{"DCIM create by anyone", caller(uidGallery), OpCreate, absent("DCIM/Camera/new.jpg"), allow},
		{"DCIM mkdir by anyone", caller(uidGallery), OpMkdir, absent("DCIM/Album"), allow},
		{"non-owner dir delete", caller(uidGallery), OpDelete, dir("DCIM/Camera", uidCamera), eacces},

		// Rename: both ends.
		{"rename to absent", caller(uidGallery), OpRenameTo, absent("Pictures/new.png"), allow},
		{"rename over own file", caller(uidGallery), OpRenameTo, file("Pictures/old.png", uidGallery), allow},
		{"rename over other's file", caller(uidGallery), OpRenameTo, file("Pictures/cam.png", uidCamera), eacces},
		{"rename over by all-files", caller(uidFiles), OpRenameTo, file("Pictures/cam.png", uidCamera), allow},
		{"rename from own private", caller(uidCamera), OpRenameFrom, file(camData, uidCamera), allow},
		{"rename into other's private", caller(uidGallery), OpRenameTo, absent("Android/data/com.cam/x"), enoent},
		{"rename top-level away", caller(uidCamera), OpRenameFrom, dir("DCIM", 0), eacces},
		{"rename to top-level name", caller(uidCamera), OpRenameTo, absent("Music"), eacces},

		// Top-level directories.
		{"top-level undeletable", caller(uidCamera), OpDelete, dir("DCIM", uidCamera), eacces},
		{"top-level undeletable all-files", caller(uidFiles), OpDelete, dir("Music", 0), eacces},
		{"top-level no chmod", caller(uidCamera), OpSetattr, dir("DCIM", uidCamera), eacces},
		{"standard top-level creatable", caller(uidCamera), OpMkdir, absent("Music"), allow},
		{"standard top-level creatable folded", caller(uidCamera), OpMkdir, absent("music"), allow},
		{"other top-level dir not creatable", caller(uidCamera), OpMkdir, absent("MyStuff"), eacces},
		{"top-level file not creatable", caller(uidCamera), OpCreate, absent("notes.txt"), eacces},
		{"top-level other visible", caller(uidCamera), OpLookup, dir("lost+found", 0), allow},
		{"top-level other owned deletable", caller(uidCamera), OpDelete, file("old.txt", uidCamera), allow},
		{"root chmod", caller(uidCamera), OpSetattr, dir("", 0), eacces},
		{"root list", caller(uidCamera), OpReadDir, dir("", 0), allowBy("root")},

		// Read-only paths: denied with EROFS to everyone, trusted included.
		{"read-only read", caller(uidCamera), OpRead, file("Firmware/blob", 0), allowBy("firmware")},
		{"read-only write app", caller(uidCamera), OpWrite, file("Firmware/blob", uidCamera), erofs},
		{"read-only write root", caller(0), OpWrite, file("Firmware/blob", 0), erofs},
		{"read-only create root", caller(0), OpCreate, absent("Firmware/new"), erofs},
		{"read-only delete top", caller(1000), OpDelete, dir("Firmware", 0), erofs},

		// Hidden paths: ENOENT to apps, visible to trusted.
		{"hidden to app", caller(uidCamera), OpLookup, dir(".transforms/synthetic", 0), enoent},
		{"hidden deep", caller(uidCamera), OpRead, file("DCIM/a/b/.hidden_by_policy", uidCamera), enoent},
		{"hidden to owner too", caller(uidCamera), OpCreate, absent("Music/.hidden_by_policy"), enoent},
		{"hidden not to trusted", caller(0), OpLookup, dir(".transforms/synthetic", 0), allow},

		// Malformed requests.
		{"invalid op", caller(0), Op(0), dir("", 0), want{errno: syscall.EACCES, rule: "invalid"}},
		{"op out of range", caller(0), numOps, dir("", 0), eacces},
		{"leading slash", caller(0), OpLookup, dir("/DCIM", 0), eacces},
		{"trailing slash", caller(0), OpLookup, dir("DCIM/", 0), eacces},
		{"dot dot", caller(uidGallery), OpRead, file("DCIM/../Android/data/com.cam/x", 0), eacces},
		{"double slash", caller(uidGallery), OpRead, file("Android//data/com.cam/x", 0), eacces},
		{"dot", caller(uidGallery), OpRead, file("Android/./data/com.cam/x", 0), eacces},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Decide(ctx, tc.c, tc.op, tc.obj)
			if d.Allowed != tc.want.allowed {
				_, tr := e.Explain(tc.c, tc.op, tc.obj)
				t.Fatalf("Decide(%+v, %s, %+v) = %+v, want allowed=%v\n%s", tc.c, tc.op, tc.obj, d, tc.want.allowed, strings.Join(tr, "\n"))
			}
			if !d.Allowed {
				if d.Err() != tc.want.errno {
					t.Errorf("errno %v, want %v (decision %+v)", d.Err(), tc.want.errno, d)
				}
			} else if d.Err() != nil {
				t.Errorf("Err() = %v for an allowed decision", d.Err())
			}
			if tc.want.rule != "" && !strings.Contains(d.Rule, tc.want.rule) {
				t.Errorf("rule %q, want %q", d.Rule, tc.want.rule)
			}
			trusted := tc.c.UID < 10000 || tc.c.UID == daemonUID || tc.c.UID == 20000 || tc.c.GID == 3000 || len(tc.c.Groups) == 2 && tc.c.Groups[1] == 3000
			if d.Trusted != (trusted && d.Allowed) {
				t.Errorf("Trusted = %v, want %v", d.Trusted, trusted && d.Allowed)
			}
			// Explain must agree with Decide.
			ed, tr := e.Explain(tc.c, tc.op, tc.obj)
			if ed != d {
				t.Errorf("Explain decision %+v != Decide %+v", ed, d)
			}
			if len(tr) == 0 {
				t.Error("Explain gave no trace")
			}
		})
	}
}

func TestZeroDecisionDenies(t *testing.T) {
	var d Decision
	if d.Allowed || d.Err() != syscall.EACCES {
		t.Fatalf("zero decision: allowed=%v err=%v", d.Allowed, d.Err())
	}
}

func TestTimeoutsAndPassthrough(t *testing.T) {
	e := testEngine(t, testPolicy, Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		c           Caller
		op          Op
		obj         Object
		entry, attr time.Duration
		passthrough bool
		redact      Redaction
	}{
		{"private path: zero timeouts", caller(uidCamera), OpLookup, file("Android/data/com.cam/a", uidCamera), 0, 0, false, 0},
		{"private path open: passthrough", caller(uidCamera), OpRead, file("Android/data/com.cam/a", uidCamera), 0, 0, true, 0},
		{"trusted on private path: still zero timeouts", caller(0), OpLookup, file("Android/data/com.cam/a", uidCamera), 0, 0, false, 0},
		{"obb: passthrough off by rule", caller(uidGallery), OpRead, file("Android/obb/com.gallery/a.obb", uidGallery), 0, 0, false, 0},
		{"obb trusted: passthrough off by rule", caller(0), OpRead, file("Android/obb/com.gallery/a.obb", uidGallery), 0, 0, false, 0},
		{"hidden: zero timeouts", caller(0), OpLookup, dir(".transforms", 0), 0, 0, false, 0},
		{"shared: default timeouts", caller(uidGallery), OpLookup, file("Music/a.mp3", uidCamera), 5 * time.Second, 2 * time.Second, false, 0},
		{"shared open: passthrough", caller(uidGallery), OpRead, file("Music/a.mp3", uidCamera), 5 * time.Second, 2 * time.Second, true, 0},
		{"shared create: passthrough", caller(uidGallery), OpCreate, absent("Music/b.mp3"), 5 * time.Second, 2 * time.Second, true, 0},
		{"top-level rule inherits default timeouts", caller(uidGallery), OpLookup, dir("DCIM", 0), 5 * time.Second, 2 * time.Second, false, 0},
		{"image by non-owner without role: redacted", caller(uidGallery), OpRead, file("DCIM/Camera/IMG.jpg", uidCamera), 5 * time.Second, 2 * time.Second, false, RedactLocation},
		{"image name folded", caller(uidGallery), OpRead, file("DCIM/Camera/IMG.JPEG", uidCamera), 5 * time.Second, 2 * time.Second, false, RedactLocation},
		{"heic too", caller(uidGallery), OpRead, file("Pictures/x.heic", uidCamera), 5 * time.Second, 2 * time.Second, false, RedactLocation},
		{"image lookup: no redaction (only opens)", caller(uidGallery), OpLookup, file("DCIM/Camera/IMG.jpg", uidCamera), 5 * time.Second, 2 * time.Second, false, 0},
		{"image by owner: not redacted", caller(uidCamera), OpRead, file("DCIM/Camera/IMG.jpg", uidCamera), 5 * time.Second, 2 * time.Second, true, 0},
		{"image by media-location role: not redacted", caller(uidCamera), OpRead, file("DCIM/Camera/other.jpg", uidGallery), 5 * time.Second, 2 * time.Second, true, 0},
		{"image by trusted: not redacted", caller(0), OpRead, file("DCIM/Camera/IMG.jpg", uidCamera), 5 * time.Second, 2 * time.Second, true, 0},
		{"image write by all-files: redacted", caller(uidFiles), OpWrite, file("DCIM/Camera/IMG.jpg", uidCamera), 5 * time.Second, 2 * time.Second, false, RedactLocation},
		{"non-image: not redacted", caller(uidGallery), OpRead, file("DCIM/Camera/VID.mp4", uidCamera), 5 * time.Second, 2 * time.Second, true, 0},
		{"directory named like an image: not redacted", caller(uidGallery), OpRead, dir("DCIM/x.jpg", uidCamera), 5 * time.Second, 2 * time.Second, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Decide(ctx, tc.c, tc.op, tc.obj)
			if !d.Allowed {
				t.Fatalf("denied: %+v", d)
			}
			if d.EntryTimeout != tc.entry || d.AttrTimeout != tc.attr {
				t.Errorf("timeouts entry %v attr %v, want %v %v", d.EntryTimeout, d.AttrTimeout, tc.entry, tc.attr)
			}
			if d.Passthrough != tc.passthrough {
				t.Errorf("passthrough %v, want %v", d.Passthrough, tc.passthrough)
			}
			if d.Redact != tc.redact {
				t.Errorf("redact %v, want %v", d.Redact, tc.redact)
			}
		})
	}
}

func TestSwap(t *testing.T) {
	e := testEngine(t, testPolicy, Options{})
	ctx := context.Background()
	obj := file("Music/song.mp3", uidCamera)
	if d := e.Decide(ctx, caller(uidGallery), OpWrite, obj); d.Allowed {
		t.Fatalf("before swap: other app may write: %+v", d)
	}
	open, err := Parse("open.toml", []byte("version = 1\n[default]\nallow.any = [\"apps\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	old := e.Swap(open)
	if old.Name() != "test" || e.Policy() != open {
		t.Fatalf("Swap returned %q, Policy() = %p, want %p", old.Name(), e.Policy(), open)
	}
	if d := e.Decide(ctx, caller(uidGallery), OpWrite, obj); !d.Allowed || d.Rule != "default" {
		t.Fatalf("after swap: %+v", d)
	}
	if got := e.Swap(nil); got != open || e.Policy().Name() != "android-scoped-storage" {
		t.Fatalf("Swap(nil) must install the default policy")
	}
}

func TestStatsCount(t *testing.T) {
	e := testEngine(t, testPolicy, Options{})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		e.Decide(ctx, caller(uidGallery), OpRead, file("Android/data/com.cam/x", uidCamera))
	}
	e.Decide(ctx, caller(uidCamera), OpRead, file("Android/data/com.cam/x", uidCamera))
	e.Decide(ctx, caller(uidCamera), OpRead, file("/bad", 0))
	got := map[string]RuleStats{}
	for _, s := range e.Stats() {
		got[s.Rule] = s
	}
	if s := got["rule[2] app-data"]; s.Decisions != 4 || s.Denials != 3 {
		t.Errorf("app-data stats %+v, want 4 decisions, 3 denials", s)
	}
	if s := got["invalid"]; s.Decisions != 1 || s.Denials != 1 {
		t.Errorf("invalid stats %+v", s)
	}
	if _, ok := got["default"]; !ok {
		t.Errorf("no default rule in stats: %v", got)
	}
	// Explain does not count.
	e.Explain(caller(uidGallery), OpRead, file("Android/data/com.cam/x", uidCamera))
	for _, s := range e.Stats() {
		if s.Rule == "rule[2] app-data" && s.Decisions != 4 {
			t.Errorf("Explain counted: %+v", s)
		}
	}
}

func TestIsAppPrivate(t *testing.T) {
	p := Default()
	for path, want := range map[string]bool{
		"Android/data/com.a":        true,
		"Android/data/com.a/x/y":    true,
		"ANDROID/obb/com.a/x":       true,
		"Android/data":              false,
		"Android/data/.nomedia":     false,
		"Android/media/com.a/x.jpg": false, // shared, readable by all
		"DCIM/x.jpg":                false,
		"":                          false,
		"/Android/data/com.a":       false, // invalid
	} {
		if got := p.IsAppPrivate(path); got != want {
			t.Errorf("IsAppPrivate(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestExplainTrace(t *testing.T) {
	e := testEngine(t, testPolicy, Options{})
	_, tr := e.Explain(caller(uidGallery), OpRead, file("Android/data/com.cam/x", uidCamera))
	all := strings.Join(tr, "\n")
	for _, w := range []string{`app "gallery"`, `pattern "Android/data/{pkg}/**" matches`, `pkg="com.cam"`, "deny ENOENT", `rule[0] firmware`} {
		if !strings.Contains(all, w) {
			t.Errorf("trace lacks %q:\n%s", w, all)
		}
	}
	_, tr = e.Explain(caller(uidUnknown), OpRead, file("DCIM/a.jpg", 1))
	all = strings.Join(tr, "\n")
	for _, w := range []string{`unlisted app, named "app_10999"`, "no rule matches", "redact location"} {
		if !strings.Contains(all, w) {
			t.Errorf("trace lacks %q:\n%s", w, all)
		}
	}
}
