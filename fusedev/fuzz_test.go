package fusedev_test

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

// fuzzFS succeeds at everything with some output, so that fuzzed requests
// reach every reply encoder.
type fuzzFS struct{ fusedev.NotImplemented }

func (fuzzFS) Lookup(_ context.Context, _ *fusedev.Request, name string, out *abi.EntryOut) error {
	out.NodeID, out.Attr.Ino = 2, 2
	return nil
}
func (fuzzFS) Getattr(_ context.Context, r *fusedev.Request, _ *abi.GetattrIn, out *abi.AttrOut) error {
	out.Attr.Ino = r.NodeID
	return nil
}
func (fuzzFS) Readlink(context.Context, *fusedev.Request) (string, error) { return "target", nil }
func (fuzzFS) Read(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
	if in.Offset%2 == 1 {
		return make([]byte, int(in.Size)+1), nil // too much: the server truncates
	}
	return dest, nil
}
func (fuzzFS) Write(_ context.Context, _ *fusedev.Request, _ *abi.WriteIn, data []byte) (uint32, error) {
	return uint32(len(data)), nil
}
func (fuzzFS) Getxattr(_ context.Context, _ *fusedev.Request, name string, dest []byte) (int, error) {
	return copy(dest, "value"), nil
}
func (fuzzFS) Listxattr(_ context.Context, _ *fusedev.Request, dest []byte) (int, error) {
	if len(dest) == 0 {
		return 1 << 20, nil
	}
	return len(dest) + 1, nil // claims more than fits: ERANGE
}
func (fuzzFS) Readdir(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	for i := uint64(0); out.Add(strings.Repeat("n", int(in.Offset%300)+1), i, 0, i+1); i++ {
	}
	return nil
}
func (fuzzFS) Readdirplus(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, out *fusedev.DirList) error {
	for i := uint64(0); ; i++ {
		e := out.AddPlus(strings.Repeat("p", int(in.Offset%300)+1), i, 0, i+1)
		if e == nil {
			return nil
		}
		e.NodeID = i
	}
}
func (fuzzFS) Ioctl(_ context.Context, _ *fusedev.Request, in *abi.IoctlIn, data []byte, out *fusedev.IoctlOut) error {
	switch in.Cmd % 3 {
	case 0:
		out.Retry = true
		out.InIovs = make([]abi.IoctlIovec, in.Arg%300)
	case 1:
		out.Data = data
	}
	return nil
}
func (fuzzFS) Create(_ context.Context, _ *fusedev.Request, _ *abi.CreateIn, _ string, e *abi.EntryOut, o *abi.OpenOut) error {
	e.NodeID, o.Fh = 3, 3
	return nil
}
func (fuzzFS) Statx(_ context.Context, _ *fusedev.Request, _ *abi.StatxIn, out *abi.StatxOut) error {
	out.Stat.Ino = 1
	return nil
}
func (fuzzFS) CopyFileRange(_ context.Context, _ *fusedev.Request, in *abi.CopyFileRangeIn) (uint64, error) {
	return in.Len, nil
}

