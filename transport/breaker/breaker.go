// Package breaker holds the circuit breakers of a calling agent: per
// destination service, a count of the connections open, the requests and
// connections waiting for a stream, and the requests in flight, each
// bounded by the service's Resilience circuit_breaker limits.
//
// A breaker does not queue and does not trip for a period: over a limit
// the call is refused at once, and the next call that finds room passes
// (Envoy's circuit breakers work the same way). Acquire and Release are
// one atomic add each, so that they can sit on every request and
// connection; the limits are passed on each call, so that a policy change
// applies to the next call without a restart.
package breaker

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/policy"
)

// ErrCircuitOpen means a call was refused because the destination's
// circuit breaker was at one of its limits. Callers wrap it with the
// service and the limit; errors.Is finds it.
var ErrCircuitOpen = errors.New("circuit open")

// Limit names one of the counts a breaker bounds.
type Limit int

// The limits, after policy.CircuitBreaker's fields.
const (
	// Connections counts the applications' connections open to the
	// service through this agent: L4 connections and L7 app connections.
	Connections Limit = iota
	// Pending counts the requests and connections waiting for a stream
	// to an instance (a connect in progress).
	Pending
	// Requests counts the L7 requests in flight.
	Requests
	numLimits
)

// String is the limit's name in policy, logs and the metric's label.
func (l Limit) String() string {
	switch l {
	case Connections:
		return "max_connections"
	case Pending:
		return "max_pending"
	case Requests:
		return "max_requests"
	}
	return "unknown"
}

// Max is cb's value of l, what Acquire takes as max; nil cb or 0 means no
// limit.
func Max(cb *policy.CircuitBreaker, l Limit) int {
	if cb == nil {
		return 0
	}
	switch l {
	case Connections:
		return cb.MaxConnections
	case Pending:
		return cb.MaxPending
	case Requests:
		return cb.MaxRequests
	}
	return 0
}

// Breaker is the circuit breaker of one destination service. Safe for
// concurrent use; it never blocks.
type Breaker struct {
	service  string
	inUse    [numLimits]atomic.Int64
	rejected [numLimits]prometheus.Counter // pre-resolved children
}

// Acquire takes one unit of l if fewer than max are in use, and reports
// whether it did; max <= 0 means no limit. A refusal is counted. Each
// successful Acquire must be matched by one Release.
func (b *Breaker) Acquire(l Limit, max int) bool {
	n := b.inUse[l].Add(1)
	if max > 0 && n > int64(max) {
		b.inUse[l].Add(-1)
		b.rejected[l].Inc()
		return false
	}
	return true
}

// Release gives back one unit of l taken by Acquire.
func (b *Breaker) Release(l Limit) { b.inUse[l].Add(-1) }

// InUse is the units of l taken now.
func (b *Breaker) InUse(l Limit) int64 { return b.inUse[l].Load() }

// Service is the destination the breaker guards.
func (b *Breaker) Service() string { return b.service }

// Set holds the breakers of every destination service, created on first
// use. Safe for concurrent use; For takes no lock once a service's
// breaker exists.
type Set struct {
	m        sync.Map // service -> *Breaker
	rejected *prometheus.CounterVec
}

// NewSet returns an empty set whose breakers count their refusals in a
// metric registered with reg (nil keeps it private).
func NewSet(reg prometheus.Registerer) (*Set, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	rejected, err := newRejections(reg)
	if err != nil {
		return nil, err
	}
	s := &Set{rejected: rejected}
	return s, nil
}

// For returns the breaker of service.
func (s *Set) For(service string) *Breaker {
	if v, ok := s.m.Load(service); ok {
		return v.(*Breaker)
	}
	b := &Breaker{service: service}
	for l := range numLimits {
		b.rejected[l] = s.rejected.WithLabelValues(service, l.String())
	}
	v, _ := s.m.LoadOrStore(service, b)
	return v.(*Breaker)
}
