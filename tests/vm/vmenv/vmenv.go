// Package vmenv tells a test whether it runs inside one of fusegate's qemu guests
// (tests/vm: a "minimal" busybox guest with CUSE, or a "systemd" guest with
// systemd as PID 1) and where the files the harness brought along are.
//
// Tests that need the guest call Require first; outside the guest they skip with
// a message naming the go test -exec wrapper to use, so an ordinary
// `go test ./...` on the host builds and skips them. This package must never
// start, configure or detect a guest by itself: the environment variables set by
// tests/vm/vmrun are the only source of truth.
package vmenv

import (
	"os"
	"path/filepath"
	"testing"
)

// Guest shapes, as in FUSEGATE_VM.
const (
	Minimal = "minimal"
	Systemd = "systemd"
)

// Environment variables set inside the guest by tests/vm/vmrun.
const (
	EnvShape      = "FUSEGATE_VM"             // "minimal" or "systemd"; unset outside a guest
	EnvPayloadDir = "FUSEGATE_VM_PAYLOAD_DIR" // directory holding FUSEGATE_VM_PAYLOAD's files
)

// Shape returns the shape of the guest this process runs in, or "" outside one.
func Shape() string { return os.Getenv(EnvShape) }

// Require skips t unless it runs inside a guest of the given shape (Minimal or
// Systemd).
func Require(t testing.TB, shape string) {
	t.Helper()
	switch got := Shape(); got {
	case shape:
		return
	case "":
		t.Skipf("runs inside the qemu guest; use tests/vm/exec-%s (go test -exec \"$PWD/tests/vm/exec-%s\")", shape, shape)
	default:
		t.Skipf("runs inside the %s guest, this is the %s guest; use tests/vm/exec-%s", shape, got, shape)
	}
}

// Payload returns the absolute path of the payload file with the given base
// name (see FUSEGATE_VM_PAYLOAD), or "" when there is no such file, including
// outside a guest.
func Payload(name string) string {
	dir := os.Getenv(EnvPayloadDir)
	if dir == "" || name == "" || filepath.Base(name) != name {
		return ""
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}
