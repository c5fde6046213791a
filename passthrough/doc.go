// Package passthrough is the file system fusegate serves: a mirror of a lower
// directory in which every open of a regular file registers the lower file
// with the kernel (FUSE passthrough, Linux 6.9+), so reads and writes go from
// the kernel to the lower file system without a round trip to the daemon.
//
// The lower tree is reached through handles, never through path strings:
// every node is keyed by the lower (device, inode) pair and holds an O_PATH
// descriptor, and every operation is relative to one (the *at system calls,
// AT_EMPTY_PATH, or /proc/self/fd/N for the few calls that need a path).
// Long paths therefore work, renames under an open file are harmless, lower
// symlinks are never followed while resolving, and nothing resolves outside
// the lower root. The daemon's descriptors are bounded by the kernel's
// lookup counts: a node forgotten to zero closes its descriptor.
//
// Operations run with the caller's file system identity (fsuid, fsgid and
// supplementary groups, switched on a locked OS thread for the duration of
// the operation) so the lower file system checks permissions and assigns
// ownership as it would natively. New sets the process umask to 0: the
// kernel has already applied the caller's umask to the mode it sends, and
// it must be applied exactly once.
//
// Every request passes through one gate (FS.gate) before it touches the
// lower tree; that is where the per-caller policy plugs in. A per-open hook
// (Options.Passthrough decides whether an open may use kernel passthrough)
// and a per-lookup hook (Options.Timeouts gives the cache timeouts of an
// entry) are the policy's levers.
//
// The package must never touch its own mount: a daemon that makes system
// calls on the file system it serves can deadlock. Lookups use
// AT_STATX_DONT_SYNC and refuse to descend into the mount they serve.
package passthrough
