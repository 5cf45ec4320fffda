// Package observe defines what every call through the data plane leaves
// behind: one Call record per L7 request or L4 connection, on each agent it
// passes, handed to Observers (golden-signal metrics, access logs, trace
// export). The data plane fills records in; it knows nothing of what is
// done with them.
package observe

import (
	"time"
)

// Direction says which side of a call an agent is on.
type Direction uint8

const (
	// Outbound: the call came from a local application (the client side).
	Outbound Direction = iota
	// Inbound: the call goes to a local application (the server side).
	Inbound
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// Protocol is how a call was carried: a service's ServiceDefaults.protocol,
// with "http2" counted as "http".
type Protocol string

// The protocols of calls.
const (
	TCP  Protocol = "tcp"
	HTTP Protocol = "http"
	GRPC Protocol = "grpc"
)

// Result classes a call for error rates.
type Result string

// The results of calls.
const (
	// Success: an HTTP status below 500, a gRPC status that is the
	// caller's own doing, or an L4 connection that reached the service.
	Success Result = "success"
	// Failure: an HTTP 5xx, a gRPC status that blames the server (see
	// GRPCFailure), an answer from the mesh itself, or an L4 connection
	// that could not be made or was cut by the mesh.
	Failure Result = "failure"
)

// TraceIDs are the W3C trace identifiers of the span an agent records for
// a call: a client span on the outbound side, a server span on the inbound
// side. The outbound span's SpanID travels to the next agent as the parent
// of its span; the inbound span's SpanID reaches the application as the
// parent in its traceparent header.
type TraceIDs struct {
	TraceID  [16]byte
	SpanID   [8]byte
	ParentID [8]byte // zero when the span starts the trace
	Sampled  bool
}

// Call is one L7 request or one L4 connection as one agent saw it. The
// data plane fills every field that applies; a zero value means unknown
// or not applicable.
type Call struct {
	Direction Direction
	Protocol  Protocol
	// Start is when the request's head (L7) or the connection (L4)
	// reached the agent; Duration runs until the last byte of the answer
	// (L7) or the connection's close (L4).
	Start    time.Time
	Duration time.Duration

	// Source and Destination are service names: the caller's service
	// (as the tunnel identity claims it) and the service called.
	Source, Destination string
	// SourceIdentity and DestinationIdentity are SPIFFE IDs where known:
	// on the inbound side the caller's, proven by its certificate.
	SourceIdentity, DestinationIdentity string
	// Route is the name of the Route rule that chose the destination's
	// split; empty for the default split and for L4.
	Route string
	// Instance is the instance that served the call: the outbound side's
	// choice (node/address), or the inbound side's local address.
	Instance string

	// Of L7 requests.
	Method, Authority, Path, UserAgent, RequestID string
	// Status is the HTTP status sent to the caller; 0 when none was.
	Status int
	// GRPCStatus is the grpc-status of a gRPC answer; -1 when unknown.
	GRPCStatus int

	// MeshError is the reason (x-meshwork-error, or an L4 refusal) when
	// the mesh answered, refused or cut the call itself; empty otherwise.
	MeshError string
	// BytesIn runs from caller to service, BytesOut from service to
	// caller: bodies for L7, the byte streams for L4.
	BytesIn, BytesOut int64
	// Attempts is the number of tries made (1 + retries); 0 inbound.
	Attempts int

	Trace TraceIDs
}

// Result is the call's class for error rates.
func (c *Call) Result() Result {
	switch {
	case c.MeshError != "":
		return Failure
	case c.Protocol == GRPC && c.GRPCStatus >= 0 && c.Status < 500:
		if GRPCFailure(c.GRPCStatus) {
			return Failure
		}
		return Success
	case c.Status >= 500:
		return Failure
	}
	return Success
}

// GRPCFailure reports whether a gRPC status blames the server rather than
// the caller: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
// UNAVAILABLE and DATA_LOSS. The others (CANCELLED, INVALID_ARGUMENT,
// NOT_FOUND, ...) are the caller's to fix, as Linkerd classifies them.
func GRPCFailure(code int) bool {
	switch code {
	case 2, 4, 12, 13, 14, 15:
		return true
	}
	return false
}

// An Observer receives calls. Begin is called when a call starts, with
// Direction, Protocol, Start, Source and Destination set; End once when it
// ends, with every field set. Both run on the data path: they must not
// block, and must not keep c after they return.
type Observer interface {
	Begin(c *Call)
	End(c *Call)
}

// Observers fans calls out to several observers, in order.
type Observers []Observer

// Begin calls each observer's Begin.
func (os Observers) Begin(c *Call) {
	for _, o := range os {
		o.Begin(c)
	}
}

// End calls each observer's End.
func (os Observers) End(c *Call) {
	for _, o := range os {
		o.End(c)
	}
}
