package policy

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/policy/redact/redacttest"
	"github.com/fusegate/fusegate/tests/harness"
)

// App A cannot see, stat, open, list, create in, rename into or out of,
// hard-link to or from, or reach through a symlink planted in its own
// directory, anything in app B's private directory; each attempt gets the
// policy's error (ENOENT: existence does not leak) and leaves the lower
// tree alone. B can do all of it in its own directory, and trusted callers
// (root, a system uid) see both. Denials are audited.
func TestPrivateIsolation(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		aDir, bDir := tg.p("Android/data/uid10001"), tg.p("Android/data/uid10002")
		bFile := bDir + "/secret.txt"
		must(t, do(t, appA, "write", aDir+"/mine.txt", "a").err())
		must(t, do(t, appA, "mkdir", aDir+"/sub").err())
		must(t, do(t, appA, "mkdir", tg.p("DCIM/a-album")).err())

		rs := run(t, appA,
			step{"stat", bDir},                                       // 0
			step{"stat", bFile},                                      // 1
			step{"read", bFile},                                      // 2
			step{"open", bFile, itoa(unix.O_WRONLY)},                 // 3
			step{"readdir", bDir},                                    // 4
			step{"write", bDir + "/planted", "x"},                    // 5
			step{"mkdir", bDir + "/planted-dir"},                     // 6
			step{"rename", aDir + "/mine.txt", bDir + "/moved"},      // 7: into B's
			step{"rename", bFile, aDir + "/stolen"},                  // 8: out of B's
			step{"rename", aDir + "/sub", bDir + "/sub"},             // 9: a directory into B's
			step{"rename", tg.p("DCIM/a-album"), bDir + "/album"},    // 10: a shared directory into B's
			step{"link", bFile, aDir + "/hardlink"},                  // 11: from B's
			step{"link", aDir + "/mine.txt", bDir + "/hardlink"},     // 12: into B's
			step{"symlink", bFile, aDir + "/abs-link"},               // 13: planted in A's own dir
			step{"symlink", "../uid10002/secret.txt", aDir + "/rel"}, // 14
			step{"read", aDir + "/abs-link"},                         // 15: followed
			step{"read", aDir + "/rel"},                              // 16
			step{"stat", aDir + "/rel"},                              // 17
			step{"unlink", bFile},                                    // 18
			step{"chmod", bFile, "0600"},                             // 19
			step{"truncate", bFile, "0"},                             // 20
			step{"mkdir", bDir},                                      // 21: "create" B's package
			step{"readdir", tg.p("Android/data")},                    // 22
			step{"stat", tg.p("Android/data/uid10003")},              // 23: a package nobody has
		)
		denied := []string{"stat B's dir", "stat B's file", "read B's file", "open B's file for writing", "list B's dir",
			"create in B's dir", "mkdir in B's dir", "rename into B's dir", "rename out of B's dir",
			"rename a directory into B's dir", "rename a shared directory into B's dir", "link from B's dir", "link into B's dir"}
		for i, what := range denied {
			want(t, "A: "+what, rs[i], syscall.ENOENT)
		}
		want(t, "A: plant an absolute symlink to B's file in its own dir", rs[13], 0)
		want(t, "A: plant a relative symlink", rs[14], 0)
		want(t, "A: read B's file through the absolute symlink", rs[15], syscall.ENOENT)
		want(t, "A: read B's file through the relative symlink", rs[16], syscall.ENOENT)
		want(t, "A: stat through the relative symlink", rs[17], syscall.ENOENT)
		want(t, "A: unlink B's file", rs[18], syscall.ENOENT)
		want(t, "A: chmod B's file", rs[19], syscall.ENOENT)
		want(t, "A: truncate B's file", rs[20], syscall.ENOENT)
		want(t, "A: mkdir B's package", rs[21], syscall.ENOENT)
		want(t, "A: list Android/data", rs[22], 0)
		if rs[22].Out != "uid10001" {
			t.Errorf("A lists Android/data as %q, want only its own package", rs[22].Out)
		}
		want(t, "A: stat a package nobody has", rs[23], syscall.ENOENT)
		if len(rs[2].Data) != 0 {
			t.Errorf("A read %q of B's file", rs[2].Data)
		}
		for _, p := range []string{"Android/data/uid10002/planted", "Android/data/uid10002/planted-dir", "Android/data/uid10002/moved",
			"Android/data/uid10002/sub", "Android/data/uid10002/album", "Android/data/uid10001/stolen",
			"Android/data/uid10001/hardlink", "Android/data/uid10002/hardlink"} {
			if _, err := os.Lstat(tg.l(p)); err == nil {
				t.Errorf("%s exists in the lower tree after a denied request", p)
			}
		}
		if b, _ := os.ReadFile(tg.l("Android/data/uid10002/secret.txt")); string(b) != "B's secret" {
			t.Errorf("B's file now reads %q", b)
		}
		if _, err := os.Stat(tg.l("DCIM/a-album")); err != nil {
			t.Errorf("A's album moved: %v", err)
		}

		// B in its own directory: everything.
		rs = run(t, appB,
			step{"read", bFile},
			step{"write", bDir + "/new.txt", "b"},
			step{"mkdir", bDir + "/dir"},
			step{"rename", bDir + "/new.txt", bDir + "/dir/new.txt"},
			step{"link", bDir + "/dir/new.txt", bDir + "/hard"},
			step{"readdir", bDir},
			step{"unlink", bDir + "/hard"},
		)
		for i, r := range rs {
			want(t, "B in its own dir: step "+itoa(i), r, 0)
		}
		if string(rs[0].Data) != "B's secret" || rs[5].Out != "dir,hard,secret.txt" {
			t.Errorf("B reads %q and lists %q", rs[0].Data, rs[5].Out)
		}
		if st, err := os.Stat(tg.l("Android/data/uid10002/dir/new.txt")); err != nil || st.Sys().(*syscall.Stat_t).Uid != appB.UID {
			t.Errorf("B's new file in the lower tree: %v (owned by B?)", err)
		}

		// Trusted callers see everything.
		for _, c := range []harness.Cred{root, system} {
			rs = run(t, c, step{"read", bFile}, step{"read", aDir + "/secret.txt"}, step{"readdir", tg.p("Android/data")})
			if string(rs[0].Data) != "B's secret" || string(rs[1].Data) != "A's secret" || rs[2].Out != "uid10001,uid10002" {
				t.Errorf("trusted uid %d: %+v", c.UID, rs)
			}
		}

		// The audit: uid, pid, process name, op, path, deciding rule.
		logs := tg.d.Logs()
		for _, w := range []string{"policy: access denied", "uid=10001", "comm=harness-helper", "op=lookup",
			"path=Android/data/uid10002", `rule="rule[2] app-data"`, "errno=ENOENT"} {
			if !strings.Contains(logs, w) {
				t.Errorf("the audit log lacks %q:\n%s", w, logs)
			}
		}
		st := tg.fs()
		var denials, logged uint64
		for _, r := range st.Policy.Rules {
			if r.Rule == "rule[2] app-data" {
				denials, logged = r.Denials, r.Logged
			}
		}
		if denials == 0 || logged == 0 || logged > denials {
			t.Errorf("app-data counters: %d denials, %d logged", denials, logged)
		}
		if tg.kind == "serve" {
			m := tg.metrics()
			for _, w := range []string{`fusegate_policy_denials_total{mount="m",rule="rule[2] app-data"}`,
				`fusegate_policy_audit_logged_total{mount="m",rule="rule[2] app-data"}`,
				`fusegate_policy_audit_suppressed_total{mount="m",rule="rule[2] app-data"}`,
				`fusegate_policy_filtered_entries_total{mount="m"}`} {
				if !strings.Contains(m, w) {
					t.Errorf("metrics lack %s", w)
				}
			}
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

// The kernel's caches never answer one app with another's result: A's
// successful lookup (and open) of its own private file does not let B's
// lookup of the same path succeed right after, B's failed lookup does not
// make A's fail, and a trusted caller's listing (READDIRPLUS entries) does
// not let B in either.
func TestCacheBypass(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		aFile := tg.p("Android/data/uid10001/secret.txt")
		aDir := tg.p("Android/data/uid10001")
		for round := 0; round < 3; round++ {
			if r := do(t, appA, "read", aFile); r.Errno != 0 || string(r.Data) != "A's secret" {
				t.Fatalf("round %d: A reads its file: %v %q", round, r.err(), r.Data)
			}
			rs := run(t, appB, step{"stat", aFile}, step{"read", aFile}, step{"stat", aDir})
			for i, r := range rs {
				want(t, "B right after A (round "+itoa(round)+", step "+itoa(i)+")", r, syscall.ENOENT)
			}
			rs = run(t, appA, step{"stat", aFile}, step{"stat", aDir})
			for i, r := range rs {
				want(t, "A right after B's denial (round "+itoa(round)+", step "+itoa(i)+")", r, 0)
			}
		}
		// A path B looked up first (and was refused) is still A's.
		newFile := tg.p("Android/data/uid10001/later.txt")
		want(t, "B looks for a name in A's dir", do(t, appB, "stat", newFile), syscall.ENOENT)
		want(t, "A creates it", do(t, appA, "write", newFile, "later"), 0)
		want(t, "A stats it", do(t, appA, "stat", newFile), 0)
		want(t, "B still cannot", do(t, appB, "stat", newFile), syscall.ENOENT)
		// A missing name in A's dir, looked up by A, then created by A.
		missing := tg.p("Android/data/uid10001/missing.txt")
		rs := run(t, appA, step{"stat", missing}, step{"write", missing, "m"}, step{"stat", missing})
		want(t, "A: missing", rs[0], syscall.ENOENT)
		want(t, "A: created", rs[2], 0)
		// Root lists everything (READDIRPLUS hands the kernel entries);
		// B still sees nothing of A.
		if r := do(t, root, "readdir", aDir); r.Errno != 0 || !strings.Contains(r.Out, "secret.txt") {
			t.Fatalf("root lists A's dir: %v %q", r.err(), r.Out)
		}
		rs = run(t, appB, step{"stat", aFile}, step{"readdir", aDir})
		want(t, "B after root's listing: stat", rs[0], syscall.ENOENT)
		want(t, "B after root's listing: readdir", rs[1], syscall.ENOENT)
	})
}

