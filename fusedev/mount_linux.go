package fusedev

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MountOptions describe a FUSE mount. The zero value mounts a file system
// named "fusegate" that only the mounting user can use, nosuid and nodev.
type MountOptions struct {
	FSName  string // source shown in /proc/mounts; default "fusegate"
	Subtype string // file system type becomes "fuse.<Subtype>"

	AllowOther         bool // let other users use the mount
	DefaultPermissions bool // kernel checks mode bits before asking the server
	ReadOnly           bool
	NoExec             bool
	Suid               bool // honour setuid bits (root only; default nosuid)
	Dev                bool // honour device nodes (root only; default nodev)
	MaxRead            uint32

	// Fusermount is the helper used when not root; default "fusermount3"
	// from PATH.
	Fusermount string
	// UseFusermount forces the fusermount3 path even as root (for tests).
	UseFusermount bool
	// Namespace is where the mount is made (root only; default: here).
	Namespace MountNamespace
}

func (o *MountOptions) fsname() string {
	if o.FSName == "" {
		return "fusegate"
	}
	return o.FSName
}

func (o *MountOptions) fstype() string {
	if o.Subtype == "" {
		return "fuse"
	}
	return "fuse." + o.Subtype
}

// Mount mounts a FUSE file system at mountpoint and returns the connection
// to serve it on. As root it opens /dev/fuse and calls mount(2); otherwise
// it asks fusermount3, which passes the /dev/fuse fd back over a socket.
func Mount(mountpoint string, opts MountOptions) (*Conn, error) {
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(mp)
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", mp)
	}
	if os.Geteuid() == 0 && !opts.UseFusermount {
		var c *Conn
		err := opts.Namespace.do(func() (err error) {
			c, err = mountDirect(mp, &opts, st.Mode())
			return err
		})
		return c, err
	}
	return mountFusermount(mp, &opts)
}

func mountDirect(mp string, o *MountOptions, mode os.FileMode) (*Conn, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=%o,user_id=%d,group_id=%d", fd, unix.S_IFDIR, os.Getuid(), os.Getgid())
	if o.AllowOther {
		data += ",allow_other"
	}
	if o.DefaultPermissions {
		data += ",default_permissions"
	}
	if o.MaxRead > 0 {
		data += ",max_read=" + strconv.FormatUint(uint64(o.MaxRead), 10)
	}
	var flags uintptr
	if !o.Suid {
		flags |= unix.MS_NOSUID
	}
	if !o.Dev {
		flags |= unix.MS_NODEV
	}
	if o.NoExec {
		flags |= unix.MS_NOEXEC
	}
	if o.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(o.fsname(), mp, o.fstype(), flags, data); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	c, err := NewConnFD(fd, "/dev/fuse")
	if err != nil {
		unix.Unmount(mp, unix.MNT_DETACH)
		return nil, err
	}
	return c, nil
}

func fusermountPath(o *MountOptions) (string, error) {
	name := o.Fusermount
	if name == "" {
		name = "fusermount3"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("mounting as a non-root user needs %s (Debian package fuse3): %w", name, err)
	}
	return p, nil
}

