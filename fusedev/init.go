package fusedev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/fusedev/abi"
)

// ErrProtocol reports a kernel whose INIT the server cannot accept.
var ErrProtocol = errors.New("unsupported FUSE protocol")

// handshake reads requests until INIT (or CUSE_INIT) has been answered.
func (s *Server) handshake(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Now()) })
	defer stop()
	bp := s.pool.get(s.bufSize)
	defer s.pool.put(bp)
	for {
		n, err := s.conn.Read(*bp)
		if err != nil {
			if ctx.Err() != nil {
				s.conn.SetReadDeadline(time.Time{})
				return ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return fmt.Errorf("waiting for INIT: %w", err)
		}
		msg := (*bp)[:n]
		var h abi.InHeader
		if err := abi.Decode(msg, &h); err != nil || int(h.Len) != n {
			s.log.WithField("bytes", n).Error("fuse: malformed message while waiting for INIT")
			if err == nil {
				s.replyError(s.conn, h.Unique, syscall.EIO)
			}
			continue
		}
		payload := msg[abi.SizeInHeader:]
		var done bool
		switch {
		case h.Opcode == abi.OpInit && s.opts.Cuse == nil:
			done, err = s.answerInit(ctx, &h, payload)
		case h.Opcode == abi.OpCuseInit && s.opts.Cuse != nil:
			done, err = s.answerCuseInit(ctx, &h, payload)
		default:
			s.log.WithField("op", h.Opcode).Error("fuse: request before INIT")
			if !h.Opcode.NoReply() {
				s.replyError(s.conn, h.Unique, syscall.EIO)
			}
			continue
		}
		if err != nil || done {
			return err
		}
	}
}

// checkMajor answers a kernel whose major version is not 7. It returns
// done=false when the kernel may retry with 7 (major above 7: we answer
// our version, as the protocol asks) and an error when it cannot (below 7).
func (s *Server) checkMajor(h *abi.InHeader, major, minor uint32) (ok bool, err error) {
	switch {
	case major == abi.KernelVersion:
		return true, nil
	case major > abi.KernelVersion:
		s.log.Warnf("fuse: kernel offers protocol %d.%d; answering %d.%d and waiting for an INIT it can accept",
			major, minor, abi.KernelVersion, s.opts.MaxMinor)
		out := abi.InitOut{Major: abi.KernelVersion, Minor: s.opts.MaxMinor}
		s.writeReply(h.Unique, abi.Bytes(&out))
		return false, nil
	default:
		s.replyError(s.conn, h.Unique, syscall.EPROTO)
		return false, fmt.Errorf("%w: kernel speaks %d.%d, fusegate needs major %d", ErrProtocol, major, minor, abi.KernelVersion)
	}
}

func (s *Server) answerInit(ctx context.Context, h *abi.InHeader, payload []byte) (bool, error) {
	// Major and minor lead every fuse_init_in, however old: read them
	// first, so that an old kernel is refused by version, not by size.
	var in abi.InitIn
	if err := abi.DecodeSized(payload, min(len(payload), abi.SizeInitIn), &in); err != nil || len(payload) < 8 {
		s.replyError(s.conn, h.Unique, syscall.EIO)
		return false, fmt.Errorf("%w: INIT of %d bytes", ErrProtocol, len(payload))
	}
	if ok, err := s.checkMajor(h, in.Major, in.Minor); !ok {
		return false, err
	}
	minor := min(in.Minor, s.opts.MaxMinor)
	if minor < MinMinor {
		s.replyError(s.conn, h.Unique, syscall.EPROTO)
		return false, fmt.Errorf("%w: kernel speaks 7.%d, fusegate needs 7.%d or later", ErrProtocol, in.Minor, MinMinor)
	}
	if len(payload) < abi.CompatInitInSize {
		s.replyError(s.conn, h.Unique, syscall.EIO)
		return false, fmt.Errorf("%w: INIT 7.%d of %d bytes", ErrProtocol, in.Minor, len(payload))
	}
	offered := abi.InitFlags(in.Flags)
	if in.Minor >= 36 && offered.Has(abi.InitExt) {
		offered = abi.MakeInitFlags(in.Flags, in.Flags2)
	}
	granted := offered & s.opts.Flags
	if offered.Has(abi.InitExt) {
		granted |= abi.InitExt
	} else {
		granted &= 0xffffffff // no flags2 without INIT_EXT
	}
	if granted.Has(abi.InitPassthrough) && granted.Has(abi.InitWritebackCache) {
		granted &^= abi.InitPassthrough // the kernel refuses the combination
	}
	out := abi.InitOut{
		Major:               abi.KernelVersion,
		Minor:               minor,
		MaxReadahead:        in.MaxReadahead,
		MaxBackground:       s.opts.MaxBackground,
		CongestionThreshold: s.opts.CongestionThreshold,
		MaxWrite:            s.opts.MaxWrite,
		TimeGran:            s.opts.TimeGran,
	}
	if s.opts.MaxReadahead > 0 {
		out.MaxReadahead = min(out.MaxReadahead, s.opts.MaxReadahead)
	}
	maxWrite := s.opts.MaxWrite // whole pages (NewServer)
	if granted.Has(abi.InitMaxPages) {
		out.MaxPages = uint16(maxWrite / pageSize)
	} else {
		// The kernel's default max_pages bounds every request; say so.
		maxWrite = min(maxWrite, defaultMaxPages*pageSize)
	}
	out.MaxWrite = maxWrite
	if granted.Has(abi.InitPassthrough) {
		out.MaxStackDepth = s.opts.MaxStackDepth
	}
	out.Flags, out.Flags2 = granted.Words()

	neg := &Negotiated{
		Major: abi.KernelVersion, Minor: minor, KernelMinor: in.Minor,
		KernelFlags: offered, Flags: granted,
		MaxReadahead: out.MaxReadahead, MaxWrite: maxWrite, MaxPages: out.MaxPages,
		TimeGran: out.TimeGran, MaxStack: out.MaxStackDepth,
	}
	s.neg.Store(neg)
	if err := s.initFS(ctx); err != nil {
		s.replyError(s.conn, h.Unique, syscall.EIO)
		return false, err
	}
	size := abi.SizeInitOut
	if minor < 23 {
		size = abi.Compat22InitOutSize
	}
	if err := s.writeReply(h.Unique, abi.Bytes(&out)[:size]); err != nil {
		return false, fmt.Errorf("answering INIT: %w", err)
	}
	s.log.WithFields(logrus.Fields{
		"kernel": fmt.Sprintf("7.%d", in.Minor), "protocol": fmt.Sprintf("7.%d", minor),
		"offered": offered.String(), "granted": granted.String(),
		"max_write": maxWrite, "max_pages": out.MaxPages, "max_readahead": out.MaxReadahead,
		"time_gran": out.TimeGran, "max_stack_depth": out.MaxStackDepth,
	}).Debug("fuse: INIT negotiated")
	return true, nil
}