// seedRequests are well-formed requests for FuzzRequest's corpus.
func seedRequests() map[abi.Opcode][]byte {
	name := fusetest.CString("name")
	return map[abi.Opcode][]byte{
		abi.OpLookup:        name,
		abi.OpForget:        fusetest.Arg(abi.ForgetIn{Nlookup: 1}),
		abi.OpGetattr:       fusetest.Arg(abi.GetattrIn{}),
		abi.OpSetattr:       fusetest.Arg(abi.SetattrIn{Valid: abi.FattrSize, Size: 10}),
		abi.OpReadlink:      nil,
		abi.OpSymlink:       cat(name, fusetest.CString("target")),
		abi.OpMknod:         cat(fusetest.Arg(abi.MknodIn{Mode: 0o644}), name),
		abi.OpMkdir:         cat(fusetest.Arg(abi.MkdirIn{Mode: 0o755}), name),
		abi.OpUnlink:        name,
		abi.OpRename:        cat(fusetest.Arg(abi.RenameIn{Newdir: 1}), name, fusetest.CString("new")),
		abi.OpRename2:       cat(fusetest.Arg(abi.Rename2In{Newdir: 1}), name, fusetest.CString("new")),
		abi.OpLink:          cat(fusetest.Arg(abi.LinkIn{OldNodeID: 2}), name),
		abi.OpOpen:          fusetest.Arg(abi.OpenIn{}),
		abi.OpRead:          fusetest.Arg(abi.ReadIn{Size: 4096}),
		abi.OpWrite:         cat(fusetest.Arg(abi.WriteIn{Size: 5}), []byte("hello")),
		abi.OpStatfs:        nil,
		abi.OpRelease:       fusetest.Arg(abi.ReleaseIn{}),
		abi.OpFsync:         fusetest.Arg(abi.FsyncIn{}),
		abi.OpSetxattr:      cat(fusetest.Arg(abi.SetxattrIn{Size: 2}), fusetest.CString("user.a"), []byte("xy")),
		abi.OpGetxattr:      cat(fusetest.Arg(abi.GetxattrIn{Size: 64}), fusetest.CString("user.a")),
		abi.OpListxattr:     fusetest.Arg(abi.GetxattrIn{Size: 0}),
		abi.OpRemovexattr:   fusetest.CString("user.a"),
		abi.OpFlush:         fusetest.Arg(abi.FlushIn{}),
		abi.OpInit:          fusetest.Arg(fusetest.InitIn(7, 45, abi.InitKnown)),
		abi.OpReaddir:       fusetest.Arg(abi.ReadIn{Size: 4096}),
		abi.OpReaddirplus:   fusetest.Arg(abi.ReadIn{Size: 4096, Offset: 7}),
		abi.OpGetlk:         fusetest.Arg(abi.LkIn{}),
		abi.OpSetlkw:        fusetest.Arg(abi.LkIn{}),
		abi.OpAccess:        fusetest.Arg(abi.AccessIn{}),
		abi.OpCreate:        cat(fusetest.Arg(abi.CreateIn{}), name),
		abi.OpInterrupt:     fusetest.Arg(abi.InterruptIn{Unique: 2}),
		abi.OpBmap:          fusetest.Arg(abi.BmapIn{}),
		abi.OpDestroy:       nil,
		abi.OpIoctl:         cat(fusetest.Arg(abi.IoctlIn{Flags: abi.IoctlUnrestricted, InSize: 4, OutSize: 8, Arg: 3}), []byte("abcd")),
		abi.OpPoll:          fusetest.Arg(abi.PollIn{}),
		abi.OpNotifyReply:   cat(fusetest.Arg(abi.NotifyRetrieveIn{Size: 3}), []byte("abc")),
		abi.OpBatchForget:   cat(fusetest.Arg(abi.BatchForgetIn{Count: 2}), fusetest.Arg(abi.ForgetOne{NodeID: 2, Nlookup: 1})),
		abi.OpFallocate:     fusetest.Arg(abi.FallocateIn{}),
		abi.OpLseek:         fusetest.Arg(abi.LseekIn{}),
		abi.OpCopyFileRange: fusetest.Arg(abi.CopyFileRangeIn{Len: 1 << 33}),
		abi.OpSyncfs:        fusetest.Arg(abi.SyncfsIn{}),
		abi.OpTmpfile:       fusetest.Arg(abi.CreateIn{}),
		abi.OpStatx:         fusetest.Arg(abi.StatxIn{}),
	}
}

// Length modes of FuzzRequest.
const (
	lenExact = iota // the header's length is the message's
	lenWrong        // the header's length is off by delta
	lenRaw          // the message is the fuzzed bytes alone (unique forced)
	lenModes
)

