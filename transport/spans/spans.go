// Package spans gives each call the W3C trace identifiers of the span an
// agent records for it (docs/observability.md, "Golden signals"): the
// calling agent a client span whose SpanID travels in the wire header as
// the parent, the receiving agent a server span whose SpanID reaches the
// application in its traceparent header. Trace context is always
// propagated; only the Sampled flag decides what is exported.
package spans

import (
	"math/rand/v2"

	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/wire"
)

// flagSampled is the "sampled" bit of the W3C trace flags.
const flagSampled = 0x01

// Client starts the client span of a call from a local application whose
// traceparent was app (zero when it sent none or an invalid one). The
// span joins app's trace, or starts one that rate decides the sampling
// of; wire is the trace context for the stream's header, naming the
// client span as the parent.
func Client(app wire.TraceContext, rate float64) (ids observe.TraceIDs, w wire.TraceContext) {
	if app.IsZero() {
		ids.TraceID = NewTraceID()
		ids.Sampled = observe.Sampled(ids.TraceID, rate)
	} else {
		ids.TraceID, ids.ParentID = app.TraceID, app.ParentID
		ids.Sampled = app.Flags&flagSampled != 0
	}
	ids.SpanID = NewSpanID()
	w = wire.TraceContext{TraceID: ids.TraceID, ParentID: ids.SpanID}
	if ids.Sampled {
		w.Flags = flagSampled
	}
	return ids, w
}

// Server starts the server span of a call that arrived with the wire
// trace context w: a child of the caller's client span. A caller that
// sent none (an older agent) gets a new trace sampled at rate.
func Server(w wire.TraceContext, rate float64) observe.TraceIDs {
	var ids observe.TraceIDs
	if w.IsZero() {
		ids.TraceID = NewTraceID()
		ids.Sampled = observe.Sampled(ids.TraceID, rate)
	} else {
		ids.TraceID, ids.ParentID = w.TraceID, w.ParentID
		ids.Sampled = w.Flags&flagSampled != 0
	}
	ids.SpanID = NewSpanID()
	return ids
}

// NewTraceID returns a random trace ID, never all zeros.
func NewTraceID() [16]byte {
	var id [16]byte
	a, b := rand.Uint64(), rand.Uint64()|1
	for i := range 8 {
		id[i] = byte(a >> (56 - 8*i))
		id[8+i] = byte(b >> (56 - 8*i))
	}
	return id
}

// NewSpanID returns a random span ID, never all zeros.
func NewSpanID() [8]byte {
	var id [8]byte
	a := rand.Uint64() | 1
	for i := range 8 {
		id[i] = byte(a >> (56 - 8*i))
	}
	return id
}

// TraceparentLen is the length of a version 00 traceparent.
const TraceparentLen = 55

const hexDigits = "0123456789abcdef"

// AppendTraceparent appends the traceparent that names ids' span as the
// parent: "00-<trace>-<span>-<flags>", as the application behind the
// receiving agent gets it.
func AppendTraceparent(dst []byte, ids observe.TraceIDs) []byte {
	dst = append(dst, '0', '0', '-')
	for _, b := range ids.TraceID {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0x0f])
	}
	dst = append(dst, '-')
	for _, b := range ids.SpanID {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0x0f])
	}
	if ids.Sampled {
		return append(dst, '-', '0', '1')
	}
	return append(dst, '-', '0', '0')
}

// Traceparent is AppendTraceparent as a string.
func Traceparent(ids observe.TraceIDs) string {
	var b [TraceparentLen]byte
	return string(AppendTraceparent(b[:0], ids))
}
