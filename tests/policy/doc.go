// Package policy holds the integration tests of per-caller policy
// enforcement: real mounts served by the fusegate binary (both `fusegate
// mount --policy` and `fusegate serve`), driven by child processes running
// as distinct app uids, root and a system uid. They check what an app can
// and cannot see and do in another app's private directory (and that the
// errors are the policy's), that the kernel's caches never carry one
// caller's answer to another, shared media, redaction of photo locations
// (and that those opens skip kernel passthrough), the audit log and
// counters, and live reload.
//
// The file operations run in children: the test binary itself, started by
// script (see ops_linux_test.go), so one child can run several steps. The
// benchmarks (bench_linux_test.go, not run by the test suite) are the
// source of docs/benchmarks/policy.md.
//
// Nothing here serves a mount in the test process, and everything mounted
// is unmounted by the harness at the end of each test.
package policy
