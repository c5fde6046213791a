package policy

import (
	"context"
	"testing"
	"time"
)

// BenchmarkDecide measures Decide on the built-in policy plus a few listed
// apps, for representative requests.
func BenchmarkDecide(b *testing.B) {
	extra := `
[[app]]
name = "camera"
uids = [10050]
packages = ["com.android.camera2"]
roles = ["media-location"]

[[app]]
name = "gallery"
uids = ["10100-10199"]
packages = ["com.example.gallery", "com.example.gallery.sync"]
`
	p, err := Parse("bench.toml", append(DefaultFile(), extra...))
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(p, Options{})
	ctx := context.Background()
	cases := []struct {
		name string
		c    Caller
		op   Op
		obj  Object
	}{
		{"private-own", Caller{UID: 10050}, OpLookup, Object{Path: "Android/data/com.android.camera2/files/thumbs/0001.jpg", Owner: 10050, Exists: true}},
		{"private-other", Caller{UID: 10150}, OpLookup, Object{Path: "Android/data/com.android.camera2/files/thumbs/0001.jpg", Owner: 10050, Exists: true}},
		{"dcim-read-redacted", Caller{UID: 10150}, OpRead, Object{Path: "DCIM/Camera/IMG_20240101_120000.jpg", Owner: 10050, Exists: true}},
		{"dcim-write-denied", Caller{UID: 10150}, OpWrite, Object{Path: "DCIM/Camera/IMG_20240101_120000.jpg", Owner: 10050, Exists: true}},
		{"deep", Caller{UID: 10150}, OpLookup, Object{Path: "Documents/projects/2024/q1/reports/drafts/old/archive/v1/notes/final.txt", Owner: 10150, Exists: true}},
		{"trusted", Caller{UID: 1000}, OpLookup, Object{Path: "Android/data/com.android.camera2/files/a", Owner: 10050, Exists: true}},
		{"unlisted-app", Caller{UID: 10999}, OpRead, Object{Path: "Android/data/uid10999/cache/x", Owner: 10999, Exists: true}},
		{"nonascii-folded", Caller{UID: 10150}, OpLookup, Object{Path: "Music/Künstler/Album/Lied.mp3", Owner: 10150, Exists: true}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := processCPU()
			for b.Loop() {
				e.Decide(ctx, tc.c, tc.op, tc.obj)
			}
			reportCPU(b, cpu)
		})
	}
	b.Run("parallel-dcim", func(b *testing.B) {
		tc := cases[2]
		b.ReportAllocs()
		cpu := processCPU()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e.Decide(ctx, tc.c, tc.op, tc.obj)
			}
		})
		reportCPU(b, cpu)
	})
}

// reportCPU reports the CPU time the process used per iteration since
// processCPU returned start ("cpu-ns/op"): on a shared machine the wall
// time per op (ns/op) also counts the time the benchmark waited for a CPU.
// It includes the benchmark loop itself and any GC (Decide allocates
// nothing), so it is an upper bound on what a decision costs.
func reportCPU(b *testing.B, start time.Duration) {
	if start < 0 || b.N == 0 {
		return
	}
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
}

func TestDecideDoesNotAllocate(t *testing.T) {
	e := NewEngine(Default(), Options{})
	ctx := context.Background()
	for _, obj := range []Object{
		{Path: "Android/data/uid10001/files/a.txt", Owner: 10001, Exists: true},
		{Path: "DCIM/Camera/IMG.jpg", Owner: 10002, Exists: true},
		{Path: "a/b/c/d/e/f/g/h/i/j/k", Owner: 10001, Exists: true},
	} {
		allocs := testing.AllocsPerRun(100, func() {
			e.Decide(ctx, Caller{UID: 10001}, OpRead, obj)
		})
		if allocs != 0 {
			t.Errorf("Decide(%q) allocates %v times", obj.Path, allocs)
		}
	}
}