// mountFusermount runs fusermount3 with _FUSE_COMMFD naming our end of a
// socketpair; fusermount3 opens /dev/fuse, mounts, and sends the fd back
// with SCM_RIGHTS.
func mountFusermount(mp string, o *MountOptions) (*Conn, error) {
	bin, err := fusermountPath(o)
	if err != nil {
		return nil, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	local := os.NewFile(uintptr(pair[0]), "fusermount-local")
	remote := os.NewFile(uintptr(pair[1]), "fusermount-remote")
	defer local.Close()

	opts := []string{"fsname=" + o.fsname()}
	if o.Subtype != "" {
		opts = append(opts, "subtype="+o.Subtype)
	}
	if o.AllowOther {
		opts = append(opts, "allow_other")
	}
	if o.DefaultPermissions {
		opts = append(opts, "default_permissions")
	}
	if o.ReadOnly {
		opts = append(opts, "ro")
	}
	if o.NoExec {
		opts = append(opts, "noexec")
	}
	if o.MaxRead > 0 {
		opts = append(opts, "max_read="+strconv.FormatUint(uint64(o.MaxRead), 10))
	}
	cmd := exec.Command(bin, "-o", strings.Join(opts, ","), "--", mp)
	cmd.ExtraFiles = []*os.File{remote} // fd 3 in the child
	cmd.Env = append(os.Environ(), "_FUSE_COMMFD=3")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		remote.Close()
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	remote.Close()

	fd, rerr := recvFD(int(local.Fd()))
	werr := cmd.Wait()
	if rerr != nil || werr != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		msg := strings.TrimSpace(stderr.String())
		if werr != nil {
			return nil, fmt.Errorf("%s failed: %v: %s", bin, werr, msg)
		}
		return nil, fmt.Errorf("%s sent no descriptor: %v: %s", bin, rerr, msg)
	}
	unix.CloseOnExec(fd)
	return NewConnFD(fd, "/dev/fuse")
}

func recvFD(sock int) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, err
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return -1, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err == nil && len(fds) > 0 {
				for _, extra := range fds[1:] {
					unix.Close(extra)
				}
				return fds[0], nil
			}
		}
		return -1, errors.New("no SCM_RIGHTS in message")
	}
}

// UnmountOptions select how Unmount detaches a mount.
type UnmountOptions struct {
	// Lazy detaches the mount now and cleans it up when no longer busy.
	Lazy bool
	// Fusermount as in MountOptions, used when not root.
	Fusermount string
	// Namespace is where to unmount (root only; default: here).
	Namespace MountNamespace
}

