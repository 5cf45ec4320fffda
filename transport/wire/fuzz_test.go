package wire

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecodeHeader feeds arbitrary bytes to the header decoders. They must
// never panic, the slice and stream decoders must agree, and whatever they
// accept must encode back to the very same bytes.
func FuzzDecodeHeader(f *testing.F) {
	full := sampleHeader()
	seeds := []Header{
		full,
		{Service: "a", Port: 1, Source: "spiffe://td/node/n"},
		{Service: "db.internal", Port: 5432, Source: "spiffe://td/svc/api", Timeout: 1},
	}
	for _, h := range seeds {
		f.Add(mustEncode(f, h))
	}
	f.Add([]byte{})
	f.Add([]byte("MW"))
	f.Add([]byte("MW\x01\x00\x00\x0e"))
	f.Add([]byte("MW\x02\x00\x00\x10"))
	f.Add([]byte("MW\x01\x00\xff\xff"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(append(mustEncode(f, seeds[1]), 0x80, 0x01, 0, 0))

	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := DecodeHeader(b)
		h2, err2 := ReadHeader(bytes.NewReader(b), nil)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("decoders disagree: %v vs %v", err, err2)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("decoders disagree on %x", b)
		}
		if n > MaxHeaderSize {
			t.Fatalf("accepted %d bytes, cap %d", n, MaxHeaderSize)
		}
		enc, err := AppendHeader(nil, &h)
		if err != nil {
			t.Fatalf("decoded header does not re-encode: %v", err)
		}
		if !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b[:n], enc)
		}
	})
}

// FuzzDecodeStatus does the same for status frames.
func FuzzDecodeStatus(f *testing.F) {
	for _, c := range Codes() {
		f.Add(AppendStatus(nil, Status{Code: c, Reason: c.String()}))
	}
	f.Add([]byte("MW\x01\x00\x00\x00"))
	f.Add([]byte("MW\x07\xc8\x00\x02\xc3\xa9"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, n, err := DecodeStatus(b)
		s2, err2 := ReadStatus(bytes.NewReader(b))
		if (err == nil) != (err2 == nil) || (err == nil && s != s2) {
			t.Fatalf("decoders disagree: %v/%v", err, err2)
		}
		if err != nil {
			return
		}
		if enc := AppendStatus(nil, s); !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b[:n], enc)
		}
	})
}
