// Package cuse serves character devices from Go through /dev/cuse: the
// kernel creates /dev/NAME and forwards every open, read, write, ioctl and
// poll on it to this process, which answers them with a Device.
//
// CUSE is the FUSE protocol with a CUSE_INIT handshake and a single node, so
// this package is a thin layer over fusedev, as libfuse's cuse_lowlevel is
// over its session: a Server answers CUSE_INIT (device name, optional
// major/minor, max_read/max_write, unrestricted ioctls), keeps a table of
// open files, and turns requests into calls on the Handle that Device.Open
// returned. Handles implement Read, Write and Release, and optionally Ioctl
// (Ioctler), Poll (Poller), Flush (Flusher) and Fsync (Fsyncer).
//
// Ioctls use the kernel's unrestricted-ioctl retry protocol through
// IoctlRequest: a handler asks for the caller's memory region by region
// (In, Out) and the Server asks the kernel to copy it and call again, so
// ioctls whose argument structs carry pointers work. Handlers are re-run from
// the start on every round and must ask for the same regions in the same
// order given the same data; side effects belong after the last In/Out.
//
// A blocked Read or Write gets a context that INTERRUPT cancels (a caller
// killed by a signal), and the file's current O_NONBLOCK arrives with each
// call (Op.Nonblock). Poll wake-ups go to the kernel with File.Wake.
//
// Start opens /dev/cuse, explains what is missing when it cannot (no CUSE in
// the kernel, module not loaded, no node, permission denied, name taken), and
// once the kernel has created /dev/NAME sets its owner and mode, since there
// may be no udev to do it. Stop removes the device.
//
// The package must never open, read or poll the device nodes it serves: a
// process that serves a device and is also its client can deadlock. It never
// exits the process or touches devices other than its own node.
package cuse
