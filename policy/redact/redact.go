// Package redact finds the bytes of an image file that hold location
// metadata, so that a file system can serve the file with those bytes zeroed
// to callers who may not see where a photo was taken (as Android's
// MediaProvider does for apps without ACCESS_MEDIA_LOCATION).
//
// It understands JPEG files with an EXIF (APP1 "Exif\0\0") segment: the
// ranges are the GPS IFD (its entry count, entries and next-IFD pointer) and
// the out-of-line values of its entries. Zeroing them leaves a valid file:
// the GPS IFD then has no entries, and the image data is untouched.
//
// It is pure Go (stdlib only), reads only through the io.ReaderAt it is
// given, never writes, and never panics on malformed input.
package redact

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Range is a byte range of a file: [Off, Off+Len).
type Range struct {
	Off int64
	Len int64
}

// End returns Off+Len.
func (r Range) End() int64 { return r.Off + r.Len }

// ErrMalformed is wrapped by the errors of LocationRanges for files that
// claim to be JPEG/EXIF but are not well formed.
var ErrMalformed = errors.New("redact: malformed JPEG/EXIF data")

const (
	maxSegments = 4096 // markers scanned before the image data
	maxIFDs     = 8    // IFDs followed in the IFD0 chain looking for GPSInfo
	tagGPSInfo  = 0x8825
)

// LocationRanges returns the byte ranges of the file (size bytes, read
// through r) that hold EXIF GPS location data, sorted and merged.
//
// A file that is not a JPEG, or a JPEG without EXIF GPS data, yields no
// ranges and no error. For a malformed file, LocationRanges returns an error
// wrapping ErrMalformed together with ranges that are still safe to apply
// and err on the side of hiding: every EXIF segment that could not be parsed
// completely is covered entirely (EXIF is metadata, so zeroing it never
// damages the image), and if the segment structure itself is broken before
// the image data starts, the rest of the file is covered. Errors from r are
// returned as they are (wrapped), with the ranges found so far.
func LocationRanges(r io.ReaderAt, size int64) ([]Range, error) {
	var hdr [2]byte
	if size < 4 {
		return nil, nil
	}
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("redact: %w", err)
	}
	if hdr[0] != 0xFF || hdr[1] != 0xD8 {
		return nil, nil // not a JPEG
	}
	var out []Range
	var bad error
	off := int64(2)
	for seg := 0; ; seg++ {
		if seg == maxSegments {
			out = append(out, Range{off, size - off})
			bad = fmt.Errorf("%w: more than %d segments before the image data", ErrMalformed, maxSegments)
			break
		}
		marker, next, err := readMarker(r, off, size)
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				out = append(out, Range{off, size - off})
				bad = err
				break
			}
			return merge(out, size), err
		}
		off = next
		switch {
		case marker == 0xD9 || marker == 0xDA: // EOI, SOS: no metadata after this
			return merge(out, size), bad
		case marker == 0x01 || marker >= 0xD0 && marker <= 0xD8: // standalone
			continue
		}
		var lb [2]byte
		if off+2 > size {
			bad = fmt.Errorf("%w: truncated segment header at %d", ErrMalformed, off)
			break
		}
		if _, err := r.ReadAt(lb[:], off); err != nil {
			return merge(out, size), fmt.Errorf("redact: %w", err)
		}
		n := int64(binary.BigEndian.Uint16(lb[:]))
		if n < 2 {
			out = append(out, Range{off, size - off})
			bad = fmt.Errorf("%w: segment length %d at %d", ErrMalformed, n, off)
			break
		}
		dataOff, dataEnd := off+2, off+n
		truncated := dataEnd > size
		if truncated {
			dataEnd = size
		}
		if marker == 0xE1 {
			rs, err := exifSegment(r, dataOff, dataEnd, size)
			if err != nil && !errors.Is(err, ErrMalformed) {
				return merge(append(out, rs...), size), err
			}
			out = append(out, rs...)
			if err != nil {
				bad = err
			}
		}
		if truncated {
			if bad == nil {
				bad = fmt.Errorf("%w: segment at %d runs past the end of the file", ErrMalformed, off-2)
			}
			break
		}
		off = dataEnd
	}
	return merge(out, size), bad
}

// readMarker reads the marker at off (skipping fill bytes) and returns its
// code and the offset after it.
func readMarker(r io.ReaderAt, off, size int64) (byte, int64, error) {
	var b [1]byte
	sawFF := false
	for fill := 0; ; fill++ {
		if off >= size {
			return 0, off, fmt.Errorf("%w: truncated before the image data", ErrMalformed)
		}
		if fill > 64 {
			return 0, off, fmt.Errorf("%w: too many fill bytes at %d", ErrMalformed, off)
		}
		if _, err := r.ReadAt(b[:], off); err != nil {
			return 0, off, fmt.Errorf("redact: %w", err)
		}
		off++
		switch {
		case b[0] == 0xFF:
			sawFF = true
		case !sawFF:
			return 0, off, fmt.Errorf("%w: no marker at %d", ErrMalformed, off-1)
		case b[0] == 0x00:
			return 0, off, fmt.Errorf("%w: stuffed byte where a marker was expected at %d", ErrMalformed, off-1)
		default:
			return b[0], off, nil
		}
	}
}

const exifHeader = "Exif\x00\x00"

