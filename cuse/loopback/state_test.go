package loopback

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/fusegate/fusegate/cuse"
)

// A successor that adopts the state memory sees the bytes buffered, gives a
// resent READ the bytes its first try took (the reply was never written),
// and does not write a resent WRITE's bytes twice.
func TestStateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	state := make([]byte, StateSize(64))
	d1 := New(Options{Capacity: 64, State: state})
	h1, _ := d1.Open(ctx, &cuse.File{})
	if n, err := h1.Write(ctx, cuse.Op{Unique: 2}, []byte("hello world")); err != nil || n != 11 {
		t.Fatal(n, err)
	}
	buf := make([]byte, 5)
	if n, err := h1.Read(ctx, cuse.Op{Unique: 4}, buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	// The process dies: neither reply was written.
	d2 := New(Options{Capacity: 64, State: state, Restore: true})
	h2, _ := d2.Reopen(ctx, &cuse.File{})
	if d2.Len() != 6 {
		t.Errorf("successor buffers %d bytes, want 6", d2.Len())
	}
	got := make([]byte, 16)
	if n, err := h2.Read(ctx, cuse.Op{Unique: 4, Resent: true}, got); err != nil || string(got[:n]) != "hello" {
		t.Errorf("resent READ: %q, %v; want the first try's bytes", got[:n], err)
	}
	if n, err := h2.Write(ctx, cuse.Op{Unique: 2, Resent: true}, []byte("hello world")); err != nil || n != 11 {
		t.Errorf("resent WRITE: %d, %v", n, err)
	}
	if n, err := h2.Read(ctx, cuse.Op{Unique: 6}, got); err != nil || !bytes.Equal(got[:n], []byte(" world")) {
		t.Errorf("next READ: %q, %v; want \" world\" once", got[:n], err)
	}
	// The unanswered read's bytes stay reserved: a writer cannot overwrite
	// them (64 - 5 reserved - 0 buffered).
	if n, _ := h2.Write(ctx, cuse.Op{Unique: 8, Flags: 0o4000}, make([]byte, 64)); n != 64-5-6 && n != 64-5 {
		t.Errorf("write into a ring with 5 reserved bytes took %d", n)
	}
}

// Records of requests the predecessor answered but could not drop (it died
// between the reply and the drop) are claimed by no resent request: the
// successor drops them once their time is up, freeing the ring space they
// held and their slots.
func TestStateDropsUnclaimedRecords(t *testing.T) {
	ctx := context.Background()
	state := make([]byte, StateSize(64))
	d1 := New(Options{Capacity: 64, State: state})
	h1, _ := d1.Open(ctx, &cuse.File{})
	h1.Write(ctx, cuse.Op{Unique: 2}, []byte("hello world"))
	h1.Read(ctx, cuse.Op{Unique: 4}, make([]byte, 5))
	// Both were answered; the process died before their records went.
	d2 := New(Options{Capacity: 64, State: state, Restore: true})
	h2, _ := d2.Reopen(ctx, &cuse.File{})
	if n, _ := h2.Write(ctx, cuse.Op{Unique: 6, Flags: 0o4000}, make([]byte, 64)); n != 64-5-6 {
		t.Fatalf("write while the records wait: took %d, want %d (5 bytes reserved)", n, 64-5-6)
	}
	if d2.ps.cur.npend != 3 {
		t.Errorf("%d records, want 3", d2.ps.cur.npend)
	}
	d2.mu.Lock()
	d2.ps.priorEnd = time.Now().Add(-time.Second)
	d2.mu.Unlock()
	buf := make([]byte, 64)
	if n, err := h2.Read(ctx, cuse.Op{Unique: 8}, buf[:6]); err != nil || string(buf[:n]) != " world" {
		t.Fatalf("read: %q, %v", buf[:n], err)
	}
	if d2.ps.cur.resv != 6 || d2.ps.prior != nil {
		t.Errorf("after the grace: %d bytes reserved (want only the last read's 6), prior %v", d2.ps.cur.resv, d2.ps.prior)
	}
	// The unanswered write (unique 6) and read (8) stay; 2 and 4 are gone.
	if d2.ps.find(2, pendWrite) >= 0 || d2.ps.find(4, pendRead) >= 0 || d2.ps.find(4, pendReadDone) >= 0 {
		t.Errorf("the predecessor's records are still there: %+v", d2.ps.cur.pend[:d2.ps.cur.npend])
	}
}
