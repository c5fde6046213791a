package harness

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Environment variables the harness reads or sets.
const (
	// EnvBin names a prebuilt fusegate binary to test instead of building
	// one: a path, or a name looked up in PATH.
	EnvBin = "FUSEGATE_BIN"
	// EnvRequire lists features whose absence fails a test instead of
	// skipping it: comma-separated names, or "all".
	EnvRequire = "FUSEGATE_REQUIRE"

	// envDir is set by Main to the directory holding the binaries; children
	// inherit it, which is harmless.
	envDir = "FUSEGATE_HARNESS_DIR"
	// envHelper marks a child started by Caller: the test binary then runs
	// one file operation instead of the tests.
	envHelper = "FUSEGATE_HARNESS_HELPER"
	// envVMPayload is where tests/vm/vmrun puts FUSEGATE_VM_PAYLOAD's files
	// inside a guest.
	envVMPayload = "FUSEGATE_VM_PAYLOAD_DIR"
)

// Names of the files in the harness directory.
const (
	binName    = "fusegate"
	helperName = "harness-helper"
)

// Main is the TestMain of an integration test package. In a helper child
// started by Caller it performs that one operation and exits. Otherwise it
// provides the fusegate binary (see the package doc), runs the tests,
// removes what it made and exits with the tests' status. A binary that
// cannot be provided fails the whole package with the reason.
func Main(m *testing.M) {
	if os.Getenv(envHelper) != "" {
		os.Exit(runHelper(os.Args[1:]))
	}
	os.Exit(mainRun(m))
}

func mainRun(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse() // for testing.Verbose
	}
	dir, err := os.MkdirTemp("", "fusegate-harness-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Daemons and helpers may run as other users: they must reach the files.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		return 1
	}
	start := time.Now()
	how, err := provideBinary(filepath.Join(dir, binName))
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: cannot provide the fusegate binary: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err == nil {
		err = copyFile(filepath.Join(dir, helperName), self)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: cannot place the helper binary: %v\n", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "harness: fusegate binary %s in %.1fs\n", how, time.Since(start).Seconds())
	}
	os.Setenv(envDir, dir)
	return m.Run()
}

// provideBinary puts the fusegate binary at dst and says where it came from.
func provideBinary(dst string) (string, error) {
	if name := os.Getenv(EnvBin); name != "" {
		src, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBin, name, err)
		}
		return "from " + EnvBin + "=" + src, copyFile(dst, src)
	}
	if pay := os.Getenv(envVMPayload); pay != "" {
		src := filepath.Join(pay, binName)
		if _, err := os.Stat(src); err != nil {
			return "", fmt.Errorf("inside the qemu guest there is no Go toolchain; bring the binary along with FUSEGATE_VM_PAYLOAD=<static fusegate> or set %s: %w", EnvBin, err)
		}
		return "from the VM payload", copyFile(dst, src)
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no go command to build it (set %s to a prebuilt binary): %w", EnvBin, err)
	}
	args := []string{"build", "-o", dst}
	how := "built"
	if raceEnabled {
		args = append(args, "-race")
		how = "built with -race"
	}
	args = append(args, "github.com/fusegate/fusegate/cmd/fusegate")
	cmd := exec.Command(goCmd, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return how, nil
}

// copyFile copies src to a new executable file dst.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// harnessDir returns the directory Main made, failing t when Main did not run.
func harnessDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(envDir)
	if dir == "" {
		t.Fatal("harness: call harness.Main(m) from this package's TestMain")
	}
	return dir
}

// Bin returns the path of the fusegate binary under test. Any uid may run it.
func Bin(t testing.TB) string {
	t.Helper()
	return filepath.Join(harnessDir(t), binName)
}
