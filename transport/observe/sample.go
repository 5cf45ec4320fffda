package observe

import "encoding/binary"

// Sampled decides whether a trace that the mesh starts is sampled, at
// rate (0 to 1). It reads the trace ID's random low 8 bytes, as
// OpenTelemetry's TraceIDRatioBased sampler does, so that every agent
// that sees the same trace decides the same way.
func Sampled(traceID [16]byte, rate float64) bool {
	switch {
	case rate >= 1:
		return true
	case rate <= 0:
		return false
	}
	bound := uint64(rate * (1 << 63))
	return binary.BigEndian.Uint64(traceID[8:])>>1 < bound
}
