package loopback

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/fusegate/fusegate/cuse"
)

// The ring in a state memfd (Options.State), so that buffered bytes survive
// a restart, and every read and write happens exactly once across one:
//
//   - The ring's bookkeeping (head, count, reserved bytes and the answers
//     not yet known to be delivered) is one small block, written whole to
//     the inactive one of two copies and then made current by one atomic
//     store: a process killed at any point leaves one consistent block.
//   - Bytes are copied into free space before the block that counts them
//     is made current.
//   - A READ moves bytes out of the count into a reservation, with the
//     request's unique id, before it is answered; the reservation goes once
//     the reply is written (cuse.Op.AfterReply). A READ the kernel resends
//     to the successor (the predecessor died before answering) gets the
//     same bytes again; no writer may overwrite them meanwhile.
//   - A WRITE records how many of its bytes are in the ring; a resent WRITE
//     goes on from there instead of writing them twice.
//   - A predecessor killed after a reply but before its record went leaves
//     a record no resent request claims: the successor drops those a while
//     after it started (dropPrior), so they neither hold ring space nor
//     fill the table.

const (
	maxPending = 32
	blockOff   = 64
	ringOff    = 4096
)

type pending struct {
	unique uint64
	off    uint32 // reads: where the bytes are in the ring
	len    uint32 // reads: how many; writes: how many are in the ring
	kind   uint32
	_      uint32
}

const (
	pendRead     = 1
	pendReadDone = 2 // answered, waiting for older reads to be answered too
	pendWrite    = 3
)

type block struct {
	head, n, resv, npend uint32
	pend                 [maxPending]pending
}

// StateSize is the state a device of the given capacity needs.
func StateSize(capacity int) int {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return ringOff + capacity
}

type persist struct {
	sel    *uint64
	blocks [2]*block
	ring   []byte
	cur    block             // guarded by Device.mu: what the next commit stores
	prior  map[uint64]uint32 // guarded by Device.mu: the predecessor's records (unique: kind)
	// priorEnd is when the records in prior stop waiting; guarded by
	// Device.mu.
	priorEnd time.Time
}

// priorGrace is how long the predecessor's records wait for their resent
// requests; the kernel resends at once when the successor starts.
const priorGrace = 30 * time.Second

func init() {
	if blockOff+2*unsafe.Sizeof(block{}) > ringOff {
		panic("loopback: state block outgrew its page")
	}
}

func newPersist(state []byte, capacity int) *persist {
	p := &persist{
		sel:  (*uint64)(unsafe.Pointer(&state[0])),
		ring: state[ringOff : ringOff+capacity : ringOff+capacity],
	}
	for i := range p.blocks {
		p.blocks[i] = (*block)(unsafe.Pointer(&state[blockOff+uintptr(i)*unsafe.Sizeof(block{})]))
	}
	return p
}

// restore adopts the current block.
func (p *persist) restore(d *Device) {
	p.cur = *p.blocks[atomic.LoadUint64(p.sel)&1]
	c := &p.cur
	if int(c.head) >= len(p.ring) || int(c.n)+int(c.resv) > len(p.ring) || c.npend > maxPending {
		p.cur = block{}
	}
	d.head, d.n = int(p.cur.head), int(p.cur.n)
	for i := 0; i < int(p.cur.npend); i++ {
		if p.prior == nil {
			p.prior = map[uint64]uint32{}
			p.priorEnd = time.Now().Add(priorGrace)
		}
		p.prior[p.cur.pend[i].unique] = p.cur.pend[i].kind
	}
}

// dropPriorLater drops the predecessor's records once their time is up
// (checked on each request, which only come while the state is mapped).
// Device.mu is held.
func (p *persist) dropPriorLater(d *Device) {
	if p == nil || p.prior == nil || time.Now().Before(p.priorEnd) {
		return
	}
	p.dropPrior(d)
}

// dropPrior drops the predecessor's records that no resent request
// claimed: their requests were answered before it died. Device.mu is held.
func (p *persist) dropPrior(d *Device) {
	for unique, kind := range p.prior {
		i := p.find(unique, kind)
		switch {
		case i < 0:
		case kind == pendRead:
			p.cur.pend[i].kind = pendReadDone
		case kind == pendWrite:
			p.remove(i)
		}
	}
	p.prior = nil
	p.freeDelivered(d)
	p.commit(d)
	d.change.Broadcast() // space for writers
}

