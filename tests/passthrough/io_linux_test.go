package passthrough

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/tests/harness"
)

const ioSize = 64 << 20

// ioPattern is ioSize bytes that differ at every offset of a MiB.
func ioPattern() []byte {
	b := make([]byte, ioSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// writeRead writes data to path in 1 MiB writes, reads it back in 1 MiB
// reads through a new open, and compares. It also checks the lower file.
func writeRead(t *testing.T, path, lower string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	must(t, err)
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := f.Write(data[off : off+1<<20]); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
	must(t, f.Close())
	f, err = os.Open(path)
	must(t, err)
	got := make([]byte, 0, len(data))
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if n == 0 || err != nil {
			break
		}
	}
	must(t, f.Close())
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes through the mount that differ from the %d written", len(got), len(data))
	}
	low, err := os.ReadFile(lower)
	must(t, err)
	if !bytes.Equal(low, data) {
		t.Fatalf("the lower file holds %d bytes that differ from the %d written", len(low), len(data))
	}
}

// waitStats polls the daemon's counters until ok accepts them.
func waitStats(t *testing.T, get func() statsDoc, ok func(statsDoc) bool) statsDoc {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := get()
		if ok(s) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPassthroughIO proves kernel passthrough: 64 MiB written and read
// through the mount reach the daemon as no READ and no WRITE at all.
func TestPassthroughIO(t *testing.T) {
	m := startMirror(t, "on")
	writeRead(t, m.p("big"), m.l("big"), ioPattern())
	s := waitStats(t, m.stats, func(s statsDoc) bool { return s.FS.Handles == 0 })
	if r, w := s.count("READ"), s.count("WRITE"); r != 0 || w != 0 {
		t.Errorf("the daemon served %d READ and %d WRITE requests; with passthrough it must serve none", r, w)
	}
	if !s.FS.Passthrough || s.FS.PTOpens < 2 || s.FS.DaemonOpens != 0 {
		t.Errorf("counters %+v: want passthrough on, both opens in passthrough, none served by the daemon", s.FS)
	}
	if s.FS.BackingIDs != 0 || s.FS.Handles != 0 {
		t.Errorf("after every file closed: %d backing ids and %d handles remain", s.FS.BackingIDs, s.FS.Handles)
	}
}

// TestDaemonIO is TestPassthroughIO with passthrough off: the daemon serves
// the data, and it arrives intact.
func TestDaemonIO(t *testing.T) {
	m := startMirror(t, "off")
	writeRead(t, m.p("big"), m.l("big"), ioPattern())
	s := m.stats()
	if s.count("READ") == 0 || s.count("WRITE") == 0 || s.FS.PTOpens != 0 {
		t.Errorf("passthrough off: READ %d, WRITE %d, passthrough opens %d; want reads and writes served by the daemon",
			s.count("READ"), s.count("WRITE"), s.FS.PTOpens)
	}
}

// TestUnprivilegedFallback runs the daemon as nobody on a connection root
// mounted for it (as fusermount3 does): the kernel refuses to register
// backing files, the daemon says so once and serves reads and writes
// itself, and the data still arrives intact.
func TestUnprivilegedFallback(t *testing.T) {
	harness.RequireRoot(t)
	harness.RequireFUSE(t)
	nobody := harness.Nobody()
	src := harness.UserDir(t, nobody)
	work := harness.UserDir(t, nobody)
	mp := harness.UserDir(t, harness.Root())

	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	must(t, err)
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	defer dev.Close()
	data := "fd=" + strconv.Itoa(fd) + ",rootmode=40000,user_id=65534,group_id=65534,allow_other,default_permissions"
	must(t, unix.Mount("fusegate-test", mp, "fuse.fusegate", unix.MS_NOSUID|unix.MS_NODEV, data))
	t.Cleanup(func() { unix.Unmount(mp, unix.MNT_DETACH) })

	stats := filepath.Join(work, "stats.json")
	var out bytes.Buffer
	cmd := exec.Command(harness.Bin(t), "mount", "--passthrough=auto", "--stats-file", stats, src, "/dev/fd/3")
	cmd.ExtraFiles = []*os.File{dev}
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: nobody.UID, Gid: nobody.GID}}
	must(t, cmd.Start())
	dev.Close() // the daemon holds the connection now
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
		if t.Failed() {
			t.Logf("fusegate as nobody:\n%s", out.String())
		}
	})

	writeRead(t, filepath.Join(mp, "big"), filepath.Join(src, "big"), ioPattern())
	s := readStats(t, func(sig syscall.Signal) error { return cmd.Process.Signal(sig) }, stats)
	if s.count("READ") == 0 || s.count("WRITE") == 0 || s.FS.Passthrough || s.FS.PTOpens != 0 {
		t.Errorf("unprivileged: READ %d, WRITE %d, counters %+v; want the daemon serving the data, passthrough off",
			s.count("READ"), s.count("WRITE"), s.FS)
	}
	if !strings.Contains(s.FS.Fallback, "CAP_SYS_ADMIN") {
		t.Errorf("fallback reason %q, want it to name CAP_SYS_ADMIN", s.FS.Fallback)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("fusegate as nobody exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("fusegate as nobody did not exit after SIGTERM")
	}
	if n := strings.Count(out.String(), "passthrough: unavailable"); n != 1 {
		t.Errorf("the fallback was logged %d times, want once:\n%s", n, out.String())
	}
	if _, ok, _ := fusedev.FindMount(mp); !ok {
		t.Errorf("the helper's mount at %s vanished; it is the helper's to unmount", mp)
	}
}
