package fusedev_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

const lowWord = abi.InitFlags(0xffffffff)

func TestInitNegotiation(t *testing.T) {
	passthrough := fusedev.DefaultFlags | abi.InitPassthrough | abi.InitSecurityCtx
	for _, c := range []struct {
		name         string
		minor        uint32
		offered      abi.InitFlags
		opts         fusedev.Options
		wantMinor    uint32
		wantSize     int
		wantFlags    abi.InitFlags // granted, both words
		wantStack    uint32
		wantMaxWrite uint32
		wantPages    uint16
	}{
		{
			name: "7.45 all flags", minor: 45, offered: abi.InitKnown,
			wantMinor: 45, wantSize: 64, wantFlags: fusedev.DefaultFlags,
			wantMaxWrite: 1 << 20, wantPages: 256,
		},
		{
			name: "7.45 passthrough granted", minor: 45, offered: abi.InitKnown,
			opts:      fusedev.Options{Flags: passthrough, MaxStackDepth: 2},
			wantMinor: 45, wantSize: 64, wantFlags: passthrough, wantStack: 2,
			wantMaxWrite: 1 << 20, wantPages: 256,
		},
		{
			name: "7.45 passthrough not offered", minor: 45, offered: abi.InitKnown &^ abi.InitPassthrough,
			opts:      fusedev.Options{Flags: passthrough, MaxStackDepth: 2},
			wantMinor: 45, wantSize: 64, wantFlags: passthrough &^ abi.InitPassthrough,
			wantMaxWrite: 1 << 20, wantPages: 256,
		},
		{
			name: "7.45 passthrough with writeback cache", minor: 45, offered: abi.InitKnown,
			opts:      fusedev.Options{Flags: passthrough | abi.InitWritebackCache},
			wantMinor: 45, wantSize: 64, wantFlags: (passthrough | abi.InitWritebackCache) &^ abi.InitPassthrough,
			wantMaxWrite: 1 << 20, wantPages: 256,
		},
		{
			// flags2 is only read with INIT_EXT: a kernel that does not set
			// it gets no flags2 and no INIT_EXT back.
			name: "7.45 without INIT_EXT", minor: 45, offered: abi.InitKnown &^ abi.InitExt,
			opts:      fusedev.Options{Flags: passthrough},
			wantMinor: 45, wantSize: 64, wantFlags: passthrough & lowWord &^ abi.InitExt,
			wantMaxWrite: 1 << 20, wantPages: 256,
		},
		{
			name: "7.36 first with flags2", minor: 36, offered: abi.InitKnown & (abi.InitSecurityCtx<<1 - 1),
			opts:      fusedev.Options{Flags: passthrough},
			wantMinor: 36, wantSize: 64, wantFlags: passthrough &^ abi.InitPassthrough,
			wantMaxWrite: 1 << 20, wantPages: 256,
		},
		{
			// Before 7.36 the kernel sends the 16-byte fuse_init_in.
			name: "7.31 short InitIn", minor: 31, offered: abi.InitKnown & (abi.InitHandleKillprivV2 - 1),
			opts:      fusedev.Options{Flags: passthrough},
			wantMinor: 31, wantSize: 64, wantFlags: fusedev.DefaultFlags & (abi.InitHandleKillprivV2 - 1),
			wantMaxWrite: 1 << 20, wantPages: 256,
		},
		{
			name: "7.22 short InitOut", minor: 22, offered: abi.InitKnown & (abi.InitAsyncDIO<<1 - 1),
			wantMinor: 22, wantSize: 24, wantFlags: fusedev.DefaultFlags & (abi.InitAsyncDIO<<1 - 1),
			// No MAX_PAGES before 7.28: the kernel's 32 pages bound writes.
			wantMaxWrite: 128 << 10, wantPages: 0,
		},
		{
			name: "7.12 oldest", minor: 12, offered: abi.InitAsyncRead | abi.InitBigWrites,
			wantMinor: 12, wantSize: 24, wantFlags: abi.InitAsyncRead | abi.InitBigWrites,
			wantMaxWrite: 128 << 10, wantPages: 0,
		},
		{
			name: "MaxMinor caps", minor: 45, offered: abi.InitKnown,
			opts:      fusedev.Options{MaxMinor: 40},
			wantMinor: 40, wantSize: 64, wantFlags: fusedev.DefaultFlags,
			wantMaxWrite: 1 << 20, wantPages: 256,
		},
		{
			name: "small MaxWrite", minor: 45, offered: abi.InitKnown,
			opts:      fusedev.Options{MaxWrite: 64 << 10},
			wantMinor: 45, wantSize: 64, wantFlags: fusedev.DefaultFlags,
			wantMaxWrite: 64 << 10, wantPages: 16,
		},
		{
			name: "MaxWrite rounded to pages", minor: 45, offered: abi.InitKnown,
			opts:      fusedev.Options{MaxWrite: 5000},
			wantMinor: 45, wantSize: 64, wantFlags: fusedev.DefaultFlags,
			wantMaxWrite: 8192, wantPages: 2,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := &hookFS{}
			k := fusetest.Start(t, fs, c.opts)
			r := k.Init(7, c.minor, c.offered)
			if r.Errno != 0 {
				t.Fatalf("INIT answered %v", r.Errno)
			}
			if len(r.Payload) != c.wantSize {
				t.Errorf("reply of %d bytes, want %d", len(r.Payload), c.wantSize)
			}
			o := r.Out
			got := abi.MakeInitFlags(o.Flags, o.Flags2)
			if o.Major != 7 || o.Minor != c.wantMinor {
				t.Errorf("version %d.%d, want 7.%d", o.Major, o.Minor, c.wantMinor)
			}
			if c.offered.Has(abi.InitExt) && c.minor >= 36 {
				if !got.Has(abi.InitExt) {
					t.Errorf("INIT_EXT not answered to a kernel that offered it")
				}
				got &^= abi.InitExt
			} else if got.Has(abi.InitExt) || o.Flags2 != 0 {
				t.Errorf("INIT_EXT/flags2 %#x answered to a kernel without INIT_EXT", o.Flags2)
			}
			if want := c.wantFlags &^ abi.InitExt; got != want {
				t.Errorf("granted %v\nwant    %v", got, want)
			}
			if got&^c.offered != 0 {
				t.Errorf("granted flags the kernel did not offer: %v", got&^c.offered)
			}
			if o.MaxStackDepth != c.wantStack {
				t.Errorf("max_stack_depth %d, want %d", o.MaxStackDepth, c.wantStack)
			}
			if o.MaxWrite != c.wantMaxWrite || o.MaxPages != c.wantPages {
				t.Errorf("max_write %d max_pages %d, want %d and %d", o.MaxWrite, o.MaxPages, c.wantMaxWrite, c.wantPages)
			}
			if o.MaxReadahead != 128<<10 || o.TimeGran != 1 && c.wantSize == 64 {
				t.Errorf("max_readahead %d time_gran %d", o.MaxReadahead, o.TimeGran)
			}
			neg := k.Server().Negotiated()
			if neg == nil || neg.Minor != c.wantMinor || neg.KernelMinor != c.minor || neg.MaxWrite != c.wantMaxWrite {
				t.Errorf("Negotiated() = %+v", neg)
			}
			if fs.inits.Load() != 1 {
				t.Errorf("FileSystem.Init called %d times", fs.inits.Load())
			}
			// The connection serves after INIT.
			if _, errno := k.Getattr(abi.RootID); errno != 0 {
				t.Errorf("GETATTR after INIT: %v", errno)
			}
		})
	}
}

