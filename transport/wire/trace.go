package wire

import (
	"encoding/hex"
	"strings"
)

// traceSize is the binary size of a trace context: version, trace-id,
// parent-id, flags.
const traceSize = 1 + 16 + 8 + 1

// TraceContext is the W3C Trace Context "traceparent" in binary form. The
// zero value means no trace context.
type TraceContext struct {
	// Version is the traceparent version; 0 today, 0xff is forbidden.
	Version byte
	// TraceID identifies the whole trace; it must not be all zeros.
	TraceID [16]byte
	// ParentID identifies the caller's span; it must not be all zeros.
	ParentID [8]byte
	// Flags are the trace flags; bit 0 is "sampled".
	Flags byte
}

// IsZero reports whether tc is absent.
func (tc TraceContext) IsZero() bool { return tc == TraceContext{} }

// Validate applies the W3C rules: version 0xff and all-zero ids are invalid.
func (tc TraceContext) Validate() error {
	if tc.Version == 0xff {
		return fieldErr("trace", ErrMalformed, "version 0xff is invalid")
	}
	if tc.TraceID == [16]byte{} {
		return fieldErr("trace", ErrMalformed, "trace-id is all zeros")
	}
	if tc.ParentID == [8]byte{} {
		return fieldErr("trace", ErrMalformed, "parent-id is all zeros")
	}
	return nil
}

func (tc TraceContext) append(dst []byte) []byte {
	dst = append(dst, tc.Version)
	dst = append(dst, tc.TraceID[:]...)
	dst = append(dst, tc.ParentID[:]...)
	return append(dst, tc.Flags)
}

func decodeTrace(b []byte) TraceContext {
	var tc TraceContext
	tc.Version = b[0]
	copy(tc.TraceID[:], b[1:17])
	copy(tc.ParentID[:], b[17:25])
	tc.Flags = b[25]
	return tc
}

// String formats tc as a traceparent header value,
// "00-<32 hex>-<16 hex>-<2 hex>"; "" when tc is zero.
func (tc TraceContext) String() string {
	if tc.IsZero() {
		return ""
	}
	var b strings.Builder
	b.Grow(55)
	b.WriteString(hex.EncodeToString([]byte{tc.Version}))
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString(tc.TraceID[:]))
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString(tc.ParentID[:]))
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString([]byte{tc.Flags}))
	return b.String()
}

// ParseTraceparent parses a W3C traceparent header value. Versions above 0
// may carry more fields after the flags, which are ignored as the W3C
// specification asks.
func ParseTraceparent(s string) (TraceContext, error) {
	var tc TraceContext
	if len(s) < 55 {
		return tc, fieldErr("traceparent", ErrMalformed, "%d characters, want at least 55", len(s))
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return tc, fieldErr("traceparent", ErrMalformed, "separators not at 2, 35, 52")
	}
	var version [1]byte
	if err := decodeLowerHex(version[:], s[0:2]); err != nil {
		return TraceContext{}, err
	}
	tc.Version = version[0]
	if err := decodeLowerHex(tc.TraceID[:], s[3:35]); err != nil {
		return TraceContext{}, err
	}
	if err := decodeLowerHex(tc.ParentID[:], s[36:52]); err != nil {
		return TraceContext{}, err
	}
	var flags [1]byte
	if err := decodeLowerHex(flags[:], s[53:55]); err != nil {
		return TraceContext{}, err
	}
	tc.Flags = flags[0]
	if tc.Version == 0 && len(s) != 55 {
		return TraceContext{}, fieldErr("traceparent", ErrMalformed, "version 00 is exactly 55 characters, got %d", len(s))
	}
	if len(s) > 55 && s[55] != '-' {
		return TraceContext{}, fieldErr("traceparent", ErrMalformed, "no separator after flags")
	}
	if err := tc.Validate(); err != nil {
		return TraceContext{}, err
	}
	return tc, nil
}

// decodeLowerHex decodes s into dst; W3C allows lower-case hex only.
func decodeLowerHex(dst []byte, s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fieldErr("traceparent", ErrMalformed, "character %q is not lower-case hex", c)
		}
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fieldErr("traceparent", ErrMalformed, "%v", err)
	}
	return nil
}
