package cuse

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestStartNoCuse(t *testing.T) {
	dir := t.TempDir()
	s, err := New(plainDev{}, Options{Name: "nocuse", CuseDev: filepath.Join(dir, "cuse"), DevDir: dir, SysDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background())
	if !errors.Is(err, ErrNoCuse) {
		t.Fatalf("Start without a CUSE node: %v, want ErrNoCuse", err)
	}
	t.Logf("the error names the cause: %v", err)
	select {
	case <-s.Done():
	default:
		t.Fatal("a failed Start left the Server running")
	}
	if s.Err() == nil {
		t.Fatal("Err is nil after a failed Start")
	}
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("a second Start succeeded")
	}
}

func TestStartNameTaken(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "taken"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := New(plainDev{}, Options{Name: "taken", DevDir: dir, SysDir: dir, CuseDev: filepath.Join(dir, "cuse")})
	if err := s.Start(context.Background()); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("Start with /dev/NAME present: %v, want ErrNameTaken", err)
	}
	// Another CUSE device registered under the name (sysfs, "/" as "!").
	if err := os.MkdirAll(filepath.Join(dir, "class", "cuse", "sub!dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, _ = New(plainDev{}, Options{Name: "sub/dev", DevDir: dir, SysDir: dir, CuseDev: filepath.Join(dir, "cuse")})
	if err := s.Start(context.Background()); !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), "another CUSE device") {
		t.Fatalf("Start with the sysfs entry present: %v, want ErrNameTaken", err)
	}
}

func TestExplainOpen(t *testing.T) {
	s, _ := New(plainDev{}, Options{Name: "x", CuseDev: "/nonexistent/cuse"})
	if err := s.explainOpen(&fs.PathError{Op: "open", Path: "/dev/cuse", Err: syscall.EACCES}); !errors.Is(err, ErrPermission) {
		t.Fatalf("EACCES: %v", err)
	}
	if err := s.explainOpen(&fs.PathError{Op: "open", Path: "/dev/cuse", Err: syscall.ENODEV}); !errors.Is(err, ErrNoCuse) || !strings.Contains(err.Error(), "modprobe cuse") {
		t.Fatalf("ENODEV: %v", err)
	}
	if err := s.explainOpen(&fs.PathError{Op: "open", Path: "/dev/cuse", Err: syscall.EMFILE}); errors.Is(err, ErrNoCuse) || !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("EMFILE: %v", err)
	}
	// With the module's sysfs directory present, the node is what is missing.
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "module", "cuse"), 0o755)
	if msg := diagnoseMissing("/dev/cuse", dir); !strings.Contains(msg, "mknod /dev/cuse c 10 203") {
		t.Fatalf("module loaded, node missing: %q", msg)
	}
}

func TestParseDevNum(t *testing.T) {
	if a, b, ok := parseDevNum("246:3\n"); !ok || a != 246 || b != 3 {
		t.Fatalf("parseDevNum = %d %d %v", a, b, ok)
	}
	for _, bad := range []string{"", "246", "a:b", "1:-1"} {
		if _, _, ok := parseDevNum(bad); ok {
			t.Errorf("parseDevNum(%q) ok", bad)
		}
	}
}
