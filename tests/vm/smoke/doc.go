// Package smoke holds the tests that prove the qemu harness of tests/vm works:
// TestMinimal* run inside the minimal guest (tests/vm/exec-minimal), TestSystemd*
// inside the systemd guest (tests/vm/exec-systemd); both skip on the host. It has
// no code of its own and must never be imported.
package smoke
