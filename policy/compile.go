package policy

import (
	_ "embed"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fusegate/fusegate/internal/tomlx"
)

// CurrentVersion is the only policy file version this package understands.
const CurrentVersion = 1

// MaxFileSize bounds a policy file (1 MiB).
const MaxFileSize = 1 << 20

// DefaultTimeout is the entry and attribute cache timeout of paths whose
// lookup answer is the same for every caller, unless the policy file says
// otherwise ([default] entry_timeout / attr_timeout). See docs/POLICY.md for
// the reasoning.
const DefaultTimeout = time.Second

const maxErrors = 20 // semantic errors reported at once

//go:embed default.toml
var defaultTOML []byte

// DefaultFile returns the text of the built-in policy (policy/default.toml),
// a starting point for a custom policy file.
func DefaultFile() []byte { return slices.Clone(defaultTOML) }

// Default returns the built-in policy: Android's scoped-storage layout (see
// policy/default.toml and docs/POLICY.md).
func Default() *Policy {
	p, err := Parse("default.toml", defaultTOML)
	if err != nil {
		// The embedded file is checked by TestDefaultParses.
		panic(fmt.Sprintf("policy: built-in default.toml does not parse: %v", err))
	}
	return p
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("policy: reading %s: %w", path, err)
	}
	return Parse(path, data)
}

// Policy is a compiled, immutable policy. It is safe for concurrent use and
// may be shared by several Engines.
type Policy struct {
	source string // file name given to Parse
	name   string
	fold   bool

	roles []string // role names; role i is bit 1<<i

	trustBelow  uint32
	trustRoot   bool
	trustDaemon bool
	trustUIDs   []uint32
	trustGIDs   []uint32

	apps   []*app
	byUID  map[uint32]*app
	ranges []uidRange // sorted, disjoint

	unknownTmpl          string // as written, e.g. "uid{uid}"
	unknownPre, unknownS string // canonical prefix and suffix around {uid}

	rules  []*rule // the file's rules, then the default rule
	labels map[string]int
}

type app struct {
	idx      int
	name     string
	packages []string // as written
	canon    []string // canonical forms (== packages unless folding)
	roles    uint64
	groups   []string
}

type uidRange struct {
	lo, hi uint32
	app    *app
}

type subjKind uint8

const (
	subApps    subjKind = iota // every app
	subOwner                   // Object.Exists && Object.Owner == caller uid
	subAbsent                  // !Object.Exists
	subRole                    // caller's app has the role
	subApp                     // caller's app is one of apps (app:X, group:X)
	subCapture                 // the captured segment is one of the caller's packages
)

type subject struct {
	kind subjKind
	bit  uint64 // subRole
	apps []int  // subApp: app indexes
	cap  uint8  // subCapture
	text string // as written
}

// allowList is an OR of subjects.
type allowList struct {
	src  string // the field it came from, e.g. "allow.view"
	subs []subject
}

func (a *allowList) hasKind(k subjKind) bool {
	for _, s := range a.subs {
		if s.kind == k {
			return true
		}
	}
	return false
}

type rule struct {
	idx      int
	label    string
	line     int
	pats     []*pattern
	capNames []string

	allow       [numOps]allowList
	deny        syscall.Errno
	readOnly    bool
	hidden      bool
	passthrough bool
	entry, attr time.Duration

	redact       Redaction
	redactNames  []string // canonical globs on the last segment; empty: every file
	redactExempt allowList

	private bool // lookup is granted by {capture}, not to every app
}

// Name returns the policy's name (the file's name key, or its file name).
func (p *Policy) Name() string { return p.name }

// Source returns the file name the policy was parsed from.
func (p *Policy) Source() string { return p.source }

// Rules returns the labels of the rules in order, the last being "default".
// Decision.Rule is always one of these (or "invalid").
func (p *Policy) Rules() []string {
	out := make([]string, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.label
	}
	return out
}

