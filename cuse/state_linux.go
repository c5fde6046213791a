package cuse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/internal/memstate"
)

// Restart state of a device: the /dev/cuse descriptor keeps the device
// node alive across a restart (systemd's fd store holds it); this memfd
// holds what a successor needs to go on serving it: the negotiated
// CUSE_INIT, the open files (fh, flags, opener, and the kernel's poll
// handle, so that pollers are woken after the restart), and an area the
// Device keeps its own contents in (Persistent). Opens are stored before
// OPEN is answered and removed before RELEASE is; a poll handle before
// POLL is answered.

const (
	stateMagic    = "FGCU0001"
	fileRecSize   = 64
	fileCap       = 1 << 14
	filesOff      = memstate.HeaderSize
	deviceAreaOff = filesOff + fileRecSize*fileCap

	hwFileHigh   = 0
	hwNextFh     = 1
	hwHandedOver = 2 // 1: the process handed the device over (Handover)
)

type fileRec struct {
	state uint64 // 1: open
	fh    uint64
	flags uint64
	uid   uint32
	gid   uint32
	pid   uint64
	kh    uint64 // the kernel's poll handle, valid when hasKh is 1
	hasKh uint64
}

func init() {
	if unsafe.Sizeof(fileRec{}) > fileRecSize {
		panic("cuse: state record outgrew its slot")
	}
}

// StateSize is the size of a device's state memfd whose Device keeps
// deviceBytes of its own.
func StateSize(deviceBytes int) uintptr {
	return deviceAreaOff + uintptr((deviceBytes+4095)&^4095)
}

// DeviceArea returns the part of a state region the Device keeps its own
// contents in (see Persistent).
func DeviceArea(r *memstate.Region) []byte {
	if r.Size() <= deviceAreaOff {
		return nil
	}
	return r.Bytes(deviceAreaOff, r.Size()-deviceAreaOff)
}

type stateDoc struct {
	Name       string              `json:"name"`
	Negotiated *fusedev.Negotiated `json:"negotiated"`
	DevMajor   uint32              `json:"dev_major"`
	DevMinor   uint32              `json:"dev_minor"`
	Extra      json.RawMessage     `json:"extra,omitempty"`
}

type cuseState struct {
	r     *memstate.Region
	files *memstate.Table
	extra []byte
}

func newCuseState(r *memstate.Region) *cuseState {
	return &cuseState{r: r, files: memstate.NewTable(r, filesOff, fileRecSize, fileCap, r.HeaderWord(hwFileHigh))}
}

func (c *cuseState) rec(slot uint32) *fileRec {
	return (*fileRec)(unsafe.Pointer(unsafe.SliceData(c.files.Record(slot))))
}

// opened stores an open file (before OPEN is answered).
func (c *cuseState) opened(f *File) {
	if c == nil {
		return
	}
	slot, err := c.files.Alloc()
	if err != nil {
		return
	}
	f.slot = slot + 1
	r := c.rec(slot)
	r.fh, r.flags = f.id, uint64(f.flags)
	r.uid, r.gid, r.pid = f.caller.UID, f.caller.GID, uint64(f.caller.PID)
	c.files.State(slot).Store(1)
	c.r.HeaderWord(hwNextFh).Store(f.id + 1)
}

// released removes an open file (before RELEASE is answered).
func (c *cuseState) released(f *File) {
	if c == nil || f.slot == 0 {
		return
	}
	c.files.Free(f.slot - 1)
	f.slot = 0
}

// pollHandle stores the kernel's poll handle of f.
func (c *cuseState) pollHandle(f *File, kh uint64) {
	if c == nil || f.slot == 0 {
		return
	}
	r := c.rec(f.slot - 1)
	atomic.StoreUint64(&r.kh, kh)
	atomic.StoreUint64(&r.hasKh, 1)
}

// KeepState makes the server keep its restart state in r (a region of
// StateSize bytes) from now on; extra is stored for the caller. Call it
// before Start.
func (s *Server) KeepState(r *memstate.Region, extra []byte) {
	s.st = newCuseState(r)
	s.st.extra = append([]byte(nil), extra...)
}

// writeHeader stores the negotiated CUSE_INIT and the device number once
// the node exists.
func (s *Server) writeHeader() error {
	if s.st == nil {
		return nil
	}
	maj, min := s.DevNum()
	b, err := json.Marshal(stateDoc{Name: s.opts.Name, Negotiated: s.Negotiated(), DevMajor: maj, DevMinor: min, Extra: s.st.extra})
	if err != nil {
		return err
	}
	return s.st.r.WriteHeader(stateMagic, b)
}

