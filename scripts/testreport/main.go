// Command testreport reads `go test -json` on stdin and prints what a
// person (and CI) needs: go test's own result line for every package ("ok",
// "FAIL", "?"), the whole output of every failed test and failed package,
// the skipped tests with their reasons, and a closing count line
//
//	LABEL: N passed, N failed, N skipped
//
// It exits 1 if any test or package failed. Lines that are not JSON (go
// command errors) pass through unchanged. Tests are counted at every level:
// a subtest counts, and so does its parent. It only reads and prints.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of test2json output.
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output and build-fail events
	Test       string
	Output     string
}

type key struct{ pkg, test string }

type report struct {
	out                     io.Writer
	output                  map[key][]string // buffered output per test; test "" is the package
	passed, failed, skipped int
	failedPkgs              int
	testsFailed             map[string]int // failed tests per package
	skips                   []string       // "pkg Test: reason"
}

func newReport(out io.Writer) *report {
	return &report{out: out, output: map[key][]string{}, testsFailed: map[string]int{}}
}

// isResultLine reports whether a package-level output line is go test's
// own result line for the package.
func isResultLine(s string) bool {
	for _, p := range []string{"ok  \t", "FAIL\t", "?   \t", "ok \t"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func (r *report) handle(e event) {
	k := key{e.Package, e.Test}
	switch e.Action {
	case "build-output":
		fmt.Fprint(r.out, e.Output)
	case "output":
		if e.Test == "" && isResultLine(e.Output) {
			fmt.Fprint(r.out, e.Output)
			return
		}
		r.output[k] = append(r.output[k], e.Output)
	case "pass":
		if e.Test != "" {
			r.passed++
		}
		delete(r.output, k)
	case "skip":
		if e.Test != "" {
			r.skipped++
			r.skips = append(r.skips, e.Package+" "+e.Test+": "+skipReason(r.output[k]))
		}
		delete(r.output, k)
	case "fail":
		if e.Test != "" {
			r.failed++
			r.testsFailed[e.Package]++
			fmt.Fprint(r.out, strings.Join(r.output[k], ""))
			delete(r.output, k)
			return
		}
		r.failedPkgs++
		// Output of tests that never finished (a panic, a timeout) and of
		// the package itself (TestMain, the test binary's own messages).
		var unfinished []key
		for k2 := range r.output {
			if k2.pkg == e.Package && k2.test != "" {
				unfinished = append(unfinished, k2)
			}
		}
		sort.Slice(unfinished, func(i, j int) bool { return unfinished[i].test < unfinished[j].test })
		for _, k2 := range unfinished {
			fmt.Fprint(r.out, strings.Join(r.output[k2], ""))
			delete(r.output, k2)
		}
		fmt.Fprint(r.out, strings.Join(r.output[k], ""))
		delete(r.output, k)
		if r.testsFailed[e.Package] == 0 {
			r.failed++ // a package failing outside any test still fails the count
		}
	}
}

// skipReason returns the message a skipped test logged, without go test's
// framing lines.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		msg = append(msg, t)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return strings.Join(msg, " ")
}

func main() {
	label := flag.String("label", "tests", "word before the closing count line")
	countsFile := flag.String("counts", "", "also write \"PASSED FAILED SKIPPED\" to this file")
	flag.Parse()

	r := newReport(os.Stdout)
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadString('\n')
		if len(line) > 0 {
			var e event
			if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &e) == nil && e.Action != "" {
				if e.Package == "" {
					e.Package = e.ImportPath
				}
				r.handle(e)
			} else {
				fmt.Print(line)
			}
		}
		if err != nil {
			break
		}
	}
	if len(r.skips) > 0 {
		fmt.Printf("\nSkipped (%d):\n", len(r.skips))
		for _, s := range r.skips {
			fmt.Printf("  %s\n", s)
		}
	}
	fmt.Printf("\n%s: %d passed, %d failed, %d skipped\n", *label, r.passed, r.failed, r.skipped)
	if *countsFile != "" {
		if err := os.WriteFile(*countsFile, fmt.Appendf(nil, "%d %d %d\n", r.passed, r.failed, r.skipped), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(1)
		}
	}
	if r.failed > 0 || r.failedPkgs > 0 {
		os.Exit(1)
	}
}
