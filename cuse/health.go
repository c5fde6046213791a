package cuse

import "time"

// Check reports an error when one of the device's request loops has been
// busy outside its read of /dev/cuse for longer than limit (see
// fusedev.Server.Check): the device is not making progress. It is nil
// before CUSE_INIT and after the device stopped. A daemon checks it before
// petting a watchdog.
func (s *Server) Check(limit time.Duration) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	if f := s.fsrv.Load(); f != nil {
		return f.Check(limit)
	}
	return nil
}
