// Package redacttest builds JPEG files with EXIF GPS data for tests: the
// unit tests of package redact and the integration tests that read photos
// through a mount and check that their location was zeroed.
//
// It is for tests only; it must never be imported by non-test code paths of
// the daemon.
package redacttest

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/jpeg"

	"github.com/fusegate/fusegate/policy/redact"
)

// Strings stored in IFD0 (not location data): after redaction they must
// still be in the file.
const (
	Make     = "fusegate"
	Software = "fusegate redact"
	Artist   = "nobody!"
)

// JPEG returns a small decodable JPEG (16x16 pixels) whose EXIF segment,
// written in the given byte order, holds a GPS IFD with in-line values
// (version, latitude and longitude references) and out-of-line ones
// (latitude 48°51'29.6"N, longitude 2°17'40.1"E, altitude, map datum), interleaved with non-GPS IFD0
// values. gps are the exact byte ranges that hold location data, computed
// from the layout (independently of package redact), sorted and merged.
func JPEG(order binary.ByteOrder) (data []byte, gps []redact.Range) {
	// TIFF layout (offsets from the TIFF header):
	const (
		ifd0     = 8
		ifd0N    = 5
		makeOff  = ifd0 + 2 + 12*ifd0N + 4     // 74
		gpsIFD   = makeOff + len(Make) + 1 + 1 // 84, even
		gpsN     = 7
		softOff  = gpsIFD + 2 + 12*gpsN + 4 // 174
		latOff   = softOff + len(Software) + 1
		artOff   = latOff + 24
		lonOff   = artOff + len(Artist) + 1
		altOff   = lonOff + 24
		datumOff = altOff + 8
		datum    = "WGS-84\x00"
		tiffLen  = datumOff + len(datum)
	)
	t := make([]byte, tiffLen)
	if order == binary.BigEndian {
		copy(t, "MM")
	} else {
		order = binary.LittleEndian
		copy(t, "II")
	}
	order.PutUint16(t[2:], 42)
	order.PutUint32(t[4:], ifd0)

	entry := func(at, tag, typ, count, value int) {
		order.PutUint16(t[at:], uint16(tag))
		order.PutUint16(t[at+2:], uint16(typ))
		order.PutUint32(t[at+4:], uint32(count))
		order.PutUint32(t[at+8:], uint32(value))
	}
	inline := func(at, tag, typ, count int, v []byte) {
		entry(at, tag, typ, count, 0)
		copy(t[at+8:at+12], v)
	}
	const ascii, short, long, rational, byteT = 2, 3, 4, 5, 1

	// IFD0.
	order.PutUint16(t[ifd0:], ifd0N)
	e := ifd0 + 2
	entry(e, 0x010F, ascii, len(Make)+1, makeOff)
	e += 12
	entry(e, 0x0112, short, 1, 0)
	order.PutUint16(t[e+8:], 1) // orientation: in-line SHORT
	e += 12
	entry(e, 0x0131, ascii, len(Software)+1, softOff)
	e += 12
	entry(e, 0x013B, ascii, len(Artist)+1, artOff)
	e += 12
	entry(e, 0x8825, long, 1, gpsIFD)
	// next IFD: 0 (already zero)
	copy(t[makeOff:], Make)
	copy(t[softOff:], Software)
	copy(t[artOff:], Artist)

	// GPS IFD.
	order.PutUint16(t[gpsIFD:], gpsN)
	e = gpsIFD + 2
	inline(e, 0x0000, byteT, 4, []byte{2, 2, 0, 0})
	e += 12
	inline(e, 0x0001, ascii, 2, []byte("N\x00"))
	e += 12
	entry(e, 0x0002, rational, 3, latOff)
	e += 12
	inline(e, 0x0003, ascii, 2, []byte("E\x00"))
	e += 12
	entry(e, 0x0004, rational, 3, lonOff)
	e += 12
	entry(e, 0x0006, rational, 1, altOff)
	e += 12
	entry(e, 0x0012, ascii, len(datum), datumOff)
	putRationals := func(at int, v [3][2]uint32) {
		for i, r := range v {
			order.PutUint32(t[at+8*i:], r[0])
			order.PutUint32(t[at+8*i+4:], r[1])
		}
	}
	putRationals(latOff, [3][2]uint32{{48, 1}, {51, 1}, {2960, 100}})
	putRationals(lonOff, [3][2]uint32{{2, 1}, {17, 1}, {4010, 100}})
	order.PutUint32(t[altOff:], 35)
	order.PutUint32(t[altOff+4:], 1)
	copy(t[datumOff:], datum)

	// The JPEG: SOI, APP1 Exif, then the encoder's segments.
	var img bytes.Buffer
	m := image.NewRGBA(image.Rect(0, 0, 16, 16))
	for y := 0; y < 16; y++ {
		for x := 0; x < 16; x++ {
			m.Set(x, y, color.RGBA{uint8(16 * x), uint8(16 * y), 128, 255})
		}
	}
	if err := jpeg.Encode(&img, m, nil); err != nil {
		panic(err) // cannot happen with an in-memory image
	}
	enc := img.Bytes()
	app1 := append([]byte("Exif\x00\x00"), t...)
	var out bytes.Buffer
	out.Write([]byte{0xFF, 0xD8, 0xFF, 0xE1})
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(2+len(app1)))
	out.Write(l[:])
	out.Write(app1)
	out.Write(enc[2:]) // without the encoder's SOI

	base := int64(2 + 2 + 2 + 6) // SOI, APP1 marker, length, "Exif\0\0"
	gps = []redact.Range{
		{Off: base + int64(gpsIFD), Len: 2 + 12*gpsN + 4},
		{Off: base + int64(latOff), Len: 24},
		{Off: base + int64(lonOff), Len: int64(24 + 8 + len(datum))},
	}
	return out.Bytes(), gps
}
