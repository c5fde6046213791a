package fusedev_test

import (
	"context"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

// setLen rewrites the header's length field.
func setLen(msg []byte, n uint32) []byte {
	msg[0], msg[1], msg[2], msg[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
	return msg
}

// TestMalformed sends one malformed message of each class and checks the
// answer (an errno, or none when the message cannot or must not be
// answered), that the file system was not called, and that the server goes
// on serving.
func TestMalformed(t *testing.T) {
	var called atomic.Int32
	fs := &hookFS{
		lookup: func(context.Context, *fusedev.Request, string, *abi.EntryOut) error {
			called.Add(1)
			return nil
		},
		write: func(context.Context, *fusedev.Request, *abi.WriteIn, []byte) (uint32, error) {
			called.Add(1)
			return 0, nil
		},
		ioctl: func(context.Context, *fusedev.Request, *abi.IoctlIn, []byte, *fusedev.IoctlOut) error {
			called.Add(1)
			return nil
		},
		setxattr: func(context.Context, *fusedev.Request, *abi.SetxattrIn, string, []byte) error {
			called.Add(1)
			return nil
		},
	}
	k := startInit(t, fs, fusedev.Options{Readers: 1})

	msg := func(op abi.Opcode, args ...[]byte) (uint64, []byte) {
		return k.Message(fusetest.Req{Op: op, Node: abi.RootID, Args: args})
	}
	getattr := fusetest.Arg(abi.GetattrIn{})
	const (
		noReply  = syscall.Errno(0xffff)
		anyReply = syscall.Errno(0xfffe)
	)
	for _, c := range []struct {
		name  string
		build func() (uint64, []byte)
		want  syscall.Errno
	}{
		{"empty message", func() (uint64, []byte) { return 0, []byte{} }, noReply}, // not a hang-up
		{"short header with unique", func() (uint64, []byte) {
			u, m := msg(abi.OpGetattr, getattr)
			return u, m[:abi.SizeInHeader-1]
		}, syscall.EIO},
		{"shorter than a unique", func() (uint64, []byte) {
			u, m := msg(abi.OpGetattr, getattr)
			return u, m[:12]
		}, noReply},
		{"length field larger than message", func() (uint64, []byte) {
			u, m := msg(abi.OpGetattr, getattr)
			return u, setLen(m, uint32(len(m)+8))
		}, syscall.EIO},
		{"length field smaller than message", func() (uint64, []byte) {
			u, m := msg(abi.OpGetattr, getattr)
			return u, setLen(m, abi.SizeInHeader)
		}, syscall.EIO},
		{"length field beyond any buffer", func() (uint64, []byte) {
			u, m := msg(abi.OpGetattr, getattr)
			return u, setLen(m, 0xffffffff)
		}, syscall.EIO},
		{"unknown opcode 7", func() (uint64, []byte) { return msg(7, getattr) }, syscall.ENOSYS},
		{"unknown opcode 54", func() (uint64, []byte) { return msg(54) }, syscall.ENOSYS},
		{"unknown opcode 1<<31", func() (uint64, []byte) { return msg(1 << 31) }, syscall.ENOSYS},
		{"byte-swapped INIT", func() (uint64, []byte) { return msg(abi.OpInitBswapReserved) }, syscall.ENOSYS},
		{"second INIT", func() (uint64, []byte) {
			return msg(abi.OpInit, fusetest.Arg(fusetest.InitIn(7, 45, 0)))
		}, syscall.EIO},
		{"name without NUL", func() (uint64, []byte) { return msg(abi.OpLookup, []byte("abc")) }, syscall.EIO},
		{"empty name", func() (uint64, []byte) { return msg(abi.OpLookup, []byte{0}) }, syscall.EIO},
		{"no name at all", func() (uint64, []byte) { return msg(abi.OpLookup) }, syscall.EIO},
		{"name over NAME_MAX", func() (uint64, []byte) {
			return msg(abi.OpLookup, fusetest.CString(strings.Repeat("n", abi.NameMax+1)))
		}, syscall.EIO},
		{"MKDIR struct truncated", func() (uint64, []byte) { return msg(abi.OpMkdir, []byte{1, 2, 3}) }, syscall.EIO},
		{"GETATTR struct truncated", func() (uint64, []byte) { return msg(abi.OpGetattr, getattr[:8]) }, syscall.EIO},
		{"READ struct truncated", func() (uint64, []byte) { return msg(abi.OpRead, make([]byte, abi.SizeReadIn-1)) }, syscall.EIO},
		{"WRITE size beyond data", func() (uint64, []byte) {
			return msg(abi.OpWrite, fusetest.Arg(abi.WriteIn{Size: 100}), make([]byte, 99))
		}, syscall.EIO},
		{"SETXATTR value beyond message", func() (uint64, []byte) {
			return msg(abi.OpSetxattr, fusetest.Arg(abi.SetxattrIn{Size: 10}), fusetest.CString("user.x"), []byte("short"))
		}, syscall.EIO},
		{"IOCTL in_size beyond data", func() (uint64, []byte) {
			return msg(abi.OpIoctl, fusetest.Arg(abi.IoctlIn{InSize: 64}), make([]byte, 8))
		}, syscall.EIO},
		{"RENAME second name missing", func() (uint64, []byte) {
			return msg(abi.OpRename, fusetest.Arg(abi.RenameIn{Newdir: 1}), fusetest.CString("a"))
		}, syscall.EIO},
		{"SYMLINK empty target", func() (uint64, []byte) {
			return msg(abi.OpSymlink, fusetest.CString("a"), []byte{0})
		}, syscall.EIO},
		{"extension length beyond message", func() (uint64, []byte) {
			u, m := msg(abi.OpGetattr, getattr)
			m[36] = 100 // total_extlen: 800 bytes
			return u, m
		}, syscall.EIO},
		{"extension with garbage header", func() (uint64, []byte) {
			return k.Message(fusetest.Req{Op: abi.OpGetattr, Node: 1, Args: [][]byte{getattr},
				Ext: fusetest.Arg(abi.ExtHeader{Size: 0xffff, Type: abi.ExtGroups})})
		}, 0}, // the extension is ignored; the request is fine
		{"unique 0", func() (uint64, []byte) {
			_, m := k.Message(fusetest.Req{Op: abi.OpGetattr, Node: 1, Unique: 0, Args: [][]byte{getattr}})
			clear(m[8:16])
			return 0, m
		}, noReply}, // a reply with unique 0 would be read as a notification
		{"FORGET with bad length", func() (uint64, []byte) {
			u, m := msg(abi.OpForget, fusetest.Arg(abi.ForgetIn{Nlookup: 1}))
			return u, setLen(m, 1000)
		}, noReply},
		{"FORGET truncated", func() (uint64, []byte) { return msg(abi.OpForget, []byte{1}) }, noReply},
		{"FORGET short header", func() (uint64, []byte) {
			u, m := msg(abi.OpForget, fusetest.Arg(abi.ForgetIn{Nlookup: 1}))
			return u, m[:20]
		}, noReply},
		{"BATCH_FORGET bad extension length", func() (uint64, []byte) {
			u, m := msg(abi.OpBatchForget, fusetest.Arg(abi.BatchForgetIn{}))
			m[36] = 9
			return u, m
		}, noReply},
		{"BATCH_FORGET count too large", func() (uint64, []byte) {
			return msg(abi.OpBatchForget, fusetest.Arg(abi.BatchForgetIn{Count: 1 << 30}),
				fusetest.Arg(abi.ForgetOne{NodeID: 77, Nlookup: 3}))
		}, noReply},
		{"NOTIFY_REPLY truncated", func() (uint64, []byte) { return msg(abi.OpNotifyReply, []byte{1, 2}) }, noReply},
		{"NOTIFY_REPLY for no retrieve", func() (uint64, []byte) {
			return msg(abi.OpNotifyReply, fusetest.Arg(abi.NotifyRetrieveIn{Size: 4}), []byte("data"))
		}, noReply},
		{"INTERRUPT truncated", func() (uint64, []byte) {
			u := k.NextUnique() | abi.UniqueIntBit
			_, m := k.Message(fusetest.Req{Op: abi.OpInterrupt, Unique: u, Args: [][]byte{{1, 2, 3}}})
			return u, m
		}, anyReply}, // the kernel ignores INTERRUPT replies other than EAGAIN and ENOSYS
	} {
		t.Run(c.name, func(t *testing.T) {
			called.Store(0)
			u, m := c.build()
			k.SendRaw(m)
			switch {
			case c.want == anyReply:
			case c.want == noReply:
				k.ExpectNoReply(u, 20*time.Millisecond)
			default:
				if r := k.Reply(u); r.Errno != c.want {
					t.Errorf("answered %v, want %v", r.Errno, c.want)
				}
			}
			if _, errno := k.Getattr(abi.RootID); errno != 0 {
				t.Fatalf("server stopped serving: GETATTR %v", errno)
			}
			if called.Load() != 0 {
				t.Errorf("the file system was called for a malformed request")
			}
		})
	}
	// The count of BATCH_FORGET is bounded by the message: the one item
	// present was forgotten, nothing beyond it was read.
	if got := fs.forgotten(); len(got) != 1 || got[0] != (abi.ForgetOne{NodeID: 77, Nlookup: 3}) {
		t.Errorf("forgotten %v, want node 77 once", got)
	}
	select {
	case <-k.ServeDone():
		t.Fatalf("Serve returned: %v", k.ServeErr())
	default:
	}
}
