// Package wire is the byte format spoken on every tunnel stream between two
// agents: the stream header the caller writes first, and the status frame
// the receiver answers with before any application byte flows. docs/wire.md
// describes it byte by byte.
//
// Everything here parses input from the network, so every decoder bounds its
// reads, refuses what it does not understand with a typed error, and never
// panics (FuzzDecodeHeader and FuzzDecodeStatus check it).
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// Version is the highest header version this package speaks. A receiver
// refuses a header of any other version with CodeUnsupportedVersion and
// puts its own version in the status frame, so a newer caller can step down.
const Version = 1

// Sizes and limits of version 1.
const (
	// PrefixSize is the fixed part before the body: magic, version, flags,
	// body length.
	PrefixSize = 6
	// MaxHeaderSize caps a whole header, prefix included. Headers are small
	// (about 100 bytes); the cap keeps a hostile peer from making a receiver
	// buffer much.
	MaxHeaderSize = 8192
	// MaxBodySize is the largest body length a prefix may announce.
	MaxBodySize = MaxHeaderSize - PrefixSize
	// MaxServiceLen is the longest destination service name (a DNS name).
	MaxServiceLen = 253
	// MaxSourceLen is the longest claimed source identity (a SPIFFE ID is
	// at most 2048 bytes).
	MaxSourceLen = 2048
	// MaxExtensionLen is the longest value of one extension.
	MaxExtensionLen = 4096
	// MaxTraceStateLen is the longest W3C tracestate value (512 characters
	// by the W3C recommendation).
	MaxTraceStateLen = 512
	// fixedBodySize is port(2) + timeout(8) + the three length bytes/words.
	fixedBodySize = 2 + 8 + 1 + 2 + 1
)

// Magic opens every header and status frame: "MW". It makes a stream from
// something that is not a Meshwork agent fail fast with a clear error.
var Magic = [2]byte{'M', 'W'}

// Errors returned by the decoders, always wrapped in a *FieldError that
// names the field. Compare with errors.Is.
var (
	// ErrBadMagic means the stream does not start with "MW".
	ErrBadMagic = errors.New("not a meshwork stream (bad magic)")
	// ErrVersion means the header version is not one this agent speaks.
	ErrVersion = errors.New("unsupported version")
	// ErrTooLarge means a length exceeds its cap.
	ErrTooLarge = errors.New("too large")
	// ErrMalformed means a field is out of range, inconsistent or invalid.
	ErrMalformed = errors.New("malformed")
	// ErrTruncated means the input ended inside a header or frame.
	ErrTruncated = errors.New("truncated")
	// ErrCriticalExtension means an extension marked critical is not known
	// to this agent.
	ErrCriticalExtension = errors.New("unknown critical extension")
)

// FieldError is the error of every decoder and encoder: which field was
// wrong, and why.
type FieldError struct {
	// Field names the offending field, such as "service" or "body length".
	Field string
	// Err is one of the sentinel errors above.
	Err error
	// Detail says more, such as the value seen; it may be empty.
	Detail string
}

func (e *FieldError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("wire: %s: %v", e.Field, e.Err)
	}
	return fmt.Sprintf("wire: %s: %v: %s", e.Field, e.Err, e.Detail)
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error, format string, args ...any) error {
	return &FieldError{Field: field, Err: err, Detail: fmt.Sprintf(format, args...)}
}

// Extension types. The high bit marks an extension as critical: a receiver
// that does not know a critical extension must refuse the stream; it skips
// an unknown extension without the bit.
const (
	// ExtCritical is the flag bit of critical extension types.
	ExtCritical uint16 = 0x8000
	// ExtTraceState carries the W3C tracestate header value (ASCII).
	ExtTraceState uint16 = 0x0001
	// ExtHTTP marks a stream that carries one HTTP request, in HTTP/1.1
	// form, and its response, instead of a connection's bytes. Its value is
	// empty. Critical: an agent that does not carry requests must refuse
	// the stream rather than splice it to the service as a connection.
	ExtHTTP uint16 = ExtCritical | 0x0002
	// ExtSession names the connection a per-connection stream carries: a
	// SessionIDLen-byte ID the caller draws, by which either agent can later
	// hold the connection across its restart (ExtHold, ExtResume). Not
	// critical: an agent that does not hold connections carries the stream
	// as before.
	ExtSession uint16 = 0x0003
	// ExtHold asks the receiver to hold the session its value names: to
	// stop reading from its TCP side, send what it read, close its side
	// of the stream and keep the TCP connection for a resume. The stream
	// carries no payload; the status answers. Critical.
	ExtHold uint16 = ExtCritical | 0x0004
	// ExtResume carries on the held session its value names: once
	// accepted, the stream carries that connection's bytes. Critical.
	ExtResume uint16 = ExtCritical | 0x0005
)

