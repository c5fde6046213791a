package fusedev_test

import (
	"bytes"
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

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestNotifyWire checks the bytes of every notification.
func TestNotifyWire(t *testing.T) {
	k := startInit(t, &hookFS{}, fusedev.Options{})
	s := k.Server()
	for _, c := range []struct {
		name string
		send func() error
		code abi.NotifyCode
		want []byte
	}{
		{"poll", func() error { return s.NotifyPoll(0xabcdef) }, abi.NotifyPoll,
			fusetest.Arg(abi.NotifyPollWakeupOut{Kh: 0xabcdef})},
		{"inval_inode", func() error { return s.NotifyInvalInode(5, 4096, -1) }, abi.NotifyInvalInode,
			fusetest.Arg(abi.NotifyInvalInodeOut{Ino: 5, Off: 4096, Len: -1})},
		{"inval_entry", func() error { return s.NotifyInvalEntry(1, "name", fusedev.InvalEntryOptions{}) }, abi.NotifyInvalEntry,
			cat(fusetest.Arg(abi.NotifyInvalEntryOut{Parent: 1, Namelen: 4}), []byte("name\x00"))},
		{"inval_entry expire-only", func() error {
			return s.NotifyInvalEntry(9, "e", fusedev.InvalEntryOptions{ExpireOnly: true})
		}, abi.NotifyInvalEntry,
			cat(fusetest.Arg(abi.NotifyInvalEntryOut{Parent: 9, Namelen: 1, Flags: abi.ExpireOnly}), []byte("e\x00"))},
		{"delete", func() error { return s.NotifyDelete(1, 42, "gone") }, abi.NotifyDelete,
			cat(fusetest.Arg(abi.NotifyDeleteOut{Parent: 1, Child: 42, Namelen: 4}), []byte("gone\x00"))},
		{"store", func() error { return s.NotifyStore(7, 8192, []byte("cached")) }, abi.NotifyStore,
			cat(fusetest.Arg(abi.NotifyStoreOut{NodeID: 7, Offset: 8192, Size: 6}), []byte("cached"))},
		{"resend", s.NotifyResend, abi.NotifyResend, nil},
		{"inc_epoch", s.NotifyIncEpoch, abi.NotifyIncEpoch, nil},
		{"prune", func() error { return s.NotifyPrune([]uint64{3, 1 << 40}) }, abi.NotifyPrune,
			cat(fusetest.Arg(abi.NotifyPruneOut{Count: 2}), []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.send(); err != nil {
				t.Fatalf("send: %v", err)
			}
			n := k.ExpectNotification(c.code)
			if !bytes.Equal(n.Payload, c.want) {
				t.Errorf("payload\n got %x\nwant %x", n.Payload, c.want)
			}
			var h abi.OutHeader
			abi.Decode(n.Raw, &h)
			if h.Unique != 0 || h.Error != int32(c.code) || int(h.Len) != len(n.Raw) {
				t.Errorf("header %+v", h)
			}
		})
	}
	if err := s.NotifyPrune(nil); err != nil {
		t.Errorf("NotifyPrune(nil): %v", err)
	}
	for _, name := range []string{"", strings.Repeat("n", abi.NameMax+1)} {
		if err := s.NotifyInvalEntry(1, name, fusedev.InvalEntryOptions{}); err != syscall.EINVAL {
			t.Errorf("NotifyInvalEntry(%d-byte name): %v, want EINVAL", len(name), err)
		}
		if err := s.NotifyDelete(1, 2, name); err != syscall.EINVAL {
			t.Errorf("NotifyDelete(%d-byte name): %v, want EINVAL", len(name), err)
		}
	}
	k.ExpectQuiet(10 * time.Millisecond)
}

// NotifyRetrieve sends RETRIEVE and returns the data of the kernel's
// NOTIFY_REPLY, which gets no reply itself.
func TestNotifyRetrieve(t *testing.T) {
	k := startInit(t, &hookFS{}, fusedev.Options{})
	s := k.Server()
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := s.NotifyRetrieve(context.Background(), 7, 4096, 10)
		done <- result{data, err}
	}()
	n := k.ExpectNotification(abi.NotifyRetrieve)
	out, err := fusetest.Decode[abi.NotifyRetrieveOut](fusetest.Reply{Payload: n.Payload})
	if err != nil {
		t.Fatal(err)
	}
	if out.NodeID != 7 || out.Offset != 4096 || out.Size != 10 || out.NotifyUnique == 0 {
		t.Fatalf("retrieve %+v", out)
	}
	k.NotifyReply(out.NotifyUnique, 7, 4096, []byte("0123456789"))
	select {
	case r := <-done:
		if r.err != nil || string(r.data) != "0123456789" {
			t.Errorf("NotifyRetrieve = %q, %v", r.data, r.err)
		}
	case <-time.After(k.Timeout()):
		t.Fatal("NotifyRetrieve did not return")
	}
	k.ExpectNoReply(out.NotifyUnique, 10*time.Millisecond)

	// A retrieve nobody answers ends with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	go func() {
		_, err := s.NotifyRetrieve(ctx, 7, 0, 1)
		done <- result{nil, err}
	}()
	k.ExpectNotification(abi.NotifyRetrieve)
	if r := <-done; !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("unanswered retrieve: %v", r.err)
	}
}