// A file that A creates in DCIM is readable by B and not writable,
// removable or renamable by B (EACCES, the shared-storage rule); A keeps
// full control of it. Apps create no files at the root.
func TestSharedMedia(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		f := tg.p("DCIM/from-a.txt")
		must(t, do(t, appA, "write", f, "made by A").err())
		rs := run(t, appB,
			step{"read", f},
			step{"append", f, "B was here"},
			step{"write", f, "overwritten"},
			step{"truncate", f, "0"},
			step{"chmod", f, "0600"},
			step{"rename", f, tg.p("DCIM/taken.txt")},
			step{"unlink", f},
			step{"write", tg.p("DCIM/from-b.txt"), "b"},
			step{"write", tg.p("junk-at-root"), "x"},
		)
		want(t, "B reads A's photo", rs[0], 0)
		if string(rs[0].Data) != "made by A" {
			t.Errorf("B reads %q", rs[0].Data)
		}
		for i, what := range []string{"appends to", "overwrites", "truncates", "chmods", "renames", "unlinks"} {
			errno := syscall.EACCES
			if what == "chmods" {
				// The kernel refuses first: only the owner may chmod
				// (default_permissions).
				errno = syscall.EPERM
			}
			want(t, "B "+what+" A's file", rs[i+1], errno)
		}
		want(t, "B creates in DCIM", rs[7], 0)
		want(t, "B creates at the root", rs[8], syscall.EACCES)
		if b, _ := os.ReadFile(tg.l("DCIM/from-a.txt")); string(b) != "made by A" {
			t.Errorf("A's file now reads %q", b)
		}
		if st, err := os.Stat(tg.l("DCIM/from-a.txt")); err != nil || st.Sys().(*syscall.Stat_t).Uid != appA.UID {
			t.Errorf("A's file in the lower tree: %v (owned by A?)", err)
		}
		rs = run(t, appA, step{"append", f, "+"}, step{"rename", f, tg.p("DCIM/renamed.txt")}, step{"unlink", tg.p("DCIM/renamed.txt")})
		for i, r := range rs {
			want(t, "A changes its own file, step "+itoa(i), r, 0)
		}

		// A directory moving across an ownership boundary: A's album
		// holding B's photo cannot be moved into A's private directory
		// (nor renamed within DCIM), though A owns the album.
		must(t, do(t, appA, "mkdir", tg.p("DCIM/album")).err())
		must(t, do(t, appB, "write", tg.p("DCIM/album/b.txt"), "B's photo").err())
		rs = run(t, appA,
			step{"rename", tg.p("DCIM/album"), tg.p("Android/data/uid10001/album")},
			step{"rename", tg.p("DCIM/album"), tg.p("DCIM/album2")},
		)
		want(t, "A moves an album holding B's photo into its private dir", rs[0], syscall.EACCES)
		want(t, "A renames an album holding B's photo", rs[1], syscall.EACCES)
		must(t, do(t, appB, "unlink", tg.p("DCIM/album/b.txt")).err())
		want(t, "A moves its album once it holds only its own files", do(t, appA, "rename", tg.p("DCIM/album"), tg.p("Android/data/uid10001/album")), 0)
	})
}