// SessionIDLen is the length of the value of ExtSession, ExtHold and
// ExtResume.
const SessionIDLen = 16

// Extension is one type-length-value entry after the fixed fields. It is the
// room reserved for L7: route hints, request metadata, baggage.
type Extension struct {
	Type  uint16
	Value []byte
}

// Header is what the caller says about a stream before any payload.
type Header struct {
	// Service is the destination service name, 1 to 253 bytes of letters,
	// digits, '-', '_' and '.'.
	Service string
	// Port is the destination port; it must be one the service declares on
	// the receiving node.
	Port uint16
	// Source is the claimed identity of the caller, a SPIFFE ID. The receiver
	// honours it only when it is a URI SAN of the certificate presented.
	Source string
	// Timeout is the caller's remaining time budget when the header was
	// written; 0 means none. Relative, so that clocks need not agree. It is
	// carried with microsecond precision.
	Timeout time.Duration
	// Trace is the W3C trace context; the zero value means absent.
	Trace TraceContext
	// Extensions are further TLV entries, in order; types are unique.
	Extensions []Extension
}

// Extension returns the value of the extension of type t.
func (h *Header) Extension(t uint16) ([]byte, bool) {
	for _, e := range h.Extensions {
		if e.Type == t {
			return e.Value, true
		}
	}
	return nil, false
}

// knownExtension reports whether this version understands extension type t.
func knownExtension(t uint16) bool {
	switch t {
	case ExtTraceState, ExtHTTP, ExtSession, ExtHold, ExtResume:
		return true
	}
	return false
}

// Validate checks h against the limits of version 1.
func (h *Header) Validate() error {
	if err := checkService(h.Service); err != nil {
		return err
	}
	if h.Port == 0 {
		return fieldErr("port", ErrMalformed, "port 0")
	}
	if err := checkSource(h.Source); err != nil {
		return err
	}
	if h.Timeout < 0 {
		return fieldErr("timeout", ErrMalformed, "negative timeout %s", h.Timeout)
	}
	if !h.Trace.IsZero() {
		if err := h.Trace.Validate(); err != nil {
			return err
		}
	}
	for i, e := range h.Extensions {
		if err := checkExtension(e, h.Extensions[:i]); err != nil {
			return err
		}
	}
	return nil
}

func checkService(s string) error {
	if len(s) == 0 {
		return fieldErr("service", ErrMalformed, "empty")
	}
	if len(s) > MaxServiceLen {
		return fieldErr("service", ErrTooLarge, "%d bytes, max %d", len(s), MaxServiceLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fieldErr("service", ErrMalformed, "byte 0x%02x at %d", c, i)
		}
	}
	return nil
}

