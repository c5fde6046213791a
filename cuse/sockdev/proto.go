package sockdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types. Every message on the socket is a frame: an 8-byte header
// (type byte, three zero bytes, payload length as a little-endian uint32)
// and the payload. Unknown types are skipped by both sides.
const (
	// From fusegate to the driver.
	TypeOpen  = 'O' // first frame of every connection: OpenMsg
	TypeWrite = 'W' // bytes a client wrote to the device
	TypeIoctl = 'I' // an ioctl: IoctlMsg; the driver answers with TypeReply

	// From the driver to fusegate.
	TypeData  = 'D' // bytes for the device's readers
	TypeReply = 'R' // the answer to an ioctl: ReplyMsg
)

// HeaderSize is the size of a frame header; MaxPayload bounds a payload.
const (
	HeaderSize = 8
	MaxPayload = 1 << 20
)

// Payload sizes of the fixed messages.
const (
	OpenSize      = 16
	IoctlHeadSize = 24
	ReplyHeadSize = 8
)

// ErrFrame reports a malformed frame.
var ErrFrame = errors.New("sockdev: malformed frame")

// Frame is one message.
type Frame struct {
	Type    byte
	Payload []byte
}

// AppendFrame appends a frame of the given type and payload to b.
func AppendFrame(b []byte, typ byte, payload ...[]byte) []byte {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	b = append(b, typ, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	for _, p := range payload {
		b = append(b, p...)
	}
	return b
}

// ReadFrame reads one frame from r. buf is reused for the payload when it is
// large enough. It fails with ErrFrame for a payload over MaxPayload or
// non-zero reserved bytes, and with io.EOF only at a frame boundary.
func ReadFrame(r io.Reader, buf []byte) (Frame, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("%w: connection closed inside a header", ErrFrame)
		}
		return Frame{}, err
	}
	if h[1] != 0 || h[2] != 0 || h[3] != 0 {
		return Frame{}, fmt.Errorf("%w: reserved header bytes %x", ErrFrame, h[1:4])
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("%w: payload of %d bytes (at most %d)", ErrFrame, n, MaxPayload)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return Frame{}, fmt.Errorf("%w: connection closed inside a payload: %v", ErrFrame, err)
	}
	return Frame{Type: h[0], Payload: buf}, nil
}

// OpenMsg is the payload of TypeOpen: the open(2) flags and the opener.
type OpenMsg struct {
	Flags, UID, GID, PID uint32
}

// Bytes encodes m.
func (m OpenMsg) Bytes() []byte {
	b := make([]byte, 0, OpenSize)
	for _, v := range []uint32{m.Flags, m.UID, m.GID, m.PID} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// ParseOpen decodes a TypeOpen payload.
func ParseOpen(p []byte) (OpenMsg, error) {
	if len(p) < OpenSize {
		return OpenMsg{}, fmt.Errorf("%w: open message of %d bytes", ErrFrame, len(p))
	}
	le := binary.LittleEndian
	return OpenMsg{Flags: le.Uint32(p), UID: le.Uint32(p[4:]), GID: le.Uint32(p[8:]), PID: le.Uint32(p[12:])}, nil
}

// Ioctl directions in IoctlMsg.Dir, as the caller sees them.
const (
	DirIn  = 1 // the caller passes Size bytes in (the number's _IOC_WRITE)
	DirOut = 2 // the caller gets up to Size bytes back (the number's _IOC_READ)
)

// IoctlMsg is the payload of TypeIoctl: ID (echoed in the reply), the
// command number, the argument (a pointer in the caller, or a plain number
// when Dir is 0), the direction and size the number encodes, and, when Dir
// has DirIn, the Size bytes of the caller's argument.
type IoctlMsg struct {
	ID    uint32
	Cmd   uint32
	Arg   uint64
	Dir   uint32
	Size  uint32
	Input []byte
}

// Bytes encodes m.
func (m IoctlMsg) Bytes() []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, IoctlHeadSize+len(m.Input))
	b = le.AppendUint32(b, m.ID)
	b = le.AppendUint32(b, m.Cmd)
	b = le.AppendUint64(b, m.Arg)
	b = le.AppendUint32(b, m.Dir)
	b = le.AppendUint32(b, m.Size)
	return append(b, m.Input...)
}

// ParseIoctl decodes a TypeIoctl payload; Input aliases p.
func ParseIoctl(p []byte) (IoctlMsg, error) {
	if len(p) < IoctlHeadSize {
		return IoctlMsg{}, fmt.Errorf("%w: ioctl message of %d bytes", ErrFrame, len(p))
	}
	le := binary.LittleEndian
	return IoctlMsg{ID: le.Uint32(p), Cmd: le.Uint32(p[4:]), Arg: le.Uint64(p[8:]),
		Dir: le.Uint32(p[16:]), Size: le.Uint32(p[20:]), Input: p[IoctlHeadSize:]}, nil
}

// ReplyMsg is the payload of TypeReply: the ID of the ioctl, its result
// (≥ 0: ioctl(2) returns it; < 0: it fails with errno -Result), and, for
// DirOut, up to Size bytes copied to the caller's argument.
type ReplyMsg struct {
	ID     uint32
	Result int32
	Output []byte
}

// Bytes encodes m.
func (m ReplyMsg) Bytes() []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, ReplyHeadSize+len(m.Output))
	b = le.AppendUint32(b, m.ID)
	b = le.AppendUint32(b, uint32(m.Result))
	return append(b, m.Output...)
}

// ParseReply decodes a TypeReply payload; Output aliases p.
func ParseReply(p []byte) (ReplyMsg, error) {
	if len(p) < ReplyHeadSize {
		return ReplyMsg{}, fmt.Errorf("%w: ioctl reply of %d bytes", ErrFrame, len(p))
	}
	le := binary.LittleEndian
	return ReplyMsg{ID: le.Uint32(p), Result: int32(le.Uint32(p[4:])), Output: p[ReplyHeadSize:]}, nil
}
