package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/fusegate/fusegate/config"
)

// ReloadResult says what a reload did.
type ReloadResult struct {
	Time    time.Time `json:"time"`
	Trigger string    `json:"trigger"` // what asked: "SIGHUP", "control (uid 0, pid 42)"
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	Config  string    `json:"config"`
	// PoliciesChanged names the mounts whose policy was replaced in place.
	PoliciesChanged []string `json:"policies_changed,omitempty"`
	// Started, Stopped and Replaced name mounts ("mount NAME") and devices
	// ("device NAME"); Unchanged those left running untouched.
	Started   []string `json:"started,omitempty"`
	Stopped   []string `json:"stopped,omitempty"`
	Replaced  []string `json:"replaced,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
	// Failed lists what could not be started, with the reason.
	Failed []string `json:"failed,omitempty"`
	// Notes are changes that take effect only at the next start.
	Notes []string `json:"notes,omitempty"`
}

// ErrNotRunning is returned by Reload while the daemon is not running
// (before start-up finished, or once it is stopping).
var ErrNotRunning = errors.New("the daemon is not running")

// Reload re-reads the configuration and every policy file. A configuration
// that does not parse or check is rejected with the reason and nothing
// changes. Otherwise policies of running mounts are replaced in place, mounts
// and devices whose settings changed (or that are not running) are
// replaced, new ones started, removed ones stopped, and the rest keep
// running untouched. It returns an error when the configuration was rejected
// or something could not be started (the result says what).
func (d *Daemon) Reload(ctx context.Context, trigger string) (*ReloadResult, error) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	state := d.state
	d.mu.Unlock()
	if state != StateRunning {
		return nil, fmt.Errorf("reload: %w (%s)", ErrNotRunning, state)
	}
	d.setState(StateReloading)
	d.notify.Reloading()
	d.notify.Status("reloading " + d.configName())
	res := &ReloadResult{Time: time.Now(), Trigger: trigger, Config: d.configName()}
	log := d.log.WithField("trigger", trigger)
	log.Info("reloading the configuration")

	err := d.reload(res)
	if err != nil {
		res.Error = err.Error()
		d.reloads.failed.Add(1)
		log.WithError(err).Error("reload failed")
	} else {
		res.OK = true
		d.reloads.ok.Add(1)
		log.WithFields(map[string]any{
			"policies_changed": res.PoliciesChanged, "started": res.Started, "stopped": res.Stopped,
			"replaced": res.Replaced,
		}).Info("reloaded")
	}
	for _, n := range res.Notes {
		log.Warn(n)
	}
	d.mu.Lock()
	d.lastReload = res
	d.state = StateRunning
	d.mu.Unlock()
	d.notify.Ready(d.summary())
	return res, err
}

func (d *Daemon) reload(res *ReloadResult) error {
	l, err := d.load()
	if err != nil {
		return fmt.Errorf("configuration rejected, nothing changed: %w", err)
	}
	d.mu.Lock()
	old := d.cfg
	mounts := maps.Clone(d.mounts)
	devices := maps.Clone(d.devices)
	d.mu.Unlock()

	// Plan: what stops, what starts, what only changes its policy.
	newMounts := map[string]config.Mount{}
	for _, mc := range l.cfg.Mounts {
		newMounts[mc.Name] = mc
	}
	newDevices := map[string]config.Device{}
	for _, dc := range l.cfg.Devices {
		newDevices[dc.Name] = dc
	}
	var stopM []*mount
	var startM []config.Mount
	var swap []*mount
	replaced := map[string]bool{}
	for _, m := range sortedByName(mounts) {
		nc, keep := newMounts[m.cfg.Name]
		switch {
		case !keep:
			stopM = append(stopM, m)
			res.Stopped = append(res.Stopped, "mount "+m.cfg.Name)
		case !sameMount(m.cfg, nc) || !m.running():
			stopM = append(stopM, m)
			replaced["mount "+m.cfg.Name] = true
		case !m.policy.Load().same(l.policies[m.cfg.Name]):
			swap = append(swap, m)
		default:
			res.Unchanged = append(res.Unchanged, "mount "+m.cfg.Name)
		}
	}
	for _, mc := range l.cfg.Mounts {
		if _, ok := mounts[mc.Name]; !ok || replaced["mount "+mc.Name] {
			startM = append(startM, mc)
		}
	}
	var stopD []*device
	var startD []config.Device
	for _, dv := range sortedByName(devices) {
		nc, keep := newDevices[dv.cfg.Name]
		switch {
		case !keep:
			stopD = append(stopD, dv)
			res.Stopped = append(res.Stopped, "device "+dv.cfg.Name)
		case dv.cfg != nc || !dv.running():
			stopD = append(stopD, dv)
			replaced["device "+dv.cfg.Name] = true
		default:
			res.Unchanged = append(res.Unchanged, "device "+dv.cfg.Name)
		}
	}
	for _, dc := range l.cfg.Devices {
		if _, ok := devices[dc.Name]; !ok || replaced["device "+dc.Name] {
			startD = append(startD, dc)
		}
	}

	// Stop first (a mount point or device name may move to a new entry),
	// then change policies, then start.
	d.stopAll(stopD, stopM)
	d.mu.Lock()
	for _, dv := range stopD {
		delete(d.devices, dv.cfg.Name)
	}
	for _, m := range stopM {
		delete(d.mounts, m.cfg.Name)
	}
	d.mu.Unlock()
	d.applySettings(l.cfg)

	for _, m := range swap {
		lp := l.policies[m.cfg.Name]
		inv, err := m.setPolicy(lp)
		if err != nil {
			// Not built with an engine: cannot happen for a started mount.
			m.log.WithError(err).Error("policy not replaced")
			continue
		}
		res.PoliciesChanged = append(res.PoliciesChanged, m.cfg.Name)
		m.log.WithFields(map[string]any{"policy": lp.name(), "invalidated": inv.String()}).Info("policy replaced")
	}

	var failed []string
	for _, mc := range startM {
		m, err := d.startMount(mc, l.policies[mc.Name])
		d.mu.Lock()
		d.mounts[mc.Name] = m
		d.mu.Unlock()
		name := "mount " + mc.Name
		switch {
		case err != nil:
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
		case replaced[name]:
			res.Replaced = append(res.Replaced, name)
		default:
			res.Started = append(res.Started, name)
		}
	}
	for _, dc := range startD {
		dv, err := d.startDevice(dc)
		d.mu.Lock()
		d.devices[dc.Name] = dv
		d.mu.Unlock()
		name := "device " + dc.Name
		switch {
		case errors.Is(err, errNoCuse):
			res.Notes = append(res.Notes, fmt.Sprintf("%s not created: %v", name, err))
		case err != nil:
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
		case replaced[name]:
			res.Replaced = append(res.Replaced, name)
		default:
			res.Started = append(res.Started, name)
		}
	}
	d.mu.Lock()
	d.cfg = l.cfg
	d.mu.Unlock()
	if old != nil && old.Control != l.cfg.Control {
		res.Notes = append(res.Notes, "the [control] settings changed; they take effect when the daemon restarts")
	}
	res.Failed = failed
	if len(failed) > 0 {
		return fmt.Errorf("reloaded, but could not start: %s", strings.Join(failed, "; "))
	}
	return nil
}

// WedgeForTest makes every mount's serving loop stop making progress after
// its next request (fusedev.Server.Wedge), so that the watchdog stops being
// petted. Only for tests of the watchdog: cmd/fusegate wires it to SIGUSR2
// when FUSEGATE_TEST_ONLY_WEDGE=1 is set.
func (d *Daemon) WedgeForTest() {
	d.mu.Lock()
	ms := sortedByName(d.mounts)
	d.mu.Unlock()
	for _, m := range ms {
		if m.running() && m.srv != nil {
			m.srv.Wedge()
			m.log.Warn("TEST ONLY: serving loop wedged (FUSEGATE_TEST_ONLY_WEDGE)")
		}
	}
}