func checkSource(s string) error {
	if len(s) == 0 {
		return fieldErr("source", ErrMalformed, "empty")
	}
	if len(s) > MaxSourceLen {
		return fieldErr("source", ErrTooLarge, "%d bytes, max %d", len(s), MaxSourceLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f {
			return fieldErr("source", ErrMalformed, "byte 0x%02x at %d", c, i)
		}
	}
	return nil
}

// checkExtension checks e, which follows the extensions in before. Headers
// carry few extensions, so a scan beats a map.
func checkExtension(e Extension, before []Extension) error {
	if len(e.Value) > MaxExtensionLen {
		return fieldErr("extension", ErrTooLarge, "type 0x%04x: %d bytes, max %d", e.Type, len(e.Value), MaxExtensionLen)
	}
	for _, b := range before {
		if b.Type == e.Type {
			return fieldErr("extension", ErrMalformed, "type 0x%04x repeated", e.Type)
		}
	}
	if e.Type&ExtCritical != 0 && !knownExtension(e.Type) {
		return fieldErr("extension", ErrCriticalExtension, "type 0x%04x", e.Type)
	}
	if e.Type == ExtHTTP && len(e.Value) != 0 {
		return fieldErr("extension", ErrMalformed, "type 0x%04x (http): %d bytes, want none", e.Type, len(e.Value))
	}
	if (e.Type == ExtSession || e.Type == ExtHold || e.Type == ExtResume) && len(e.Value) != SessionIDLen {
		return fieldErr("extension", ErrMalformed, "type 0x%04x (session): %d bytes, want %d", e.Type, len(e.Value), SessionIDLen)
	}
	if e.Type == ExtTraceState {
		if len(e.Value) > MaxTraceStateLen {
			return fieldErr("tracestate", ErrTooLarge, "%d bytes, max %d", len(e.Value), MaxTraceStateLen)
		}
		for i, c := range e.Value {
			if c < 0x20 || c > 0x7e {
				return fieldErr("tracestate", ErrMalformed, "byte 0x%02x at %d", c, i)
			}
		}
	}
	return nil
}

// EncodedSize returns the size of h once encoded. It does not validate h.
func (h *Header) EncodedSize() int {
	n := PrefixSize + fixedBodySize + len(h.Service) + len(h.Source)
	if !h.Trace.IsZero() {
		n += traceSize
	}
	for _, e := range h.Extensions {
		n += 4 + len(e.Value)
	}
	return n
}

// AppendHeader validates h and appends its encoding to dst, so that the
// caller can send the whole header in one write from a reused buffer.
func AppendHeader(dst []byte, h *Header) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return dst, err
	}
	size := h.EncodedSize()
	if size > MaxHeaderSize {
		return dst, fieldErr("header", ErrTooLarge, "%d bytes, max %d", size, MaxHeaderSize)
	}
	dst = append(dst, Magic[0], Magic[1], Version, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(size-PrefixSize))
	dst = binary.BigEndian.AppendUint16(dst, h.Port)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Timeout/time.Microsecond))
	dst = append(dst, byte(len(h.Service)))
	dst = append(dst, h.Service...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(h.Source)))
	dst = append(dst, h.Source...)
	if h.Trace.IsZero() {
		dst = append(dst, 0)
	} else {
		dst = append(dst, traceSize)
		dst = h.Trace.append(dst)
	}
	for _, e := range h.Extensions {
		dst = binary.BigEndian.AppendUint16(dst, e.Type)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(e.Value)))
		dst = append(dst, e.Value...)
	}
	return dst, nil
}

// DecodePrefix checks the fixed prefix and returns the body length it
// announces.
func DecodePrefix(p []byte) (bodyLen int, err error) {
	if len(p) < PrefixSize {
		return 0, fieldErr("prefix", ErrTruncated, "%d bytes, need %d", len(p), PrefixSize)
	}
	if p[0] != Magic[0] || p[1] != Magic[1] {
		return 0, fieldErr("magic", ErrBadMagic, "got 0x%02x%02x", p[0], p[1])
	}
	if p[2] != Version {
		return 0, fieldErr("version", ErrVersion, "got %d, speak %d", p[2], Version)
	}
	if p[3] != 0 {
		return 0, fieldErr("flags", ErrMalformed, "reserved flags 0x%02x set", p[3])
	}
	n := int(binary.BigEndian.Uint16(p[4:6]))
	if n > MaxBodySize {
		return 0, fieldErr("body length", ErrTooLarge, "%d bytes, max %d", n, MaxBodySize)
	}
	if n < fixedBodySize {
		return 0, fieldErr("body length", ErrMalformed, "%d bytes, min %d", n, fixedBodySize)
	}
	return n, nil
}

// DecodeHeader decodes one header from the start of b and returns it with
// the number of bytes it used.
func DecodeHeader(b []byte) (Header, int, error) {
	n, err := DecodePrefix(b)
	if err != nil {
		return Header{}, 0, err
	}
	if len(b) < PrefixSize+n {
		return Header{}, 0, fieldErr("body", ErrTruncated, "%d bytes, announced %d", len(b)-PrefixSize, n)
	}
	h, err := decodeBody(b[PrefixSize : PrefixSize+n])
	if err != nil {
		return Header{}, 0, err
	}
	return h, PrefixSize + n, nil
}

