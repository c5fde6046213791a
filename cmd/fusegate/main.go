// Command fusegate serves FUSE file systems and CUSE character devices
// with a per-caller permission policy, as a foreground tool or a systemd
// daemon. main only wires the process to run, which does the work and can
// be tested.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
