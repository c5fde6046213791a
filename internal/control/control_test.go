package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A child process of the test binary acts as an unprivileged client.
func TestMain(m *testing.M) {
	if spec := os.Getenv("CONTROL_TEST_CLIENT"); spec != "" {
		path, method, _ := strings.Cut(spec, ",")
		res, err := Call(context.Background(), path, method, nil)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(string(res))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func start(t *testing.T, opts Options) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fusegate-control-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // reachable by the unprivileged client
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "ctl.sock")
	l, err := Listen(path, 0o666, nil)
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]Method{
		"status": {Handler: func(ctx context.Context, p Peer, params json.RawMessage) (any, error) {
			return map[string]any{"uid": p.UID, "admin": p.Admin}, nil
		}},
		"reload": {Admin: true, Handler: func(context.Context, Peer, json.RawMessage) (any, error) {
			return "reloaded", nil
		}},
		"fail":  {Handler: func(context.Context, Peer, json.RawMessage) (any, error) { return nil, errors.New("it failed") }},
		"panic": {Handler: func(context.Context, Peer, json.RawMessage) (any, error) { panic("boom") }},
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := NewServer(methods, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return path
}

func TestCalls(t *testing.T) {
	path := start(t, Options{})
	ctx := context.Background()
	res, err := Call(ctx, path, "status", nil)
	if err != nil || string(res) != `{"admin":true,"uid":0}` {
		t.Fatalf("status: %s %v", res, err)
	}
	if res, err := Call(ctx, path, "reload", nil); err != nil || string(res) != `"reloaded"` {
		t.Fatalf("reload as root: %s %v", res, err)
	}
	if _, err := Call(ctx, path, "fail", nil); err == nil || err.Error() != "it failed" {
		t.Errorf("fail: %v", err)
	}
	if _, err := Call(ctx, path, "panic", nil); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("panic: %v", err)
	}
	if _, err := Call(ctx, path, "nope", nil); err == nil || !strings.Contains(err.Error(), `unknown method "nope" (have fail, panic, reload, status)`) {
		t.Errorf("unknown: %v", err)
	}
	// The server survived all that.
	if _, err := Call(ctx, path, "status", nil); err != nil {
		t.Fatal(err)
	}
}

func TestMalformed(t *testing.T) {
	path := start(t, Options{IdleTimeout: 300 * time.Millisecond})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, c2 := range []struct{ send, want string }{
		{"not json\n", "malformed request"},
		{`{"method":"status","extra":1}` + "\n", "malformed request"},
		{`{"method":5}` + "\n", "malformed request"},
		{`{"method":"status"}` + "\n", `"ok":true`},
	} {
		c.Write([]byte(c2.send))
		line, err := r.ReadString('\n')
		if err != nil || !strings.Contains(line, c2.want) {
			t.Errorf("%q -> %q %v", c2.send, line, err)
		}
	}
	// An overlong line is refused and the connection closed.
	c.Write([]byte(strings.Repeat("x", MaxLine+10) + "\n"))
	if line, _ := r.ReadString('\n'); !strings.Contains(line, "longer than") {
		t.Errorf("long line answered %q", line)
	}
	// An idle client is cut off.
	c2, _ := net.Dial("unix", path)
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("idle connection not closed by the server: %v", err)
	}
}

// clientBinary copies the test binary where an unprivileged user may run it
// (go test builds it in a root-only directory).
func clientBinary(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "fusegate-control-bin-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "client")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func runClient(t *testing.T, bin, path, method string, uid, gid uint32, groups ...uint32) (string, error) {
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "CONTROL_TEST_CLIENT="+path+","+method)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestAuthorisation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as other users")
	}
	admin := uint32(4242)
	path := start(t, Options{AdminGID: &admin})
	bin := clientBinary(t)
	if out, err := runClient(t, bin, path, "status", 65534, 65534); err != nil || out != `{"admin":false,"uid":65534}` {
		t.Errorf("read-only call by nobody: %q %v", out, err)
	}
	if out, err := runClient(t, bin, path, "reload", 65534, 65534); err == nil || !strings.Contains(out, "reload needs root or the admin group (you are uid 65534)") {
		t.Errorf("reload by nobody: %q %v", out, err)
	}
	if out, err := runClient(t, bin, path, "reload", 65534, 4242); err != nil || out != `"reloaded"` {
		t.Errorf("reload by primary admin group: %q %v", out, err)
	}
	if out, err := runClient(t, bin, path, "reload", 65534, 65534, 100, 4242); err != nil || out != `"reloaded"` {
		t.Errorf("reload by supplementary admin group: %q %v", out, err)
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "ctl.sock")
	l, err := Listen(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if _, err := Listen(path, 0o600, nil); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Errorf("second Listen: %v", err)
	}
	l.Close()
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	if _, err := Listen(filepath.Join(dir, "file"), 0o600, nil); err == nil {
		t.Error("Listen over a regular file")
	}
	if _, err := Call(context.Background(), filepath.Join(dir, "none.sock"), "status", nil); err == nil || !strings.Contains(err.Error(), "is fusegate serve running?") {
		t.Errorf("Call without server: %v", err)
	}
}