func TestInitMaxReadahead(t *testing.T) {
	k := fusetest.Start(t, &hookFS{}, fusedev.Options{MaxReadahead: 64 << 10})
	if r := k.Init(7, 45, abi.InitKnown); r.Out.MaxReadahead != 64<<10 {
		t.Errorf("max_readahead %d, want the option's 64 KiB", r.Out.MaxReadahead)
	}
}

// A kernel with a newer major gets our version back and may retry with 7.
func TestInitMajorTooNew(t *testing.T) {
	fs := &hookFS{}
	k := fusetest.Start(t, fs, fusedev.Options{})
	r := k.Init(8, 0, abi.InitKnown)
	if r.Errno != 0 || r.Out.Major != 7 || r.Out.Minor != abi.KernelMinorVersion {
		t.Fatalf("INIT 8.0 answered errno %v version %d.%d, want 0 and 7.%d", r.Errno, r.Out.Major, r.Out.Minor, abi.KernelMinorVersion)
	}
	if fs.inits.Load() != 0 || k.Server().Negotiated() != nil {
		t.Fatal("a refused INIT negotiated something")
	}
	select {
	case <-k.ServeDone():
		t.Fatal("Serve returned after INIT 8.0; it must keep waiting for an INIT it can accept")
	case <-time.After(20 * time.Millisecond):
	}
	if r := k.Init(7, 45, abi.InitKnown); r.Errno != 0 || r.Out.Minor != 45 {
		t.Fatalf("INIT 7.45 after 8.0: %v %+v", r.Errno, r.Out)
	}
}

