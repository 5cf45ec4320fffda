package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Code is the receiver's verdict on a stream, the first thing it writes.
type Code uint8

// Status codes. Codes other than CodeAccepted refuse the stream; the
// receiver then resets it.
const (
	// CodeAccepted: the local service was dialled; payload follows.
	CodeAccepted Code = 0
	// CodeUnauthorized: policy denies source → destination.
	CodeUnauthorized Code = 1
	// CodeIdentityMismatch: the claimed source is not among the URI SANs of
	// the certificate presented on the connection.
	CodeIdentityMismatch Code = 2
	// CodeNoSuchService: no instance of the service runs on the receiver.
	CodeNoSuchService Code = 3
	// CodeNoSuchPort: the service runs there but does not declare the port.
	CodeNoSuchPort Code = 4
	// CodeDialFailed: the receiver could not connect to the local service.
	CodeDialFailed Code = 5
	// CodeOverloaded: the receiver's stream limit for this peer is reached.
	CodeOverloaded Code = 6
	// CodeBadHeader: the header was malformed, truncated or too large.
	CodeBadHeader Code = 7
	// CodeUnsupportedVersion: the header version is unknown to the receiver;
	// the status frame's version field carries the receiver's own.
	CodeUnsupportedVersion Code = 8
	// CodeDeadlineExceeded: the caller's budget ran out before the dial.
	CodeDeadlineExceeded Code = 9
	// CodeShuttingDown: the receiver is closing and takes no new streams.
	CodeShuttingDown Code = 10
	// CodeInternal: anything else.
	CodeInternal Code = 11
	// CodeNoSession: a hold or resume names a session the receiver does
	// not carry or hold for this peer (it ended, or its hold expired).
	CodeNoSession Code = 12
)

var codeNames = [...]string{
	CodeAccepted:           "accepted",
	CodeUnauthorized:       "unauthorized",
	CodeIdentityMismatch:   "identity_mismatch",
	CodeNoSuchService:      "no_such_service",
	CodeNoSuchPort:         "no_such_port",
	CodeDialFailed:         "dial_failed",
	CodeOverloaded:         "overloaded",
	CodeBadHeader:          "bad_header",
	CodeUnsupportedVersion: "unsupported_version",
	CodeDeadlineExceeded:   "deadline_exceeded",
	CodeShuttingDown:       "shutting_down",
	CodeInternal:           "internal",
	CodeNoSession:          "no_session",
}

// String returns the code's snake_case name, used in logs and as a metric
// label; unknown codes from a newer peer read "code_<n>".
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code_%d", uint8(c))
}

// Retryable reports whether the caller may try another instance after this
// refusal: the failure belongs to that instance, not to the call. Policy and
// identity refusals, bad headers and an exhausted deadline are final.
func (c Code) Retryable() bool {
	switch c {
	case CodeNoSuchService, CodeNoSuchPort, CodeDialFailed, CodeOverloaded, CodeShuttingDown:
		return true
	}
	return false
}

// Codes lists every code this version defines, in order.
func Codes() []Code {
	out := make([]Code, len(codeNames))
	for i := range out {
		out[i] = Code(i)
	}
	return out
}

// Status frame sizes.
const (
	// StatusPrefixSize is magic(2), version(1), code(1), reason length(2).
	StatusPrefixSize = 6
	// MaxReasonLen caps the reason text.
	MaxReasonLen = 1024
	// MaxStatusSize is the largest status frame.
	MaxStatusSize = StatusPrefixSize + MaxReasonLen
)

// Status is the receiver's answer to a header.
type Status struct {
	// Version is the highest header version the receiver speaks.
	Version uint8
	// Code is the verdict.
	Code Code
	// Reason is a short human-readable explanation (UTF-8, no control
	// characters); empty when accepted.
	Reason string
}

// Accepted reports whether the stream was accepted.
func (s Status) Accepted() bool { return s.Code == CodeAccepted }

// AppendStatus appends the encoding of s to dst. An over-long reason is cut
// at MaxReasonLen bytes (on a UTF-8 boundary), and control characters or
// invalid UTF-8 in it become '?', rather than being refused: a reason is for
// humans and must never stop the answer.
func AppendStatus(dst []byte, s Status) []byte {
	reason := s.Reason
	if !validUTF8([]byte(reason)) {
		reason = sanitize(reason)
	}
	if len(reason) > MaxReasonLen {
		cut := MaxReasonLen
		for cut > 0 && reason[cut]&0xc0 == 0x80 {
			cut--
		}
		reason = reason[:cut]
	}
	v := s.Version
	if v == 0 {
		v = Version
	}
	dst = append(dst, Magic[0], Magic[1], v, byte(s.Code))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(reason)))
	return append(dst, reason...)
}

// DecodeStatus decodes one status frame from the start of b and returns it
// with the number of bytes used.
func DecodeStatus(b []byte) (Status, int, error) {
	n, err := decodeStatusPrefix(b)
	if err != nil {
		return Status{}, 0, err
	}
	if len(b) < StatusPrefixSize+n {
		return Status{}, 0, fieldErr("reason", ErrTruncated, "%d bytes, announced %d", len(b)-StatusPrefixSize, n)
	}
	s, err := statusFrom(b[:StatusPrefixSize], b[StatusPrefixSize:StatusPrefixSize+n])
	return s, StatusPrefixSize + n, err
}

// ReadStatus reads one status frame from r and nothing past it. An
// accepted status, which has no reason, costs no more than its six bytes.
func ReadStatus(r io.Reader) (Status, error) {
	prefix := make([]byte, StatusPrefixSize)
	if _, err := io.ReadFull(r, prefix); err != nil {
		return Status{}, readErr("status", err)
	}
	n, err := decodeStatusPrefix(prefix)
	if err != nil {
		return Status{}, err
	}
	if n == 0 {
		return statusFrom(prefix, nil)
	}
	reason := make([]byte, n)
	if _, err := io.ReadFull(r, reason); err != nil {
		return Status{}, readErr("reason", err)
	}
	return statusFrom(prefix, reason)
}

func decodeStatusPrefix(p []byte) (int, error) {
	if len(p) < StatusPrefixSize {
		return 0, fieldErr("status", ErrTruncated, "%d bytes, need %d", len(p), StatusPrefixSize)
	}
	if p[0] != Magic[0] || p[1] != Magic[1] {
		return 0, fieldErr("status magic", ErrBadMagic, "got 0x%02x%02x", p[0], p[1])
	}
	if p[2] == 0 {
		return 0, fieldErr("status version", ErrMalformed, "version 0")
	}
	n := int(binary.BigEndian.Uint16(p[4:6]))
	if n > MaxReasonLen {
		return 0, fieldErr("reason", ErrTooLarge, "%d bytes, max %d", n, MaxReasonLen)
	}
	return n, nil
}

func statusFrom(prefix, reason []byte) (Status, error) {
	if !validUTF8(reason) {
		return Status{}, fieldErr("reason", ErrMalformed, "not UTF-8 text")
	}
	return Status{Version: prefix[2], Code: Code(prefix[3]), Reason: string(reason)}, nil
}

// sanitize replaces what a status reason may not carry with '?'.
func sanitize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 && r != '\t' || r == 0x7f {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
