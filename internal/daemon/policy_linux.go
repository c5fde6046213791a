package daemon

import (
	"bytes"
	"fmt"
	"os"

	"github.com/fusegate/fusegate/passthrough"
	"github.com/fusegate/fusegate/policy"
)

// loadedPolicy is a mount's policy setting and what it compiled to.
type loadedPolicy struct {
	setting string         // "default", "none", or a policy file's path
	data    []byte         // the file's bytes (a path setting), to see whether a reload changed it
	p       *policy.Policy // nil for "none"
}

// loadPolicy reads the policy a mount's setting names.
func loadPolicy(setting string) (*loadedPolicy, error) {
	switch setting {
	case "none":
		return &loadedPolicy{setting: setting}, nil
	case "default", "":
		return &loadedPolicy{setting: "default", p: policy.Default()}, nil
	}
	data, err := os.ReadFile(setting)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(data) > policy.MaxFileSize {
		return nil, fmt.Errorf("policy %s: more than %d bytes", setting, policy.MaxFileSize)
	}
	p, err := policy.Parse(setting, data)
	if err != nil {
		return nil, err
	}
	return &loadedPolicy{setting: setting, data: data, p: p}, nil
}

// same reports whether a reload would change nothing.
func (a *loadedPolicy) same(b *loadedPolicy) bool {
	return a.setting == b.setting && bytes.Equal(a.data, b.data)
}

// name is the policy's name for status lines.
func (a *loadedPolicy) name() string {
	if a.p == nil {
		return "none"
	}
	return a.p.Name()
}

// setPolicy makes lp the mount's policy. Before the mount exists it is only
// recorded (startMount builds the file system with it); on a live mount the
// file system swaps it in and invalidates what the kernel cached
// (passthrough.FS.SetPolicy, the code `fusegate mount --policy` uses on
// SIGHUP too).
func (m *mount) setPolicy(lp *loadedPolicy) (passthrough.Invalidation, error) {
	m.policy.Store(lp)
	if m.fs == nil {
		return passthrough.Invalidation{}, nil
	}
	return m.fs.SetPolicy(lp.p)
}

// engine returns the mount's policy engine while a policy is in force.
func (m *mount) engine() *policy.Engine {
	if m.fs == nil {
		return nil
	}
	return m.fs.Policy()
}
