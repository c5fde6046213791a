// Package memstate keeps state that must outlive the process: a memfd,
// mapped shared, that systemd's file descriptor store holds across a
// restart or a crash. Updates are plain stores to the mapping, so they are
// in the memfd the moment they are made: a process killed with SIGKILL
// leaves everything it stored behind, and its successor maps the same memfd
// and reads it back.
//
// A Region is sized once, at its full capacity: the memfd is sparse, so only
// the pages written cost memory, and addresses never move. Fixed-size
// records (Table) are published with one atomic store of their state word,
// written after the rest of the record, so a reader never sees half a
// record.
//
// The package must never write to a region it did not create or adopt,
// and never interpret its contents: that is its users' business.
package memstate

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Region is a shared mapping of a memfd.
type Region struct {
	f    *os.File
	mem  []byte
	size uintptr
}

// Create makes a memfd of size bytes (sparse) and maps it.
func Create(name string, size uintptr) (*Region, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd %s: %w", name, err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("memfd %s: size %d: %w", name, size, err)
	}
	return mapFD(os.NewFile(uintptr(fd), "memfd:"+name), size)
}

// Open maps an existing memfd (handed back by systemd), taking ownership of
// f. Its size is the memfd's.
func Open(f *os.File) (*Region, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("state %s: %w", f.Name(), err)
	}
	if st.Size <= 0 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("state %s: not a state memfd (mode %#o, %d bytes)", f.Name(), st.Mode, st.Size)
	}
	return mapFD(f, uintptr(st.Size))
}

func mapFD(f *os.File, size uintptr) (*Region, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	return &Region{f: f, mem: mem, size: size}, nil
}

// File is the memfd, to hand to systemd's fd store. It stays owned by the
// Region.
func (r *Region) File() *os.File { return r.f }

// Size returns the region's size in bytes.
func (r *Region) Size() uintptr { return r.size }

// Bytes returns n bytes at off.
func (r *Region) Bytes(off, n uintptr) []byte {
	if off+n > r.size || off+n < off {
		panic(fmt.Sprintf("memstate: [%d, %d) outside a region of %d bytes", off, off+n, r.size))
	}
	return r.mem[off : off+n : off+n]
}

// Ptr returns a pointer to the byte at off.
func (r *Region) Ptr(off uintptr) unsafe.Pointer {
	if off >= r.size {
		panic(fmt.Sprintf("memstate: offset %d outside a region of %d bytes", off, r.size))
	}
	return unsafe.Pointer(&r.mem[off])
}

// Uint64 returns the 8-byte aligned word at off, for atomic access.
func (r *Region) Uint64(off uintptr) *atomic.Uint64 {
	if off%8 != 0 {
		panic("memstate: unaligned word")
	}
	return (*atomic.Uint64)(r.Ptr(off))
}

// Close unmaps the region and closes the memfd. The contents live on in any
// other holder of the memfd (systemd's store).
func (r *Region) Close() error {
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return errors.Join(err, r.f.Close())
}

// Header is the first page of a state memfd: a magic string naming the
// format, then a length-prefixed document (the user's encoding, JSON in
// practice) that is written once.
const HeaderSize = 4096

// headerDocMax is the document room after the 16 bytes of magic and length;
// the last 256 bytes of the page are left for counters (HeaderWord).
const headerDocMax = HeaderSize - 16 - 256

// WriteHeader writes magic (at most 8 bytes) and doc into the first page.
func (r *Region) WriteHeader(magic string, doc []byte) error {
	if len(magic) > 8 || len(doc) > headerDocMax {
		return fmt.Errorf("memstate: header of %d bytes exceeds %d", len(doc), headerDocMax)
	}
	h := r.Bytes(0, HeaderSize)
	copy(h[16:], doc)
	*(*uint64)(unsafe.Pointer(&h[8])) = uint64(len(doc))
	var m [8]byte
	copy(m[:], magic)
	// The magic goes last: a header without it was never finished.
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&h[0])), *(*uint64)(unsafe.Pointer(&m)))
	return nil
}