// Each notification needs the protocol minor that introduced it.
func TestNotifyMinor(t *testing.T) {
	all := []struct {
		code abi.NotifyCode
		send func(s *fusedev.Server) error
	}{
		{abi.NotifyPoll, func(s *fusedev.Server) error { return s.NotifyPoll(1) }},
		{abi.NotifyInvalInode, func(s *fusedev.Server) error { return s.NotifyInvalInode(1, 0, 0) }},
		{abi.NotifyInvalEntry, func(s *fusedev.Server) error {
			return s.NotifyInvalEntry(1, "x", fusedev.InvalEntryOptions{})
		}},
		{abi.NotifyStore, func(s *fusedev.Server) error { return s.NotifyStore(1, 0, []byte{1}) }},
		{abi.NotifyRetrieve, func(s *fusedev.Server) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // written, then given up at once
			_, err := s.NotifyRetrieve(ctx, 1, 0, 1)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}},
		{abi.NotifyDelete, func(s *fusedev.Server) error { return s.NotifyDelete(1, 2, "x") }},
		{abi.NotifyResend, (*fusedev.Server).NotifyResend},
		{abi.NotifyIncEpoch, (*fusedev.Server).NotifyIncEpoch},
		{abi.NotifyPrune, func(s *fusedev.Server) error { return s.NotifyPrune([]uint64{1}) }},
	}
	for _, minor := range []uint32{12, 14, 15, 17, 18, 39, 40, 43, 44, 45} {
		k := fusetest.Start(t, &hookFS{}, fusedev.Options{})
		if r := k.Init(7, minor, abi.InitKnown); r.Errno != 0 {
			t.Fatalf("INIT 7.%d: %v", minor, r.Errno)
		}
		for _, c := range all {
			err := c.send(k.Server())
			if minor < c.code.MinMinor() {
				if err != syscall.ENOSYS {
					t.Errorf("7.%d: %v answered %v, want ENOSYS", minor, c.code, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("7.%d: %v: %v", minor, c.code, err)
				continue
			}
			if n, err := k.WaitNotification(k.Timeout()); err != nil || n.Code != c.code {
				t.Errorf("7.%d: %v: got %v, %v", minor, c.code, n.Code, err)
			}
		}
		k.ExpectQuiet(time.Millisecond)
	}
	// Expire-only needs the kernel to offer it.
	k := fusetest.Start(t, &hookFS{}, fusedev.Options{})
	k.Init(7, 45, abi.InitKnown&^abi.InitHasExpireOnly)
	if err := k.Server().NotifyInvalEntry(1, "x", fusedev.InvalEntryOptions{ExpireOnly: true}); err != syscall.ENOSYS {
		t.Errorf("expire-only without HAS_EXPIRE_ONLY: %v, want ENOSYS", err)
	}
	// Nothing before INIT.
	k2 := fusetest.Start(t, &hookFS{}, fusedev.Options{})
	if err := k2.Server().NotifyInvalInode(1, 0, 0); !errors.Is(err, fusedev.ErrNotReady) {
		t.Errorf("notification before INIT: %v, want ErrNotReady", err)
	}
}
