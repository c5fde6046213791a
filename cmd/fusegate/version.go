package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func init() {
	register(command{name: "version", summary: "print the version", run: runVersion})
}

func runVersion(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("version", "", "Print fusegate's version, the Go version it was built with and the\nFUSE protocol version it speaks.")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return e.usageError(fs, "takes no arguments")
	}
	fmt.Fprintf(e.stdout, "fusegate %s (%s, FUSE protocol %d.%d)\n", version, runtime.Version(), abi.KernelVersion, abi.KernelMinorVersion)
	return exitOK
}
