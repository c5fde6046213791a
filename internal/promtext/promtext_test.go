package promtext

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
)

func TestParsesWithPrometheus(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Family("fusegate_requests_total", Counter, "Requests served.\nBy opcode.")
	w.Sample(Labels{"mount": "media", "op": "LOOKUP"}, 42)
	w.Sample(Labels{"mount": `we"ird\name` + "\n", "op": "READ"}, 1e12)
	w.Family("fusegate_up", Gauge, "1 while serving.")
	w.Sample(nil, 1)
	w.Family("fusegate_request_duration_seconds", Histogram, "Handler latency.")
	w.HistogramSample(Labels{"op": "GETATTR"}, []float64{1e-6, 2e-6, 4e-6}, []uint64{3, 0, 5, 2}, 0.000123)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Prometheus rejects our output: %v\n%s", err, buf.String())
	}
	req := fams["fusegate_requests_total"]
	if req == nil || len(req.Metric) != 2 || req.GetHelp() != "Requests served.\nBy opcode." {
		t.Fatalf("requests family: %v", req)
	}
	var weird string
	for _, l := range req.Metric[1].Label {
		if l.GetName() == "mount" {
			weird = l.GetValue()
		}
	}
	if weird != `we"ird\name`+"\n" {
		t.Errorf("label round trip: %q", weird)
	}
	h := fams["fusegate_request_duration_seconds"].Metric[0].Histogram
	if h.GetSampleCount() != 10 || h.GetSampleSum() != 0.000123 || len(h.Bucket) != 4 ||
		h.Bucket[0].GetCumulativeCount() != 3 || h.Bucket[2].GetCumulativeCount() != 8 || h.Bucket[3].GetCumulativeCount() != 10 {
		t.Errorf("histogram: %v", h)
	}
}

func TestMisuse(t *testing.T) {
	for name, f := range map[string]func(w *Writer){
		"bad name":            func(w *Writer) { w.Family("1abc", Counter, "") },
		"duplicate family":    func(w *Writer) { w.Family("a", Counter, ""); w.Family("a", Gauge, "") },
		"sample first":        func(w *Writer) { w.Sample(nil, 1) },
		"bad label":           func(w *Writer) { w.Family("a", Counter, ""); w.Sample(Labels{"__x": "y"}, 1) },
		"histogram counts":    func(w *Writer) { w.Family("h", Histogram, ""); w.HistogramSample(nil, []float64{1}, []uint64{1}, 0) },
		"sample in histogram": func(w *Writer) { w.Family("h", Histogram, ""); w.Sample(nil, 1) },
	} {
		w := NewWriter(&strings.Builder{})
		f(w)
		if w.Flush() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
