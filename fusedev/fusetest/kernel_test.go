package fusetest_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/fusedev/abi"
	"github.com/fusegate/fusegate/fusedev/fusetest"
)

// recordTB collects what the fake kernel reports at cleanup instead of
// failing the test, so the checks themselves can be tested.
type recordTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recordTB) Logf(string, ...any) {}

// The fake kernel flags what a real kernel would refuse or a caller would
// suffer from, written here straight onto the server's end.
func TestViolationsDetected(t *testing.T) {
	rec := &recordTB{TB: t}
	k := fusetest.Start(rec, fusedev.NotImplemented{}, fusedev.Options{})
	k.Init(7, 45, abi.InitKnown)
	forget := k.Forget(5, 1)
	u := k.Send(abi.OpGetattr, 1, fusetest.Arg(abi.GetattrIn{}))
	if r := k.Reply(u); r.Errno != syscall.ENOSYS {
		t.Fatalf("GETATTR on NotImplemented: %v", r.Errno)
	}
	before := k.Messages()
	write := func(h abi.OutHeader, payload ...byte) {
		if err := k.Conn().Write([][]byte{fusetest.Arg(h), payload}); err != nil {
			t.Fatal(err)
		}
	}
	write(abi.OutHeader{Len: 16, Unique: u})                    // second reply
	write(abi.OutHeader{Len: 16, Unique: 1 << 40})              // never sent
	write(abi.OutHeader{Len: 16, Unique: forget})               // FORGET gets none
	write(abi.OutHeader{Len: 99, Unique: 1 << 41})              // length lies
	write(abi.OutHeader{Len: 16, Error: 0, Unique: 0})          // unique 0, no code
	write(abi.OutHeader{Len: 16, Error: -600, Unique: 1 << 42}) // errno the kernel refuses
	for deadline := time.Now().Add(k.Timeout()); k.Messages() < before+6; {
		if time.Now().After(deadline) {
			t.Fatalf("the fake kernel read %d of 6 messages", k.Messages()-before)
		}
		time.Sleep(time.Millisecond)
	}
	k.Close()
	if err := k.ServeErr(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(k.Violations(), "\n")
	for _, want := range []string{
		fmt.Sprintf("reply #2 to GETATTR unique %d", u),
		fmt.Sprintf("reply to unique %d, which was never sent", uint64(1)<<40),
		fmt.Sprintf("to FORGET unique %d, which gets none", forget),
		"out header says 99 bytes",
		"message with unique 0 and error 0",
		"has error -600",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("violation %q not reported; got:\n%s", want, got)
		}
	}
}

// echoDevice is a CUSE-style device: an ioctl that first asks the kernel for
// the 8 bytes at its argument, then answers with them, and a poll that
// wakes its poller at once.
type echoDevice struct {
	fusedev.NotImplemented
	srv *fusedev.Server
}

func (d *echoDevice) Init(_ context.Context, s *fusedev.Server) error {
	d.srv = s
	return nil
}

func (d *echoDevice) Ioctl(_ context.Context, _ *fusedev.Request, in *abi.IoctlIn, data []byte, out *fusedev.IoctlOut) error {
	if len(data) < 8 {
		out.Retry = true
		out.InIovs = []abi.IoctlIovec{{Base: in.Arg, Len: 8}}
		out.OutIovs = []abi.IoctlIovec{{Base: in.Arg, Len: 8}}
		return nil
	}
	out.Data = data[:8]
	return nil
}

func (d *echoDevice) Poll(_ context.Context, _ *fusedev.Request, in *abi.PollIn, out *abi.PollOut) error {
	if in.Flags&abi.PollScheduleNotify != 0 {
		go d.srv.NotifyPoll(in.Kh)
	}
	return nil
}

// TestCuseSequence shows the API on a CUSE device: CUSE_INIT, an
// unrestricted ioctl that asks for a retry, and a poll wake-up.
func TestCuseSequence(t *testing.T) {
	dev := &echoDevice{}
	k := fusetest.Start(t, dev, fusedev.Options{Cuse: func(*abi.CuseInitIn) (abi.CuseInitOut, []byte, error) {
		return abi.CuseInitOut{Flags: abi.CuseUnrestrictedIoctl}, []byte("DEVNAME=echo\x00"), nil
	}})
	if r := k.CuseInit(7, 45, abi.CuseUnrestrictedIoctl); r.Errno != 0 || string(r.DevInfo) != "DEVNAME=echo\x00" {
		t.Fatalf("CUSE_INIT: %v %q", r.Errno, r.DevInfo)
	}
	in := abi.IoctlIn{Fh: 1, Cmd: 0x80085501, Arg: 0x7ffd0000, Flags: abi.IoctlUnrestricted, OutSize: 8}
	r, errno := k.Ioctl(0, in, nil)
	if errno != 0 || r.Out.Flags&abi.IoctlRetry == 0 || len(r.InIovs) != 1 || r.InIovs[0].Base != 0x7ffd0000 {
		t.Fatalf("first IOCTL: %v %+v", errno, r)
	}
	// The kernel repeats the ioctl with the user memory the device asked for.
	r, errno = k.Ioctl(0, in, []byte("12345678"))
	if errno != 0 || string(r.Data) != "12345678" {
		t.Fatalf("retried IOCTL: %v %+v", errno, r)
	}
	if _, errno := k.Poll(0, abi.PollIn{Fh: 1, Kh: 77, Flags: abi.PollScheduleNotify, Events: 1}); errno != 0 {
		t.Fatalf("POLL: %v", errno)
	}
	n := k.ExpectNotification(abi.NotifyPoll)
	if out, err := fusetest.Decode[abi.NotifyPollWakeupOut](fusetest.Reply{Payload: n.Payload}); err != nil || out.Kh != 77 {
		t.Errorf("poll wake-up %+v %v", out, err)
	}
}
