package daemon

import (
	"io"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/internal/promtext"
	"github.com/fusegate/fusegate/passthrough"
	"github.com/fusegate/fusegate/policy"
)

// latencyBounds are fusedev.LatencyBuckets in seconds.
func latencyBounds() []float64 {
	b := make([]float64, len(fusedev.LatencyBuckets))
	for i, d := range fusedev.LatencyBuckets {
		b[i] = d.Seconds()
	}
	return b
}

// WriteMetrics writes every metric in the Prometheus text format:
//
//	fusegate_info{version}                                   gauge 1
//	fusegate_start_time_seconds                              gauge
//	fusegate_reloads_total{result="ok"|"error"}              counter
//	fusegate_watchdog_stuck                                  gauge: 1 while a serving loop is stuck
//	fusegate_mount_up{mount}                                 gauge: 1 while serving
//	fusegate_requests_total{mount,op}                        counter
//	fusegate_request_errors_total{mount,op}                  counter: answered with an errno
//	fusegate_request_duration_seconds{mount,op}              histogram (fusedev.LatencyBuckets)
//	fusegate_requests_in_flight{mount}                       gauge
//	fusegate_policy_decisions_total{mount,rule}              counter (reset when a reload changes the policy)
//	fusegate_policy_denials_total{mount,rule}                counter (idem)
//	fusegate_policy_audit_logged_total{mount,rule}           counter: denials logged (idem)
//	fusegate_policy_audit_suppressed_total{mount,rule}       counter: denials not logged by the rate limit (idem)
//	fusegate_policy_redacted_opens_total{mount}              counter: opens whose reads are redacted
//	fusegate_policy_filtered_entries_total{mount}            counter: directory entries left out of listings
//	fusegate_passthrough_opens_total{mount}                  counter: opens given to the kernel (FUSE passthrough)
//	fusegate_daemon_io_opens_total{mount}                    counter: opens whose reads and writes the daemon serves
//	fusegate_passthrough_backing_files{mount}                gauge
//	fusegate_device_up{device}                               gauge
//	fusegate_device_opens_total{device}                      counter
//	fusegate_device_open_files{device}                       gauge
//	fusegate_device_bytes_total{device,direction="read"|"write"} counter
//	fusegate_device_ioctls_total{device}                     counter
//
// Counters of a mount or device start from zero when a reload replaces it.
func (d *Daemon) WriteMetrics(out io.Writer) error {
	w := promtext.NewWriter(out)
	d.mu.Lock()
	ms := sortedByName(d.mounts)
	ds := sortedByName(d.devices)
	stuck := d.unhealthy != ""
	d.mu.Unlock()
	mss := make([]mountMetrics, len(ms))
	for i, m := range ms {
		mss[i] = m.metrics()
	}
	dss := make([]deviceMetrics, len(ds))
	for i, dv := range ds {
		dss[i] = dv.metrics()
	}

	w.Family("fusegate_info", promtext.Gauge, "The running fusegate's version.")
	w.Sample(promtext.Labels{"version": d.opts.Version}, 1)
	w.Family("fusegate_start_time_seconds", promtext.Gauge, "When the daemon started, in seconds since the epoch.")
	w.Sample(nil, float64(d.started.UnixNano())/1e9)
	w.Family("fusegate_reloads_total", promtext.Counter, "Reloads, by result.")
	w.Sample(promtext.Labels{"result": "ok"}, float64(d.reloads.ok.Load()))
	w.Sample(promtext.Labels{"result": "error"}, float64(d.reloads.failed.Load()))
	w.Family("fusegate_watchdog_stuck", promtext.Gauge, "1 while a serving loop is stuck (the systemd watchdog is not petted).")
	w.Sample(nil, b2f(stuck))

	// perMount writes a family with a sample for each mount v has a value of.
	perMount := func(name string, typ promtext.Type, help string, v func(*mountMetrics) (float64, bool)) {
		w.Family(name, typ, help)
		for i := range mss {
			if x, ok := v(&mss[i]); ok {
				w.Sample(promtext.Labels{"mount": mss[i].name}, x)
			}
		}
	}
	perMount("fusegate_mount_up", promtext.Gauge, "1 while the mount is served.",
		func(s *mountMetrics) (float64, bool) { return b2f(s.up), true })

	opLabels := func(mount string, st fusedev.OpStats) promtext.Labels {
		return promtext.Labels{"mount": mount, "op": st.Op.String()}
	}
	perOp := func(name, help string, v func(fusedev.OpStats) uint64) {
		w.Family(name, promtext.Counter, help)
		for _, s := range mss {
			for _, st := range s.ops {
				w.Sample(opLabels(s.name, st), float64(v(st)))
			}
		}
	}
	perOp("fusegate_requests_total", "FUSE requests served, by mount and opcode.", func(st fusedev.OpStats) uint64 { return st.Count })
	perOp("fusegate_request_errors_total", "FUSE requests answered with an error, by mount and opcode.", func(st fusedev.OpStats) uint64 { return st.Errors })
	w.Family("fusegate_request_duration_seconds", promtext.Histogram, "Time to handle a FUSE request, by mount and opcode.")
	bounds := latencyBounds()
	for _, s := range mss {
		for _, st := range s.ops {
			w.HistogramSample(opLabels(s.name, st), bounds, st.Buckets[:], st.Total.Seconds())
		}
	}
	perMount("fusegate_requests_in_flight", promtext.Gauge, "FUSE requests read and not yet answered.",
		func(s *mountMetrics) (float64, bool) { return float64(s.inflight), s.serving })

	perRule := func(name, help string, v func(policy.RuleStats) uint64) {
		w.Family(name, promtext.Counter, help+", by mount and deciding rule (reset when a reload changes the policy).")
		for _, s := range mss {
			for _, r := range s.rules {
				w.Sample(promtext.Labels{"mount": s.name, "rule": r.Rule}, float64(v(r)))
			}
		}
	}
	perRule("fusegate_policy_decisions_total", "Policy decisions", func(r policy.RuleStats) uint64 { return r.Decisions })
	perRule("fusegate_policy_denials_total", "Requests the policy denied", func(r policy.RuleStats) uint64 { return r.Denials })
	perRule("fusegate_policy_audit_logged_total", "Denials logged by the audit", func(r policy.RuleStats) uint64 { return r.Logged })
	perRule("fusegate_policy_audit_suppressed_total", "Denials the audit did not log (rate limit per caller and rule)", func(r policy.RuleStats) uint64 { return r.Suppressed })
	perMount("fusegate_policy_redacted_opens_total", promtext.Counter, "Opens whose reads the daemon serves redacted (no passthrough, no page cache).",
		func(s *mountMetrics) (float64, bool) { return float64(s.pol.RedactedOpens), s.hasPol })
	perMount("fusegate_policy_filtered_entries_total", promtext.Counter, "Directory entries left out of listings because the caller may not look them up.",
		func(s *mountMetrics) (float64, bool) { return float64(s.pol.Filtered), s.hasPol })

	perMount("fusegate_passthrough_opens_total", promtext.Counter, "Opens answered with kernel FUSE passthrough (reads and writes skip the daemon).",
		func(s *mountMetrics) (float64, bool) { return float64(s.fs.PTOpens), s.hasFS })
	perMount("fusegate_daemon_io_opens_total", promtext.Counter, "Opens whose reads and writes the daemon serves.",
		func(s *mountMetrics) (float64, bool) { return float64(s.fs.DaemonOpens), s.hasFS })
	perMount("fusegate_passthrough_backing_files", promtext.Gauge, "Backing files registered with the kernel now.",
		func(s *mountMetrics) (float64, bool) { return float64(s.fs.BackingIDs), s.hasFS })

	// perDevice writes a family with a sample for each device v has a value of.
	perDevice := func(name string, typ promtext.Type, help string, v func(*deviceMetrics) (float64, bool)) {
		w.Family(name, typ, help)
		for i := range dss {
			if x, ok := v(&dss[i]); ok {
				w.Sample(promtext.Labels{"device": dss[i].name}, x)
			}
		}
	}
	perDevice("fusegate_device_up", promtext.Gauge, "1 while the CUSE device is served.",
		func(s *deviceMetrics) (float64, bool) { return b2f(s.up), true })
	perDevice("fusegate_device_opens_total", promtext.Counter, "Successful opens of the device.",
		func(s *deviceMetrics) (float64, bool) { return float64(s.st.Opens), s.hasStats })
	perDevice("fusegate_device_open_files", promtext.Gauge, "Files open on the device now.",
		func(s *deviceMetrics) (float64, bool) { return float64(s.st.OpenNow), s.hasStats })
	w.Family("fusegate_device_bytes_total", promtext.Counter, "Bytes read from and written to the device.")
	for _, s := range dss {
		if s.hasStats {
			w.Sample(promtext.Labels{"device": s.name, "direction": "read"}, float64(s.st.BytesRead))
			w.Sample(promtext.Labels{"device": s.name, "direction": "write"}, float64(s.st.BytesWritten))
		}
	}
	perDevice("fusegate_device_ioctls_total", promtext.Counter, "ioctl(2) calls the device answered.",
		func(s *deviceMetrics) (float64, bool) { return float64(s.st.Ioctls), s.hasStats })
	return w.Flush()
}

