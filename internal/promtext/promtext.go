// Package promtext writes metrics in the Prometheus text exposition format
// (version 0.0.4) from values the caller has already collected: fusegate's
// counters are snapshots taken at scrape time, so a registry of live metric
// objects would only copy them again. Tests check the output with
// Prometheus's own parser.
//
// It must never emit a family twice or a sample before its family's TYPE.
package promtext

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Type is a metric family type.
type Type string

const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// Labels are a sample's labels. They are written sorted by name.
type Labels map[string]string

// Writer writes one exposition. Errors are sticky: check Err (or the
// result of Flush) once at the end.
type Writer struct {
	w      *bufio.Writer
	err    error
	seen   map[string]Type
	family string
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriter(w), seen: map[string]Type{}}
}

// Family starts a metric family: samples of name follow.
func (w *Writer) Family(name string, typ Type, help string) {
	if w.err != nil {
		return
	}
	if !validName(name) {
		w.err = fmt.Errorf("promtext: invalid metric name %q", name)
		return
	}
	if _, dup := w.seen[name]; dup {
		w.err = fmt.Errorf("promtext: family %q written twice", name)
		return
	}
	w.seen[name] = typ
	w.family = name
	fmt.Fprintf(w.w, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

// Sample writes a counter or gauge sample of the current family.
func (w *Writer) Sample(labels Labels, value float64) {
	if w.err != nil {
		return
	}
	if w.family == "" || w.seen[w.family] == Histogram {
		w.err = fmt.Errorf("promtext: Sample outside a counter or gauge family")
		return
	}
	w.line(w.family, labels, "", "", value)
}

// HistogramSample writes one histogram of the current family: bounds are
// the buckets' upper bounds (ascending, without +Inf), counts has one more
// element than bounds (the last counts observations above every bound), and
// sum is the total of the observations.
func (w *Writer) HistogramSample(labels Labels, bounds []float64, counts []uint64, sum float64) {
	if w.err != nil {
		return
	}
	if w.family == "" || w.seen[w.family] != Histogram {
		w.err = fmt.Errorf("promtext: HistogramSample outside a histogram family")
		return
	}
	if len(counts) != len(bounds)+1 {
		w.err = fmt.Errorf("promtext: %d bucket counts for %d bounds", len(counts), len(bounds))
		return
	}
	var cum uint64
	for i, b := range bounds {
		cum += counts[i]
		w.line(w.family+"_bucket", labels, "le", formatFloat(b), float64(cum))
	}
	cum += counts[len(bounds)]
	w.line(w.family+"_bucket", labels, "le", "+Inf", float64(cum))
	w.line(w.family+"_sum", labels, "", "", sum)
	w.line(w.family+"_count", labels, "", "", float64(cum))
}

func (w *Writer) line(name string, labels Labels, extraName, extraValue string, value float64) {
	w.w.WriteString(name)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		if !validLabel(k) {
			w.err = fmt.Errorf("promtext: invalid label name %q", k)
			return
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 0 || extraName != "" {
		w.w.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				w.w.WriteByte(',')
			}
			fmt.Fprintf(w.w, `%s="%s"`, k, escapeLabel(labels[k]))
		}
		if extraName != "" {
			if len(keys) > 0 {
				w.w.WriteByte(',')
			}
			fmt.Fprintf(w.w, `%s="%s"`, extraName, extraValue)
		}
		w.w.WriteByte('}')
	}
	w.w.WriteByte(' ')
	w.w.WriteString(formatFloat(value))
	w.w.WriteByte('\n')
}

// Flush writes what is buffered and returns the first error.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	return w.w.Flush()
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func validName(s string) bool {
	for i, c := range s {
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

func validLabel(s string) bool {
	return validName(s) && !strings.Contains(s, ":") && !strings.HasPrefix(s, "__")
}
