package policy

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// Options configure an Engine. The zero value works.
type Options struct {
	// Logger receives audit lines (Audit). Nil: logrus.StandardLogger().
	Logger logrus.FieldLogger
	// Now is the clock used for audit rate limiting. Nil: time.Now.
	Now func() time.Time
	// AuditInterval is the minimum time between two audit lines for one
	// (caller uid, rule) pair; denials in between are counted and reported
	// with the next line. Zero: 10 s. Negative: log every denial.
	AuditInterval time.Duration
	// DaemonUID is the uid of the daemon itself, trusted when the policy
	// says trust.daemon = true (the default). Nil: os.Getuid().
	DaemonUID *uint32
	// ProcessName returns the name of a process for audit lines. Nil: read
	// /proc/<pid>/comm (Linux). It is called only for lines actually logged.
	ProcessName func(pid uint32) string
}

// DefaultAuditInterval is the audit rate limit used when
// Options.AuditInterval is zero.
const DefaultAuditInterval = 10 * time.Second

// maxAuditKeys bounds the rate limiter's memory.
const maxAuditKeys = 4096

// Engine decides requests against the current Policy. It is safe for
// concurrent use; Decide takes no lock.
type Engine struct {
	state atomic.Pointer[state]

	log       logrus.FieldLogger
	now       func() time.Time
	interval  time.Duration
	daemonUID uint32
	procName  func(pid uint32) string

	mu    sync.Mutex
	audit map[auditKey]*auditEntry // guarded by mu
}

// state is what Swap replaces atomically: a policy and its counters.
type state struct {
	p        *Policy
	counters []ruleCounter // one per rule, then "invalid", then "unknown"
}

// ruleCounter is padded to a cache line so that counting decisions of one
// rule does not slow down another's.
type ruleCounter struct {
	decisions  atomic.Uint64
	denials    atomic.Uint64
	logged     atomic.Uint64
	suppressed atomic.Uint64
	_          [32]byte
}

const (
	labelInvalid = "invalid" // malformed requests (bad op or path)
	labelUnknown = "unknown" // audits naming a rule not in the current policy
)

func newState(p *Policy) *state {
	return &state{p: p, counters: make([]ruleCounter, len(p.rules)+2)}
}

func (st *state) counter(label string) *ruleCounter {
	if i, ok := st.p.labels[label]; ok {
		return &st.counters[i]
	}
	if label == labelInvalid {
		return &st.counters[len(st.p.rules)]
	}
	return &st.counters[len(st.p.rules)+1]
}

