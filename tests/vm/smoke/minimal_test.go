package smoke

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fusegate/fusegate/tests/vm/vmenv"
)

// release returns the running kernel's release, e.g. "6.1.0-56-amd64".
func release(t *testing.T) string {
	t.Helper()
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// openCharDev checks that path is a character device and opens it read-write.
func openCharDev(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("%s is %v, want a character device", path, fi.Mode())
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open %s O_RDWR: %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", path, err)
	}
}

func TestMinimalKernel(t *testing.T) {
	vmenv.Require(t, vmenv.Minimal)
	if r := release(t); !strings.HasPrefix(r, "6.1.") {
		t.Fatalf("kernel release %q, want Debian 12's 6.1.x", r)
	}
	if got, want := os.Getenv("FUSEGATE_VM_KERNEL"), release(t); got != want {
		t.Errorf("FUSEGATE_VM_KERNEL = %q, want %q", got, want)
	}
}

func TestMinimalCUSE(t *testing.T) {
	vmenv.Require(t, vmenv.Minimal)
	if _, err := os.Stat("/sys/module/cuse"); err != nil {
		t.Fatalf("cuse module not loaded: %v", err)
	}
	openCharDev(t, "/dev/cuse")
}

func TestMinimalFUSE(t *testing.T) {
	vmenv.Require(t, vmenv.Minimal)
	openCharDev(t, "/dev/fuse")
}

func TestMinimalEnvironment(t *testing.T) {
	vmenv.Require(t, vmenv.Minimal)
	checkEnvironment(t)
}

// checkEnvironment checks what tests/vm/README.md promises to every test binary.
func checkEnvironment(t *testing.T) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if got := vmenv.Payload(filepath.Base(exe)); got != exe {
		t.Errorf("vmenv.Payload(%q) = %q, want the running test binary %q", filepath.Base(exe), got, exe)
	}
	if got := vmenv.Payload("no-such-file"); got != "" {
		t.Errorf(`vmenv.Payload("no-such-file") = %q, want ""`, got)
	}
	if !strings.HasPrefix(os.Getenv("PATH"), "/payload:") {
		t.Errorf("PATH = %q, want /payload first", os.Getenv("PATH"))
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wd, "scratch"), []byte("x"), 0o644); err != nil {
		t.Errorf("working directory %s is not writable: %v", wd, err)
	}
	if err := os.WriteFile(filepath.Join(t.TempDir(), "scratch"), []byte("x"), 0o644); err != nil {
		t.Errorf("t.TempDir is not writable: %v", err)
	}
	b, err := os.ReadFile("testdata/hello.txt")
	if err != nil || !strings.HasPrefix(string(b), "payload of the smoke tests") {
		t.Errorf("testdata/hello.txt in the working directory: %q, %v", b, err)
	}
	if os.Getenv("FUSEGATE_VM_HOST_PWD") == "" {
		t.Error("FUSEGATE_VM_HOST_PWD is not set")
	}
}
