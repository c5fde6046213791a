package daemon

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/godbus/dbus/v5"
)

// systemdRestartPending asks systemd (D-Bus, on its private socket
// /run/systemd/private, which needs root and no dbus-daemon; the system bus
// otherwise) whether the job that is stopping this process's unit is a
// restart. It returns the job type ("" when no job is queued: a plain kill,
// or an exit systemd did not ask for).
//
// systemd 252 keeps the unit's fd store across a restart job (and an
// automatic restart after a failure) and empties it when the unit stops for
// good, so a restart may leave the mounts and devices to the successor and
// a stop must remove them.
func systemdRestartPending(ctx context.Context) (restart bool, job string, err error) {
	conn, err := systemdBus(ctx)
	if err != nil {
		return false, "", err
	}
	defer conn.Close()
	sd := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	var unitPath dbus.ObjectPath
	if err := sd.CallWithContext(ctx, "org.freedesktop.systemd1.Manager.GetUnitByPID", 0, uint32(os.Getpid())).Store(&unitPath); err != nil {
		return false, "", fmt.Errorf("GetUnitByPID: %w", err)
	}
	var v dbus.Variant
	unit := conn.Object("org.freedesktop.systemd1", unitPath)
	if err := unit.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, "org.freedesktop.systemd1.Unit", "Job").Store(&v); err != nil {
		return false, "", fmt.Errorf("unit %s: Job: %w", unitPath, err)
	}
	var jobRef struct {
		ID   uint32
		Path dbus.ObjectPath
	}
	if err := dbus.Store([]any{v.Value()}, &jobRef); err != nil {
		return false, "", fmt.Errorf("unit %s: Job %v: %w", unitPath, v, err)
	}
	if jobRef.ID == 0 {
		return false, "", nil
	}
	jobObj := conn.Object("org.freedesktop.systemd1", jobRef.Path)
	if err := jobObj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, "org.freedesktop.systemd1.Job", "JobType").Store(&v); err != nil {
		return false, "", fmt.Errorf("job %d: JobType: %w", jobRef.ID, err)
	}
	jt, _ := v.Value().(string)
	// restart, try-restart, reload-or-restart: the unit starts again.
	return strings.Contains(jt, "restart"), jt, nil
}

// systemdBus connects to systemd: its private socket first (root), else
// the system bus.
func systemdBus(ctx context.Context) (*dbus.Conn, error) {
	auth := []dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}
	conn, err := dbus.Dial("unix:path=/run/systemd/private", dbus.WithContext(ctx))
	if err == nil {
		if err = conn.Auth(auth); err == nil {
			return conn, nil
		}
		conn.Close()
	}
	conn, err2 := dbus.SystemBusPrivate(dbus.WithContext(ctx))
	if err2 != nil {
		return nil, fmt.Errorf("systemd's private socket: %v; system bus: %w", err, err2)
	}
	if err2 = conn.Auth(auth); err2 == nil {
		err2 = conn.Hello()
	}
	if err2 != nil {
		conn.Close()
		return nil, fmt.Errorf("systemd's private socket: %v; system bus: %w", err, err2)
	}
	return conn, nil
}