// ReadHeader reads one header from r. buf is scratch space of at least
// MaxHeaderSize bytes, so that a receiver can reuse it; nil allocates. It
// reads exactly the header's bytes and nothing past them.
func ReadHeader(r io.Reader, buf []byte) (Header, error) {
	if len(buf) < MaxHeaderSize {
		buf = make([]byte, MaxHeaderSize)
	}
	if _, err := io.ReadFull(r, buf[:PrefixSize]); err != nil {
		return Header{}, readErr("prefix", err)
	}
	n, err := DecodePrefix(buf[:PrefixSize])
	if err != nil {
		return Header{}, err
	}
	if _, err := io.ReadFull(r, buf[PrefixSize:PrefixSize+n]); err != nil {
		return Header{}, readErr("body", err)
	}
	return decodeBody(buf[PrefixSize : PrefixSize+n])
}

// readErr turns a short read into ErrTruncated and keeps other I/O errors
// (a reset stream, a deadline) as they are.
func readErr(field string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &FieldError{Field: field, Err: ErrTruncated, Detail: "stream ended"}
	}
	return fmt.Errorf("wire: read %s: %w", field, err)
}

// decodeBody decodes a body whose length the prefix announced.
func decodeBody(b []byte) (Header, error) {
	var h Header
	d := decoder{b: b}
	h.Port = d.u16()
	micros := d.u64()
	if d.err != nil {
		return Header{}, fieldErr("body", ErrTruncated, "fixed fields")
	}
	if h.Port == 0 {
		return Header{}, fieldErr("port", ErrMalformed, "port 0")
	}
	if micros > uint64(1<<63-1)/uint64(time.Microsecond) {
		return Header{}, fieldErr("timeout", ErrMalformed, "%d µs overflows", micros)
	}
	h.Timeout = time.Duration(micros) * time.Microsecond

	sl := int(d.u8())
	svc := d.bytes(sl)
	if d.err != nil {
		return Header{}, fieldErr("service", ErrTruncated, "length %d", sl)
	}
	h.Service = string(svc)
	if err := checkService(h.Service); err != nil {
		return Header{}, err
	}

	il := int(d.u16())
	if il > MaxSourceLen {
		return Header{}, fieldErr("source", ErrTooLarge, "%d bytes, max %d", il, MaxSourceLen)
	}
	src := d.bytes(il)
	if d.err != nil {
		return Header{}, fieldErr("source", ErrTruncated, "length %d", il)
	}
	h.Source = string(src)
	if err := checkSource(h.Source); err != nil {
		return Header{}, err
	}

	tl := int(d.u8())
	if d.err != nil {
		return Header{}, fieldErr("trace", ErrTruncated, "length byte")
	}
	switch tl {
	case 0:
	case traceSize:
		tb := d.bytes(traceSize)
		if d.err != nil {
			return Header{}, fieldErr("trace", ErrTruncated, "length %d", tl)
		}
		h.Trace = decodeTrace(tb)
		if err := h.Trace.Validate(); err != nil {
			return Header{}, err
		}
	default:
		return Header{}, fieldErr("trace", ErrMalformed, "length %d, want 0 or %d", tl, traceSize)
	}

	for d.remaining() > 0 {
		if d.remaining() < 4 {
			return Header{}, fieldErr("extension", ErrTruncated, "%d stray bytes", d.remaining())
		}
		typ := d.u16()
		vl := int(d.u16())
		if vl > MaxExtensionLen {
			return Header{}, fieldErr("extension", ErrTooLarge, "type 0x%04x: %d bytes, max %d", typ, vl, MaxExtensionLen)
		}
		v := d.bytes(vl)
		if d.err != nil {
			return Header{}, fieldErr("extension", ErrTruncated, "type 0x%04x: length %d", typ, vl)
		}
		e := Extension{Type: typ, Value: append([]byte(nil), v...)}
		if err := checkExtension(e, h.Extensions); err != nil {
			return Header{}, err
		}
		h.Extensions = append(h.Extensions, e)
	}
	return h, nil
}

// decoder reads big-endian fields and remembers the first overrun.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) take(n int) []byte {
	if d.err != nil || n < 0 || d.remaining() < n {
		d.err = ErrTruncated
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) bytes(n int) []byte { return d.take(n) }

// validUTF8 reports whether b is valid UTF-8 without control characters
// other than tab.
func validUTF8(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