func (s *Server) answerCuseInit(ctx context.Context, h *abi.InHeader, payload []byte) (bool, error) {
	var in abi.CuseInitIn
	if err := abi.Decode(payload, &in); err != nil {
		s.replyError(s.conn, h.Unique, syscall.EIO)
		return false, fmt.Errorf("%w: CUSE_INIT of %d bytes", ErrProtocol, len(payload))
	}
	if ok, err := s.checkMajor(h, in.Major, in.Minor); !ok {
		return false, err
	}
	minor := min(in.Minor, s.opts.MaxMinor)
	if minor < abi.CuseMinorMin {
		s.replyError(s.conn, h.Unique, syscall.EPROTO)
		return false, fmt.Errorf("%w: kernel speaks 7.%d, CUSE needs 7.%d", ErrProtocol, in.Minor, abi.CuseMinorMin)
	}
	out, info, err := s.opts.Cuse(&in)
	if err != nil {
		s.replyError(s.conn, h.Unique, syscall.EIO)
		return false, fmt.Errorf("CUSE_INIT: %w", err)
	}
	if len(info) > abi.CuseInitInfoMax {
		s.replyError(s.conn, h.Unique, syscall.EIO)
		return false, fmt.Errorf("CUSE device info of %d bytes exceeds %d", len(info), abi.CuseInitInfoMax)
	}
	out.Major, out.Minor = abi.KernelVersion, minor
	// Zero limits mean Options.MaxWrite; the kernel takes at least a page.
	if out.MaxRead == 0 {
		out.MaxRead = s.opts.MaxWrite
	}
	if out.MaxWrite == 0 {
		out.MaxWrite = s.opts.MaxWrite
	}
	out.MaxRead = min(max(out.MaxRead, pageSize), s.opts.MaxWrite)
	out.MaxWrite = min(max(out.MaxWrite, pageSize), s.opts.MaxWrite)
	neg := &Negotiated{
		Major: abi.KernelVersion, Minor: minor, KernelMinor: in.Minor,
		KernelFlags: abi.InitFlags(in.Flags), MaxWrite: out.MaxWrite, MaxRead: out.MaxRead,
		Cuse: true, CuseFlags: out.Flags,
	}
	s.neg.Store(neg)
	if err := s.initFS(ctx); err != nil {
		s.replyError(s.conn, h.Unique, syscall.EIO)
		return false, err
	}
	if err := s.writeReply(h.Unique, abi.Bytes(&out), info); err != nil {
		return false, fmt.Errorf("answering CUSE_INIT: %w", err)
	}
	s.log.WithFields(logrus.Fields{"kernel": fmt.Sprintf("7.%d", in.Minor), "protocol": fmt.Sprintf("7.%d", minor),
		"max_read": out.MaxRead, "max_write": out.MaxWrite, "flags": out.Flags}).Debug("cuse: CUSE_INIT negotiated")
	return true, nil
}

// writeReply writes a successful reply made of parts on the main conn.
func (s *Server) writeReply(unique uint64, parts ...[]byte) error {
	total := abi.SizeOutHeader
	for _, p := range parts {
		total += len(p)
	}
	hdr := abi.OutHeader{Len: uint32(total), Unique: unique}
	return s.conn.Write(append([][]byte{abi.Bytes(&hdr)}, parts...))
}
