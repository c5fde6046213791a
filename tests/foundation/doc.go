// Package foundation holds the integration tests of what the first version
// of fusegate does: the built binary mounts the demo file system as root
// (mount(2)) and as an unprivileged user (fusermount3), serves every read
// byte for byte, unmounts cleanly on SIGTERM or 'fusegate umount', clears the
// stale mount a killed daemon leaves, and keeps its command-line promises.
// The tests drive the binary from other processes through tests/harness; the
// package has no code of its own and must never be imported.
package foundation
