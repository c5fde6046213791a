package cusevm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/cuse/loopback"
)

func TestMinimalNodeOwnerAndMode(t *testing.T) {
	d := startDevice(t, "fg-owner", "--kind", "loopback", "--owner", "1234:5678", "--mode", "0660")
	var st unix.Stat_t
	if err := unix.Stat(d.path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Fatalf("%s is not a character device: mode %o", d.path, st.Mode)
	}
	if st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o7777 != 0o660 {
		t.Fatalf("%s: owner %d:%d mode %o; want 1234:5678 0660", d.path, st.Uid, st.Gid, st.Mode&0o7777)
	}
	if got, want := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), sysDev(t, d.name); got != want {
		t.Fatalf("node is %s, the kernel registered %s", got, want)
	}
	// The owner and mode matter: the owner opens it, a stranger does not.
	owner := child(t, "open", d.path)
	owner.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1234, Gid: 5678}}
	if err := owner.Run(); err != nil {
		t.Fatalf("uid 1234 opening its device: %v", err)
	}
	stranger := child(t, "open", d.path)
	stranger.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 4321}}
	err := stranger.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 100+int(syscall.EACCES) {
		t.Fatalf("uid 4321 opening a 0660 device of 1234:5678: %v, want EACCES", err)
	}
}

func TestMinimalFixedNumberAndMaxRead(t *testing.T) {
	d := startDevice(t, "fg-fixed", "--kind", "loopback", "--major", "60", "--minor", "3", "--max-read", "4096", "--capacity", "65536")
	if got := sysDev(t, d.name); got != "60:3" {
		t.Fatalf("device number %s, want 60:3", got)
	}
	fd := openDev(t, d.path, unix.O_RDWR)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	writeAll(t, fd, data)
	buf := make([]byte, len(data))
	n, err := unix.Read(fd, buf)
	if err != nil || n != len(data) || !bytes.Equal(buf, data) {
		t.Fatalf("read %d, %v", n, err)
	}
	// max_read 4096: the kernel fetched the 64 KiB in 4 KiB requests.
	if st := d.stats(); st["reads"] != 16 || st["bytes_read"] != 65536 {
		t.Fatalf("reads %v bytes_read %v; want 16 requests for 65536 bytes", st["reads"], st["bytes_read"])
	}
}

func TestMinimalReadWritePoll(t *testing.T) {
	d := startDevice(t, "fg-rw", "--kind", "loopback", "--capacity", "1048576")
	w := openDev(t, d.path, unix.O_WRONLY)
	r := openDev(t, d.path, unix.O_RDONLY|unix.O_NONBLOCK)

	// Empty: poll says not readable, but writable.
	fds := []unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}, {Fd: int32(w), Events: unix.POLLOUT}}
	if n, err := unix.Poll(fds, 0); err != nil || n != 1 || fds[0].Revents != 0 || fds[1].Revents != unix.POLLOUT {
		t.Fatalf("poll of an empty device: %d %v %+v", n, err, fds)
	}
	// A poller waiting for input is woken by a write from elsewhere.
	go func() {
		time.Sleep(100 * time.Millisecond)
		unix.Write(w, []byte("hello"))
	}()
	start := time.Now()
	fds = []unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 10_000); err != nil || n != 1 || fds[0].Revents != unix.POLLIN {
		t.Fatalf("poll: %d %v %+v", n, err, fds)
	}
	t.Logf("poll woke %v after the write was scheduled", time.Since(start)-100*time.Millisecond)
	buf := make([]byte, 100)
	if n, err := unix.Read(r, buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q %v", buf[:n], err)
	}

	// epoll, as Go's runtime uses it: an *os.File on the device reads
	// through the netpoller, woken by the device's poll notifications.
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.SetReadDeadline(time.Now().Add(10 * time.Second))
	go func() {
		time.Sleep(100 * time.Millisecond)
		unix.Write(w, []byte("via epoll"))
	}()
	n, err := f.Read(buf)
	if err != nil || string(buf[:n]) != "via epoll" {
		t.Fatalf("netpoller read %q %v", buf[:n], err)
	}

	// A megabyte round trip in 128 KiB requests, reader and writer at once.
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	rb := openDev(t, d.path, unix.O_RDONLY)
	got := make([]byte, 0, len(data))
	done := make(chan error, 1)
	go func() {
		b := make([]byte, 256<<10)
		for len(got) < len(data) {
			n, err := unix.Read(rb, b)
			if err != nil {
				done <- err
				return
			}
			got = append(got, b[:n]...)
		}
		done <- nil
	}()
	within(t, 30*time.Second, "1 MiB round trip", func() {
		writeAll(t, w, data)
		if err := <-done; err != nil {
			t.Errorf("read: %v", err)
		}
	})
	if !bytes.Equal(got, data) {
		t.Fatal("1 MiB round trip corrupted the data")
	}
	st := d.stats()
	t.Logf("stats %v", st)
	if st["bytes_written"] != st["bytes_read"] || st["opens"] != 4 {
		t.Fatalf("stats %v", st)
	}
}