// IsAppPrivate reports whether path is app-private: the rule deciding it
// lets only some apps look it up, chosen by matching a path segment against
// the caller's packages (like Android/data/{pkg}/**). The file system can use
// it to keep such paths out of any cache shared between callers.
func (p *Policy) IsAppPrivate(path string) bool {
	in := scanPath(path)
	if !in.ok {
		return false
	}
	if p.fold && !in.ascii {
		path = canon(path)
		in = scanPath(path)
	}
	var caps capSet
	return p.rules[p.match(path, &in, &caps)].private
}

// match returns the index of the first rule matching path (the default rule
// when no other does), filling caps. in describes path.
func (p *Policy) match(path string, in *pathInfo, caps *capSet) int {
	last := len(p.rules) - 1
	for i := 0; i < last; i++ {
		for _, pat := range p.rules[i].pats {
			if !pat.quickReject(in.nseg, in.first, p.fold) && pat.match(path, p.fold, caps) {
				return i
			}
		}
	}
	return last
}

// The policy file, as decoded.

type fileDoc struct {
	Version         *int64      `toml:"version"`
	Name            string      `toml:"name"`
	CaseInsensitive bool        `toml:"case_insensitive"`
	Roles           []string    `toml:"roles"`
	Trust           fileTrust   `toml:"trust"`
	Apps            fileApps    `toml:"apps"`
	App             []fileApp   `toml:"app"`
	Group           []fileGroup `toml:"group"`
	Default         *fileRule   `toml:"default"`
	Rule            []fileRule  `toml:"rule"`
}

type fileTrust struct {
	BelowUID *int64  `toml:"below_uid"`
	Root     *bool   `toml:"root"`
	Daemon   *bool   `toml:"daemon"`
	UIDs     []int64 `toml:"uids"`
	GIDs     []int64 `toml:"gids"`
}

type fileApps struct {
	Unknown *string `toml:"unknown"`
}

type fileApp struct {
	Name     string   `toml:"name"`
	UIDs     []any    `toml:"uids"`
	Packages []string `toml:"packages"`
	Roles    []string `toml:"roles"`
}

type fileGroup struct {
	Name  string   `toml:"name"`
	Apps  []string `toml:"apps"`
	Roles []string `toml:"roles"`
}

type fileRule struct {
	Name         string    `toml:"name"`
	Path         *string   `toml:"path"`
	Paths        []string  `toml:"paths"`
	Allow        fileAllow `toml:"allow"`
	Deny         string    `toml:"deny"`
	Hidden       bool      `toml:"hidden"`
	ReadOnly     bool      `toml:"read_only"`
	Passthrough  *bool     `toml:"passthrough"`
	EntryTimeout *string   `toml:"entry_timeout"`
	AttrTimeout  *string   `toml:"attr_timeout"`
	Redact       []string  `toml:"redact"`
	RedactNames  []string  `toml:"redact_names"`
	RedactExempt []string  `toml:"redact_exempt"`
}

type fileAllow struct {
	Any        *[]string `toml:"any"`
	View       *[]string `toml:"view"`
	Modify     *[]string `toml:"modify"`
	Make       *[]string `toml:"make"`
	Lookup     *[]string `toml:"lookup"`
	ReadDir    *[]string `toml:"readdir"`
	Read       *[]string `toml:"read"`
	Write      *[]string `toml:"write"`
	Create     *[]string `toml:"create"`
	Mkdir      *[]string `toml:"mkdir"`
	Delete     *[]string `toml:"delete"`
	RenameFrom *[]string `toml:"rename_from"`
	RenameTo   *[]string `toml:"rename_to"`
	Setattr    *[]string `toml:"setattr"`
}

func (a *fileAllow) given() bool {
	for _, l := range a.lists() {
		if l.v != nil {
			return true
		}
	}
	return false
}

type namedList struct {
	key string
	v   *[]string
}

// lists returns the allow keys, most general first.
func (a *fileAllow) lists() []namedList {
	return []namedList{
		{"any", a.Any}, {"view", a.View}, {"modify", a.Modify}, {"make", a.Make},
		{"lookup", a.Lookup}, {"readdir", a.ReadDir}, {"read", a.Read}, {"write", a.Write},
		{"create", a.Create}, {"mkdir", a.Mkdir}, {"delete", a.Delete},
		{"rename_from", a.RenameFrom}, {"rename_to", a.RenameTo}, {"setattr", a.Setattr},
	}
}