// NewEngine returns an Engine deciding with p (nil: Default()).
func NewEngine(p *Policy, opts Options) *Engine {
	if p == nil {
		p = Default()
	}
	e := &Engine{
		log:      opts.Logger,
		now:      opts.Now,
		interval: opts.AuditInterval,
		procName: opts.ProcessName,
		audit:    make(map[auditKey]*auditEntry),
	}
	if e.log == nil {
		e.log = logrus.StandardLogger()
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.interval == 0 {
		e.interval = DefaultAuditInterval
	}
	if opts.DaemonUID != nil {
		e.daemonUID = *opts.DaemonUID
	} else {
		e.daemonUID = uint32(os.Getuid())
	}
	if e.procName == nil {
		e.procName = processName
	}
	e.state.Store(newState(p))
	return e
}

// Policy returns the current policy.
func (e *Engine) Policy() *Policy { return e.state.Load().p }

// Swap makes p (nil: Default()) the current policy and returns the previous
// one. Decisions already under way finish with the old policy; counters
// start again from zero (Prometheus treats that as a counter reset).
func (e *Engine) Swap(p *Policy) *Policy {
	if p == nil {
		p = Default()
	}
	return e.state.Swap(newState(p)).p
}

// RuleStats are the counters of one rule of the current policy.
type RuleStats struct {
	Rule       string // the rule's label, "invalid" or "unknown"
	Decisions  uint64 // decisions taken by the rule
	Denials    uint64 // of which denied
	Logged     uint64 // denials passed to Audit and logged
	Suppressed uint64 // denials passed to Audit and not logged (rate limit)
}

// Stats returns the counters of every rule of the current policy, in rule
// order, then the pseudo-rules "invalid" (malformed requests) and "unknown"
// (audits of decisions taken by a previous policy).
func (e *Engine) Stats() []RuleStats {
	st := e.state.Load()
	out := make([]RuleStats, len(st.counters))
	for i := range st.counters {
		c := &st.counters[i]
		label := labelUnknown
		switch {
		case i < len(st.p.rules):
			label = st.p.rules[i].label
		case i == len(st.p.rules):
			label = labelInvalid
		}
		out[i] = RuleStats{
			Rule:       label,
			Decisions:  c.decisions.Load(),
			Denials:    c.denials.Load(),
			Logged:     c.logged.Load(),
			Suppressed: c.suppressed.Load(),
		}
	}
	return out
}

// Decide decides whether c may do op on obj. It does no I/O, takes no lock
// and does not allocate (except, with a case-insensitive policy, once for
// a path holding non-ASCII bytes). ctx is accepted for tracing and future
// use; Decide never blocks.
func (e *Engine) Decide(ctx context.Context, c Caller, op Op, obj Object) Decision {
	st := e.state.Load()
	d, idx := st.p.decide(e.daemonUID, &c, op, &obj, nil)
	ctr := &st.counters[idx]
	ctr.decisions.Add(1)
	if !d.Allowed {
		ctr.denials.Add(1)
	}
	return d
}

// Explain decides like Decide (without counting) and also returns a
// human-readable trace: who the caller is, which rules were tried, and why
// the deciding one allowed or denied.
func (e *Engine) Explain(c Caller, op Op, obj Object) (Decision, []string) {
	tr := &trace{}
	d, _ := e.state.Load().p.decide(e.daemonUID, &c, op, &obj, tr)
	return d, tr.lines
}

type trace struct{ lines []string }

func (t *trace) add(format string, args ...any) {
	t.lines = append(t.lines, fmt.Sprintf(format, args...))
}

// who is the caller as the policy sees it.
type who struct {
	uid     uint32
	trusted bool
	app     *app // nil: an unlisted app (named after the unknown template)
}

func (p *Policy) who(daemonUID uint32, c *Caller) who {
	w := who{uid: c.UID}
	if p.trustedUID(c.UID) || (p.trustDaemon && c.UID == daemonUID) {
		w.trusted = true
		return w
	}
	if len(p.trustGIDs) > 0 {
		for _, g := range p.trustGIDs {
			if g == c.GID {
				w.trusted = true
				return w
			}
			for _, cg := range c.Groups {
				if g == cg {
					w.trusted = true
					return w
				}
			}
		}
	}
	if a, ok := p.byUID[c.UID]; ok {
		w.app = a
		return w
	}
	r := p.ranges
	i := sort.Search(len(r), func(i int) bool { return r[i].hi >= c.UID })
	if i < len(r) && r[i].lo <= c.UID {
		w.app = r[i].app
	}
	return w
}

// decide is the decision procedure shared by Decide and Explain; tr is nil
// on the hot path. It returns the decision and the counter index.
func (p *Policy) decide(daemonUID uint32, c *Caller, op Op, obj *Object, tr *trace) (Decision, int) {
	in := scanPath(obj.Path)
	if !op.Valid() || !in.ok {
		if tr != nil {
			tr.add("invalid request: op %s, path %q (paths must be clean and relative) -> deny EACCES", op, obj.Path)
		}
		return Decision{Errno: syscall.EACCES, Rule: labelInvalid}, len(p.rules)
	}
	w := p.who(daemonUID, c)
	if tr != nil {
		tr.add("%s", p.describeCaller(daemonUID, c, &w))
	}
	path := obj.Path
	if p.fold && !in.ascii {
		// Canonical: ASCII letters upper-cased, other runes folded,
		// default-ignorable code points dropped (see pattern.go).
		path = canon(path)
		in = scanPath(path)
		if tr != nil {
			tr.add("case-insensitive policy: path compared as %q", path)
		}
	}
	var caps capSet
	var idx int
	if tr == nil {
		idx = p.match(path, &in, &caps)
	} else {
		idx = p.matchTrace(path, &in, &caps, tr)
	}
	r := p.rules[idx]
	d := Decision{Rule: r.label, EntryTimeout: r.entry, AttrTimeout: r.attr}

	if r.readOnly && op.mutates() {
		d.Errno = syscall.EROFS
		if tr != nil {
			tr.add("%s is read_only: %s denied to every caller -> deny EROFS", r.label, op)
		}
		return d, idx
	}
	if w.trusted {
		d.Allowed, d.Trusted = true, true
		d.Passthrough = r.passthrough && op.opens()
		if tr != nil {
			tr.add("trusted caller bypasses app rules -> allow%s", ptNote(d))
		}
		return d, idx
	}
	al := &r.allow[op]
	si := p.allows(al, &w, obj, &caps)
	if si < 0 {
		d.Errno = r.deny
		if tr != nil {
			tr.add("%s %s: no subject of %s %q matches -> deny %s", r.label, op, al.src, subjectTexts(al), errnoName(r.deny))
		}
		return d, idx
	}
	d.Allowed = true
	if tr != nil {
		tr.add("%s %s: allowed by %s subject %q", r.label, op, al.src, al.subs[si].text)
	}
	if r.redact != 0 && (op == OpRead || op == OpWrite) && !obj.Dir && p.redactName(r, path) {
		if ei := p.allows(&r.redactExempt, &w, obj, &caps); ei < 0 {
			d.Redact = r.redact
			if tr != nil {
				tr.add("redact %s: the file name matches redact_names and no redact_exempt subject %q matches", r.redact, subjectTexts(&r.redactExempt))
			}
		} else if tr != nil {
			tr.add("no redaction: exempt by %q", r.redactExempt.subs[ei].text)
		}
	}
	d.Passthrough = r.passthrough && op.opens() && d.Redact == 0
	if tr != nil {
		tr.add("-> allow%s", ptNote(d))
	}
	return d, idx
}

func ptNote(d Decision) string {
	s := fmt.Sprintf(" (entry_timeout %v, attr_timeout %v", d.EntryTimeout, d.AttrTimeout)
	if d.Passthrough {
		s += ", passthrough"
	}
	if d.Redact != 0 {
		s += ", redact " + d.Redact.String()
	}
	return s + ")"
}

func subjectTexts(al *allowList) []string {
	out := make([]string, len(al.subs))
	for i, s := range al.subs {
		out[i] = s.text
	}
	return out
}

// redactName reports whether the last segment of path matches the rule's
// redact_names (every name when there are none).
func (p *Policy) redactName(r *rule, path string) bool {
	if len(r.redactNames) == 0 {
		return true
	}
	name := lastSegment(path)
	for _, g := range r.redactNames {
		if globMatch(g, name, p.fold) {
			return true
		}
	}
	return false
}

// allows returns the index of the first subject of al that admits the
// (untrusted) caller, or -1.
func (p *Policy) allows(al *allowList, w *who, obj *Object, caps *capSet) int {
	for i := range al.subs {
		s := &al.subs[i]
		switch s.kind {
		case subApps:
			return i
		case subOwner:
			if obj.Exists && obj.Owner == w.uid {
				return i
			}
		case subAbsent:
			if !obj.Exists {
				return i
			}
		case subRole:
			if w.app != nil && w.app.roles&s.bit != 0 {
				return i
			}
		case subApp:
			if w.app != nil {
				for _, a := range s.apps {
					if a == w.app.idx {
						return i
					}
				}
			}
		case subCapture:
			if p.ownsPackage(w, caps[s.cap]) {
				return i
			}
		}
	}
	return -1
}

// ownsPackage reports whether name (a path segment, canonical when folding
// and not ASCII) is one of the caller's packages.
func (p *Policy) ownsPackage(w *who, name string) bool {
	if w.app != nil {
		for i, pkg := range w.app.canon {
			if p.fold {
				if eqFold(name, pkg) {
					return true
				}
			} else if name == w.app.packages[i] {
				return true
			}
		}
		return false
	}
	// An unlisted app's only package is the unknown template with its uid.
	pre, suf := p.unknownPre, p.unknownS
	if len(name) < len(pre)+len(suf)+1 {
		return false
	}
	mid := name[len(pre) : len(name)-len(suf)]
	if p.fold {
		if !eqFold(name[:len(pre)], pre) || !eqFold(name[len(name)-len(suf):], suf) {
			return false
		}
	} else if name[:len(pre)] != pre || name[len(name)-len(suf):] != suf {
		return false
	}
	var buf [10]byte
	return mid == string(strconv.AppendUint(buf[:0], uint64(w.uid), 10))
}

// unknownName is the name and package of an unlisted app uid.
func (p *Policy) unknownName(uid uint32) string {
	return strings.Replace(p.unknownTmpl, "{uid}", strconv.FormatUint(uint64(uid), 10), 1)
}

func (p *Policy) describeCaller(daemonUID uint32, c *Caller, w *who) string {
	id := fmt.Sprintf("caller uid %d gid %d pid %d", c.UID, c.GID, c.PID)
	switch {
	case w.trusted:
		why := "trust.uids"
		switch {
		case c.UID == 0 && p.trustRoot:
			why = "root"
		case c.UID < p.trustBelow:
			why = fmt.Sprintf("uid below trust.below_uid = %d", p.trustBelow)
		case p.trustDaemon && c.UID == daemonUID:
			why = "the daemon's own uid"
		case !p.trustedUID(c.UID):
			why = "a group in trust.gids"
		}
		return id + ": trusted (" + why + ")"
	case w.app != nil:
		var roles []string
		for i, r := range p.roles {
			if w.app.roles&(1<<i) != 0 {
				roles = append(roles, r)
			}
		}
		return fmt.Sprintf("%s: app %q, packages %q, roles %q", id, w.app.name, w.app.packages, roles)
	}
	n := p.unknownName(c.UID)
	return fmt.Sprintf("%s: unlisted app, named %q after apps.unknown = %q (package %q, no roles)", id, n, p.unknownTmpl, n)
}

func (p *Policy) matchTrace(path string, in *pathInfo, caps *capSet, tr *trace) int {
	last := len(p.rules) - 1
	for i := 0; i < last; i++ {
		r := p.rules[i]
		for _, pat := range r.pats {
			if !pat.quickReject(in.nseg, in.first, p.fold) && pat.match(path, p.fold, caps) {
				var cs []string
				for ci, n := range r.capNames {
					cs = append(cs, fmt.Sprintf("%s=%q", n, caps[ci]))
				}
				tr.add("%s (line %d): pattern %q matches %q %s", r.label, r.line, pat.src, path, strings.Join(cs, " "))
				return i
			}
			tr.add("%s (line %d): pattern %q does not match", r.label, r.line, pat.src)
		}
	}
	tr.add("no rule matches: the default rule decides")
	return last
}
