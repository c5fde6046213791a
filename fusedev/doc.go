// Package fusedev serves the kernel FUSE protocol on a /dev/fuse (or
// /dev/cuse) file descriptor without libfuse or cgo.
//
// A Conn is one message-carrying descriptor: the fd of a mount, a clone of
// it, a /dev/cuse fd, or one end of a SOCK_SEQPACKET socketpair in tests.
// Mount creates a Conn for a mount point (directly with mount(2) as root, or
// through fusermount3 otherwise). A Server answers the INIT handshake, reads
// requests on several cloned Conns, decodes them and calls a FileSystem with
// one method per opcode, then writes exactly one reply per request (none for
// FORGET, BATCH_FORGET and NOTIFY_REPLY).
//
// Each descriptor has one goroutine reading it, which handles the request
// it read itself: a fast request costs no goroutine switch and no thread
// wake-up. If a handler takes longer than about a millisecond, a new
// goroutine takes over the reading, so slow and blocking handlers still run
// concurrently (up to Options.MaxInflight). On /dev/fuse and /dev/cuse the
// reads block in read(2), where the kernel wakes one reader per request;
// see Conn for how blocked readers are woken without unmounting.
//
// The kernel is not trusted: every length is checked before it is used, a
// malformed request is answered with EIO (or dropped when it cannot be
// answered), a handler that panics answers EIO, and INTERRUPT cancels the
// handler's context. The package must never touch the mount it serves: a
// process that both serves and uses a FUSE mount can deadlock.
package fusedev
