package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/fusegate/fusegate/internal/control"
)

func init() {
	register(command{name: "ctl", summary: "query or control a running fusegate serve", run: runCtl})
}

// defaultControlSocket is where fusegate.socket and the default
// configuration put the control socket.
const defaultControlSocket = "/run/fusegate/control.sock"

const ctlDescription = `Talk to a running 'fusegate serve' over its control socket.

  status    the daemon: version, uptime, pid, mounts and devices in one line each (JSON)
  mounts    every mount with its state, negotiated protocol, policy and counters (JSON)
  devices   every CUSE device with its node and counters (JSON)
  metrics   per mount and opcode request counts and latency, policy denials
            per rule, passthrough opens, per device opens/bytes/ioctls
            (Prometheus text format)
  reload    re-read the configuration and policies and apply them (root or
            the configured admin group)`

var ctlMethods = map[string]bool{"status": true, "mounts": true, "devices": true, "metrics": true, "reload": true}

func runCtl(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("ctl", "[options] status|mounts|devices|metrics|reload", ctlDescription)
	socket := fs.String("socket", envOr("FUSEGATE_CONTROL_SOCKET", defaultControlSocket), "control socket `PATH` (env FUSEGATE_CONTROL_SOCKET)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 || !ctlMethods[pos[0]] {
		return e.usageError(fs, "want one of status, mounts, devices, metrics, reload")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := control.Call(ctx, *socket, pos[0], nil)
	if err != nil {
		return e.fail("%s: %v", pos[0], err)
	}
	if pos[0] == "metrics" {
		var text string
		if err := json.Unmarshal(res, &text); err != nil {
			return e.fail("metrics: unexpected answer: %v", err)
		}
		fmt.Fprint(e.stdout, text)
		return exitOK
	}
	var out bytes.Buffer
	if err := json.Indent(&out, res, "", "  "); err != nil {
		out.Reset()
		out.Write(res)
	}
	fmt.Fprintln(e.stdout, out.String())
	return exitOK
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
