package passthrough

import "golang.org/x/sys/unix"

// Object is what the gate may want to know about the file a request is
// about (Access.Stat).
type Object struct {
	Exists   bool
	Dir      bool
	Mode     uint32 // st_mode
	UID, GID uint32
}

// Stat looks at the file the request is about (Name in the node, or the
// node itself), without following a symlink. A missing name is reported
// with Exists false, not as an error.
func (a *Access) Stat() (Object, error) { return a.stat(a.n, a.Name) }

// StatNew looks at the request's second file, as Stat does: the target of
// RENAME (Exists false when nothing is replaced) and the existing file of
// LINK. Other requests have none: Exists false.
func (a *Access) StatNew() (Object, error) {
	if a.newParent == nil {
		return Object{}, nil
	}
	return a.stat(a.newParent, a.NewName)
}

func (a *Access) stat(n *node, name string) (Object, error) {
	fd, err := a.fs.pin(n)
	if err != nil {
		return Object{}, err
	}
	defer a.fs.unpin(n)
	var st unix.Statx_t
	if name != "" {
		err = statxAt(fd, name, &st)
	} else {
		err = statxFd(fd, &st)
	}
	if err == unix.ENOENT {
		return Object{}, nil
	}
	if err != nil {
		return Object{}, err
	}
	return Object{Exists: true, Dir: st.Mode&unix.S_IFMT == unix.S_IFDIR, Mode: uint32(st.Mode), UID: st.Uid, GID: st.Gid}, nil
}

// Groups returns the caller's supplementary groups (from the request's
// FUSE_EXT_GROUPS extension when the kernel sent one, else as the daemon
// reads them for its own permission checks, cached briefly).
func (a *Access) Groups() []uint32 {
	if len(a.Request.SuppGroups) > 0 {
		return a.Request.SuppGroups
	}
	c := &a.Request.Caller
	return a.fs.groups.get(c.PID, c.UID, c.GID)
}