// ReadHeader checks the magic and returns the document.
func (r *Region) ReadHeader(magic string) ([]byte, error) {
	if r.size < HeaderSize {
		return nil, errors.New("memstate: state too small for a header")
	}
	h := r.Bytes(0, HeaderSize)
	var m [8]byte
	copy(m[:], magic)
	if atomic.LoadUint64((*uint64)(unsafe.Pointer(&h[0]))) != *(*uint64)(unsafe.Pointer(&m)) {
		return nil, fmt.Errorf("memstate: not a %q state (magic %q)", magic, h[:8])
	}
	n := *(*uint64)(unsafe.Pointer(&h[8]))
	if n > headerDocMax {
		return nil, fmt.Errorf("memstate: header document of %d bytes", n)
	}
	return append([]byte(nil), h[16:16+n]...), nil
}

// HeaderWord returns counter i (0..31) of the header page.
func (r *Region) HeaderWord(i int) *atomic.Uint64 {
	if i < 0 || i >= 32 {
		panic("memstate: header word out of range")
	}
	return r.Uint64(HeaderSize - 256 + uintptr(i)*8)
}

// Table is an array of fixed-size records in a Region. The first word of
// every record is its state: 0 free, anything else in use (the user's
// meaning). Put writes the record's body, then its state, so a record is
// either there whole or not at all.
type Table struct {
	r       *Region
	off     uintptr // first record
	recSize uintptr
	cap     uint32
	high    *atomic.Uint64 // records ever used: a scan stops here

	mu   sync.Mutex
	free []uint32 // guarded by mu; freed slots
}

// NewTable lays a table of capacity records of recSize bytes (a multiple
// of 8) at off; high is the header word that keeps how many slots were
// ever used.
func NewTable(r *Region, off, recSize uintptr, capacity uint32, high *atomic.Uint64) *Table {
	if recSize%8 != 0 || recSize < 8 || off%8 != 0 || off+recSize*uintptr(capacity) > r.size {
		panic("memstate: table does not fit its region")
	}
	return &Table{r: r, off: off, recSize: recSize, cap: capacity, high: high}
}

// ErrFull means a table has no free slot.
var ErrFull = errors.New("memstate: state table full")

// Alloc returns a free slot. Its record is all zero (state free) until Put.
func (t *Table) Alloc() (uint32, error) {
	t.mu.Lock()
	if n := len(t.free); n > 0 {
		s := t.free[n-1]
		t.free = t.free[:n-1]
		t.mu.Unlock()
		return s, nil
	}
	h := t.high.Load()
	if h >= uint64(t.cap) {
		t.mu.Unlock()
		return 0, ErrFull
	}
	t.high.Store(h + 1)
	t.mu.Unlock()
	return uint32(h), nil
}

// Record returns slot's bytes (the state word first).
func (t *Table) Record(slot uint32) []byte {
	return t.r.Bytes(t.off+uintptr(slot)*t.recSize, t.recSize)
}

// State returns slot's state word.
func (t *Table) State(slot uint32) *atomic.Uint64 {
	return t.r.Uint64(t.off + uintptr(slot)*t.recSize)
}

// Free clears slot's state (the record is gone from then on) and makes the
// slot reusable.
func (t *Table) Free(slot uint32) {
	t.State(slot).Store(0)
	rec := t.Record(slot)
	clear(rec[8:])
	t.mu.Lock()
	t.free = append(t.free, slot)
	t.mu.Unlock()
}

// Scan calls f for every slot in use, after which the free list holds the
// others (a table adopted from a predecessor).
func (t *Table) Scan(f func(slot uint32, state uint64, rec []byte)) {
	h := min(t.high.Load(), uint64(t.cap))
	t.high.Store(h)
	var free []uint32
	for s := uint32(0); uint64(s) < h; s++ {
		st := t.State(s).Load()
		if st == 0 {
			free = append(free, s)
			continue
		}
		f(s, st, t.Record(s))
	}
	t.mu.Lock()
	t.free = free
	t.mu.Unlock()
}

// Cap returns the table's capacity.
func (t *Table) Cap() uint32 { return t.cap }