func TestMinimalNonblockingEmptyRead(t *testing.T) {
	d := startDevice(t, "fg-nb", "--kind", "loopback")
	fd := openDev(t, d.path, unix.O_RDWR|unix.O_NONBLOCK)
	buf := make([]byte, 10)
	if _, err := unix.Read(fd, buf); err != unix.EAGAIN {
		t.Fatalf("nonblocking read of an empty device: %v, want EAGAIN", err)
	}
	// fcntl changes are honoured: a blocking fd switched to O_NONBLOCK...
	bfd := openDev(t, d.path, unix.O_RDWR)
	if _, err := unix.FcntlInt(uintptr(bfd), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Read(bfd, buf); err != unix.EAGAIN {
		t.Fatalf("read after F_SETFL O_NONBLOCK: %v, want EAGAIN", err)
	}
	// ...and back: the read blocks until data comes.
	if _, err := unix.FcntlInt(uintptr(bfd), unix.F_SETFL, 0); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		unix.Write(fd, []byte("late"))
	}()
	within(t, 10*time.Second, "blocking read", func() {
		n, err := unix.Read(bfd, buf)
		if err != nil || string(buf[:n]) != "late" {
			t.Errorf("blocking read %q %v", buf[:n], err)
		}
	})
	// A full device refuses a nonblocking write.
	small := startDevice(t, "fg-nb-full", "--kind", "loopback", "--capacity", "4096")
	wfd := openDev(t, small.path, unix.O_WRONLY|unix.O_NONBLOCK)
	if n, err := unix.Write(wfd, make([]byte, 8192)); err != nil || n != 4096 {
		t.Fatalf("nonblocking write of 8 KiB into 4 KiB: %d %v", n, err)
	}
	if _, err := unix.Write(wfd, []byte("x")); err != unix.EAGAIN {
		t.Fatalf("nonblocking write into a full device: %v, want EAGAIN", err)
	}
}

// peekArg is loopback.Peek as the caller lays it out.
type peekArg struct {
	Buf    uint64
	Len    uint32
	Copied uint32
}

func ioctlPtr(fd int, cmd uint32, arg unsafe.Pointer) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(cmd), uintptr(arg))
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

func TestMinimalIoctlEmbeddedPointer(t *testing.T) {
	d := startDevice(t, "fg-ioctl", "--kind", "loopback")
	fd := openDev(t, d.path, unix.O_RDWR)
	writeAll(t, fd, []byte("the quick brown fox"))

	// A struct holding a pointer to a buffer the device fills: the kernel
	// copies the struct, then the buffer, on the device's request.
	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := range mem {
		mem[i] = 0xAA
	}
	arg := &peekArg{Buf: uint64(uintptr(unsafe.Pointer(&mem[0]))), Len: 9}
	res, err := ioctlPtr(fd, uint32(loopback.IocPeek), unsafe.Pointer(arg))
	if err != nil || res != 9 || arg.Copied != 9 {
		t.Fatalf("IocPeek: result %d, %v, copied %d", res, err, arg.Copied)
	}
	if string(mem[:9]) != "the quick" || mem[9] != 0xAA {
		t.Fatalf("IocPeek wrote %q then %#x; want the first 9 bytes and nothing beyond", mem[:9], mem[9])
	}
	// Peeking consumed nothing.
	var n int32
	if _, err := ioctlPtr(fd, uint32(loopback.FIONREAD), unsafe.Pointer(&n)); err != nil || n != 19 {
		t.Fatalf("FIONREAD: %d %v", n, err)
	}
	var st [2]uint64
	if _, err := ioctlPtr(fd, uint32(loopback.IocStat), unsafe.Pointer(&st)); err != nil || st[0] != 19 || st[1] != loopback.DefaultCapacity {
		t.Fatalf("IocStat: %v %v", st, err)
	}
	// A pointer to memory the caller does not have fails cleanly.
	bad := &peekArg{Buf: 8, Len: 4}
	if _, err := ioctlPtr(fd, uint32(loopback.IocPeek), unsafe.Pointer(bad)); err != unix.EFAULT {
		t.Fatalf("IocPeek into an unmapped buffer: %v, want EFAULT", err)
	}
	if _, err := ioctlPtr(fd, 0x1234, nil); err != unix.ENOTTY {
		t.Fatalf("unknown ioctl: %v, want ENOTTY", err)
	}
	if r, err := ioctlPtr(fd, uint32(loopback.IocReset), nil); err != nil || r != 19 {
		t.Fatalf("IocReset: %d %v", r, err)
	}
	stats := d.stats()
	t.Logf("stats %v", stats)
	if stats["ioctls"] < 4 || stats["ioctl_retries"] < 5 {
		t.Fatalf("ioctls %v retries %v", stats["ioctls"], stats["ioctl_retries"])
	}
}