// A redacted read of a JPEG returns zeros exactly over its EXIF GPS data
// and the rest byte for byte, through read(2) and through a private
// mapping, without kernel passthrough for that open (counters); the owner
// and the media-location role read the original; other files still use
// passthrough.
func TestRedaction(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		_, gps := redacttest.JPEG(binary.BigEndian)
		redacted := bytes.Clone(tg.jpeg)
		for _, r := range gps {
			clear(redacted[r.Off:r.End()])
		}
		if bytes.Equal(redacted, tg.jpeg) || len(gps) == 0 {
			t.Fatal("the test JPEG has no GPS data")
		}
		photo := tg.p("DCIM/photo.jpg")
		s0 := tg.fs()
		if !s0.Passthrough || s0.Policy == nil {
			t.Fatalf("stats: passthrough %v, policy %+v", s0.Passthrough, s0.Policy)
		}
		r := do(t, appB, "read", photo)
		want(t, "B reads A's photo", r, 0)
		if !bytes.Equal(r.Data, redacted) {
			t.Errorf("B's read is not the photo with zeros over the GPS ranges %v:\n%s", gps, diff(r.Data, redacted))
		}
		s1 := tg.fs()
		if s1.Policy.RedactedOpens != s0.Policy.RedactedOpens+1 || s1.PTOpens != s0.PTOpens {
			t.Errorf("B's open: redacted opens %d → %d, passthrough opens %d → %d; want one redacted, no passthrough",
				s0.Policy.RedactedOpens, s1.Policy.RedactedOpens, s0.PTOpens, s1.PTOpens)
		}
		r = do(t, appB, "mmapread", photo)
		want(t, "B maps A's photo", r, 0)
		if !bytes.Equal(r.Data, redacted) {
			t.Errorf("B's private mapping is not redacted:\n%s", diff(r.Data, redacted))
		}
		for _, c := range []harness.Cred{appA, camera, root} {
			r := do(t, c, "read", photo)
			if r.Errno != 0 || !bytes.Equal(r.Data, tg.jpeg) {
				t.Errorf("uid %d reads the photo: %v, original: %v", c.UID, r.err(), bytes.Equal(r.Data, tg.jpeg))
			}
		}
		s2 := tg.fs()
		if s2.PTOpens != s1.PTOpens || s2.Policy.DirectOpens < s1.Policy.DirectOpens+3 {
			t.Errorf("unredacted opens of the photo: passthrough %d → %d, direct %d → %d; want no passthrough (others read it redacted)",
				s1.PTOpens, s2.PTOpens, s1.Policy.DirectOpens, s2.Policy.DirectOpens)
		}
		if r := do(t, appB, "read", tg.p("DCIM/big.bin")); r.Errno != 0 || len(r.Data) != 1<<20 {
			t.Errorf("B reads big.bin: %v, %d bytes", r.err(), len(r.Data))
		}
		if s3 := tg.fs(); s3.PTOpens != s2.PTOpens+1 {
			t.Errorf("B's read of a non-JPEG: passthrough opens %d → %d, want one more", s2.PTOpens, s3.PTOpens)
		}
		// A JPEG that B creates is B's: read back unredacted.
		mine := tg.p("DCIM/b.jpg")
		must(t, os.WriteFile(tg.l("DCIM/b.jpg"), tg.jpeg, 0o666))
		must(t, os.Chown(tg.l("DCIM/b.jpg"), int(appB.UID), int(appB.UID)))
		if r := do(t, appB, "read", mine); r.Errno != 0 || !bytes.Equal(r.Data, tg.jpeg) {
			t.Errorf("B reads its own photo: %v, original: %v", r.err(), bytes.Equal(r.Data, tg.jpeg))
		}
		if tg.kind == "serve" && !strings.Contains(tg.metrics(), `fusegate_policy_redacted_opens_total{mount="m"} 2`) {
			t.Errorf("metrics: no 2 redacted opens:\n%s", grep(tg.metrics(), "redacted"))
		}
	})
}

