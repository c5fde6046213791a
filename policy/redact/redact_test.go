package redact_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image/jpeg"
	"reflect"
	"testing"

	"github.com/fusegate/fusegate/policy/redact"
	"github.com/fusegate/fusegate/policy/redact/redacttest"
)

func ranges(t *testing.T, data []byte) ([]redact.Range, error) {
	t.Helper()
	return redact.LocationRanges(bytes.NewReader(data), int64(len(data)))
}

// covered reports whether every byte of want lies in some range of got.
func covered(want redact.Range, got []redact.Range) bool {
	for off := want.Off; off < want.End(); off++ {
		in := false
		for _, g := range got {
			if off >= g.Off && off < g.End() {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	return true
}

func checkWellFormed(t *testing.T, rs []redact.Range, size int64) {
	t.Helper()
	for i, r := range rs {
		if r.Off < 0 || r.Len <= 0 || r.End() > size {
			t.Fatalf("range %d %+v outside the file (size %d)", i, r, size)
		}
		if i > 0 && r.Off <= rs[i-1].End() {
			t.Fatalf("ranges not sorted and merged: %+v", rs)
		}
	}
}

func TestLocationRanges(t *testing.T) {
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		t.Run(order.String(), func(t *testing.T) {
			data, want := redacttest.JPEG(order)
			got, err := ranges(t, data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("ranges %+v, want %+v", got, want)
			}
			// The test file really has the location there.
			lat := want[1]
			if binary.ByteOrder(order).Uint32(data[lat.Off:]) != 48 {
				t.Fatalf("latitude degrees not at %d", lat.Off)
			}

			red := bytes.Clone(data)
			redact.Apply(red, 0, got)
			for i := range data {
				in := covered(redact.Range{Off: int64(i), Len: 1}, want)
				switch {
				case in && red[i] != 0:
					t.Fatalf("byte %d not zeroed", i)
				case !in && red[i] != data[i]:
					t.Fatalf("byte %d outside the ranges changed", i)
				}
			}
			for _, s := range []string{redacttest.Make, redacttest.Software, redacttest.Artist} {
				if !bytes.Contains(red, []byte(s)) {
					t.Errorf("non-location string %q was redacted", s)
				}
			}
			if _, err := jpeg.Decode(bytes.NewReader(red)); err != nil {
				t.Errorf("redacted JPEG does not decode: %v", err)
			}
			// Once redacted, there is nothing left to find but an empty GPS IFD.
			again, err := ranges(t, red)
			if err != nil || len(again) != 1 || again[0] != (redact.Range{Off: want[0].Off, Len: 6}) {
				t.Errorf("ranges of the redacted file: %+v, %v; want only the empty GPS IFD", again, err)
			}
		})
	}
}

func TestApplyChunks(t *testing.T) {
	data, rs := redacttest.JPEG(binary.LittleEndian)
	whole := bytes.Clone(data)
	redact.Apply(whole, 0, rs)
	for _, chunk := range []int{1, 3, 7, 64, 100, 4096} {
		var got []byte
		for off := 0; off < len(data); off += chunk {
			buf := bytes.Clone(data[off:min(off+chunk, len(data))])
			redact.Apply(buf, int64(off), rs)
			got = append(got, buf...)
		}
		if !bytes.Equal(got, whole) {
			t.Errorf("reading in chunks of %d differs from redacting the whole file", chunk)
		}
	}
	redact.Apply(nil, 5, rs)                 // no panic
	redact.Apply(make([]byte, 4), -10, rs)   // before the file
	redact.Apply(make([]byte, 4), 1<<40, rs) // past it
}

func TestNoLocation(t *testing.T) {
	var plain bytes.Buffer
	data, _ := redacttest.JPEG(binary.LittleEndian)
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := jpeg.Encode(&plain, img, nil); err != nil {
		t.Fatal(err)
	}
	xmp := append([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0, 30}, []byte("http://ns.adobe.com/xap/1.0/\x00")...)
	xmp = append(xmp[:len(xmp)-1], plain.Bytes()[2:]...)
	for name, in := range map[string][]byte{
		"empty":          nil,
		"text":           []byte("hello, this is not a JPEG at all"),
		"png":            []byte("\x89PNG\r\n\x1a\n0000000000000000"),
		"jpeg sans exif": plain.Bytes(),
		"xmp only":       xmp,
	} {
		got, err := ranges(t, in)
		if err != nil || len(got) != 0 {
			t.Errorf("%s: %+v, %v; want nothing", name, got, err)
		}
	}
}

func TestMalformedFailsClosed(t *testing.T) {
	data, want := redacttest.JPEG(binary.BigEndian)
	// Every prefix: no panic, and whatever GPS bytes the prefix holds are covered.
	for n := 0; n <= len(data); n++ {
		got, err := ranges(t, data[:n])
		checkWellFormed(t, got, int64(n))
		if err != nil && !errors.Is(err, redact.ErrMalformed) {
			t.Fatalf("prefix %d: unexpected error %v", n, err)
		}
		for _, w := range want {
			if w.Off >= int64(n) {
				continue
			}
			w.Len = min(w.Len, int64(n)-w.Off)
			if !covered(w, got) {
				t.Fatalf("prefix %d: GPS bytes %+v not covered by %+v (err %v)", n, w, got, err)
			}
		}
	}

	const tiff = 12 // offset of the TIFF header in redacttest's file
	exifEnd := int64(4 + int(binary.BigEndian.Uint16(data[4:])))
	payload := redact.Range{Off: tiff, Len: exifEnd - tiff}
	for name, mutate := range map[string]func([]byte){
		"GPS IFD offset out of the segment": func(b []byte) {
			// The GPSInfo entry is IFD0's last (5th) entry; its value at +8.
			binary.BigEndian.PutUint32(b[tiff+8+2+4*12+8:], 60000)
		},
		"IFD0 loop": func(b []byte) {
			binary.BigEndian.PutUint32(b[tiff+8+2+5*12:], 8) // next IFD = IFD0
		},
		"GPS IFD entry count too large": func(b []byte) {
			binary.BigEndian.PutUint16(b[tiff+84:], 0xFFFF)
		},
		"bad byte order": func(b []byte) { copy(b[tiff:], "XX") },
		"bad magic":      func(b []byte) { b[tiff+3] = 43 },
	} {
		b := bytes.Clone(data)
		mutate(b)
		got, err := ranges(t, b)
		if !errors.Is(err, redact.ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
		if !covered(payload, got) {
			t.Errorf("%s: the EXIF payload %+v is not covered by %+v", name, payload, got)
		}
	}

	// Broken segment structure before the image data: the rest is covered.
	b := bytes.Clone(data)
	b[exifEnd] = 0x12 // where the next marker's 0xFF should be
	got, err := ranges(t, b)
	if !errors.Is(err, redact.ErrMalformed) || !covered(redact.Range{Off: exifEnd, Len: int64(len(b)) - exifEnd}, got) {
		t.Errorf("broken marker: %+v, %v", got, err)
	}
	for _, w := range want {
		if !covered(w, got) {
			t.Errorf("broken marker after EXIF: GPS %+v no longer covered", w)
		}
	}
}

type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("disk on fire") }

func TestReaderErrors(t *testing.T) {
	if _, err := redact.LocationRanges(failingReader{}, 100); err == nil || errors.Is(err, redact.ErrMalformed) {
		t.Errorf("reader error: %v", err)
	}
}

func FuzzLocationRanges(f *testing.F) {
	le, _ := redacttest.JPEG(binary.LittleEndian)
	be, _ := redacttest.JPEG(binary.BigEndian)
	f.Add(le)
	f.Add(be)
	f.Add(be[:300])
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x02, 0xFF, 0xD9})
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, _ := redact.LocationRanges(bytes.NewReader(data), int64(len(data)))
		checkWellFormed(t, rs, int64(len(data)))
		buf := bytes.Clone(data)
		redact.Apply(buf, 0, rs)
		if len(data) > 3 {
			redact.Apply(buf[1:3], 1, rs)
		}
	})
}