// commit makes the device's state current in the memfd. Device.mu is held.
func (p *persist) commit(d *Device) {
	if p == nil {
		return
	}
	p.cur.head, p.cur.n = uint32(d.head), uint32(d.n)
	next := atomic.LoadUint64(p.sel) ^ 1
	*p.blocks[next&1] = p.cur
	atomic.StoreUint64(p.sel, next)
}

// reserved is how many bytes before head wait for their READ's reply.
func (p *persist) reserved() int {
	if p == nil {
		return 0
	}
	return int(p.cur.resv)
}

func (p *persist) find(unique uint64, kind uint32) int {
	for i := 0; i < int(p.cur.npend); i++ {
		if e := &p.cur.pend[i]; e.unique == unique && e.kind == kind {
			return i
		}
	}
	return -1
}

func (p *persist) add(e pending) bool {
	if p.cur.npend >= maxPending {
		return false // not recorded: a crash before this reply may lose or repeat it
	}
	p.cur.pend[p.cur.npend] = e
	p.cur.npend++
	return true
}

func (p *persist) remove(i int) {
	c := &p.cur
	copy(c.pend[i:c.npend], c.pend[i+1:c.npend])
	c.npend--
	c.pend[c.npend] = pending{}
}

// read records that n bytes at from were taken for op's reply.
func (p *persist) read(d *Device, op cuse.Op, from, n int) {
	if p == nil {
		return
	}
	if n > 0 && p.add(pending{unique: op.Unique, off: uint32(from), len: uint32(n), kind: pendRead}) {
		p.cur.resv += uint32(n)
		op.AfterReply(func() { d.delivered(op.Unique) })
	}
	p.commit(d)
}

// delivered drops the reservation of a READ whose reply was written, with
// those of older answered reads.
func (d *Device) delivered(unique uint64) {
	d.mu.Lock()
	p := d.ps
	if i := p.find(unique, pendRead); i >= 0 {
		p.cur.pend[i].kind = pendReadDone
	}
	p.freeDelivered(d)
	p.commit(d)
	d.change.Broadcast() // space for writers
	d.mu.Unlock()
	d.wakePollers()
}

// freeDelivered frees the reservations of answered reads. Reservations are
// freed oldest first: they are the bytes right before head, in the order
// they were taken. Device.mu is held.
func (p *persist) freeDelivered(d *Device) {
	for {
		i := -1
		for j := 0; j < int(p.cur.npend); j++ {
			if k := p.cur.pend[j].kind; k == pendRead || k == pendReadDone {
				i = j
				break
			}
		}
		if i < 0 || p.cur.pend[i].kind != pendReadDone {
			break
		}
		p.cur.resv -= p.cur.pend[i].len
		p.remove(i)
	}
	if d.n == 0 && p.cur.resv == 0 {
		d.head = 0
	}
}

// replayRead answers a resent READ with the bytes its first try took.
func (p *persist) replayRead(d *Device, op cuse.Op, dest []byte) (int, bool) {
	if p == nil || !op.Resent {
		return 0, false
	}
	i := p.find(op.Unique, pendRead)
	if i < 0 {
		return 0, false
	}
	delete(p.prior, op.Unique) // claimed
	e := p.cur.pend[i]
	n := min(int(e.len), len(dest))
	first := min(n, len(p.ring)-int(e.off))
	copy(dest, p.ring[e.off:int(e.off)+first])
	copy(dest[first:n], p.ring)
	op.AfterReply(func() { d.delivered(op.Unique) })
	return n, true
}

// resumeWrite returns how many bytes of a resent WRITE are in the ring
// already.
func (p *persist) resumeWrite(d *Device, op cuse.Op, size int) int {
	if p == nil || !op.Resent {
		return 0
	}
	i := p.find(op.Unique, pendWrite)
	if i < 0 {
		return 0
	}
	delete(p.prior, op.Unique) // claimed
	op.AfterReply(func() { d.written(op.Unique) })
	return min(int(p.cur.pend[i].len), size)
}

// wrote records that done bytes of op are in the ring.
func (p *persist) wrote(d *Device, op cuse.Op, done int) {
	if p == nil {
		return
	}
	if i := p.find(op.Unique, pendWrite); i >= 0 {
		p.cur.pend[i].len = uint32(done)
	} else if p.add(pending{unique: op.Unique, len: uint32(done), kind: pendWrite}) {
		op.AfterReply(func() { d.written(op.Unique) })
	}
	p.commit(d)
}

// written drops the record of a WRITE whose reply was written.
func (d *Device) written(unique uint64) {
	d.mu.Lock()
	if i := d.ps.find(unique, pendWrite); i >= 0 {
		d.ps.remove(i)
		d.ps.commit(d)
	}
	d.mu.Unlock()
}
