package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fusegate/fusegate/policy"
)

func init() {
	register(command{name: "policy", summary: "check a policy file or explain its decisions", run: runPolicy})
}

const policyDescription = `Work with policy files (see docs/POLICY.md).

  check FILE...       parse each FILE; report every error with file:line:col
                      and the field, exit 1 if any is invalid
  explain FILE --uid N [--gid N] [--owner N] [--dir] OP PATH
                      print the decision FILE's policy takes when the caller
                      N does OP on PATH (relative to the mount root), and the
                      rules it tried; FILE "default" is the built-in policy
  default             print the built-in policy file

OP is one of: ` + "lookup, readdir, read, write, create, mkdir, delete, rename_from, rename_to, setattr."

func runPolicy(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("policy", "check FILE... | explain FILE [options] OP PATH | default", policyDescription)
	uid := fs.Uint("uid", 0, "explain: the caller's uid")
	gid := fs.Uint("gid", 0, "explain: the caller's gid (default: the uid)")
	pid := fs.Uint("pid", 0, "explain: the caller's pid (for the audit line only)")
	owner := fs.String("owner", "", "explain: the uid owning PATH on the lower file system (default: PATH does not exist)")
	dir := fs.Bool("dir", false, "explain: PATH is a directory")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return e.usageError(fs, "want a subcommand: check, explain or default")
	}
	switch pos[0] {
	case "check":
		if len(pos) < 2 {
			return e.usageError(fs, "check: want at least one FILE")
		}
		bad := 0
		for _, f := range pos[1:] {
			p, err := policy.Load(f)
			if err != nil {
				fmt.Fprintln(e.stderr, err)
				bad++
				continue
			}
			fmt.Fprintf(e.stdout, "%s: ok (policy %q, %d rules)\n", f, p.Name(), len(p.Rules()))
		}
		if bad > 0 {
			return exitFail
		}
		return exitOK
	case "default":
		if len(pos) != 1 {
			return e.usageError(fs, "default takes no arguments")
		}
		e.stdout.Write(policy.DefaultFile())
		return exitOK
	case "explain":
		if len(pos) != 4 {
			return e.usageError(fs, "explain: want FILE OP PATH, got %d arguments", len(pos)-1)
		}
		return explain(e, isSet(fs, "uid"), pos[1], pos[2], pos[3],
			uint32(*uid), uint32(*gid), isSet(fs, "gid"), uint32(*pid), *owner, *dir)
	}
	return e.usageError(fs, "unknown subcommand %q", pos[0])
}

func explain(e *env, uidGiven bool, file, opName, path string, uid, gid uint32, gidGiven bool, pid uint32, owner string, dir bool) int {
	if !uidGiven {
		fmt.Fprintln(e.stderr, "fusegate policy: explain needs --uid")
		return exitUsage
	}
	op, ok := parseOp(opName)
	if !ok {
		fmt.Fprintf(e.stderr, "fusegate policy: unknown OP %q (want lookup, readdir, read, write, create, mkdir, delete, rename_from, rename_to or setattr)\n", opName)
		return exitUsage
	}
	var p *policy.Policy
	if file == "default" {
		p = policy.Default()
	} else {
		var err error
		if p, err = policy.Load(file); err != nil {
			fmt.Fprintln(e.stderr, err)
			return exitFail
		}
	}
	if !gidGiven {
		gid = uid
	}
	obj := policy.Object{Path: strings.Trim(path, "/"), Dir: dir}
	if owner != "" {
		o, err := strconv.ParseUint(owner, 10, 32)
		if err != nil {
			fmt.Fprintf(e.stderr, "fusegate policy: --owner %q is not a uid\n", owner)
			return exitUsage
		}
		obj.Owner, obj.Exists = uint32(o), true
	}
	daemon := uint32(os.Getuid())
	eng := policy.NewEngine(p, policy.Options{DaemonUID: &daemon})
	d, trace := eng.Explain(policy.Caller{UID: uid, GID: gid, PID: pid}, op, obj)
	verdict := "allowed"
	if !d.Allowed {
		verdict = "denied: " + d.Err().Error()
	}
	fmt.Fprintf(e.stdout, "%s %q by uid %d: %s\n", op, "/"+obj.Path, uid, verdict)
	fmt.Fprintf(e.stdout, "  rule:         %s\n", d.Rule)
	if d.Trusted {
		fmt.Fprintln(e.stdout, "  trusted:      yes (app rules bypassed)")
	}
	if d.Allowed {
		fmt.Fprintf(e.stdout, "  passthrough:  %v\n", d.Passthrough)
		if d.Redact != 0 {
			fmt.Fprintf(e.stdout, "  redact:       %s\n", d.Redact)
		}
	}
	fmt.Fprintf(e.stdout, "  entry cache:  %v\n  attr cache:   %v\n", d.EntryTimeout.Round(time.Millisecond), d.AttrTimeout.Round(time.Millisecond))
	if len(trace) > 0 {
		fmt.Fprintln(e.stdout, "  trace:")
		for _, t := range trace {
			fmt.Fprintf(e.stdout, "    %s\n", t)
		}
	}
	return exitOK
}

func parseOp(s string) (policy.Op, bool) {
	for op := policy.Op(1); op.Valid(); op++ {
		if op.String() == s {
			return op, true
		}
	}
	return 0, false
}
