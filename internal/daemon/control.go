package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/fusegate/fusegate/internal/control"
)

// methods are the control socket's methods. Everything is read-only but
// reload, which needs root or the configured admin group.
func (d *Daemon) methods() map[string]control.Method {
	noParams := func(h func(ctx context.Context, p control.Peer) (any, error)) control.Handler {
		return func(ctx context.Context, p control.Peer, params json.RawMessage) (any, error) {
			if t := bytes.TrimSpace(params); len(t) > 0 && !bytes.Equal(t, []byte("null")) && !bytes.Equal(t, []byte("{}")) {
				return nil, fmt.Errorf("this method takes no params, got %s", clip(t))
			}
			return h(ctx, p)
		}
	}
	return map[string]control.Method{
		"status": {Handler: noParams(func(ctx context.Context, p control.Peer) (any, error) {
			return d.Status(), nil
		})},
		"mounts": {Handler: noParams(func(ctx context.Context, p control.Peer) (any, error) {
			return d.Mounts(), nil
		})},
		"devices": {Handler: noParams(func(ctx context.Context, p control.Peer) (any, error) {
			return d.Devices(), nil
		})},
		"metrics": {Handler: noParams(func(ctx context.Context, p control.Peer) (any, error) {
			var b bytes.Buffer
			if err := d.WriteMetrics(&b); err != nil {
				return nil, err
			}
			return b.String(), nil
		})},
		"reload": {Admin: true, Handler: noParams(func(ctx context.Context, p control.Peer) (any, error) {
			res, err := d.Reload(ctx, fmt.Sprintf("control socket (uid %d, pid %d)", p.UID, p.PID))
			if err != nil {
				return nil, err
			}
			return res, nil
		})},
	}
}

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
