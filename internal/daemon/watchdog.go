package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fusegate/fusegate/systemd"
)

// watchdogLoop checks every serving loop a few times per watchdog interval
// and pets systemd's watchdog only while all of them make progress: a loop
// stuck outside its read for longer than daemon.watchdog_stall lets the
// watchdog fire. Without a watchdog it still checks (once a second) so that
// status and metrics show a stuck loop.
func (d *Daemon) watchdogLoop(ctx context.Context) {
	interval, on := systemd.WatchdogInterval()
	period := time.Second
	if on {
		period = max(interval/3, 10*time.Millisecond)
		d.mu.Lock()
		d.watchdog = interval
		d.mu.Unlock()
		d.log.WithField("interval", interval).Info("systemd watchdog on: petted while every serving loop makes progress")
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		problem := d.health()
		d.mu.Lock()
		prev := d.unhealthy
		d.unhealthy = problem
		d.mu.Unlock()
		switch {
		case problem == "":
			if on {
				d.notify.Watchdog()
			}
			if prev != "" {
				d.log.Info("every serving loop makes progress again")
				d.notify.Status(d.summary())
			}
		case problem != prev:
			if on {
				d.log.Errorf("not petting systemd's watchdog: %s", problem)
			} else {
				d.log.Errorf("a serving loop is stuck: %s", problem)
			}
			d.notify.Status(d.summary())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// health returns "" when every running mount's and device's serving loop
// makes progress, else what is stuck.
func (d *Daemon) health() string {
	stall := time.Duration(d.stall.Load())
	d.mu.Lock()
	ms := sortedByName(d.mounts)
	ds := sortedByName(d.devices)
	d.mu.Unlock()
	var stuck []string
	for _, m := range ms {
		if m.running() && m.srv != nil {
			if err := m.srv.Check(stall); err != nil {
				stuck = append(stuck, fmt.Sprintf("mount %s: %v", m.cfg.Name, err))
			}
		}
	}
	for _, dv := range ds {
		if dv.running() && dv.dev != nil {
			if err := dv.dev.Check(stall); err != nil {
				stuck = append(stuck, fmt.Sprintf("device %s: %v", dv.cfg.Name, err))
			}
		}
	}
	return strings.Join(stuck, "; ")
}
