package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev/abi"
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

// check is the mount's passthrough gate (passthrough.Options.Check): it maps
// the request onto the policy's operations and asks the mount's engine.
//
// It is the daemon's interim enforcement until the policy moves into the
// passthrough package: every request about a path is decided, with the
// object's owner and existence from the lower file system; requests on
// open files (READ, WRITE, FSYNC, RELEASE...) were decided at open. Not
// yet done here: filtering directory listings entry by entry, and the
// redaction of reads (policy.Decision.Redact).
func (m *mount) check(ctx context.Context, a *passthrough.Access) error {
	e := m.engine.Load()
	if e == nil {
		return nil // policy "none"
	}
	op, op2, dir := opsOf(a)
	if op == 0 {
		return nil
	}
	c := policy.Caller{UID: a.Request.UID, GID: a.Request.GID, PID: a.Request.PID, Groups: a.Groups()}
	obj, err := objectOf(a, a.Path())
	if err != nil {
		return err
	}
	if dir {
		obj.Dir = true
	}
	if err := decide(ctx, e, c, op, obj); err != nil {
		return err
	}
	if op2 == 0 {
		return nil
	}
	// The second end of RENAME (the target, which a rename would replace)
	// and LINK (the existing file).
	st, err := a.StatNew()
	if err != nil {
		return err
	}
	obj2 := policy.Object{Path: policyPath(a.NewPath()), Exists: st.Exists, Dir: st.Dir, Owner: st.UID}
	return decide(ctx, e, c, op2, obj2)
}

func decide(ctx context.Context, e *policy.Engine, c policy.Caller, op policy.Op, obj policy.Object) error {
	d := e.Decide(ctx, c, op, obj)
	if !d.Allowed {
		e.Audit(c, op, obj, d)
		return d.Err()
	}
	return nil
}

// opsOf maps a request onto the policy operations to decide: op on the
// request's path, op2 (if any) on its second path; dir reports that op
// makes a directory. op 0 means nothing to decide.
func opsOf(a *passthrough.Access) (op, op2 policy.Op, dir bool) {
	switch a.Request.Opcode {
	case abi.OpLookup, abi.OpGetattr, abi.OpStatx, abi.OpAccess, abi.OpReadlink,
		abi.OpGetxattr, abi.OpListxattr:
		return policy.OpLookup, 0, false
	case abi.OpOpendir, abi.OpReaddir, abi.OpReaddirplus:
		return policy.OpReadDir, 0, false
	case abi.OpOpen:
		f := a.OpenFlags
		if f&unix.O_ACCMODE != unix.O_RDONLY || f&unix.O_TRUNC != 0 {
			return policy.OpWrite, 0, false
		}
		return policy.OpRead, 0, false
	case abi.OpCreate, abi.OpMknod, abi.OpSymlink, abi.OpTmpfile:
		return policy.OpCreate, 0, false
	case abi.OpMkdir:
		return policy.OpMkdir, 0, true
	case abi.OpUnlink, abi.OpRmdir:
		return policy.OpDelete, 0, false
	case abi.OpRename, abi.OpRename2:
		return policy.OpRenameFrom, policy.OpRenameTo, false
	case abi.OpLink:
		// The new name is created; the existing file becomes reachable
		// elsewhere, as by a rename.
		return policy.OpCreate, policy.OpRenameFrom, false
	case abi.OpSetattr:
		return policy.OpSetattr, 0, false
	case abi.OpSetxattr, abi.OpRemovexattr, abi.OpFallocate, abi.OpCopyFileRange:
		return policy.OpWrite, 0, false
	}
	return 0, 0, false
}

// objectOf describes the file a request is about for the policy.
func objectOf(a *passthrough.Access, path string) (policy.Object, error) {
	obj := policy.Object{Path: policyPath(path)}
	st, err := a.Stat()
	if err != nil {
		return obj, err
	}
	obj.Exists, obj.Dir, obj.Owner = st.Exists, st.Dir, st.UID
	return obj, nil
}

// policyPath turns the passthrough's "/a/b" into the policy's "a/b" ("" for
// the root).
func policyPath(p string) string { return strings.Trim(p, "/") }

// timeouts are the kernel cache timeouts of entries
// (passthrough.Options.Timeouts): those of the rule deciding the path,
// whoever the caller is (zero where lookups are answered differently for
// different callers, so the dentry cache the kernel shares between callers
// cannot answer one app with another's result). They are read from a
// decision for a trusted caller by an engine kept for that alone, so the
// mount's decision counters count requests only.
func (m *mount) timeouts(ctx context.Context, e *passthrough.EntryInfo) passthrough.Timeouts {
	eng := m.timing.Load()
	if eng == nil {
		if !e.Exists {
			return passthrough.Timeouts{Entry: defaultTimeout}
		}
		return passthrough.Timeouts{Entry: defaultTimeout, Attr: defaultTimeout}
	}
	obj := policy.Object{Path: policyPath(e.Path()), Exists: e.Exists, Dir: e.Mode&unix.S_IFMT == unix.S_IFDIR}
	d := eng.Decide(ctx, policy.Caller{UID: 0, GID: 0}, policy.OpLookup, obj)
	return passthrough.Timeouts{Entry: d.EntryTimeout, Attr: d.AttrTimeout}
}

// defaultTimeout is the cache timeout of a mount without a policy.
const defaultTimeout = policy.DefaultTimeout
