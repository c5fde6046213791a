package main

import (
	"context"
	"fmt"

	"github.com/fusegate/fusegate/config"
)

func init() {
	register(command{name: "config", summary: "check a daemon configuration file", run: runConfig})
}

const configDescription = `Work with fusegate serve's configuration (see docs/CONFIG.md).

  check FILE...   parse each FILE and check it against this machine (lower
                  directories, mount point parents, users, groups, policy
                  files); report every error with file:line:col and the
                  field; exit 1 if any is invalid
  default         print the embedded default configuration`

func runConfig(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("config", "check FILE... | default", configDescription)
	offline := fs.Bool("offline", false, "check: only the file itself, not this machine's paths, users and policy files")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return e.usageError(fs, "want a subcommand: check or default")
	}
	switch pos[0] {
	case "default":
		if len(pos) != 1 {
			return e.usageError(fs, "default takes no arguments")
		}
		e.stdout.Write(config.DefaultFile())
		return exitOK
	case "check":
		if len(pos) < 2 {
			return e.usageError(fs, "check: want at least one FILE")
		}
		bad := 0
		for _, f := range pos[1:] {
			c, err := config.Load(f)
			if err == nil && !*offline {
				err = c.Check()
			}
			if err != nil {
				fmt.Fprintln(e.stderr, err)
				bad++
				continue
			}
			fmt.Fprintf(e.stdout, "%s: ok (%d mounts, %d devices)\n", f, len(c.Mounts), len(c.Devices))
		}
		if bad > 0 {
			return exitFail
		}
		return exitOK
	}
	return e.usageError(fs, "unknown subcommand %q", pos[0])
}
