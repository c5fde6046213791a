package abi

import (
	"bytes"
	"errors"
	"testing"
)

// checkDecode decodes b into a T and checks the contract: ErrShort and v
// untouched below the size, else exactly the first bytes copied.
func checkDecode[T any](t *testing.T, b []byte) {
	var v T
	before := append([]byte(nil), Bytes(&v)...)
	err := Decode(b, &v)
	n := SizeOf[T]()
	if len(b) < n {
		if !errors.Is(err, ErrShort) || !bytes.Equal(Bytes(&v), before) {
			t.Fatalf("%T from %d bytes: %v, value changed %v", v, len(b), err, !bytes.Equal(Bytes(&v), before))
		}
		return
	}
	if err != nil || !bytes.Equal(Bytes(&v), b[:n]) {
		t.Fatalf("%T from %d bytes: %v", v, len(b), err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Add(bytes.Repeat([]byte{0xff}, 300))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode[InHeader](t, b)
		checkDecode[OutHeader](t, b)
		checkDecode[InitIn](t, b)
		checkDecode[InitOut](t, b)
		checkDecode[CuseInitIn](t, b)
		checkDecode[EntryOut](t, b)
		checkDecode[SetattrIn](t, b)
		checkDecode[ReadIn](t, b)
		checkDecode[IoctlIn](t, b)
		checkDecode[Direntplus](t, b)
		checkDecode[StatxOut](t, b)
		checkDecode[NotifyRetrieveIn](t, b)
		checkDecode[BackingMap](t, b)
	})
}

func FuzzDecodeSized(f *testing.F) {
	f.Add(make([]byte, 64), 16)
	f.Add(make([]byte, 8), 16)
	f.Add([]byte{1, 2, 3}, -1)
	f.Fuzz(func(t *testing.T, b []byte, size int) {
		var in InitIn
		for i := range Bytes(&in) {
			Bytes(&in)[i] = 0xaa // the tail must come out zero
		}
		err := DecodeSized(b, size, &in)
		eff := min(size, SizeInitIn)
		if size < 0 || len(b) < eff {
			if !errors.Is(err, ErrShort) {
				t.Fatalf("DecodeSized(%d bytes, %d): %v, want ErrShort", len(b), size, err)
			}
			return
		}
		raw := Bytes(&in)
		if err != nil || !bytes.Equal(raw[:eff], b[:eff]) || !bytes.Equal(raw[eff:], make([]byte, SizeInitIn-eff)) {
			t.Fatalf("DecodeSized(%d bytes, %d): %v %x", len(b), size, err, raw)
		}
	})
}

func FuzzCString(f *testing.F) {
	f.Add([]byte("abc\x00def"), 3)
	f.Add([]byte("abc"), 2)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max < 0 || max > 1<<20 {
			return // callers pass small constants
		}
		s, rest, err := CString(b, max)
		i := bytes.IndexByte(b, 0)
		switch {
		case i >= 0 && i <= max:
			if err != nil || s != string(b[:i]) || !bytes.Equal(rest, b[i+1:]) {
				t.Fatalf("CString(%q, %d) = %q, %q, %v", b, max, s, rest, err)
			}
		case err == nil:
			t.Fatalf("CString(%q, %d) = %q: accepted a string without NUL within %d bytes", b, max, s, max)
		case len(b) > max && !errors.Is(err, ErrNameTooLong):
			t.Fatalf("CString(%q, %d): %v, want ErrNameTooLong", b, max, err)
		case len(b) <= max && !errors.Is(err, ErrNoNUL):
			t.Fatalf("CString(%q, %d): %v, want ErrNoNUL", b, max, err)
		}
	})
}

func FuzzInitFlags(f *testing.F) {
	f.Add(uint64(InitKnown))
	f.Fuzz(func(t *testing.T, v uint64) {
		fl := InitFlags(v)
		lo, hi := fl.Words()
		if MakeInitFlags(lo, hi) != fl || fl.String() == "" {
			t.Fatalf("round trip of %#x", v)
		}
	})
}