func TestInitRefused(t *testing.T) {
	for _, c := range []struct {
		name         string
		major, minor uint32
		size         int
		want         string
	}{
		{"major 6", 6, 45, abi.SizeInitIn, "6.45"},
		{"minor 11", 7, 11, abi.CompatInitInSize, "7.11"},
		{"7.5 sends 8 bytes", 7, 5, 8, "7.5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := &hookFS{}
			k := fusetest.Start(t, fs, fusedev.Options{})
			r := k.InitWith(fusetest.InitIn(c.major, c.minor, 0), c.size)
			if r.Errno != syscall.EPROTO {
				t.Errorf("INIT %d.%d answered %v, want EPROTO", c.major, c.minor, r.Errno)
			}
			err := k.ServeErr()
			if !errors.Is(err, fusedev.ErrProtocol) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Serve returned %v, want ErrProtocol naming %s", err, c.want)
			}
			if fs.inits.Load() != 0 || fs.destroys.Load() != 0 {
				t.Errorf("Init called %d times, Destroy %d times on a refused connection", fs.inits.Load(), fs.destroys.Load())
			}
		})
	}
}

func TestRequestsBeforeInit(t *testing.T) {
	k := fusetest.Start(t, &hookFS{}, fusedev.Options{})
	if r := k.Do(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{})); r.Errno != syscall.EIO {
		t.Errorf("GETATTR before INIT: %v, want EIO", r.Errno)
	}
	f := k.Forget(5, 1)
	if r := k.Init(7, 45, abi.InitKnown); r.Errno != 0 {
		t.Fatalf("INIT: %v", r.Errno)
	}
	k.ExpectNoReply(f, 10*time.Millisecond)
}

func TestInitFileSystemFails(t *testing.T) {
	fs := &hookFS{init: func(context.Context, *fusedev.Server) error { return errors.New("no backing store") }}
	k := fusetest.Start(t, fs, fusedev.Options{})
	if r := k.Init(7, 45, abi.InitKnown); r.Errno != syscall.EIO {
		t.Errorf("INIT with a failing FileSystem.Init: %v, want EIO", r.Errno)
	}
	if err := k.ServeErr(); err == nil || !strings.Contains(err.Error(), "no backing store") {
		t.Errorf("Serve returned %v", err)
	}
}

