//go:build !linux

package policy

import "time"

// processCPU is unknown outside Linux.
func processCPU() time.Duration { return -1 }
