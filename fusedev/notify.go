package fusedev

import (
	"context"
	"errors"
	"syscall"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// ErrNotReady is returned by notifications sent before INIT was answered.
var ErrNotReady = errors.New("fuse connection not initialised")

// notify writes a notification: an out header with unique 0 and the code
// in the error field, then the parts. It returns the kernel's errno, e.g.
// ENOENT when the node or name is not cached (callers usually ignore that),
// or ENOSYS when the negotiated protocol lacks the notification.
func (s *Server) notify(code abi.NotifyCode, parts ...[]byte) error {
	neg := s.Negotiated()
	if neg == nil {
		return ErrNotReady
	}
	if neg.Minor < code.MinMinor() {
		return syscall.ENOSYS
	}
	total := abi.SizeOutHeader
	for _, p := range parts {
		total += len(p)
	}
	hdr := abi.OutHeader{Len: uint32(total), Error: int32(code)}
	return s.conn.Write(append([][]byte{abi.Bytes(&hdr)}, parts...))
}

// NotifyPoll wakes the poller registered under kernel handle kh (from a POLL
// request with PollScheduleNotify).
func (s *Server) NotifyPoll(kh uint64) error {
	out := abi.NotifyPollWakeupOut{Kh: kh}
	return s.notify(abi.NotifyPoll, abi.Bytes(&out))
}

// NotifyInvalInode drops cached attributes of node and its cached data in
// [off, off+length) (length 0: to the end; off -1: attributes only).
func (s *Server) NotifyInvalInode(node uint64, off, length int64) error {
	out := abi.NotifyInvalInodeOut{Ino: node, Off: off, Len: length}
	return s.notify(abi.NotifyInvalInode, abi.Bytes(&out))
}

// InvalEntryOptions modify NotifyInvalEntry.
type InvalEntryOptions struct {
	// ExpireOnly marks the entry expired instead of dropping it (7.38,
	// when the kernel offered InitHasExpireOnly).
	ExpireOnly bool
}

// NotifyInvalEntry drops the kernel's cached entry name in directory parent,
// so the next access looks it up again.
func (s *Server) NotifyInvalEntry(parent uint64, name string, opts InvalEntryOptions) error {
	if len(name) == 0 || len(name) > abi.NameMax {
		return syscall.EINVAL
	}
	out := abi.NotifyInvalEntryOut{Parent: parent, Namelen: uint32(len(name))}
	if opts.ExpireOnly {
		if neg := s.Negotiated(); neg == nil || !neg.KernelFlags.Has(abi.InitHasExpireOnly) {
			return syscall.ENOSYS
		}
		out.Flags = abi.ExpireOnly
	}
	return s.notify(abi.NotifyInvalEntry, abi.Bytes(&out), append([]byte(name), 0))
}

// NotifyDelete tells the kernel that name in parent, which was node child,
// is gone: it drops the entry and, if cached, unhashes the child's dentry.
func (s *Server) NotifyDelete(parent, child uint64, name string) error {
	if len(name) == 0 || len(name) > abi.NameMax {
		return syscall.EINVAL
	}
	out := abi.NotifyDeleteOut{Parent: parent, Child: child, Namelen: uint32(len(name))}
	return s.notify(abi.NotifyDelete, abi.Bytes(&out), append([]byte(name), 0))
}

// NotifyStore puts data into the kernel's page cache of node at offset.
func (s *Server) NotifyStore(node, offset uint64, data []byte) error {
	out := abi.NotifyStoreOut{NodeID: node, Offset: offset, Size: uint32(len(data))}
	return s.notify(abi.NotifyStore, abi.Bytes(&out), data)
}

// NotifyRetrieve asks the kernel for up to size bytes of node's page cache
// at offset and waits for them (they arrive as a NOTIFY_REPLY request).
func (s *Server) NotifyRetrieve(ctx context.Context, node, offset uint64, size uint32) ([]byte, error) {
	id := s.nextNotify.Add(1)
	ch := make(chan []byte, 1)
	s.mu.Lock()
	s.retrieves[id] = ch
	s.mu.Unlock()
	drop := func() {
		s.mu.Lock()
		delete(s.retrieves, id)
		s.mu.Unlock()
	}
	out := abi.NotifyRetrieveOut{NotifyUnique: id, NodeID: node, Offset: offset, Size: size}
	if err := s.notify(abi.NotifyRetrieve, abi.Bytes(&out)); err != nil {
		drop()
		return nil, err
	}
	select {
	case data := <-ch:
		return data, nil
	case <-ctx.Done():
		drop()
		return nil, ctx.Err()
	}
}

// NotifyResend asks the kernel to queue again every request that was read
// but not answered (7.40): how a restarted server recovers the requests its
// predecessor took with it.
func (s *Server) NotifyResend() error { return s.notify(abi.NotifyResend) }

// NotifyIncEpoch starts a new epoch (7.44): every dentry cached before it is
// treated as stale and looked up again, as after a policy change.
func (s *Server) NotifyIncEpoch() error { return s.notify(abi.NotifyIncEpoch) }

// NotifyPrune asks the kernel to forget the given nodes if it can (7.45).
func (s *Server) NotifyPrune(nodes []uint64) error {
	if len(nodes) == 0 {
		return nil
	}
	out := abi.NotifyPruneOut{Count: uint32(len(nodes))}
	ids := make([]byte, 8*len(nodes))
	for i, n := range nodes {
		for b := 0; b < 8; b++ {
			ids[8*i+b] = byte(n >> (8 * b))
		}
	}
	return s.notify(abi.NotifyPrune, abi.Bytes(&out), ids)
}