// FuzzRequest sends one arbitrary request after a valid INIT. The server
// must not panic, must answer at most once (exactly once when the header is
// sound and the opcode wants an answer, never for FORGET, BATCH_FORGET and
// NOTIFY_REPLY) and must go on serving.
func FuzzRequest(f *testing.F) {
	for op, body := range seedRequests() {
		f.Add(uint32(op), uint64(1), uint16(0), uint8(lenExact), int8(0), body)
	}
	ext := cat(fusetest.Arg(abi.ExtHeader{Size: 16, Type: abi.ExtGroups}), fusetest.Arg(abi.SuppGroups{NrGroups: 1}), []byte{5, 0, 0, 0})
	f.Add(uint32(abi.OpMkdir), uint64(1), uint16(2), uint8(lenExact), int8(0), cat(fusetest.Arg(abi.MkdirIn{}), fusetest.CString("d"), ext))
	f.Add(uint32(abi.OpGetattr), uint64(1), uint16(0), uint8(lenWrong), int8(-3), fusetest.Arg(abi.GetattrIn{}))
	f.Add(uint32(0), uint64(0), uint16(0), uint8(lenRaw), int8(0), []byte("\x30\x00\x00\x00\x03\x00\x00\x00"))
	f.Add(uint32(99), uint64(1), uint16(0), uint8(lenExact), int8(0), []byte{})

	f.Fuzz(func(t *testing.T, op uint32, node uint64, extlen uint16, mode uint8, delta int8, body []byte) {
		k := fusetest.Start(t, fuzzFS{}, fusedev.Options{Readers: 1})
		k.SetTimeout(3 * time.Second)
		if r := k.Init(7, abi.KernelMinorVersion, abi.InitKnown); r.Errno != 0 {
			t.Fatalf("INIT: %v", r.Errno)
		}
		u := k.NextUnique()
		var msg []byte
		switch mode % lenModes {
		case lenRaw:
			msg = append([]byte(nil), body...)
			if len(msg) >= 16 {
				copy(msg[8:16], fusetest.Arg(u))
			}
		default:
			h := abi.InHeader{Opcode: abi.Opcode(op), Unique: u, NodeID: node, UID: 1, GID: 1, PID: 1, TotalExtlen: extlen}
			msg = cat(fusetest.Arg(h), body)
			n := uint32(len(msg))
			if mode%lenModes == lenWrong {
				n += uint32(int32(delta))
			}
			copy(msg, fusetest.Arg(n))
		}
		k.SendRaw(msg)

		// Barrier: with one reader, the sentinel is read after the fuzzed
		// message; once nothing is in flight every reply has been written,
		// and the second sentinel's reply comes after all of them.
		if _, errno := k.Getattr(1); errno != 0 {
			t.Fatalf("server stopped serving: %v", errno)
		}
		deadline := time.Now().Add(k.Timeout())
		for k.Server().Inflight() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("request still in flight: the server hangs")
			}
			time.Sleep(100 * time.Microsecond)
		}
		if _, errno := k.Getattr(1); errno != 0 {
			t.Fatalf("server stopped serving: %v", errno)
		}

		var h abi.InHeader
		sound := abi.Decode(msg, &h) == nil && int(h.Len) == len(msg) &&
			int(h.TotalExtlen)*8 <= len(msg)-abi.SizeInHeader && h.Unique != 0
		got := k.Replies(u)
		switch {
		case got > 1:
			t.Fatalf("%d replies", got)
		case sound && h.Opcode.NoReply() && got != 0:
			t.Fatalf("%v answered", h.Opcode)
		case sound && !h.Opcode.NoReply() && h.Opcode != abi.OpInterrupt && got != 1:
			t.Fatalf("sound %v request not answered", h.Opcode)
		}
		if v := k.Violations(); len(v) > 0 {
			t.Fatalf("protocol violations: %v", v)
		}
	})
}

