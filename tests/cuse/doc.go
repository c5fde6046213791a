// Package cusevm holds fusegate's CUSE tests against a real kernel: they run
// inside the minimal qemu guest (tests/vm) with Debian 12's kernel, whose
// cuse.ko this machine's kernel lacks, and skip elsewhere. The test binary
// starts the statically built `fusegate device` as a child, acts as the
// device's client itself or from child processes (re-executing itself in a
// role), and never serves a device it uses. scripts/test runs them (its
// VM step builds fusegate and passes it as payload to tests/vm/exec-minimal);
// alone: CGO_ENABLED=0 go test -exec "$PWD/tests/cuse/exec-vm" ./tests/cuse/
// (the wrapper builds fusegate itself). It has no code of its own and must
// never be imported.
package cusevm
