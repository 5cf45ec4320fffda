package accesslog

import (
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/meshwork/meshwork/transport/observe"
)

// maxField caps each string field, in bytes of input. Paths and user
// agents come from clients, and a line must stay small enough for the
// journal and for a grep; Envoy's own default header limit is 60 KiB.
const maxField = 4096

// timeLayout is RFC 3339 in UTC with milliseconds, as Envoy's START_TIME.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// appendLine appends c as one JSON object and a newline. Fields follow a
// fixed order; a string field that is empty, a status that was not sent,
// and a count that does not apply are left out (docs/observability-accesslog.md
// lists the rule for each).
func appendLine(b []byte, c *observe.Call) []byte {
	b = append(b, `{"start_time":"`...)
	b = appendTime(b, c.Start)
	b = append(b, `","duration_ms":`...)
	b = appendMillis(b, c.Duration)
	b = append(b, `,"direction":"`...)
	b = append(b, c.Direction.String()...)
	b = append(b, '"')
	b = appendStringField(b, `,"protocol":`, string(c.Protocol))
	b = appendStringField(b, `,"source":`, c.Source)
	b = appendStringField(b, `,"destination":`, c.Destination)
	b = appendStringField(b, `,"source_identity":`, c.SourceIdentity)
	b = appendStringField(b, `,"destination_identity":`, c.DestinationIdentity)
	b = appendStringField(b, `,"route":`, c.Route)
	b = appendStringField(b, `,"instance":`, c.Instance)
	b = appendStringField(b, `,"method":`, c.Method)
	b = appendStringField(b, `,"authority":`, c.Authority)
	b = appendStringField(b, `,"path":`, c.Path)
	b = appendStringField(b, `,"user_agent":`, c.UserAgent)
	b = appendStringField(b, `,"request_id":`, c.RequestID)
	if c.Status > 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(c.Status), 10)
	}
	if c.Protocol == observe.GRPC && c.GRPCStatus >= 0 {
		b = append(b, `,"grpc_status":`...)
		b = strconv.AppendInt(b, int64(c.GRPCStatus), 10)
	}
	b = append(b, `,"result":"`...)
	b = append(b, c.Result()...)
	b = append(b, '"')
	b = appendStringField(b, `,"mesh_error":`, c.MeshError)
	b = append(b, `,"bytes_received":`...)
	b = strconv.AppendInt(b, max(c.BytesIn, 0), 10)
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendInt(b, max(c.BytesOut, 0), 10)
	if c.Attempts > 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(c.Attempts), 10)
	}
	if c.Trace.TraceID != ([16]byte{}) {
		b = append(b, `,"trace_id":"`...)
		b = hex.AppendEncode(b, c.Trace.TraceID[:])
		b = append(b, '"')
	}
	if c.Trace.SpanID != ([8]byte{}) {
		b = append(b, `,"span_id":"`...)
		b = hex.AppendEncode(b, c.Trace.SpanID[:])
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// appendTime appends t in UTC as timeLayout does, by hand: the layout
// interpreter of time.AppendFormat was a third of the cost of a line.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, timeLayout)
	}
	hour, minute, sec := t.Clock()
	ms := t.Nanosecond() / int(time.Millisecond)
	b = append(b, byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-')
	b = appendTwo(b, int(month), '-')
	b = appendTwo(b, day, 'T')
	b = appendTwo(b, hour, ':')
	b = appendTwo(b, minute, ':')
	b = appendTwo(b, sec, '.')
	return append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// appendTwo appends n (0 to 99) in two digits, then sep.
func appendTwo(b []byte, n int, sep byte) []byte {
	return append(b, byte('0'+n/10), byte('0'+n%10), sep)
}

// appendMillis appends d in milliseconds with microsecond precision
// ("12.345"), in integers so that no float formatting is involved.
func appendMillis(b []byte, d time.Duration) []byte {
	us := max(d.Microseconds(), 0)
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// appendStringField appends key and s as a JSON string, unless s is empty.
func appendStringField(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, key...)
	return appendString(b, s)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a quoted JSON string that any parser accepts,
// whatever s holds: at most maxField bytes of it (cut at a character
// boundary), quotes, backslashes and control characters escaped, each
// byte that is not valid UTF-8 replaced by U+FFFD (as encoding/json does),
// and U+2028 and U+2029 escaped so that the line is also valid JavaScript.
func appendString(b []byte, s string) []byte {
	s = truncate(s, maxField)
	b = append(b, '"')
	start := 0 // s[start:i] is pending and needs no escaping
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence
// (a cut inside an invalid sequence may leave up to 3 bytes fewer).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for back := 0; cut > 0 && back < utf8.UTFMax-1 && !utf8.RuneStart(s[cut]); back++ {
		cut--
	}
	return s[:cut]
}
