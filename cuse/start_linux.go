package cuse

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev"
)

// Errors Start wraps, for errors.Is.
var (
	// ErrNoCuse: the kernel cannot serve CUSE devices here (built without
	// CUSE, module not loaded, or no /dev/cuse node). The message says which
	// and how to fix it.
	ErrNoCuse = errors.New("CUSE is not available")
	// ErrNameTaken: a device node or CUSE device with this name exists.
	ErrNameTaken = errors.New("device name already taken")
	// ErrPermission: opening /dev/cuse or setting up the node was refused.
	ErrPermission = errors.New("permission denied")
)

// Path returns the device node's path, /dev/NAME.
func (s *Server) Path() string { return filepath.Join(s.opts.DevDir, s.opts.Name) }

// DevNum returns the device's major and minor number, known once Start
// returned.
func (s *Server) DevNum() (major, minor uint32) {
	s.life.Lock()
	defer s.life.Unlock()
	return s.devMajor, s.devMinor
}

// sysName is the device's directory under /sys/class/cuse: the kernel
// spells "/" in device names as "!".
func (s *Server) sysPath() string {
	return filepath.Join(s.opts.SysDir, "class", "cuse", strings.ReplaceAll(s.opts.Name, "/", "!"))
}

// Start creates the device: it opens /dev/cuse, answers CUSE_INIT, waits for
// the kernel to create /dev/NAME, sets its owner and mode, and returns with
// the device served in the background until Stop or ctx is cancelled. On
// failure nothing is left behind and the error says what to fix (see
// ErrNoCuse, ErrNameTaken, ErrPermission).
func (s *Server) Start(ctx context.Context) error {
	if err := s.claim(); err != nil {
		return err
	}

	if err := s.start(ctx); err != nil {
		s.finish(err)
		return err
	}
	return nil
}