// opGroup names the group key covering op.
func opGroup(op Op) string {
	switch op {
	case OpLookup, OpReadDir, OpRead:
		return "view"
	case OpWrite, OpDelete, OpRenameFrom, OpSetattr:
		return "modify"
	default:
		return "make"
	}
}

// Parse compiles a policy file. name is used in error messages, which all
// have the form "name:line:col: field: message"; a tomlx.Errors lists
// several at once.
func Parse(name string, data []byte) (*Policy, error) {
	if len(data) > MaxFileSize {
		return nil, &tomlx.Error{File: name, Err: fmt.Errorf("policy file larger than %d bytes", MaxFileSize)}
	}
	var f fileDoc
	doc, err := tomlx.Decode(name, data, &f)
	if err != nil {
		return nil, err
	}
	c := &compiler{doc: doc, f: &f, p: &Policy{source: name, name: name}}
	c.compile()
	if err := c.errs.Err(); err != nil {
		return nil, err
	}
	return c.p, nil
}

type compiler struct {
	doc  *tomlx.Document
	f    *fileDoc
	p    *Policy
	errs tomlx.Errors

	roleBit   map[string]uint64
	appByName map[string]*app
	groups    map[string][]int // group -> app indexes
	baseEntry time.Duration
	baseAttr  time.Duration
	basePT    bool
}

func (c *compiler) errf(field, format string, args ...any) {
	if len(c.errs) < maxErrors {
		c.errs = append(c.errs, c.doc.Errorf(field, format, args...))
	}
}

func (c *compiler) compile() {
	f, p := c.f, c.p
	switch {
	case f.Version == nil:
		c.errs = append(c.errs, &tomlx.Error{File: p.source, Line: 1, Field: "version",
			Err: fmt.Errorf("required: the file must start with version = %d", CurrentVersion)})
		return
	case *f.Version != CurrentVersion:
		c.errf("version", "unsupported policy version %d (this fusegate understands version %d)", *f.Version, CurrentVersion)
		return
	}
	if f.Name != "" {
		p.name = f.Name
	}
	p.fold = f.CaseInsensitive
	c.compileRoles()
	c.compileTrust()
	c.compileApps()
	c.compileGroups()
	c.compileUnknown()
	c.compileRules()
}

func (c *compiler) compileRoles() {
	c.roleBit = make(map[string]uint64)
	for i, r := range c.f.Roles {
		field := fmt.Sprintf("roles[%d]", i)
		switch {
		case !validName(r):
			c.errf(field, "bad role name %q: use letters, digits, '-', '_' and '.'", r)
		case c.roleBit[r] != 0:
			c.errf(field, "role %q declared twice", r)
		case len(c.p.roles) == 64:
			c.errf(field, "too many roles (at most 64)")
		default:
			c.roleBit[r] = 1 << len(c.p.roles)
			c.p.roles = append(c.p.roles, r)
		}
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, ch := range s {
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9',
			ch == '-', ch == '_', ch == '.':
		default:
			return false
		}
	}
	return true
}

func (c *compiler) role(field, name string) (uint64, bool) {
	b, ok := c.roleBit[name]
	if !ok {
		c.errf(field, "unknown role %q (declare it in roles = [...] at the top of the file)", name)
	}
	return b, ok
}

func uid32(v int64) (uint32, bool) {
	return uint32(v), v >= 0 && v <= math.MaxUint32
}

func (c *compiler) compileTrust() {
	t, p := &c.f.Trust, c.p
	p.trustBelow = 10000
	if t.BelowUID != nil {
		u, ok := uid32(*t.BelowUID)
		if !ok {
			c.errf("trust.below_uid", "%d is not a uid (0..4294967295)", *t.BelowUID)
		}
		p.trustBelow = u
	}
	p.trustRoot = t.Root == nil || *t.Root
	p.trustDaemon = t.Daemon == nil || *t.Daemon
	for i, v := range t.UIDs {
		u, ok := uid32(v)
		if !ok {
			c.errf(fmt.Sprintf("trust.uids[%d]", i), "%d is not a uid", v)
			continue
		}
		p.trustUIDs = append(p.trustUIDs, u)
	}
	for i, v := range t.GIDs {
		g, ok := uid32(v)
		if !ok {
			c.errf(fmt.Sprintf("trust.gids[%d]", i), "%d is not a gid", v)
			continue
		}
		p.trustGIDs = append(p.trustGIDs, g)
	}
}

