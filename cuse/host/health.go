package host

import "time"

// Check reports an error when the device's request loop is stuck (see
// cuse.Server.Check); the daemon's watchdog asks it.
func (d *Device) Check(limit time.Duration) error { return d.srv.Check(limit) }