// exifSegment parses one APP1 segment whose payload is [off, end).
func exifSegment(r io.ReaderAt, off, end, size int64) ([]Range, error) {
	if end-off < int64(len(exifHeader)) {
		return nil, nil
	}
	buf := make([]byte, end-off)
	if n, err := r.ReadAt(buf, off); n < len(buf) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("redact: %w", err)
	}
	if string(buf[:len(exifHeader)]) != exifHeader {
		return nil, nil // XMP or another APP1 payload
	}
	tiffOff := off + int64(len(exifHeader))
	t := buf[len(exifHeader):]
	rs, err := parseTIFF(t, tiffOff, size)
	if err != nil {
		// Fail closed: hide the whole EXIF payload.
		return []Range{{tiffOff, end - tiffOff}}, fmt.Errorf("%w: EXIF segment at %d: %v", ErrMalformed, off-4, err)
	}
	return rs, nil
}

// parseTIFF finds the GPS ranges of the TIFF structure t, which starts at
// file offset base.
func parseTIFF(t []byte, base, size int64) ([]Range, error) {
	if len(t) < 8 {
		return nil, errors.New("truncated TIFF header")
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("bad TIFF byte order %q", t[:2])
	}
	if bo.Uint16(t[2:]) != 42 {
		return nil, errors.New("bad TIFF magic")
	}
	ifd := int64(bo.Uint32(t[4:]))
	seen := map[int64]bool{}
	var out []Range
	for i := 0; ifd != 0 && i < maxIFDs; i++ {
		if seen[ifd] {
			return nil, fmt.Errorf("IFD loop at %d", ifd)
		}
		seen[ifd] = true
		n, entries, next, err := readIFD(t, ifd, bo)
		if err != nil {
			return nil, fmt.Errorf("IFD at %d: %w", ifd, err)
		}
		for e := 0; e < n; e++ {
			ent := entries[12*e:]
			if bo.Uint16(ent) != tagGPSInfo {
				continue
			}
			gps := int64(bo.Uint32(ent[8:]))
			rs, err := gpsIFD(t, gps, bo, base, size)
			if err != nil {
				return nil, fmt.Errorf("GPS IFD at %d: %w", gps, err)
			}
			out = append(out, rs...)
		}
		ifd = next
	}
	return out, nil
}

// readIFD returns the entry count, the entries' bytes and the next IFD's
// offset of the IFD at off within t.
func readIFD(t []byte, off int64, bo binary.ByteOrder) (int, []byte, int64, error) {
	if off < 8 || off+2 > int64(len(t)) {
		return 0, nil, 0, errors.New("offset out of the EXIF segment")
	}
	n := int(bo.Uint16(t[off:]))
	end := off + 2 + 12*int64(n)
	if end > int64(len(t)) {
		return 0, nil, 0, fmt.Errorf("%d entries run past the EXIF segment", n)
	}
	entries := t[off+2 : end]
	var next int64
	if end+4 <= int64(len(t)) {
		next = int64(bo.Uint32(t[end:]))
	}
	return n, entries, next, nil
}

// typeSize is the size of one value of each TIFF field type (0: unknown).
func typeSize(typ uint16) int64 {
	switch typ {
	case 1, 2, 6, 7: // BYTE, ASCII, SBYTE, UNDEFINED
		return 1
	case 3, 8: // SHORT, SSHORT
		return 2
	case 4, 9, 11, 13: // LONG, SLONG, FLOAT, IFD
		return 4
	case 5, 10, 12: // RATIONAL, SRATIONAL, DOUBLE
		return 8
	}
	return 0
}

// gpsIFD returns the ranges of the GPS IFD at off in t (file offset base+off)
// and of its entries' out-of-line values.
func gpsIFD(t []byte, off int64, bo binary.ByteOrder, base, size int64) ([]Range, error) {
	n, entries, _, err := readIFD(t, off, bo)
	if err != nil {
		return nil, err
	}
	// The IFD itself: count, entries and next-IFD pointer.
	out := []Range{{base + off, 2 + 12*int64(n) + 4}}
	for e := 0; e < n; e++ {
		ent := entries[12*e:]
		sz := typeSize(bo.Uint16(ent[2:]))
		count := int64(bo.Uint32(ent[4:]))
		if sz == 0 || count*sz <= 4 {
			continue // unknown type, or the value is inside the entry
		}
		valOff := base + int64(bo.Uint32(ent[8:]))
		out = append(out, Range{valOff, count * sz})
	}
	return out, nil
}

// merge clips the ranges to [0, size), drops empty ones, sorts and merges
// overlapping or adjacent ones.
func merge(rs []Range, size int64) []Range {
	out := rs[:0]
	for _, r := range rs {
		if r.Off < 0 {
			r.Len += r.Off
			r.Off = 0
		}
		if r.Off >= size || r.Len <= 0 {
			continue
		}
		if r.Len > size-r.Off {
			r.Len = size - r.Off
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Off < out[j].Off })
	m := out[:1]
	for _, r := range out[1:] {
		last := &m[len(m)-1]
		if r.Off <= last.End() {
			if r.End() > last.End() {
				last.Len = r.End() - last.Off
			}
			continue
		}
		m = append(m, r)
	}
	return m
}

// Apply zeroes the bytes of buf, which holds the file's bytes starting at
// file offset off, that fall in any of ranges.
func Apply(buf []byte, off int64, ranges []Range) {
	if len(buf) == 0 {
		return
	}
	end := off + int64(len(buf))
	for _, r := range ranges {
		lo, hi := max(r.Off, off), min(r.End(), end)
		if lo >= hi {
			continue
		}
		clear(buf[lo-off : hi-off])
	}
}