// trustedUID reports whether uid is trusted by uid alone (not counting the
// daemon's uid and groups).
func (p *Policy) trustedUID(uid uint32) bool {
	if uid < p.trustBelow || (uid == 0 && p.trustRoot) {
		return true
	}
	for _, u := range p.trustUIDs {
		if u == uid {
			return true
		}
	}
	return false
}

type span struct {
	lo, hi uint32
	app    *app
	field  string
}

func (c *compiler) compileApps() {
	p := c.p
	c.appByName = make(map[string]*app)
	p.byUID = make(map[uint32]*app)
	var spans []span
	pkgOwner := make(map[string]string) // canonical package -> app name
	for i := range c.f.App {
		fa := &c.f.App[i]
		base := fmt.Sprintf("app[%d]", i)
		a := &app{idx: len(p.apps), name: fa.Name}
		switch {
		case fa.Name == "":
			c.errf(base, "name: required")
		case !validName(fa.Name):
			c.errf(base+".name", "bad app name %q: use letters, digits, '-', '_' and '.'", fa.Name)
		case c.appByName[fa.Name] != nil:
			c.errf(base+".name", "app %q defined twice", fa.Name)
		}
		c.appByName[fa.Name] = a
		p.apps = append(p.apps, a)
		if len(fa.UIDs) == 0 {
			c.errf(base, "uids: at least one uid or uid range is required")
		}
		for j, v := range fa.UIDs {
			field := fmt.Sprintf("%s.uids[%d]", base, j)
			lo, hi, err := parseUIDSpec(v)
			if err != nil {
				c.errf(field, "%v", err)
				continue
			}
			if lo < p.trustBelow || (lo == 0 && p.trustRoot) {
				c.errf(field, "uid %d is trusted (below trust.below_uid = %d): app rules would never apply to it", lo, p.trustBelow)
				continue
			}
			if i := slices.IndexFunc(p.trustUIDs, func(u uint32) bool { return u >= lo && u <= hi }); i >= 0 {
				c.errf(field, "uid %d is trusted (trust.uids): app rules would never apply to it", p.trustUIDs[i])
				continue
			}
			spans = append(spans, span{lo, hi, a, field})
		}
		if len(fa.Packages) == 0 {
			c.errf(base, "packages: at least one package name is required")
		}
		for j, pkg := range fa.Packages {
			field := fmt.Sprintf("%s.packages[%d]", base, j)
			if !validPackage(pkg) {
				c.errf(field, "bad package name %q: no '/', NUL, '{' or '}'; not empty, \".\" or \"..\"", pkg)
				continue
			}
			cp := canonLit(pkg, p.fold)
			if other, dup := pkgOwner[cp]; dup {
				c.errf(field, "package %q already belongs to app %q", pkg, other)
				continue
			}
			pkgOwner[cp] = fa.Name
			a.packages = append(a.packages, pkg)
			a.canon = append(a.canon, cp)
		}
		for j, r := range fa.Roles {
			if b, ok := c.role(fmt.Sprintf("%s.roles[%d]", base, j), r); ok {
				a.roles |= b
			}
		}
	}
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	for i, s := range spans {
		if i > 0 && s.lo <= spans[i-1].hi {
			prev := spans[i-1]
			c.errf(s.field, "uids %s overlap uids %s of app %q", fmtSpan(s.lo, s.hi), fmtSpan(prev.lo, prev.hi), prev.app.name)
			continue
		}
		if s.lo == s.hi {
			p.byUID[s.lo] = s.app
		} else {
			p.ranges = append(p.ranges, uidRange{s.lo, s.hi, s.app})
		}
	}
}