// StateExtra returns the extra document a predecessor stored with
// KeepState, or an error when r holds no device state.
func StateExtra(r *memstate.Region) (json.RawMessage, error) {
	b, err := r.ReadHeader(stateMagic)
	if err != nil {
		return nil, err
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	return doc.Extra, nil
}

// ErrNoState means a state memfd holds no device to resume.
var ErrNoState = errors.New("no device state")

// ErrUnclean means the process that kept the state ended without handing
// the device over, on a kernel without FUSE_NOTIFY_RESEND: what it read and
// did not answer can never be answered, so the device is not resumed.
var ErrUnclean = errors.New("the previous process ended without handing over, and this kernel cannot resend the requests it left unanswered (FUSE_NOTIFY_RESEND, Linux 6.9)")

// Resume serves a device a predecessor created: conn is its /dev/cuse
// descriptor and r its state (both from systemd's fd store). No CUSE_INIT
// is answered; the open files are restored (Persistent devices adopt their
// contents, others get Device.Open again for each), the kernel is asked to
// resend what the predecessor left unanswered, and pollers are woken. The
// device then runs until Stop, as after Start.
func (s *Server) Resume(ctx context.Context, conn *fusedev.Conn, r *memstate.Region) error {
	if err := s.claim(); err != nil {
		return err
	}
	b, err := r.ReadHeader(stateMagic)
	if err != nil {
		s.finish(err)
		return fmt.Errorf("%w: %v", ErrNoState, err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil || doc.Negotiated == nil || doc.Name != s.opts.Name {
		s.finish(ErrNoState)
		return fmt.Errorf("%w: header %s", ErrNoState, b)
	}
	if r.HeaderWord(hwHandedOver).Load() != 1 && !doc.Negotiated.CanResend() {
		// Killed or crashed, and the kernel cannot resend what it read:
		// those callers wait until the device ends.
		s.finish(ErrUnclean)
		return ErrUnclean
	}
	r.HeaderWord(hwHandedOver).Store(0) // this process serves now
	st := newCuseState(r)
	st.extra = doc.Extra
	s.st = st
	s.life.Lock()
	s.devMajor, s.devMinor = doc.DevMajor, doc.DevMinor
	s.life.Unlock()
	var khs []uint64
	st.files.Scan(func(slot uint32, state uint64, rec []byte) {
		fr := *(*fileRec)(unsafe.Pointer(unsafe.SliceData(rec)))
		f := &File{id: fr.fh, flags: int(fr.flags), srv: s, slot: slot + 1,
			caller: fusedev.Caller{UID: fr.uid, GID: fr.gid, PID: uint32(fr.pid)}}
		if fr.hasKh != 0 {
			f.kh.Store(fr.kh)
			f.hasKh.Store(true)
			khs = append(khs, fr.kh)
		}
		var h Handle
		var err error
		if p, ok := s.dev.(Persistent); ok {
			h, err = p.Reopen(ctx, f)
		} else {
			h, err = s.dev.Open(ctx, f)
		}
		if err != nil || h == nil {
			s.log.WithError(err).WithField("fh", fr.fh).Warn("cuse: an open file could not be restored; its calls fail with EBADF")
			return
		}
		f.handle = h
		f.slicer, _ = h.(SliceReader)
		s.files[f.id] = f
		s.stats.openNow.Add(1)
	})
	s.nextFh.Store(max(s.nextFh.Load(), r.HeaderWord(hwNextFh).Load()))

	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.life.Lock()
	s.conn, s.cancel = conn, cancel
	s.life.Unlock()
	opts := s.fusedevOptions()
	opts.Resume = doc.Negotiated
	fsrv := fusedev.NewServer(conn, &adapter{s: s}, opts)
	s.fsrv.Store(fsrv)
	sv := &serving{done: make(chan struct{})}
	go func() {
		sv.err = fsrv.Serve(sctx)
		close(sv.done)
	}()
	select {
	case <-fsrv.Ready():
	case <-sv.done:
		s.finish(sv.err)
		return fmt.Errorf("cuse: %s: resuming: %v", s.opts.Name, sv.err)
	}
	close(s.ready)
	// Pollers registered with the predecessor may have missed a wake-up.
	for _, kh := range khs {
		s.notifyPoll(kh)
	}
	s.watch(ctx, sctx, cancel, conn, sv)
	if !doc.Negotiated.KernelFlags.Has(abi.InitHasResend) && doc.Negotiated.Minor < 40 {
		s.log.Debug("cuse: no FUSE_NOTIFY_RESEND on this kernel")
	}
	return nil
}

// Handover stops serving and leaves the device, its open files and its
// state to a successor (Resume): requests that finish within a short grace
// are answered, those still waiting (a read with no data) are left for the
// kernel to resend; /dev/cuse is not closed by the server (the process's
// exit closes its descriptor; systemd's store keeps the device alive).
func (s *Server) Handover(ctx context.Context) error {
	s.handedOver.Store(true)
	if f := s.fsrv.Load(); f != nil {
		f.Handover()
	}
	err := s.Stop(ctx)
	if err == nil && s.st != nil {
		s.st.r.HeaderWord(hwHandedOver).Store(1) // see Resume
	}
	return err
}

// Persistent is implemented by a Device that keeps its contents in the
// state area (DeviceArea) so that they survive a restart. Reopen gives a
// restored open file its Handle, without the side effects of Open.
type Persistent interface {
	Reopen(ctx context.Context, f *File) (Handle, error)
}

// StateFile returns the device's state memfd, or nil.
func (s *Server) StateFile() *memstate.Region {
	if s.st == nil {
		return nil
	}
	return s.st.r
}

// Conn returns the /dev/cuse descriptor (after Start or Resume).
func (s *Server) Conn() *fusedev.Conn {
	s.life.Lock()
	defer s.life.Unlock()
	return s.conn
}