// mountMetrics is what the metrics say of one mount, read once per scrape.
type mountMetrics struct {
	name     string
	up       bool
	serving  bool // up with a server: ops and inflight are read
	ops      []fusedev.OpStats
	inflight int
	rules    []policy.RuleStats // nil without a policy engine
	hasFS    bool               // up with a file system: fs is read
	fs       passthrough.Stats
	hasPol   bool // the file system enforces a policy: pol is read
	pol      passthrough.PolicyStats
}

func (m *mount) metrics() mountMetrics {
	s := mountMetrics{name: m.cfg.Name, up: m.running()}
	if e := m.engine(); e != nil {
		s.rules = e.Stats()
	}
	if s.up && m.srv != nil {
		s.serving = true
		s.ops = m.srv.Stats()
		s.inflight = m.srv.Inflight()
	}
	if s.up && m.fs != nil {
		s.hasFS = true
		s.fs = m.fs.Stats()
		if ps := m.fs.PolicyStats(); ps != nil {
			s.hasPol = true
			s.pol = *ps
		}
	}
	return s
}

// deviceMetrics is what the metrics say of one device, read once per scrape.
type deviceMetrics struct {
	name     string
	up       bool
	hasStats bool // up with a device: st is read
	st       cuse.Stats
}

func (dv *device) metrics() deviceMetrics {
	s := deviceMetrics{name: dv.cfg.Name, up: dv.running()}
	if s.up && dv.dev != nil {
		s.hasStats = true
		s.st = dv.dev.Stats()
	}
	return s
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
