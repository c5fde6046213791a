package policy

import (
	"context"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestAuditRateLimit(t *testing.T) {
	logger, hook := test.NewNullLogger()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	var names int
	e := testEngine(t, testPolicy, Options{
		Logger:        logger,
		Now:           clock.Now,
		AuditInterval: 10 * time.Second,
		ProcessName:   func(pid uint32) string { names++; return "evil-app" },
	})
	ctx := context.Background()
	deny := func(uid uint32, path string) Decision {
		c := Caller{UID: uid, GID: uid, PID: 77}
		obj := file(path, uidCamera)
		d := e.Decide(ctx, c, OpRead, obj)
		if d.Allowed {
			t.Fatalf("expected a denial for %d %s", uid, path)
		}
		e.Audit(c, OpRead, obj, d)
		return d
	}

	// A burst from one uid on one rule logs once.
	for i := 0; i < 5; i++ {
		deny(uidGallery, "Android/data/com.cam/a")
	}
	if n := len(hook.AllEntries()); n != 1 {
		t.Fatalf("burst logged %d lines, want 1", n)
	}
	if names != 1 {
		t.Errorf("process name read %d times, want 1 (only for logged lines)", names)
	}
	first := hook.LastEntry()
	for k, want := range map[string]any{
		"uid": uint32(uidGallery), "pid": uint32(77), "comm": "evil-app", "op": "read",
		"path": "Android/data/com.cam/a", "rule": "rule[2] app-data", "errno": "ENOENT",
	} {
		if got := first.Data[k]; got != want {
			t.Errorf("field %s = %v (%T), want %v", k, got, got, want)
		}
	}
	if first.Level != logrus.WarnLevel {
		t.Errorf("level %v", first.Level)
	}
	if _, ok := first.Data["suppressed"]; ok {
		t.Error("first line must not report suppressed denials")
	}

	// Another uid, or another rule, has its own budget.
	deny(uidSuite, "Android/data/com.cam/a")
	deny(uidGallery, "Android/obb/com.cam/a")
	if n := len(hook.AllEntries()); n != 3 {
		t.Fatalf("logged %d lines, want 3", n)
	}

	// Within the interval: still suppressed; after it: logged with the count.
	clock.Advance(9 * time.Second)
	deny(uidGallery, "Android/data/com.cam/b")
	if n := len(hook.AllEntries()); n != 3 {
		t.Fatalf("logged %d lines before the interval passed, want 3", n)
	}
	clock.Advance(time.Second)
	deny(uidGallery, "Android/data/com.cam/c")
	if n := len(hook.AllEntries()); n != 4 {
		t.Fatalf("logged %d lines after the interval, want 4", n)
	}
	if got := hook.LastEntry().Data["suppressed"]; got != uint64(5) {
		t.Errorf("suppressed = %v, want 5", got)
	}

	// Counters: every denial is counted, logged or not.
	for _, s := range e.Stats() {
		switch s.Rule {
		case "rule[2] app-data":
			if s.Decisions != 8 || s.Denials != 8 || s.Logged != 3 || s.Suppressed != 5 {
				t.Errorf("app-data stats %+v, want 8 decisions, 8 denials, 3 logged, 5 suppressed", s)
			}
		case "rule[3] app-obb":
			if s.Logged != 1 || s.Suppressed != 0 {
				t.Errorf("app-obb stats %+v", s)
			}
		}
	}

	// Allowed decisions are not audited.
	d := e.Decide(ctx, caller(uidCamera), OpRead, file("Android/data/com.cam/a", uidCamera))
	e.Audit(caller(uidCamera), OpRead, file("Android/data/com.cam/a", uidCamera), d)
	if n := len(hook.AllEntries()); n != 4 {
		t.Errorf("an allowed decision was logged")
	}

	// A decision of an older policy is counted as "unknown".
	e.Audit(caller(uidCamera), OpRead, file("x", 0), Decision{Rule: "rule[99] gone"})
	if st := e.Stats(); st[len(st)-1].Rule != "unknown" || st[len(st)-1].Logged != 1 {
		t.Errorf("unknown-rule audit not counted: %+v", st[len(st)-1])
	}
}

func TestAuditNoRateLimit(t *testing.T) {
	logger, hook := test.NewNullLogger()
	e := testEngine(t, testPolicy, Options{Logger: logger, AuditInterval: -1, ProcessName: func(uint32) string { return "" }})
	for i := 0; i < 3; i++ {
		e.Audit(caller(uidGallery), OpRead, file("a", 0), Decision{Rule: "default"})
	}
	if n := len(hook.AllEntries()); n != 3 {
		t.Errorf("negative interval logged %d lines, want 3", n)
	}
}

func TestAuditBoundedMemory(t *testing.T) {
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	clock := &fakeClock{t: time.Unix(0, 0)}
	e := testEngine(t, testPolicy, Options{Logger: logger, Now: clock.Now, ProcessName: func(uint32) string { return "" }})
	for uid := uint32(10000); uid < 10000+3*maxAuditKeys; uid++ {
		e.Audit(caller(uid), OpRead, file("a", 0), Decision{Rule: "default"})
	}
	e.mu.Lock()
	n := len(e.audit)
	e.mu.Unlock()
	if n > maxAuditKeys {
		t.Errorf("rate limiter holds %d keys, limit %d", n, maxAuditKeys)
	}
}

func TestProcessName(t *testing.T) {
	if _, err := os.Stat("/proc/self/comm"); err != nil {
		t.Skip("no /proc on this machine")
	}
	if got := processName(uint32(os.Getpid())); got == "" {
		t.Error("processName of this process is empty")
	}
	if got := processName(1 << 31); got != "" {
		t.Errorf("processName of a missing pid = %q", got)
	}
}
