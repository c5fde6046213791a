package fusedev

import (
	"sync/atomic"
	"time"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// LatencyBuckets are the upper bounds of the latency histogram: 1 µs
// doubling up to about 1 s; a last, implicit bucket holds everything slower.
var LatencyBuckets = func() [21]time.Duration {
	var b [21]time.Duration
	for i := range b {
		b[i] = time.Microsecond << i
	}
	return b
}()

// OpStats counts the requests of one opcode.
type OpStats struct {
	Op      abi.Opcode
	Count   uint64        // requests served
	Errors  uint64        // answered with an errno
	Total   time.Duration // summed handler latency
	Buckets [len(LatencyBuckets) + 1]uint64
}

type opCounter struct {
	count, errors, nanos atomic.Uint64
	buckets              [len(LatencyBuckets) + 1]atomic.Uint64
}

// cuseSlot holds CUSE_INIT, which is outside 1..OpMax.
const cuseSlot = int(abi.OpMax) + 1

type stats struct {
	ops [cuseSlot + 1]opCounter
}

func slotOf(op abi.Opcode) int {
	if op == abi.OpCuseInit {
		return cuseSlot
	}
	if op > abi.OpMax {
		return 0 // unknown opcodes share slot 0
	}
	return int(op)
}

func (s *stats) record(op abi.Opcode, d time.Duration, failed bool) {
	c := &s.ops[slotOf(op)]
	c.count.Add(1)
	if failed {
		c.errors.Add(1)
	}
	c.nanos.Add(uint64(d))
	i := 0
	for i < len(LatencyBuckets) && d > LatencyBuckets[i] {
		i++
	}
	c.buckets[i].Add(1)
}

// snapshot returns the counters of every opcode seen at least once.
func (s *stats) snapshot() []OpStats {
	var out []OpStats
	for i := range s.ops {
		c := &s.ops[i]
		n := c.count.Load()
		if n == 0 {
			continue
		}
		op := abi.Opcode(i)
		if i == cuseSlot {
			op = abi.OpCuseInit
		}
		st := OpStats{Op: op, Count: n, Errors: c.errors.Load(), Total: time.Duration(c.nanos.Load())}
		for b := range c.buckets {
			st.Buckets[b] = c.buckets[b].Load()
		}
		out = append(out, st)
	}
	return out
}
