// Package harness is what every integration test package under tests/ uses
// to drive the real fusegate binary from another process: it builds the
// binary once per test binary, starts it as a child (Daemon), waits for its
// mounts, runs file operations in child processes under any credentials
// (Caller, RunAs), and skips only where the machine truly lacks a feature
// (Require*).
//
// # Using it
//
// Every package starts with
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
// Main provides the binary: FUSEGATE_BIN names a prebuilt one (an
// absolute path, or a name looked up in PATH); otherwise, inside a qemu
// guest of tests/vm, the payload's "fusegate"; otherwise it runs go build
// on ./cmd/fusegate, with -race when the test binary itself was built with
// -race. The binary is put in a private directory that any uid may read, so
// daemons can run as other users.
//
// What there is:
//
//   - Bin, Fusegate: the binary's path; run it to completion.
//   - StartDaemon, Daemon: run it in the background with its output
//     captured; Stop, Wait, Logs, WaitLog, WaitMounted, Leftovers.
//   - Mounted, MountsAt, WaitMounted, WaitUnmounted, CleanupMount, UserDir:
//     mount points and what /proc/self/mountinfo says about them.
//   - Cred, Caller, Run, RunAs: system calls and commands in a child
//     process as any uid, gid and groups, with a timeout.
//   - RequireRoot, RequireFUSE, RequireFusermount3, RequireFusectl, Missing.
//
// A test then looks like
//
//	harness.RequireRoot(t)
//	harness.RequireFUSE(t)
//	mp := t.TempDir()
//	d := harness.StartDaemon(t, harness.DaemonOptions{Mountpoints: []string{mp}}, "mount", "--demo", mp)
//	d.WaitMounted(mp)
//	data, err := harness.NewCaller(t, harness.Root()).ReadFile(mp+"/hello.txt", 0)
//	...
//	if st := d.Stop(syscall.SIGTERM); st.ExitCode() != 0 { t.Fatalf(...) }
//
// Create directories (t.TempDir, UserDir) before starting the daemon that
// mounts on them: cleanups run in reverse order, so the daemon is killed and
// its mounts are lazily unmounted before the directories are removed.
//
// # Rules it keeps
//
//   - The test process never serves a mount. It may touch mounts served by
//     its children, but file operations that must carry other credentials, or
//     that could hang on a wedged server, go through a child (Caller, RunAs)
//     with a timeout.
//   - Nothing is left behind: a Daemon still running at the end of its test
//     is killed with its process group, and every mount point it was given
//     that is still mounted is detached (lazy unmount). A failed test prints
//     the daemon's output.
//   - A Require* helper skips, with the reason, only when the feature is
//     absent. FUSEGATE_REQUIRE (a comma-separated list of feature names, or
//     "all") turns those skips into failures: scripts/test sets it to the
//     features CI's machine has, so the core can never silently skip there.
//     Feature names: root, fuse, fusermount3, fusectl, and whatever name a
//     package passes to Missing for its own checks.
//
// The harness must never mount anything itself, never touch mounts it was
// not given, and never kill processes other than the ones it started (and
// their process groups).
package harness
