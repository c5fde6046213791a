// Package passthrough is the file system fusegate serves: a mirror of a lower
// directory in which every open of a regular file registers the lower file
// with the kernel (FUSE passthrough, Linux 6.9+), so reads and writes go from
// the kernel to the lower file system without a round trip to the daemon.
//
// The lower tree is reached through handles, never through path strings:
// every node is keyed by the lower (device, inode) pair and reached through
// an O_PATH descriptor, and every operation is relative to one (the *at
// system calls, AT_EMPTY_PATH, or /proc/self/fd/N for the few calls that
// need a path). Long paths therefore work, renames under an open file are
// harmless, lower symlinks are never followed while resolving, and nothing
// resolves outside the lower root. A node looked up gets its descriptor
// when an operation first needs it (opened by name in its parent, checked
// against the inode number and birth time); descriptors are kept in an LRU
// bounded below RLIMIT_NOFILE, and an evicted one is reopened from a file
// handle (name_to_handle_at, made just before eviction). A node forgotten
// to zero by the kernel leaves the tables with its descriptor.
//
// Operations run with the caller's file system identity (fsuid, fsgid and
// supplementary groups, switched on a locked OS thread for the duration of
// the operation) so the lower file system checks permissions and assigns
// ownership as it would natively. New sets the process umask to 0: the
// kernel has already applied the caller's umask to the mode it sends, and
// it must be applied exactly once.
//
// Opens choose an I/O mode the kernel's rules accept (fs/fuse/iomode.c):
// kernel passthrough with one backing id per inode, reference-counted and
// closed at the last release; FOPEN_PASSTHROUGH|FOPEN_DIRECT_IO (reads and
// writes through the daemon) for an open that may not use passthrough while
// others do; the page cache, kept across opens of an unchanged file,
// otherwise. Without passthrough (mode off, or the kernel refuses) the
// daemon serves reads and writes and says so once in the log.
//
// Every request passes through one gate (FS.admit) before it touches the
// lower tree. With Options.Policy, a policy.Engine decides there, from the
// uid, gid and pid of the request header, every operation the request makes
// on the paths it touches (policy_linux.go: the request → operation
// mapping, both ends of renames and links, the owner and type of the object
// from the lower file system); a denial answers the policy's errno and is
// audited. Listings leave out what the caller may not look up, entries
// carry the policy's cache timeouts (0 where the answer depends on the
// caller), opens use passthrough only where the policy allows it, and
// redacted opens are served by the daemon (FOPEN_DIRECT_IO) with the
// redacted bytes zeroed. SetPolicy replaces the policy of a live mount and
// invalidates what the kernel cached. Options.Check, a per-open hook
// (Options.AllowPassthrough) and a per-entry hook (Options.Timeouts) serve
// other gates.
//
// The package must never touch its own mount: a daemon that makes system
// calls on the file system it serves can deadlock. Lookups use
// AT_STATX_DONT_SYNC and refuse to descend into the mount they serve.
package passthrough
