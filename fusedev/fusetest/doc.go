// Package fusetest is a fake kernel for unit tests of a fusedev.Server.
//
// Start connects a Server to one end of a SOCK_SEQPACKET socketpair (which,
// like /dev/fuse, keeps each message whole) and runs Serve in a goroutine.
// The returned Kernel writes requests to the other end and reads everything
// the server writes back, sorting it into replies (by unique), replies to
// INTERRUPT (unique with bit 0 set) and notifications (unique 0).
//
// It behaves like the kernel where tests depend on it:
//   - uniques are even and grow by 2, as the kernel's request counter does;
//   - INTERRUPT carries unique|1 and the target's unique; when the server
//     answers it with EAGAIN while the target is still unanswered, the
//     interrupt is queued again (and dropped once the target is answered);
//     ENOSYS switches interrupts off for the connection;
//   - INIT sends the 16-byte fuse_init_in of kernels before 7.36 and the
//     64-byte one from 7.36 on.
//
// It also checks the server: every reply must answer a request that was
// sent and not yet answered, FORGET, BATCH_FORGET and NOTIFY_REPLY get no
// reply, a reply's length field matches its bytes, its error is 0 or a
// negative errno. Violations fail the test at cleanup (Violations returns
// them earlier). A notification written by the server always "succeeds":
// there is no kernel to refuse it.
//
// The file system is called through a thin wrapper that synchronises with
// the fake kernel's lock before and after each call, so the race detector
// sees the ordering the socket provides: a test may set plain variables
// before a request and read what a handler wrote after its reply.
//
// Every wait has a timeout (SetTimeout, default DefaultTimeout): a test fails,
// it never hangs. Methods that wait and fail the test (Reply, Init, Lookup,
// ...) call t.Fatal and so belong on the test's goroutine; WaitReply and
// WaitNotification return errors and may be used from any goroutine.
//
// At cleanup the kernel end is closed (as an unmount would), Serve must
// return within the timeout, and the server end is closed. A Server whose
// Serve has returned has no goroutines left (its readers and handlers are
// waited for), so a returned Serve is the leak check.
//
// This package is for tests only. It must never touch a real mount or
// /dev/fuse, and it holds no package-level state.
package fusetest
