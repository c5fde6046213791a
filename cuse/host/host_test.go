package host

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/fusegate/fusegate/cuse"
)

func TestSpecCheck(t *testing.T) {
	good := []Spec{
		{Name: "loop0", Kind: KindLoopback},
		{Name: "loop0", Kind: KindLoopback, Capacity: 1 << 20, Mode: 0o660, MaxRead: 4096},
		{Name: "gps/0", Kind: KindSocket, Socket: "/run/gps.sock", Buffer: 8192},
	}
	for _, s := range good {
		if err := s.Check(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	bad := []Spec{
		{Kind: KindLoopback},
		{Name: "x"},
		{Name: "x", Kind: "tty"},
		{Name: "x", Kind: KindSocket},
		{Name: "x", Kind: KindLoopback, Socket: "/s"},
		{Name: "x", Kind: KindSocket, Socket: "/s", Capacity: 4},
		{Name: "x", Kind: KindLoopback, Capacity: -1},
		{Name: "x", Kind: KindLoopback, Mode: 0o4777},
		{Name: "x", Kind: KindLoopback, MaxWrite: 100},
		{Name: "../x", Kind: KindLoopback},
	}
	for _, s := range bad {
		if err := s.Check(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}

func TestParseOwnerMode(t *testing.T) {
	u, g, err := ParseOwner("1000:100")
	if err != nil || *u != 1000 || *g != 100 {
		t.Fatalf("1000:100 = %v %v %v", u, g, err)
	}
	u, g, err = ParseOwner(":5")
	if err != nil || u != nil || *g != 5 {
		t.Fatalf(":5 = %v %v %v", u, g, err)
	}
	u, g, err = ParseOwner("7")
	if err != nil || *u != 7 || g != nil {
		t.Fatalf("7 = %v %v %v", u, g, err)
	}
	for _, bad := range []string{"", ":", "root", "1:wheel", "-1"} {
		if _, _, err := ParseOwner(bad); err == nil {
			t.Errorf("ParseOwner(%q) accepted", bad)
		}
	}
	if m, err := ParseMode("0660"); err != nil || m != 0o660 {
		t.Fatalf("0660 = %v %v", m, err)
	}
	for _, bad := range []string{"", "rw", "1777", "9"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) accepted", bad)
		}
	}
}

func TestStartReportsMissingCuse(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Spec{Name: "loop0", Kind: KindLoopback},
		Options{CuseDev: filepath.Join(dir, "cuse"), DevDir: dir, SysDir: dir})
	if !errors.Is(err, cuse.ErrNoCuse) {
		t.Fatalf("Start: %v, want ErrNoCuse", err)
	}
	if _, err := Start(context.Background(), Spec{Name: "x", Kind: "nope"}, Options{}); err == nil {
		t.Fatal("Start of an unknown kind succeeded")
	}
}