// diff describes where two byte slices differ.
func diff(got, want []byte) string {
	if len(got) != len(want) {
		return "length " + itoa(len(got)) + ", want " + itoa(len(want))
	}
	var b strings.Builder
	n := 0
	for i := range got {
		if got[i] != want[i] {
			if n < 8 {
				b.WriteString("byte " + itoa(i) + " differs\n")
			}
			n++
		}
	}
	return b.String() + itoa(n) + " bytes differ"
}

func grep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A reload that revokes a permission takes effect on the live mount at
// once, although the kernel cached the entry a moment before; an invalid
// policy is rejected with its error and the previous one stays in force;
// a reload restoring the permission takes effect at once too.
func TestReload(t *testing.T) {
	for _, kind := range []string{"mount", "mount-entries", "serve"} {
		t.Run(kind, func(t *testing.T) { testReload(t, newTarget(t, kind, basePolicy())) })
	}
}

func testReload(t *testing.T, tg *target) {
	{
		f := tg.p("DCIM/shared.txt")
		revoked := basePolicy() + `
[[rule]]
name = "revoked"
path = "DCIM/shared.txt"
deny = "EACCES"
`
		// B reads it, then stats it: the kernel now holds its entry and
		// attributes (1 s timeouts), so that a stat right after the
		// reload is answered by the kernel's cache unless the reload
		// invalidated it. (A read invalidates the cached atime, so the
		// stats come after it.)
		rs := run(t, appB, step{"read", f}, step{"stat", f}, step{"stat", f})
		want(t, "B reads before the reload", rs[0], 0)
		want(t, "B stats before the reload", rs[2], 0)
		tg.writePolicy(revoked)
		if ok, why := tg.reload(); !ok {
			t.Fatalf("reload rejected: %s", why)
		}
		rs = run(t, appB, step{"stat", f}, step{"read", f}, step{"readdir", tg.p("DCIM")})
		want(t, "B stats right after the revoking reload", rs[0], syscall.EACCES)
		want(t, "B reads right after the revoking reload", rs[1], syscall.EACCES)
		if strings.Contains(rs[2].Out, "shared.txt") {
			t.Errorf("B still lists DCIM/shared.txt: %q", rs[2].Out)
		}
		want(t, "root still reads", do(t, root, "read", f), 0)

		// An invalid policy: rejected, the revoking one stays.
		tg.writePolicy(basePolicy() + "\n[[rule]]\nname = \"bad\"\npath = \"DCIM/**\"\nallow.read = [\"role:nosuch\"]\n")
		ok, why := tg.reload()
		if ok || !strings.Contains(why, "nosuch") {
			t.Errorf("invalid policy: accepted %v, reason %q; want a rejection naming the unknown role", ok, why)
		}
		want(t, "B after the rejected reload", do(t, appB, "read", f), syscall.EACCES)

		// Restored: at once.
		tg.writePolicy(basePolicy())
		if ok, why := tg.reload(); !ok {
			t.Fatalf("reload rejected: %s", why)
		}
		r := do(t, appB, "read", f)
		want(t, "B right after the restoring reload", r, 0)
		if string(r.Data) != "shared" {
			t.Errorf("B reads %q", r.Data)
		}
		wantInv := map[string]string{"mount": "invalidated=epoch", "mount-entries": `invalidated="`}[tg.kind]
		if wantInv != "" && !strings.Contains(tg.d.Logs(), wantInv) {
			t.Errorf("the reload did not say it invalidated the kernel's cached names (%s):\n%s", wantInv, grep(tg.d.Logs(), "reload"))
		}
	}
}
