package policy

import (
	"time"

	"github.com/sirupsen/logrus"
)

type auditKey struct {
	uid  uint32
	rule string
}

type auditEntry struct {
	last       time.Time
	suppressed uint64
}

// Audit records a denial: it always counts it (RuleStats.Logged or
// Suppressed) and logs it, at most once per Options.AuditInterval for each
// (caller uid, rule) pair; the line logged after a quiet spell reports how
// many denials were suppressed since the previous one. The line carries
// uid, gid, pid, the process name (read from /proc/<pid>/comm only when the
// line is actually logged), op, path, rule and errno.
//
// Audit ignores allowed decisions. The file system calls it for denials it
// reports to the kernel, not for entries it filters out of a directory
// listing.
func (e *Engine) Audit(c Caller, op Op, obj Object, d Decision) {
	if d.Allowed {
		return
	}
	st := e.state.Load()
	ctr := st.counter(d.Rule)
	now := e.now()
	key := auditKey{uid: c.UID, rule: d.Rule}

	e.mu.Lock()
	ent := e.audit[key]
	if ent == nil {
		if len(e.audit) >= maxAuditKeys {
			e.pruneLocked(now)
		}
		ent = &auditEntry{}
		e.audit[key] = ent
	}
	logIt := e.interval < 0 || ent.last.IsZero() || now.Sub(ent.last) >= e.interval
	var suppressed uint64
	if logIt {
		suppressed = ent.suppressed
		ent.suppressed = 0
		ent.last = now
	} else {
		ent.suppressed++
	}
	e.mu.Unlock()

	if !logIt {
		ctr.suppressed.Add(1)
		return
	}
	ctr.logged.Add(1)
	fields := logrus.Fields{
		"uid":   c.UID,
		"gid":   c.GID,
		"pid":   c.PID,
		"comm":  e.procName(c.PID),
		"op":    op.String(),
		"path":  obj.Path,
		"rule":  d.Rule,
		"errno": errnoName(d.Errno),
	}
	if suppressed > 0 {
		fields["suppressed"] = suppressed
	}
	e.log.WithFields(fields).Warn("policy: access denied")
}

// pruneLocked forgets rate-limit entries whose interval has passed (they
// would log at once anyway, losing only their suppressed count), and
// everything if that is not enough. Called with e.mu held.
func (e *Engine) pruneLocked(now time.Time) {
	for k, v := range e.audit {
		if e.interval < 0 || now.Sub(v.last) >= e.interval {
			delete(e.audit, k)
		}
	}
	if len(e.audit) >= maxAuditKeys {
		clear(e.audit)
	}
}
