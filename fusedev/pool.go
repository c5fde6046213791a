package fusedev

import (
	"math/bits"
	"sync"
	"unsafe"
)

// Buffers come from pools in power-of-two size classes from 4 KiB up, so a
// blocked request holds memory in proportion to its size, not to max_write.
const (
	minClassShift = 12 // 4 KiB
	numClasses    = 10 // up to 2 MiB
)

type bufPool struct {
	classes [numClasses]sync.Pool
}

func classOf(size int) int {
	if size <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(size-1)) - minClassShift
}

// get returns a buffer of at least size bytes (len == size).
func (p *bufPool) get(size int) *[]byte {
	c := classOf(size)
	if c >= numClasses {
		b := make([]byte, size)
		return &b
	}
	if v := p.classes[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<(c+minClassShift))
	return &b
}

func (p *bufPool) put(b *[]byte) {
	if b == nil {
		return
	}
	c := classOf(cap(*b))
	if c >= numClasses || cap(*b) != 1<<(c+minClassShift) {
		return
	}
	p.classes[c].Put(b)
}

// unsafePointerAt points into b at off. Callers keep off 8-aligned within an
// 8-aligned allocation (every pool buffer is one).
func unsafePointerAt(b []byte, off int) unsafe.Pointer { return unsafe.Pointer(&b[off]) }
