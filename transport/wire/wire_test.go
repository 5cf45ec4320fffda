package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleHeader() Header {
	tc, err := ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err != nil {
		panic(err)
	}
	return Header{
		Service: "web",
		Port:    8080,
		Source:  "spiffe://meshwork.local/svc/frontend",
		Timeout: 1500 * time.Millisecond,
		Trace:   tc,
		Extensions: []Extension{
			{Type: ExtTraceState, Value: []byte("congo=t61rcWkgMzE")},
			{Type: 0x0042, Value: []byte{1, 2, 3}},
		},
	}
}

func mustEncode(t testing.TB, h Header) []byte {
	t.Helper()
	b, err := AppendHeader(nil, &h)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    Header
	}{
		{"full", sampleHeader()},
		{"minimal", Header{Service: "a", Port: 1, Source: "spiffe://td/node/n"}},
		{"max service", Header{Service: strings.Repeat("s", MaxServiceLen), Port: 65535, Source: "x"}},
		{"max source", Header{Service: "s", Port: 80, Source: strings.Repeat("i", MaxSourceLen)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := mustEncode(t, tc.h)
			if len(b) != tc.h.EncodedSize() {
				t.Errorf("encoded %d bytes, EncodedSize says %d", len(b), tc.h.EncodedSize())
			}
			got, n, err := DecodeHeader(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if n != len(b) {
				t.Errorf("used %d bytes of %d", n, len(b))
			}
			if !reflect.DeepEqual(got, tc.h) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tc.h)
			}
			// ReadHeader must stop exactly at the end of the header.
			r := bytes.NewReader(append(b, "payload"...))
			got2, err := ReadHeader(r, nil)
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if !reflect.DeepEqual(got2, tc.h) {
				t.Errorf("ReadHeader differs from DecodeHeader")
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != "payload" {
				t.Errorf("ReadHeader consumed payload: rest %q", rest)
			}
		})
	}
}

