package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	var out bytes.Buffer
	r := newReport(&out)
	for _, e := range []event{
		{Action: "start", Package: "p"},
		{Action: "run", Package: "p", Test: "TestA"},
		{Action: "output", Package: "p", Test: "TestA", Output: "=== RUN   TestA\n"},
		{Action: "output", Package: "p", Test: "TestA", Output: "--- PASS: TestA (0.00s)\n"},
		{Action: "pass", Package: "p", Test: "TestA"},
		{Action: "output", Package: "p", Test: "TestB", Output: "    b_test.go:3: skipped: needs root: uid 1000\n"},
		{Action: "skip", Package: "p", Test: "TestB"},
		{Action: "output", Package: "p", Test: "TestC", Output: "    c_test.go:9: boom\n"},
		{Action: "fail", Package: "p", Test: "TestC"},
		{Action: "output", Package: "p", Output: "FAIL\n"},
		{Action: "output", Package: "p", Output: "FAIL\tp\t0.1s\n"},
		{Action: "fail", Package: "p"},
		{Action: "output", Package: "q", Test: "TestHang", Output: "panic: test timed out after 1s\n"},
		{Action: "output", Package: "q", Output: "FAIL\tq\t1.0s\n"},
		{Action: "fail", Package: "q"},
		{Action: "output", Package: "r", Output: "ok  \tr\t0.2s\n"},
		{Action: "pass", Package: "r"},
	} {
		r.handle(e)
	}
	got := out.String()
	for _, want := range []string{"c_test.go:9: boom", "FAIL\tp\t0.1s", "panic: test timed out", "FAIL\tq\t1.0s", "ok  \tr\t0.2s"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "=== RUN   TestA") {
		t.Errorf("output of a passed test was printed:\n%s", got)
	}
	if r.passed != 1 || r.failed != 2 || r.skipped != 1 || r.failedPkgs != 2 {
		t.Errorf("counts passed=%d failed=%d skipped=%d failedPkgs=%d; want 1 2 1 2", r.passed, r.failed, r.skipped, r.failedPkgs)
	}
	if len(r.skips) != 1 || r.skips[0] != "p TestB: b_test.go:3: skipped: needs root: uid 1000" {
		t.Errorf("skips = %q", r.skips)
	}
}