// blockedIn waits until pid sleeps in the kernel waiting for its FUSE answer.
func blockedIn(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		if w := string(b); strings.Contains(w, "request_wait_answer") || strings.Contains(w, "fuse") {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
	t.Fatalf("process %d never blocked in the device (wchan %q)", pid, b)
}

func TestMinimalBlockedReaderKilled(t *testing.T) {
	d := startDevice(t, "fg-kill", "--kind", "loopback")
	for i, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		r := child(t, "reader", d.path)
		out, err := r.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "reading\n" {
			r.Process.Kill()
			r.Wait()
			t.Fatalf("reader said %q", line)
		}
		blockedIn(t, r.Process.Pid)
		start := time.Now()
		r.Process.Signal(sig)
		waited := make(chan error, 1)
		go func() { waited <- r.Wait() }()
		select {
		case err := <-waited:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != sig {
				t.Fatalf("reader ended with %v, want killed by %v", err, sig)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a reader blocked in the device survived %v for 5s", sig)
		}
		t.Logf("reader blocked in read(2) died %v after %v", time.Since(start), sig)
		// Nothing is left stuck: the device serves the next reader, and the
		// dead one took no data with it.
		fd := openDev(t, d.path, unix.O_RDWR)
		writeAll(t, fd, []byte("after"))
		buf := make([]byte, 10)
		if n, err := unix.Read(fd, buf); err != nil || string(buf[:n]) != "after" {
			t.Fatalf("read after the kill: %q %v", buf[:n], err)
		}
		if st := d.stats(); st["interrupted"] != float64(i+1) || st["open_now"] != float64(i+1) {
			// open_now: the fd opened above stays open until cleanup.
			t.Fatalf("after %v: interrupted %v open_now %v", sig, st["interrupted"], st["open_now"])
		}
	}
}

func TestMinimalSigtermRemovesNode(t *testing.T) {
	d := startDevice(t, "fg-term", "--kind", "loopback")
	fd := openDev(t, d.path, unix.O_RDWR) // a user still holds it
	if err := d.stop(); err != nil {
		t.Fatalf("fusegate device after SIGTERM: %v (want exit 0)", err)
	}
	if _, err := os.Lstat(d.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s after SIGTERM: %v, want it gone", d.path, err)
	}
	if _, err := os.Lstat("/sys/class/cuse/" + d.name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sysfs entry after SIGTERM: %v", err)
	}
	// The user's descriptor fails instead of hanging.
	within(t, 5*time.Second, "read on a removed device", func() {
		if _, err := unix.Read(fd, make([]byte, 1)); err == nil {
			t.Error("read on a removed device succeeded")
		} else {
			t.Logf("read on a removed device: %v", err)
		}
	})
	if !strings.Contains(d.output(), `"device removed"`) {
		t.Fatal("no 'device removed' log line")
	}
}

func TestMinimalNameTaken(t *testing.T) {
	first := startDevice(t, "fg-dup", "--kind", "loopback")
	for _, name := range []string{"fg-dup", "null"} {
		d, err := launchDevice(t, name, "--kind", "loopback")
		if err != nil {
			t.Fatal(err)
		}
		err = d.wait(15 * time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(d.output(), "already taken") {
			t.Fatalf("second device %q: %v\n%s", name, err, d.output())
		}
	}
	// The first one is unharmed.
	fd := openDev(t, first.path, unix.O_RDWR)
	writeAll(t, fd, []byte("x"))
	if _, err := os.Stat("/dev/null"); err != nil {
		t.Fatalf("/dev/null: %v", err)
	}
}

func TestMinimalSocketKind(t *testing.T) {
	sock := "/tmp/fg-driver.sock"
	drv := child(t, "driver", sock)
	out, err := drv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Process.Kill(); drv.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "listening\n" {
		t.Fatalf("driver said %q", line)
	}
	d := startDevice(t, "fg-sock", "--kind", "socket", "--socket", sock, "--mode", "0666")

	fd := openDev(t, d.path, unix.O_RDWR|unix.O_NONBLOCK)
	pollIn := func() {
		t.Helper()
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 10_000); err != nil || n != 1 || fds[0].Revents&unix.POLLIN == 0 {
			t.Fatalf("poll: %d %v %+v", n, err, fds)
		}
	}
	readLine := func() string {
		t.Helper()
		pollIn()
		buf := make([]byte, 256)
		n, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(buf[:n])
	}
	// The driver learns who opened the device.
	greeting := readLine()
	var uid, pid int
	if _, err := fmt.Sscanf(greeting, "hello uid=%d pid=%d\n", &uid, &pid); err != nil || uid != 0 {
		t.Fatalf("greeting %q: %v", greeting, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", pid)); err != nil {
		t.Fatalf("the driver was told pid %d, not a thread of this process", pid)
	}
	if _, err := unix.Read(fd, make([]byte, 10)); err != unix.EAGAIN {
		t.Fatalf("nonblocking read with nothing from the driver: %v", err)
	}
	writeAll(t, fd, []byte("bridged"))
	if got := readLine(); got != "BRIDGED" {
		t.Fatalf("driver answered %q", got)
	}

	// Ioctls: a struct in and out, a value, and one the driver refuses.
	var buf [16]byte
	copy(buf[:], "0123456789abcdef")
	if r, err := ioctlPtr(fd, uint32(echoCmd), unsafe.Pointer(&buf)); err != nil || r != 16 || string(buf[:]) != "fedcba9876543210" {
		t.Fatalf("echo ioctl: %d %v %q", r, err, buf)
	}
	var p [4]byte
	if _, err := ioctlPtr(fd, uint32(pidCmd), unsafe.Pointer(&p)); err != nil || int(binary.LittleEndian.Uint32(p[:])) != pid {
		t.Fatalf("pid ioctl: %v %v", p, err)
	}
	if r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(valCmd), 41); e != 0 || r != 42 {
		t.Fatalf("value ioctl: %d %v", r, e)
	}
	if _, err := ioctlPtr(fd, uint32(0xC0045304), unsafe.Pointer(&p)); err != unix.ENOTTY {
		t.Fatalf("refused ioctl: %v, want ENOTTY", err)
	}

	// A second open is a second connection, with its own greeting.
	fd2 := openDev(t, d.path, unix.O_RDONLY)
	b := make([]byte, 256)
	n, err := unix.Read(fd2, b)
	if err != nil || !strings.HasPrefix(string(b[:n]), "hello uid=0 pid=") {
		t.Fatalf("second open: %q %v", b[:n], err)
	}

	// Without the driver, opens fail with ENXIO; open files see EOF.
	drv.Process.Kill()
	drv.Wait()
	os.Remove(sock)
	if _, err := unix.Open(d.path, unix.O_RDWR, 0); err != unix.ENXIO {
		t.Fatalf("open without a driver: %v, want ENXIO", err)
	}
	within(t, 5*time.Second, "read after the driver died", func() {
		n, err := unix.Read(fd2, b)
		if err != nil || n != 0 {
			t.Errorf("read after the driver died: %d %v, want EOF", n, err)
		}
	})
	if st := d.stats(); st["opens"] != 2 || st["ioctls"] != 3 {
		t.Fatalf("stats %v", st)
	}
}