// Unmount unmounts a FUSE mount point. The server of that mount sees its
// Conn.Read return ErrClosed.
func Unmount(mountpoint string, opts UnmountOptions) error {
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		flags := 0
		if opts.Lazy {
			flags = unix.MNT_DETACH
		}
		return opts.Namespace.do(func() error {
			for {
				err := unix.Unmount(mp, flags)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return fmt.Errorf("unmount %s: %w", mp, err)
				}
				return nil
			}
		})
	}
	bin, err := fusermountPath(&MountOptions{Fusermount: opts.Fusermount})
	if err != nil {
		return err
	}
	args := []string{"-u"}
	if opts.Lazy {
		args = append(args, "-z")
	}
	out, err := exec.Command(bin, append(args, "--", mp)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -u %s: %v: %s", bin, mp, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// MountInfo is one mount from /proc/self/mountinfo.
type MountInfo struct {
	ID           int
	Mountpoint   string
	FSType       string // "fuse", "fuse.<subtype>", "fuseblk", "tmpfs", ...
	Source       string
	Options      string // per-mount options: "ro,nosuid,nodev,relatime"
	SuperOptions string // super block options: "rw,user_id=0,group_id=0"
	Major        uint32
	Minor        uint32
}

// ConnID is the connection's number under /sys/fs/fuse/connections: the
// kernel's dev_t of the mount's superblock.
func (m MountInfo) ConnID() uint64 { return uint64(m.Major)<<20 | uint64(m.Minor) }

// isFUSE reports whether m is a FUSE file system.
func (m MountInfo) isFUSE() bool {
	return m.FSType == "fuse" || m.FSType == "fuseblk" || strings.HasPrefix(m.FSType, "fuse.")
}

// FindMount looks mountpoint up in /proc/self/mountinfo without touching the
// mount itself (a wedged server would make stat(2) hang). It reports false
// when no FUSE file system is mounted there.
func FindMount(mountpoint string) (MountInfo, bool, error) {
	ms, err := MountsAt(mountpoint)
	var found MountInfo
	ok := false
	for _, m := range ms {
		if m.isFUSE() {
			found, ok = m, true // the last one listed is on top
		}
	}
	return found, ok, err
}

// MountsAt returns every mount at mountpoint, of any type, in mountinfo
// order (the last one is on top), from /proc/self/mountinfo alone: it never
// touches the mounts. Nothing mounted there means an empty result.
func MountsAt(mountpoint string) ([]MountInfo, error) {
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []MountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m, ok := parseMountinfoLine(sc.Text()); ok && m.Mountpoint == mp {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// parseMountinfoLine reads "id parent major:minor root mountpoint opts ... - fstype source superopts".
func parseMountinfoLine(line string) (MountInfo, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" {
			sep = i
			break
		}
	}
	if sep < 5 || len(fields) < sep+3 {
		return MountInfo{}, false
	}
	majmin := strings.SplitN(fields[2], ":", 2)
	if len(majmin) != 2 {
		return MountInfo{}, false
	}
	maj, err1 := strconv.ParseUint(majmin[0], 10, 32)
	min, err2 := strconv.ParseUint(majmin[1], 10, 32)
	if err1 != nil || err2 != nil {
		return MountInfo{}, false
	}
	id, _ := strconv.Atoi(fields[0])
	m := MountInfo{
		ID:         id,
		Mountpoint: unescapeMountinfo(fields[4]),
		FSType:     fields[sep+1],
		Source:     unescapeMountinfo(fields[sep+2]),
		Options:    fields[5],
		Major:      uint32(maj),
		Minor:      uint32(min),
	}
	if len(fields) > sep+3 {
		m.SuperOptions = fields[sep+3]
	}
	return m, true
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

const (
	fusectlDir   = "/sys/fs/fuse/connections"
	fusectlMagic = 0x65735543 // FUSE_CTL_SUPER_MAGIC
)

// ensureFusectl mounts the fusectl file system if it is not mounted (root only).
func ensureFusectl() error {
	var st unix.Statfs_t
	if err := unix.Statfs(fusectlDir, &st); err == nil && st.Type == fusectlMagic {
		return nil
	}
	if err := unix.Mount("fusectl", fusectlDir, "fusectl", 0, ""); err != nil && err != unix.EBUSY {
		return fmt.Errorf("mount fusectl on %s: %w", fusectlDir, err)
	}
	return nil
}

// Abort aborts the FUSE connection of mountpoint through
// /sys/fs/fuse/connections/N/abort: every pending and future request fails
// with ENOTCONN (or ECONNABORTED), which unblocks processes stuck on a
// wedged server. The mount stays until unmounted. Root only.
func Abort(mountpoint string) error {
	m, ok, err := FindMount(mountpoint)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: no FUSE file system mounted there", mountpoint)
	}
	if err := ensureFusectl(); err != nil {
		return err
	}
	p := filepath.Join(fusectlDir, strconv.FormatUint(m.ConnID(), 10), "abort")
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		return fmt.Errorf("abort connection: %w", err)
	}
	return nil
}

// MountState says what stat(2) finds at a FUSE mount point.
type MountState int

const (
	NotMounted   MountState = iota // no FUSE mount there
	Live                           // a server answers
	Stale                          // the server is gone: ENOTCONN / ECONNABORTED
	Unresponsive                   // stat did not return within the timeout
)

func (s MountState) String() string {
	return [...]string{"not mounted", "live", "stale", "unresponsive"}[s]
}

// Probe reports whether the FUSE mount at mountpoint is served. It asks
// with statfs(2), which the kernel always sends to the server (stat(2) can
// be answered from the attribute cache long after the server died), from a
// goroutine, and gives up after timeout so a wedged server cannot hang the
// caller (the goroutine stays blocked until the kernel answers). Never call
// it on a mount the calling process serves.
func Probe(mountpoint string, timeout time.Duration) (MountState, error) {
	_, ok, err := FindMount(mountpoint)
	if err != nil || !ok {
		return NotMounted, err
	}
	done := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		done <- unix.Statfs(mountpoint, &st)
	}()
	select {
	case err := <-done:
		if errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) {
			return Stale, nil
		}
		return Live, nil // answered, even if with another error
	case <-time.After(timeout):
		return Unresponsive, nil
	}
}