func fmtSpan(lo, hi uint32) string {
	if lo == hi {
		return strconv.FormatUint(uint64(lo), 10)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

// parseUIDSpec accepts an integer uid, or a string "uid" or "lo-hi".
func parseUIDSpec(v any) (lo, hi uint32, err error) {
	switch x := v.(type) {
	case int64:
		u, ok := uid32(x)
		if !ok {
			return 0, 0, fmt.Errorf("%d is not a uid (0..4294967295)", x)
		}
		return u, u, nil
	case string:
		a, b, isRange := strings.Cut(x, "-")
		lo64, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
		hi64 := lo64
		var err2 error
		if isRange {
			hi64, err2 = strconv.ParseUint(strings.TrimSpace(b), 10, 32)
		}
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("bad uid range %q: want \"first-last\" with uids 0..4294967295", x)
		}
		if lo64 > hi64 {
			return 0, 0, fmt.Errorf("bad uid range %q: first uid above last", x)
		}
		return uint32(lo64), uint32(hi64), nil
	}
	return 0, 0, fmt.Errorf("a uid must be an integer or a string \"first-last\", not %T", v)
}

func validPackage(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 255 {
		return false
	}
	return !strings.ContainsAny(s, "/\x00{}")
}

func (c *compiler) compileGroups() {
	c.groups = make(map[string][]int)
	for i := range c.f.Group {
		g := &c.f.Group[i]
		base := fmt.Sprintf("group[%d]", i)
		switch {
		case g.Name == "":
			c.errf(base, "name: required")
			continue
		case !validName(g.Name):
			c.errf(base+".name", "bad group name %q", g.Name)
			continue
		case c.groups[g.Name] != nil:
			c.errf(base+".name", "group %q defined twice", g.Name)
			continue
		}
		var bits uint64
		for j, r := range g.Roles {
			if b, ok := c.role(fmt.Sprintf("%s.roles[%d]", base, j), r); ok {
				bits |= b
			}
		}
		members := []int{}
		for j, name := range g.Apps {
			a := c.appByName[name]
			if a == nil {
				c.errf(fmt.Sprintf("%s.apps[%d]", base, j), "unknown app %q", name)
				continue
			}
			a.roles |= bits
			a.groups = append(a.groups, g.Name)
			members = append(members, a.idx)
		}
		c.groups[g.Name] = members
	}
}

func (c *compiler) compileUnknown() {
	p := c.p
	t := "uid{uid}"
	if c.f.Apps.Unknown != nil {
		t = *c.f.Apps.Unknown
	}
	pre, suf, ok := strings.Cut(t, "{uid}")
	if !ok || strings.Contains(suf, "{uid}") || len(t) > 64 || !validPackage(pre+"0"+suf) {
		c.errf("apps.unknown", "bad name template %q: must contain {uid} exactly once, at most 64 bytes, no '/', '{', '}' otherwise", t)
		return
	}
	p.unknownTmpl = t
	p.unknownPre = canonLit(pre, p.fold)
	p.unknownS = canonLit(suf, p.fold)
}

func (c *compiler) compileRules() {
	p := c.p
	c.baseEntry, c.baseAttr, c.basePT = DefaultTimeout, DefaultTimeout, true
	def := c.f.Default
	if def == nil {
		def = &fileRule{}
	}
	if def.EntryTimeout != nil {
		if d, ok := c.duration("default.entry_timeout", *def.EntryTimeout); ok {
			c.baseEntry = d
		}
	}
	if def.AttrTimeout != nil {
		if d, ok := c.duration("default.attr_timeout", *def.AttrTimeout); ok {
			c.baseAttr = d
		}
	}
	if def.Passthrough != nil {
		c.basePT = *def.Passthrough
	}
	names := map[string]string{}
	for i := range c.f.Rule {
		fr := &c.f.Rule[i]
		base := fmt.Sprintf("rule[%d]", i)
		r := c.rule(base, len(p.rules), fr)
		if r == nil {
			continue
		}
		if fr.Name != "" {
			if other, dup := names[fr.Name]; dup {
				c.errf(base+".name", "rule name %q already used by %s", fr.Name, other)
			}
			names[fr.Name] = base
		}
		p.rules = append(p.rules, r)
	}
	if def.Name != "" {
		c.errf("default.name", "not allowed in [default]: the default rule is called \"default\"")
	}
	if def.Path != nil || def.Paths != nil {
		c.errf("default.path", "not allowed in [default]: the default rule applies to every path no rule matches")
	}
	if r := c.rule("default", len(p.rules), def); r != nil {
		p.rules = append(p.rules, r)
	}
	if len(c.errs) > 0 {
		return
	}
	p.labels = make(map[string]int, len(p.rules))
	for i, r := range p.rules {
		p.labels[r.label] = i
	}
}

// rule compiles one rule; base is its field path ("rule[3]" or "default").
func (c *compiler) rule(base string, idx int, fr *fileRule) *rule {
	r := &rule{idx: idx, line: c.doc.KeyPos(base).Line}
	isDefault := base == "default"
	// Patterns.
	var srcs []string
	var fields []string
	switch {
	case isDefault:
	case fr.Path != nil && fr.Paths != nil:
		c.errf(base+".paths", "give either path or paths, not both")
		return nil
	case fr.Path != nil:
		srcs, fields = []string{*fr.Path}, []string{base + ".path"}
	case len(fr.Paths) > 0:
		srcs = fr.Paths
		for i := range fr.Paths {
			fields = append(fields, fmt.Sprintf("%s.paths[%d]", base, i))
		}
	default:
		c.errf(base, "path: required (or paths = [...])")
		return nil
	}
	for i, src := range srcs {
		pat, err := compilePattern(src, c.p.fold, &r.capNames)
		if err != nil {
			c.errf(fields[i], "%v", err)
			continue
		}
		r.pats = append(r.pats, pat)
	}
	switch {
	case isDefault:
		r.label = "default"
	case fr.Name != "":
		if !validName(fr.Name) {
			c.errf(base+".name", "bad rule name %q: use letters, digits, '-', '_' and '.'", fr.Name)
		}
		r.label = fmt.Sprintf("rule[%d] %s", idx, fr.Name)
	case len(srcs) > 0:
		r.label = fmt.Sprintf("rule[%d] %s", idx, srcs[0])
	}

	// Denial errno.
	r.deny = syscall.EACCES
	if fr.Deny != "" {
		e, ok := parseErrno(fr.Deny)
		if !ok {
			c.errf(base+".deny", "bad errno %q: want one of EACCES, ENOENT, EPERM, EROFS", fr.Deny)
		}
		r.deny = e
	}
	r.hidden, r.readOnly = fr.Hidden, fr.ReadOnly
	if fr.Hidden {
		if fr.Allow.given() {
			c.errf(base+".allow", "a hidden rule allows nothing to apps: remove allow or hidden")
		}
		if fr.Deny != "" && fr.Deny != "ENOENT" {
			c.errf(base+".deny", "a hidden rule denies with ENOENT")
		}
		r.deny = syscall.ENOENT
	}

	// Allow lists: op key, else its group key, else any.
	lists := map[string]*allowList{}
	for _, nl := range fr.Allow.lists() {
		if nl.v == nil {
			continue
		}
		field := base + ".allow." + nl.key
		al := &allowList{src: "allow." + nl.key}
		for j, s := range *nl.v {
			if sub, ok := c.subject(fmt.Sprintf("%s[%d]", field, j), s, r, isDefault); ok {
				al.subs = append(al.subs, sub)
			}
		}
		lists[nl.key] = al
	}
	roBad := map[string][]string{}
	for op := OpLookup; op < numOps; op++ {
		al := lists[op.String()]
		if al == nil {
			al = lists[opGroup(op)]
		}
		if al == nil {
			al = lists["any"]
		}
		if al == nil {
			al = &allowList{src: "(no allow list)"}
		}
		r.allow[op] = *al
		if len(al.subs) > 0 && fr.ReadOnly && op.mutates() {
			roBad[al.src] = append(roBad[al.src], op.String())
		}
	}
	for _, nl := range fr.Allow.lists() {
		if ops := roBad["allow."+nl.key]; ops != nil {
			c.errf(base+".allow."+nl.key, "a read_only rule cannot allow %s", strings.Join(ops, ", "))
		}
	}

	// Cache timeouts and passthrough.
	callerDependent := !r.allow[OpLookup].hasKind(subApps)
	r.private = callerDependent && r.allow[OpLookup].hasKind(subCapture)
	r.entry, r.attr, r.passthrough = c.baseEntry, c.baseAttr, c.basePT
	if callerDependent {
		r.entry, r.attr = 0, 0
	}
	if fr.EntryTimeout != nil && !isDefault {
		if d, ok := c.duration(base+".entry_timeout", *fr.EntryTimeout); ok {
			r.entry = d
		}
	}
	if fr.AttrTimeout != nil && !isDefault {
		if d, ok := c.duration(base+".attr_timeout", *fr.AttrTimeout); ok {
			r.attr = d
		}
	}
	if callerDependent && r.entry != 0 {
		c.errf(base+".entry_timeout", "must be 0: lookup is not allowed to every app here, and the kernel's dentry cache is shared by all callers (one caller's lookup would answer another's)")
	}
	if fr.Passthrough != nil {
		r.passthrough = *fr.Passthrough
	}

	// Redaction.
	for j, k := range fr.Redact {
		switch k {
		case "location":
			r.redact |= RedactLocation
		default:
			c.errf(fmt.Sprintf("%s.redact[%d]", base, j), "unknown redaction %q (known: location)", k)
		}
	}
	if len(fr.Redact) == 0 && (fr.RedactNames != nil || fr.RedactExempt != nil) {
		c.errf(base+".redact", "redact_names and redact_exempt need redact = [...]")
	}
	for j, g := range fr.RedactNames {
		if g == "" || strings.ContainsAny(g, "/\x00{}") {
			c.errf(fmt.Sprintf("%s.redact_names[%d]", base, j), "bad file name glob %q: one name, '*' as wildcard, no '/', '{', '}'", g)
			continue
		}
		r.redactNames = append(r.redactNames, canonLit(g, c.p.fold))
	}
	r.redactExempt.src = "redact_exempt"
	for j, s := range fr.RedactExempt {
		if sub, ok := c.subject(fmt.Sprintf("%s.redact_exempt[%d]", base, j), s, r, isDefault); ok {
			r.redactExempt.subs = append(r.redactExempt.subs, sub)
		}
	}
	return r
}

func (c *compiler) duration(field, s string) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	if err != nil {
		c.errf(field, "bad duration %q: write e.g. \"0s\", \"500ms\", \"1s\", \"1h\"", s)
		return 0, false
	}
	if d < 0 {
		c.errf(field, "negative duration %q", s)
		return 0, false
	}
	return d, true
}

