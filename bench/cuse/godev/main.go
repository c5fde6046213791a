// Command godev serves the loopback CUSE device (cuse/loopback) like
// `fusegate device --kind loopback`, and can write a CPU profile of itself:
// bench/cuse/run --profile uses it to see where fusegate's device spends its
// time in the guest. It is a benchmark tool, not part of fusegate.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/cuse/loopback"
)

func main() {
	name := flag.String("name", "", "device name (/dev/NAME)")
	capacity := flag.Int("capacity", loopback.DefaultCapacity, "pipe capacity in bytes")
	prof := flag.String("cpuprofile", "", "write a CPU profile here until SIGTERM")
	flag.Parse()
	if err := run(*name, *capacity, *prof); err != nil {
		fmt.Fprintln(os.Stderr, "godev:", err)
		os.Exit(1)
	}
}

func run(name string, capacity int, prof string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv, err := cuse.New(loopback.New(loopback.Options{Capacity: capacity}), cuse.Options{Name: name})
	if err != nil {
		return err
	}
	if err := srv.Start(context.Background()); err != nil {
		return err
	}
	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	select {
	case <-ctx.Done():
	case <-srv.Done():
		return srv.Err()
	}
	return srv.Stop(context.Background())
}
