package daemon

import (
	"io"

	"github.com/fusegate/fusegate/fusedev"
	"github.com/fusegate/fusegate/internal/promtext"
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
	ms := sortedMounts(d.mounts)
	ds := sortedDevices(d.devices)
	stuck := d.unhealthy != ""
	d.mu.Unlock()

	w.Family("fusegate_info", promtext.Gauge, "The running fusegate's version.")
	w.Sample(promtext.Labels{"version": d.opts.Version}, 1)
	w.Family("fusegate_start_time_seconds", promtext.Gauge, "When the daemon started, in seconds since the epoch.")
	w.Sample(nil, float64(d.started.UnixNano())/1e9)
	w.Family("fusegate_reloads_total", promtext.Counter, "Reloads, by result.")
	w.Sample(promtext.Labels{"result": "ok"}, float64(d.reloads.ok.Load()))
	w.Sample(promtext.Labels{"result": "error"}, float64(d.reloads.failed.Load()))
	w.Family("fusegate_watchdog_stuck", promtext.Gauge, "1 while a serving loop is stuck (the systemd watchdog is not petted).")
	w.Sample(nil, b2f(stuck))

	w.Family("fusegate_mount_up", promtext.Gauge, "1 while the mount is served.")
	for _, m := range ms {
		w.Sample(promtext.Labels{"mount": m.cfg.Name}, b2f(m.running()))
	}

	type opRow struct {
		mount string
		st    fusedev.OpStats
	}
	var ops []opRow
	for _, m := range ms {
		if m.running() && m.srv != nil {
			for _, st := range m.srv.Stats() {
				ops = append(ops, opRow{m.cfg.Name, st})
			}
		}
	}
	opLabels := func(r opRow) promtext.Labels { return promtext.Labels{"mount": r.mount, "op": r.st.Op.String()} }
	w.Family("fusegate_requests_total", promtext.Counter, "FUSE requests served, by mount and opcode.")
	for _, r := range ops {
		w.Sample(opLabels(r), float64(r.st.Count))
	}
	w.Family("fusegate_request_errors_total", promtext.Counter, "FUSE requests answered with an error, by mount and opcode.")
	for _, r := range ops {
		w.Sample(opLabels(r), float64(r.st.Errors))
	}
	w.Family("fusegate_request_duration_seconds", promtext.Histogram, "Time to handle a FUSE request, by mount and opcode.")
	bounds := latencyBounds()
	for _, r := range ops {
		w.HistogramSample(opLabels(r), bounds, r.st.Buckets[:], r.st.Total.Seconds())
	}
	w.Family("fusegate_requests_in_flight", promtext.Gauge, "FUSE requests read and not yet answered.")
	for _, m := range ms {
		if m.running() && m.srv != nil {
			w.Sample(promtext.Labels{"mount": m.cfg.Name}, float64(m.srv.Inflight()))
		}
	}

	perRule := func(name, help string, v func(policy.RuleStats) uint64) {
		w.Family(name, promtext.Counter, help+", by mount and deciding rule (reset when a reload changes the policy).")
		for _, m := range ms {
			if e := m.engine(); e != nil {
				for _, r := range e.Stats() {
					w.Sample(promtext.Labels{"mount": m.cfg.Name, "rule": r.Rule}, float64(v(r)))
				}
			}
		}
	}
	perRule("fusegate_policy_decisions_total", "Policy decisions", func(r policy.RuleStats) uint64 { return r.Decisions })
	perRule("fusegate_policy_denials_total", "Requests the policy denied", func(r policy.RuleStats) uint64 { return r.Denials })
	perRule("fusegate_policy_audit_logged_total", "Denials logged by the audit", func(r policy.RuleStats) uint64 { return r.Logged })
	perRule("fusegate_policy_audit_suppressed_total", "Denials the audit did not log (rate limit per caller and rule)", func(r policy.RuleStats) uint64 { return r.Suppressed })
	type polRow struct {
		mount              string
		redacted, filtered float64
	}
	var pols []polRow
	for _, m := range ms {
		if m.running() && m.fs != nil {
			if ps := m.fs.PolicyStats(); ps != nil {
				pols = append(pols, polRow{m.cfg.Name, float64(ps.RedactedOpens), float64(ps.Filtered)})
			}
		}
	}
	w.Family("fusegate_policy_redacted_opens_total", promtext.Counter, "Opens whose reads the daemon serves redacted (no passthrough, no page cache).")
	for _, r := range pols {
		w.Sample(promtext.Labels{"mount": r.mount}, r.redacted)
	}
	w.Family("fusegate_policy_filtered_entries_total", promtext.Counter, "Directory entries left out of listings because the caller may not look them up.")
	for _, r := range pols {
		w.Sample(promtext.Labels{"mount": r.mount}, r.filtered)
	}

	type fsRow struct {
		mount                    string
		pt, daemonIO, backingIDs float64
	}
	var fss []fsRow
	for _, m := range ms {
		if m.running() && m.fs != nil {
			s := m.fs.Stats()
			fss = append(fss, fsRow{m.cfg.Name, float64(s.PTOpens), float64(s.DaemonOpens), float64(s.BackingIDs)})
		}
	}
	w.Family("fusegate_passthrough_opens_total", promtext.Counter, "Opens answered with kernel FUSE passthrough (reads and writes skip the daemon).")
	for _, r := range fss {
		w.Sample(promtext.Labels{"mount": r.mount}, r.pt)
	}
	w.Family("fusegate_daemon_io_opens_total", promtext.Counter, "Opens whose reads and writes the daemon serves.")
	for _, r := range fss {
		w.Sample(promtext.Labels{"mount": r.mount}, r.daemonIO)
	}
	w.Family("fusegate_passthrough_backing_files", promtext.Gauge, "Backing files registered with the kernel now.")
	for _, r := range fss {
		w.Sample(promtext.Labels{"mount": r.mount}, r.backingIDs)
	}

	w.Family("fusegate_device_up", promtext.Gauge, "1 while the CUSE device is served.")
	for _, dv := range ds {
		w.Sample(promtext.Labels{"device": dv.cfg.Name}, b2f(dv.running()))
	}
	type devRow struct {
		name                           string
		opens, openNow, rd, wr, ioctls float64
	}
	var devs []devRow
	for _, dv := range ds {
		if dv.running() && dv.dev != nil {
			s := dv.dev.Stats()
			devs = append(devs, devRow{dv.cfg.Name, float64(s.Opens), float64(s.OpenNow), float64(s.BytesRead), float64(s.BytesWritten), float64(s.Ioctls)})
		}
	}
	w.Family("fusegate_device_opens_total", promtext.Counter, "Successful opens of the device.")
	for _, r := range devs {
		w.Sample(promtext.Labels{"device": r.name}, r.opens)
	}
	w.Family("fusegate_device_open_files", promtext.Gauge, "Files open on the device now.")
	for _, r := range devs {
		w.Sample(promtext.Labels{"device": r.name}, r.openNow)
	}
	w.Family("fusegate_device_bytes_total", promtext.Counter, "Bytes read from and written to the device.")
	for _, r := range devs {
		w.Sample(promtext.Labels{"device": r.name, "direction": "read"}, r.rd)
		w.Sample(promtext.Labels{"device": r.name, "direction": "write"}, r.wr)
	}
	w.Family("fusegate_device_ioctls_total", promtext.Counter, "ioctl(2) calls the device answered.")
	for _, r := range devs {
		w.Sample(promtext.Labels{"device": r.name}, r.ioctls)
	}
	return w.Flush()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
