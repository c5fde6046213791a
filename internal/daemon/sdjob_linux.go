package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

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
func systemdRestartPending(ctx context.Context, q *sdQuery) (restart bool, job string, err error) {
	if err := q.connect(ctx); err != nil {
		return false, "", err
	}
	restart, job, err = q.job(ctx)
	if err != nil {
		// The connection may have gone stale (systemd re-executed): once more.
		q.close()
		if err2 := q.connect(ctx); err2 != nil {
			return false, "", errors.Join(err, err2)
		}
		restart, job, err = q.job(ctx)
	}
	return restart, job, err
}

// sdQuery is a connection to systemd kept from start-up, with this
// process's unit already looked up, so that the question at SIGTERM is one
// property read.
type sdQuery struct {
	mu   sync.Mutex
	conn *dbus.Conn         // guarded by mu
	end  context.CancelFunc // guarded by mu; ends conn's context
	unit dbus.ObjectPath    // guarded by mu
	// resent counts the unanswered calls connect sent again (see call);
	// guarded by mu.
	resent int
}

// connect dials systemd and looks up this process's unit, unless that was
// done already. ctx bounds the dial and the lookup only: the connection
// outlives it (godbus closes a connection when the context it was dialled
// with ends).
func (q *sdQuery) connect(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conn != nil {
		return nil
	}
	life, end := context.WithCancel(context.Background())
	abort := context.AfterFunc(ctx, end) // a dial or authentication that hangs
	conn, err := systemdBus(life)
	if !abort() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		end()
		return err
	}
	var unit dbus.ObjectPath
	sd := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	resent, err := call(ctx, sd, 250*time.Millisecond, "org.freedesktop.systemd1.Manager.GetUnitByPID", &unit, uint32(os.Getpid()))
	if err != nil {
		conn.Close()
		end()
		return fmt.Errorf("GetUnitByPID: %w", err)
	}
	q.conn, q.end, q.unit, q.resent = conn, end, unit, resent
	return nil
}

// call makes a method call that reads something (so it may be sent more
// than once) and stores its one result in out. A call not answered within
// try is sent again on the same connection, until ctx ends; it returns how
// many times it was sent again.
//
// Why: systemd 252 sometimes leaves the first call on a fresh connection to
// its private socket unanswered, with systemd idle and the call read from
// the socket, until more bytes arrive on that connection (its sd-bus server
// is left in the authentication phase; see systemd pull request 24875). The
// daemon saw this about one start in five in the test guest; then every
// later question waited for the stop's 10 s timeout and the restart became
// a stop. Sending the call again wakes systemd, which answers both.
func call(ctx context.Context, obj dbus.BusObject, try time.Duration, method string, out any, args ...any) (resent int, err error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, try)
		err = obj.CallWithContext(tctx, method, 0, args...).Store(out)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return resent, err
		}
		resent++
	}
}

func (q *sdQuery) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conn != nil {
		q.conn.Close()
		q.end()
		q.conn, q.end = nil, nil
	}
}

// job returns whether the unit's queued job is a restart, and its type.
func (q *sdQuery) job(ctx context.Context) (bool, string, error) {
	q.mu.Lock()
	conn, unitPath := q.conn, q.unit
	q.mu.Unlock()
	if conn == nil {
		return false, "", errors.New("not connected to systemd")
	}
	var v dbus.Variant
	unit := conn.Object("org.freedesktop.systemd1", unitPath)
	if _, err := call(ctx, unit, 250*time.Millisecond, "org.freedesktop.DBus.Properties.Get", &v, "org.freedesktop.systemd1.Unit", "Job"); err != nil {
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
	if _, err := call(ctx, jobObj, 250*time.Millisecond, "org.freedesktop.DBus.Properties.Get", &v, "org.freedesktop.systemd1.Job", "JobType"); err != nil {
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

// resentCalls reports how many calls connect had to send again.
func (q *sdQuery) resentCalls() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.resent
}
