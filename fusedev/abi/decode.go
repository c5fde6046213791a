package abi

import (
	"bytes"
	"errors"
	"fmt"
	"unsafe"
)

// Decoding errors. Callers test them with errors.Is.
var (
	ErrShort       = errors.New("message too short")
	ErrNoNUL       = errors.New("string not NUL-terminated")
	ErrNameTooLong = errors.New("name too long")
	ErrEmptyName   = errors.New("empty name")
)

// SizeOf returns the wire size of T.
func SizeOf[T any]() int {
	var v T
	return int(unsafe.Sizeof(v))
}

// Decode copies the wire struct at the start of b into v. It fails with
// ErrShort, and leaves v untouched, when b holds fewer bytes than the struct.
func Decode[T any](b []byte, v *T) error {
	n := int(unsafe.Sizeof(*v))
	if len(b) < n {
		return fmt.Errorf("%w: %T needs %d bytes, have %d", ErrShort, *v, n, len(b))
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(v)), n), b[:n])
	return nil
}

// DecodeSized decodes a struct that the kernel sends with only its first
// size bytes (an older protocol's layout, e.g. CompatInitInSize): those bytes
// are copied and the rest of v is zeroed. size larger than the struct is
// clamped to it.
func DecodeSized[T any](b []byte, size int, v *T) error {
	n := int(unsafe.Sizeof(*v))
	if size > n {
		size = n
	}
	if size < 0 || len(b) < size {
		return fmt.Errorf("%w: %T needs %d bytes, have %d", ErrShort, *v, size, len(b))
	}
	dst := unsafe.Slice((*byte)(unsafe.Pointer(v)), n)
	copy(dst, b[:size])
	clear(dst[size:])
	return nil
}

// Bytes returns the wire bytes of *v without copying. The slice aliases v:
// it is valid only while v is, and writes to one show in the other.
func Bytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// CString reads a NUL-terminated string of at most max bytes (NUL excluded)
// from the start of b and returns it with the bytes after the NUL.
func CString(b []byte, max int) (s string, rest []byte, err error) {
	limit := len(b)
	if limit > max+1 {
		limit = max + 1
	}
	i := bytes.IndexByte(b[:limit], 0)
	if i < 0 {
		if len(b) > max {
			return "", nil, fmt.Errorf("%w: more than %d bytes", ErrNameTooLong, max)
		}
		return "", nil, ErrNoNUL
	}
	return string(b[:i]), b[i+1:], nil
}

// Name reads a NUL-terminated path component (non-empty, at most NameMax bytes).
func Name(b []byte) (name string, rest []byte, err error) {
	name, rest, err = CString(b, NameMax)
	if err == nil && name == "" {
		err = ErrEmptyName
	}
	return name, rest, err
}

// Align8 rounds n up to a multiple of 8 (FUSE_REC_ALIGN).
func Align8(n int) int { return (n + 7) &^ 7 }

// DirentSize is the space a READDIR entry with a name of n bytes takes.
func DirentSize(n int) int { return Align8(SizeDirent + n) }

// DirentplusSize is the space a READDIRPLUS entry with a name of n bytes takes.
func DirentplusSize(n int) int { return Align8(SizeDirentplus + n) }