// subject compiles one entry of an allow list.
func (c *compiler) subject(field, s string, r *rule, isDefault bool) (subject, bool) {
	sub := subject{text: s}
	kind, arg, hasArg := strings.Cut(s, ":")
	switch {
	case s == "apps":
		sub.kind = subApps
	case s == "owner":
		sub.kind = subOwner
	case s == "absent":
		sub.kind = subAbsent
	case hasArg && kind == "role":
		b, ok := c.role(field, arg)
		if !ok {
			return sub, false
		}
		sub.kind, sub.bit = subRole, b
	case hasArg && kind == "app":
		a := c.appByName[arg]
		if a == nil {
			c.errf(field, "unknown app %q", arg)
			return sub, false
		}
		sub.kind, sub.apps = subApp, []int{a.idx}
	case hasArg && kind == "group":
		m, ok := c.groups[arg]
		if !ok {
			c.errf(field, "unknown group %q", arg)
			return sub, false
		}
		sub.kind, sub.apps = subApp, m
	case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
		name := s[1 : len(s)-1]
		idx := slices.Index(r.capNames, name)
		if idx < 0 || isDefault {
			c.errf(field, "capture %s is not in the rule's path", s)
			return sub, false
		}
		for _, pat := range r.pats {
			if !slices.Contains(pat.captures(), uint8(idx)) {
				c.errf(field, "capture %s is not in every pattern of the rule (missing in %q)", s, pat.src)
				return sub, false
			}
		}
		sub.kind, sub.cap = subCapture, uint8(idx)
	default:
		c.errf(field, "bad subject %q: want apps, owner, absent, role:NAME, app:NAME, group:NAME or {capture}", s)
		return sub, false
	}
	return sub, true
}