func (s *Server) start(ctx context.Context) error {
	if err := s.checkFree(); err != nil {
		return err
	}
	f, err := os.OpenFile(s.opts.CuseDev, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return s.explainOpen(err)
	}
	conn, err := fusedev.NewConn(f)
	if err != nil {
		return fmt.Errorf("cuse: %s: %w", s.opts.CuseDev, err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.life.Lock()
	s.conn, s.cancel = conn, cancel
	s.life.Unlock()

	initDone := make(chan struct{})
	sv := &serving{done: make(chan struct{})}
	go func() {
		sv.err = s.serve(sctx, conn, initDone)
		close(sv.done)
	}()
	fail := func(err error) error {
		cancel()
		conn.Close()
		<-sv.done
		return err
	}
	select {
	case <-initDone:
	case <-sv.done:
		conn.Close()
		err := sv.err
		if err == nil {
			err = errors.New("the kernel closed the connection before CUSE_INIT")
		}
		return fmt.Errorf("cuse: %s: %w", s.opts.Name, err)
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	if err := s.setupNode(sv); err != nil {
		return fail(err)
	}
	if err := s.writeHeader(); err != nil {
		return fail(fmt.Errorf("cuse: restart state: %w", err))
	}
	close(s.ready)
	s.log.WithFields(map[string]any{"path": s.Path(), "major": s.devMajor, "minor": s.devMinor}).Debug("cuse: device ready")

	s.watch(ctx, sctx, cancel, conn, sv)
	return nil
}

// watch ends the serving context sctx (through cancel) when ctx ends, and
// finishes the device when the server goroutine sv returns: conn is closed
// (the kernel removes the node) unless the device was handed over.
func (s *Server) watch(ctx, sctx context.Context, cancel context.CancelFunc, conn *fusedev.Conn, sv *serving) {
	go func() {
		select {
		case <-ctx.Done():
			cancel()
		case <-sctx.Done():
		}
	}()
	go func() {
		<-sv.done
		cancel()
		if !s.handedOver.Load() {
			conn.Close()
		}
		s.finish(sv.err)
	}()
}

// serving is the fusedev server's goroutine: err is set before done closes.
type serving struct {
	done chan struct{}
	err  error
}

// Stop removes the device: it stops reading requests, lets those in flight
// finish for up to ShutdownGrace, closes /dev/cuse (the kernel removes the
// node and fails what its users still do with ENODEV) and releases the files
// still open. It returns when all that is done or ctx ends.
func (s *Server) Stop(ctx context.Context) error {
	s.life.Lock()
	cancel := s.cancel
	started := s.started
	s.life.Unlock()
	if !started {
		return errors.New("cuse: Stop before Start")
	}
	if cancel != nil {
		cancel()
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkFree fails with ErrNameTaken when the name is in use.
func (s *Server) checkFree() error {
	if _, err := os.Lstat(s.sysPath()); err == nil {
		return fmt.Errorf("cuse: %w: another CUSE device is called %q (%s)", ErrNameTaken, s.opts.Name, s.sysPath())
	}
	if fi, err := os.Lstat(s.Path()); err == nil {
		return fmt.Errorf("cuse: %w: %s exists (%v)", ErrNameTaken, s.Path(), fi.Mode().Type())
	}
	return nil
}

// explainOpen turns a failure to open /dev/cuse into advice.
func (s *Server) explainOpen(err error) error {
	p := s.opts.CuseDev
	switch {
	case errors.Is(err, fs.ErrPermission):
		mode := ""
		if fi, serr := os.Stat(p); serr == nil {
			mode = fmt.Sprintf(" (mode %v)", fi.Mode().Perm())
		}
		return fmt.Errorf("cuse: %w opening %s%s: creating a character device needs root, or a user given access to %s", ErrPermission, p, mode, p)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("cuse: %w: %s", ErrNoCuse, diagnoseMissing(p, s.opts.SysDir))
	case errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		return fmt.Errorf("cuse: %w: %s exists but no driver answers it (%v): load the module with 'modprobe cuse'", ErrNoCuse, p, err)
	}
	return fmt.Errorf("cuse: opening %s: %w", p, err)
}

// diagnoseMissing explains why the CUSE control node is missing.
func diagnoseMissing(node, sysDir string) string {
	release := kernelRelease()
	if _, err := os.Stat(filepath.Join(sysDir, "module", "cuse")); err == nil {
		return fmt.Sprintf("CUSE is loaded (%s/module/cuse) but %s does not exist: mount devtmpfs on /dev, or create the node with 'mknod %s c 10 203'", sysDir, node, node)
	}
	modDir := filepath.Join("/lib/modules", release)
	if builtin, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil && bytes.Contains(builtin, []byte("/cuse.ko\n")) {
		return fmt.Sprintf("CUSE is built into kernel %s but %s does not exist: mount devtmpfs on /dev, or create the node with 'mknod %s c 10 203'", release, node, node)
	}
	if m := findModule(filepath.Join(modDir, "kernel", "fs", "fuse")); m != "" {
		return fmt.Sprintf("the cuse module (%s) is not loaded: run 'modprobe cuse' as root (or add cuse to /etc/modules-load.d/)", m)
	}
	switch kernelConfig(release, "CONFIG_CUSE") {
	case "n":
		return fmt.Sprintf("kernel %s was built without CUSE (CONFIG_CUSE is not set): use a kernel with CONFIG_CUSE=m or =y", release)
	case "m":
		return fmt.Sprintf("kernel %s builds CUSE as a module (CONFIG_CUSE=m), but cuse.ko is not installed under %s: install the kernel's modules, then 'modprobe cuse'", release, modDir)
	}
	return fmt.Sprintf("kernel %s has no CUSE: neither loaded (%s/module/cuse), built in, nor installed as a module under %s; use a kernel with CONFIG_CUSE", release, sysDir, modDir)
}

func findModule(dir string) string {
	for _, ext := range []string{"", ".xz", ".zst", ".gz"} {
		p := filepath.Join(dir, "cuse.ko"+ext)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "(unknown)"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelConfig returns "y", "m", "n" or "" (unknown) for a config option,
// from /proc/config.gz or /boot/config-RELEASE.
func kernelConfig(release, opt string) string {
	var data []byte
	if f, err := os.Open("/proc/config.gz"); err == nil {
		if z, err := gzip.NewReader(f); err == nil {
			data, _ = io.ReadAll(io.LimitReader(z, 4<<20))
		}
		f.Close()
	}
	if data == nil {
		data, _ = os.ReadFile("/boot/config-" + release)
	}
	if data == nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case line == "# "+opt+" is not set":
			return "n"
		case strings.HasPrefix(line, opt+"="):
			return strings.TrimPrefix(line, opt+"=")
		}
	}
	return "n" // absent from a complete config: the option does not exist or depends on one that is off
}

// setupNode checks that the kernel created our node and gives it its owner
// and mode. sv ending early means the kernel aborted the connection: it
// refused the device.
func (s *Server) setupNode(sv *serving) error {
	sysDev := filepath.Join(s.sysPath(), "dev")
	var want uint64
	var haveWant bool
	// The kernel registered the device while handling our CUSE_INIT reply;
	// if it refused it, it aborted the connection, which ends serving.
	deadline := time.Now().Add(2 * time.Second)
	for {
		select {
		case <-sv.done:
			err := sv.err
			if err == nil {
				err = fmt.Errorf("%w: the kernel refused device %q right after CUSE_INIT (is the name or the device number %d:%d in use? see dmesg)",
					ErrNameTaken, s.opts.Name, s.opts.Major, s.opts.Minor)
			}
			return fmt.Errorf("cuse: %w", err)
		default:
		}
		if b, err := os.ReadFile(sysDev); err == nil {
			maj, min, ok := parseDevNum(string(b))
			if ok {
				want, haveWant = unix.Mkdev(maj, min), true
				s.life.Lock()
				s.devMajor, s.devMinor = maj, min
				s.life.Unlock()
			}
		}
		var st unix.Stat_t
		err := unix.Lstat(s.Path(), &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && (!haveWant || st.Rdev == want) {
			if !haveWant {
				s.life.Lock()
				s.devMajor, s.devMinor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
				s.life.Unlock()
			}
			break
		}
		if err == nil && haveWant && (st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != want) {
			return fmt.Errorf("cuse: %w: %s is not device %d:%d that the kernel created for %q", ErrNameTaken, s.Path(), unix.Major(want), unix.Minor(want), s.opts.Name)
		}
		if time.Now().After(deadline) {
			if !haveWant {
				return fmt.Errorf("cuse: the kernel accepted %q but neither %s nor %s appeared (is devtmpfs mounted on %s?)", s.opts.Name, s.Path(), sysDev, s.opts.DevDir)
			}
			return fmt.Errorf("cuse: the kernel created device %d:%d for %q but %s did not appear (is devtmpfs mounted on %s?)", unix.Major(want), unix.Minor(want), s.opts.Name, s.Path(), s.opts.DevDir)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if o := s.opts.Owner; o != nil {
		if err := os.Lchown(s.Path(), int(o.UID), int(o.GID)); err != nil {
			return s.nodeErr("owner", err)
		}
	}
	if s.opts.Mode != 0 {
		if err := os.Chmod(s.Path(), s.opts.Mode); err != nil {
			return s.nodeErr("mode", err)
		}
	}
	return nil
}

func (s *Server) nodeErr(what string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("cuse: %w setting the %s of %s: %v", ErrPermission, what, s.Path(), err)
	}
	return fmt.Errorf("cuse: setting the %s of %s: %w", what, s.Path(), err)
}

// parseDevNum parses sysfs's "MAJOR:MINOR\n".
func parseDevNum(s string) (major, minor uint32, ok bool) {
	a, b, found := strings.Cut(strings.TrimSpace(s), ":")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 10, 32)
	y, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uint32(x), uint32(y), true
}