// FuzzHandshake sends an arbitrary first message. Serve must refuse it
// with an error, answer it, or wait for a proper INIT; never panic or hang.
func FuzzHandshake(f *testing.F) {
	f.Add(uint32(abi.OpInit), false, fusetest.Arg(fusetest.InitIn(7, 45, abi.InitKnown)))
	f.Add(uint32(abi.OpInit), false, fusetest.Arg(fusetest.InitIn(7, 31, abi.InitKnown))[:16])
	f.Add(uint32(abi.OpInit), false, fusetest.Arg(fusetest.InitIn(8, 0, 0)))
	f.Add(uint32(abi.OpInit), false, []byte{7, 0, 0, 0, 5, 0, 0, 0})
	f.Add(uint32(abi.OpCuseInit), true, fusetest.Arg(abi.CuseInitIn{Major: 7, Minor: 45}))
	f.Add(uint32(abi.OpGetattr), false, fusetest.Arg(abi.GetattrIn{}))
	f.Fuzz(func(t *testing.T, op uint32, cuse bool, body []byte) {
		var opts fusedev.Options
		if cuse {
			opts.Cuse = func(in *abi.CuseInitIn) (abi.CuseInitOut, []byte, error) {
				return abi.CuseInitOut{MaxRead: in.Unused}, []byte("DEVNAME=fuzz\x00"), nil
			}
		}
		k := fusetest.Start(t, fuzzFS{}, opts)
		initOp := abi.OpInit
		if cuse {
			initOp = abi.OpCuseInit
		}
		u := k.SendReq(fusetest.Req{Op: abi.Opcode(op), Args: [][]byte{body}})
		if !abi.Opcode(op).NoReply() {
			r := k.Reply(u)
			// EIO or EPROTO to the INIT awaited is a refusal: Serve ends
			// with an error. Anything else keeps it waiting or serving.
			if abi.Opcode(op) == initOp && (r.Errno == syscall.EIO || r.Errno == syscall.EPROTO) {
				if err := k.ServeErr(); err == nil {
					t.Fatal("Serve returned nil after refusing INIT")
				}
				return
			}
		}
		var proper fusetest.Req
		if cuse {
			proper = fusetest.Req{Op: initOp, Args: [][]byte{fusetest.Arg(abi.CuseInitIn{Major: 7, Minor: 45})}}
		} else {
			proper = fusetest.Req{Op: initOp, Args: [][]byte{fusetest.Arg(fusetest.InitIn(7, 45, abi.InitKnown))}}
		}
		r := k.Reply(k.SendReq(proper))
		if r.Errno != 0 && r.Errno != syscall.EIO { // EIO: the fuzzed INIT was accepted
			t.Fatalf("proper INIT after the fuzzed one: %v", r.Errno)
		}
		select {
		case <-k.ServeDone():
			t.Fatalf("Serve ended: %v", k.ServeErr())
		default:
		}
		if k.Server().Negotiated() == nil {
			t.Fatal("not initialised after a proper INIT")
		}
		if v := k.Violations(); len(v) > 0 {
			t.Fatalf("protocol violations: %v", v)
		}
	})
}

// FuzzDirList adds arbitrary names and decodes the result as the kernel
// would: what Add accepts must come back intact.
func FuzzDirList(f *testing.F) {
	f.Add([]byte("a\x00bb\x00ccc"), uint16(4096), false)
	f.Add([]byte("x"), uint16(100), true)
	f.Fuzz(func(t *testing.T, names []byte, size uint16, plus bool) {
		want := bytes.Split(names, []byte{0})
		fs := &hookFS{}
		var accepted []string
		list := func(_ context.Context, _ *fusedev.Request, _ *abi.ReadIn, out *fusedev.DirList) error {
			accepted = accepted[:0]
			for i, n := range want {
				ok := false
				if plus {
					if e := out.AddPlus(string(n), uint64(i), 8, uint64(i+1)); e != nil {
						e.NodeID = uint64(i)
						ok = true
					}
				} else {
					ok = out.Add(string(n), uint64(i), 8, uint64(i+1))
				}
				if ok {
					accepted = append(accepted, string(n))
				}
				if out.Len() > int(size) {
					t.Errorf("DirList holds %d bytes, asked %d", out.Len(), size)
				}
			}
			return nil
		}
		fs.readdir, fs.readdirplus = list, list
		k := startInit(t, fs, fusedev.Options{})
		var got []string
		if plus {
			ents, errno := k.Readdirplus(1, 0, 0, uint32(size))
			if errno != 0 {
				t.Fatal(errno)
			}
			for _, e := range ents {
				got = append(got, e.Name)
			}
		} else {
			ents, errno := k.Readdir(1, 0, 0, uint32(size))
			if errno != 0 {
				t.Fatal(errno)
			}
			for _, e := range ents {
				got = append(got, e.Name)
			}
		}
		if strings.Join(got, "/") != strings.Join(accepted, "/") {
			t.Fatalf("decoded %q, added %q", got, accepted)
		}
	})
}