func TestHeaderRefused(t *testing.T) {
	good := mustEncode(t, Header{Service: "web", Port: 80, Source: "spiffe://td/svc/a"})
	// mutate returns a modified copy of good.
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	setBodyLen := func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[4:6], uint16(len(b)-PrefixSize))
		return b
	}
	tests := []struct {
		name  string
		in    []byte
		want  error
		field string
	}{
		{"empty", nil, ErrTruncated, "prefix"},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), ErrBadMagic, "magic"},
		{"http request", []byte("GET / HTTP/1.1\r\n\r\n"), ErrBadMagic, "magic"},
		{"version 2", mutate(func(b []byte) []byte { b[2] = 2; return b }), ErrVersion, "version"},
		{"version 0", mutate(func(b []byte) []byte { b[2] = 0; return b }), ErrVersion, "version"},
		{"reserved flags", mutate(func(b []byte) []byte { b[3] = 1; return b }), ErrMalformed, "flags"},
		{"body too large", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:6], MaxBodySize+1); return b }), ErrTooLarge, "body length"},
		{"body too small", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:6], 3); return b }), ErrMalformed, "body length"},
		{"body truncated", good[:len(good)-1], ErrTruncated, "body"},
		{"port zero", mutate(func(b []byte) []byte { b[6], b[7] = 0, 0; return b }), ErrMalformed, "port"},
		{"service empty", mutate(func(b []byte) []byte {
			return setBodyLen(append(b[:16], append([]byte{0}, b[16+4:]...)...))
		}), ErrMalformed, "service"},
		{"service bad byte", mutate(func(b []byte) []byte { b[17] = '/'; return b }), ErrMalformed, "service"},
		{"service overruns", mutate(func(b []byte) []byte { b[16] = 200; return b }), ErrTruncated, "service"},
		{"source too long", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[20:22], MaxSourceLen+1); return b }), ErrTooLarge, "source"},
		{"source overruns", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[20:22], 500); return b }), ErrTruncated, "source"},
		{"source with space", mutate(func(b []byte) []byte { b[23] = ' '; return b }), ErrMalformed, "source"},
		{"trace bad length", mutate(func(b []byte) []byte { b[len(b)-1] = 5; return b }), ErrMalformed, "trace"},
		{"trace missing", mutate(func(b []byte) []byte { return setBodyLen(b[:len(b)-1]) }), ErrTruncated, "trace"},
		{"stray bytes", mutate(func(b []byte) []byte { return setBodyLen(append(b, 0, 1)) }), ErrTruncated, "extension"},
		{"unknown critical extension", mutate(func(b []byte) []byte {
			return setBodyLen(append(b, 0x80, 0x77, 0, 0))
		}), ErrCriticalExtension, "extension"},
		{"repeated extension", mutate(func(b []byte) []byte {
			return setBodyLen(append(b, 0, 9, 0, 0, 0, 9, 0, 0))
		}), ErrMalformed, "extension"},
		{"extension overruns", mutate(func(b []byte) []byte {
			return setBodyLen(append(b, 0, 9, 0, 9, 1))
		}), ErrTruncated, "extension"},
		{"http marker with a value", mutate(func(b []byte) []byte {
			return setBodyLen(append(b, 0x80, 0x02, 0, 1, 'x'))
		}), ErrMalformed, "extension"},
		{"tracestate control char", mutate(func(b []byte) []byte {
			return setBodyLen(append(b, 0, 1, 0, 1, '\n'))
		}), ErrMalformed, "tracestate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeHeader(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want field %q", err, tc.field)
			}
			// The streaming reader must agree with the slice decoder.
			if _, err := ReadHeader(bytes.NewReader(tc.in), nil); !errors.Is(err, tc.want) {
				t.Errorf("ReadHeader err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	tests := []struct {
		name string
		h    Header
		want error
	}{
		{"no service", Header{Port: 1, Source: "s"}, ErrMalformed},
		{"long service", Header{Service: strings.Repeat("a", 254), Port: 1, Source: "s"}, ErrTooLarge},
		{"no port", Header{Service: "a", Source: "s"}, ErrMalformed},
		{"no source", Header{Service: "a", Port: 1}, ErrMalformed},
		{"negative timeout", Header{Service: "a", Port: 1, Source: "s", Timeout: -1}, ErrMalformed},
		{"bad trace", Header{Service: "a", Port: 1, Source: "s", Trace: TraceContext{Flags: 1}}, ErrMalformed},
		{"huge extension", Header{Service: "a", Port: 1, Source: "s", Extensions: []Extension{{Type: 5, Value: make([]byte, MaxExtensionLen+1)}}}, ErrTooLarge},
		{"too large overall", Header{Service: "a", Port: 1, Source: "s", Extensions: []Extension{
			{Type: 5, Value: make([]byte, MaxExtensionLen)}, {Type: 6, Value: make([]byte, MaxExtensionLen)},
		}}, ErrTooLarge},
		{"unknown critical", Header{Service: "a", Port: 1, Source: "s", Extensions: []Extension{{Type: 0x8001}}}, ErrCriticalExtension},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := AppendHeader(nil, &tc.h); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadHeaderKeepsIOErrors(t *testing.T) {
	boom := errors.New("stream reset")
	_, err := ReadHeader(io.MultiReader(bytes.NewReader([]byte("MW")), errReader{boom}), nil)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the reader's error", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestTraceparent(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", false},
		{"short", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTraceparent(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && !strings.HasPrefix(tc.in, got.String()) {
				t.Errorf("String() = %q, not a prefix of %q", got.String(), tc.in)
			}
		})
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for _, c := range Codes() {
		t.Run(c.String(), func(t *testing.T) {
			s := Status{Code: c, Reason: "because " + c.String()}
			b := AppendStatus(nil, s)
			got, n, err := DecodeStatus(b)
			if err != nil || n != len(b) {
				t.Fatalf("decode: %v (n=%d of %d)", err, n, len(b))
			}
			if got.Code != c || got.Reason != s.Reason || got.Version != Version {
				t.Fatalf("got %+v", got)
			}
			got2, err := ReadStatus(bytes.NewReader(b))
			if err != nil || got2 != got {
				t.Fatalf("ReadStatus = %+v, %v", got2, err)
			}
		})
	}
	if Code(200).String() != "code_200" || Code(200).Retryable() {
		t.Error("unknown codes must print their number and not be retryable")
	}
	if !CodeDialFailed.Retryable() || CodeUnauthorized.Retryable() {
		t.Error("Retryable wrong for dial_failed or unauthorized")
	}
}

func TestStatusLongReasonCut(t *testing.T) {
	reason := strings.Repeat("é", MaxReasonLen) // 2 bytes each
	b := AppendStatus(nil, Status{Code: CodeInternal, Reason: reason})
	got, _, err := DecodeStatus(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(got.Reason) > MaxReasonLen || !strings.HasPrefix(reason, got.Reason) {
		t.Fatalf("reason cut badly: %d bytes", len(got.Reason))
	}
}

func TestStatusReasonSanitized(t *testing.T) {
	b := AppendStatus(nil, Status{Code: CodeDialFailed, Reason: "bad\x00\xff\nend"})
	got, _, err := DecodeStatus(b)
	if err != nil {
		t.Fatalf("a sanitized reason must decode: %v", err)
	}
	if got.Reason != "bad???end" {
		t.Fatalf("reason = %q", got.Reason)
	}
}

func TestStatusRefused(t *testing.T) {
	good := AppendStatus(nil, Status{Code: CodeDialFailed, Reason: "connection refused"})
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"bad magic", append([]byte("XW"), good[2:]...), ErrBadMagic},
		{"version 0", append([]byte{'M', 'W', 0}, good[3:]...), ErrMalformed},
		{"reason too long", []byte{'M', 'W', 1, 0, 0xff, 0xff}, ErrTooLarge},
		{"reason truncated", good[:len(good)-2], ErrTruncated},
		{"reason not utf8", []byte{'M', 'W', 1, 5, 0, 2, 0xff, 0xfe}, ErrMalformed},
		{"reason control char", []byte{'M', 'W', 1, 5, 0, 1, 0x1b}, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := DecodeStatus(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if _, err := ReadStatus(bytes.NewReader(tc.in)); !errors.Is(err, tc.want) {
				t.Fatalf("ReadStatus err = %v, want %v", err, tc.want)
			}
		})
	}
}

func BenchmarkAppendHeader(b *testing.B) {
	h := sampleHeader()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendHeader(buf[:0], &h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadHeader(b *testing.B) {
	enc := mustEncode(b, sampleHeader())
	scratch := make([]byte, MaxHeaderSize)
	r := bytes.NewReader(enc)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(enc)
		if _, err := ReadHeader(r, scratch); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHTTPExtension: a stream marked as carrying a request round-trips,
// and its mark is critical: a receiver that did not know it would refuse.
func TestHTTPExtension(t *testing.T) {
	h := Header{Service: "web", Port: 80, Source: "spiffe://td/svc/a", Extensions: []Extension{{Type: ExtHTTP}}}
	got, _, err := DecodeHeader(mustEncode(t, h))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := got.Extension(ExtHTTP); !ok || len(v) != 0 {
		t.Fatalf("ExtHTTP after a round trip: %q, %v", v, ok)
	}
	if ExtHTTP&ExtCritical == 0 {
		t.Fatal("ExtHTTP is not critical: an agent without per-request handling would splice a request as a connection")
	}
}