func TestCuseInit(t *testing.T) {
	info := []byte("DEVNAME=fusegate-test\x00")
	var seen abi.CuseInitIn
	opts := fusedev.Options{
		MaxWrite: 128 << 10,
		Cuse: func(in *abi.CuseInitIn) (abi.CuseInitOut, []byte, error) {
			seen = *in
			return abi.CuseInitOut{Flags: abi.CuseUnrestrictedIoctl, MaxRead: 64 << 10, DevMajor: 0, DevMinor: 7}, info, nil
		},
	}
	fs := &hookFS{}
	k := fusetest.Start(t, fs, opts)
	r := k.CuseInit(7, 45, abi.CuseUnrestrictedIoctl)
	if r.Errno != 0 {
		t.Fatalf("CUSE_INIT: %v", r.Errno)
	}
	if seen.Major != 7 || seen.Minor != 45 || seen.Flags != abi.CuseUnrestrictedIoctl {
		t.Errorf("CuseInit hook saw %+v", seen)
	}
	o := r.Out
	if o.Major != 7 || o.Minor != 45 || o.Flags != abi.CuseUnrestrictedIoctl || o.MaxRead != 64<<10 || o.MaxWrite != 128<<10 || o.DevMinor != 7 {
		t.Errorf("CUSE_INIT reply %+v", o)
	}
	if string(r.DevInfo) != string(info) {
		t.Errorf("device info %q, want %q", r.DevInfo, info)
	}
	if neg := k.Server().Negotiated(); neg == nil || !neg.Cuse || neg.MaxRead != 64<<10 {
		t.Errorf("Negotiated() = %+v", neg)
	}
	// A read is bounded by max_read, which CUSE negotiates.
	fs.read = func(_ context.Context, _ *fusedev.Request, in *abi.ReadIn, dest []byte) ([]byte, error) {
		return dest, nil
	}
	if data, errno := k.Read(0, 1, 0, 64<<10); errno != 0 || len(data) != 64<<10 {
		t.Errorf("READ of max_read bytes on a CUSE device: %v, %d bytes", errno, len(data))
	}
}

func TestCuseInitRefused(t *testing.T) {
	ok := func(*abi.CuseInitIn) (abi.CuseInitOut, []byte, error) {
		return abi.CuseInitOut{}, []byte("DEVNAME=x\x00"), nil
	}
	t.Run("FUSE INIT on a CUSE server", func(t *testing.T) {
		k := fusetest.Start(t, &hookFS{}, fusedev.Options{Cuse: ok})
		if r := k.Do(abi.OpInit, 0, fusetest.Arg(fusetest.InitIn(7, 45, 0))); r.Errno != syscall.EIO {
			t.Errorf("INIT to a CUSE server: %v, want EIO", r.Errno)
		}
		if r := k.CuseInit(7, 45, 0); r.Errno != 0 {
			t.Errorf("CUSE_INIT after a stray INIT: %v", r.Errno)
		}
	})
	t.Run("minor 10", func(t *testing.T) {
		k := fusetest.Start(t, &hookFS{}, fusedev.Options{Cuse: ok})
		if r := k.CuseInit(7, 10, 0); r.Errno != syscall.EPROTO {
			t.Errorf("CUSE_INIT 7.10: %v, want EPROTO", r.Errno)
		}
		if err := k.ServeErr(); !errors.Is(err, fusedev.ErrProtocol) {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Run("device info too long", func(t *testing.T) {
		long := func(*abi.CuseInitIn) (abi.CuseInitOut, []byte, error) {
			return abi.CuseInitOut{}, make([]byte, abi.CuseInitInfoMax+1), nil
		}
		k := fusetest.Start(t, &hookFS{}, fusedev.Options{Cuse: long})
		if r := k.CuseInit(7, 45, 0); r.Errno != syscall.EIO {
			t.Errorf("CUSE_INIT with oversized info: %v, want EIO", r.Errno)
		}
		if err := k.ServeErr(); err == nil {
			t.Error("Serve returned nil")
		}
	})
}

// A server resuming a connection answers no INIT, asks the kernel to resend
// what its predecessor took, and serves.
func TestResume(t *testing.T) {
	fs := &hookFS{}
	neg := &fusedev.Negotiated{Major: 7, Minor: 45, KernelMinor: 45, Flags: fusedev.DefaultFlags, MaxWrite: 1 << 20, MaxPages: 256}
	k := fusetest.Start(t, fs, fusedev.Options{Resume: neg})
	k.ExpectNotification(abi.NotifyResend)
	if _, errno := k.Getattr(1); errno != 0 {
		t.Fatalf("GETATTR: %v", errno)
	}
	if got := k.Server().Negotiated(); got == nil || *got != *neg {
		t.Errorf("Negotiated() = %+v", got)
	}
	if fs.inits.Load() != 1 {
		t.Errorf("FileSystem.Init called %d times on resume, want 1 (it needs the *Server)", fs.inits.Load())
	}
}
