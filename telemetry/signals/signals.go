// Package signals keeps the golden signals of the data plane as
// Prometheus metrics: requests and connections by result, code and
// reason, their duration (a native histogram with classic buckets), bytes
// each way, and those in progress, per source and destination service
// and route, on each agent a call passes (docs/observability.md, "Golden
// signals").
//
// Its Observer is an observe.Observer: the data plane hands it a record
// at the start and at the end of every call. Labels are bounded by
// design: services, Route rule names, status codes and reasons, never an
// instance, a path or a node. Each label set's children are resolved once
// and kept, so that a call costs a map lookup and a few atomic adds.
package signals

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/transport/observe"
)

// Observer keeps the golden-signal metrics of the calls it observes. It
// is safe for concurrent use; Begin and End never block on anything but
// a short lock held while a new label set is first resolved.
type Observer struct {
	m *metrics

	mu    sync.RWMutex
	pairs map[pairKey]*pairSeries // direction, protocol, source, destination
	ends  map[endKey]*endSeries   // ... route, result, code, reason
}

// pairKey is the label set of the active gauge and byte counters.
type pairKey struct {
	source, dst string
	protocol    observe.Protocol
	direction   observe.Direction
}

// pairSeries are the children of one pairKey.
type pairSeries struct {
	active            prometheus.Gauge
	request, response prometheus.Counter
}

// endKey is the label set of the request counter; the duration's is the
// same without code and reason. The code is kept as a number (its label
// is made once) and the result as a flag: fewer strings to hash per call.
type endKey struct {
	pair    pairKey
	route   string
	reason  string
	code    int32 // -1: no code
	failure bool
}

// endSeries are the children of one endKey, and of its pairKey.
type endSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
	pair     *pairSeries
}

// New registers the metrics on reg and returns their Observer.
func New(reg prometheus.Registerer) (*Observer, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("signals: metrics: %w", err)
	}
	return &Observer{m: m, pairs: map[pairKey]*pairSeries{}, ends: map[endKey]*endSeries{}}, nil
}

// Begin implements observe.Observer: the call is in progress.
func (o *Observer) Begin(c *observe.Call) {
	o.pair(keyOf(c)).active.Inc()
}

// End implements observe.Observer: the call is counted, timed and its
// bytes added; it is no longer in progress (under the labels it had at
// Begin, which the data plane does not change).
func (o *Observer) End(c *observe.Call) {
	e := o.end(c)
	e.pair.active.Dec()
	if c.BytesIn > 0 {
		e.pair.request.Add(float64(c.BytesIn))
	}
	if c.BytesOut > 0 {
		e.pair.response.Add(float64(c.BytesOut))
	}
	e.requests.Inc()
	e.duration.Observe(c.Duration.Seconds())
}

func keyOf(c *observe.Call) pairKey {
	return pairKey{direction: c.Direction, protocol: c.Protocol, source: c.Source, dst: c.Destination}
}

// pair returns the children of a pair of labels, resolving them the first
// time.
func (o *Observer) pair(k pairKey) *pairSeries {
	o.mu.RLock()
	s := o.pairs[k]
	o.mu.RUnlock()
	if s != nil {
		return s
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pairLocked(k)
}

func (o *Observer) pairLocked(k pairKey) *pairSeries {
	if s := o.pairs[k]; s != nil {
		return s
	}
	dir, proto := k.direction.String(), string(k.protocol)
	s := &pairSeries{
		active:   o.m.active.WithLabelValues(dir, proto, k.source, k.dst),
		request:  o.m.bytes.WithLabelValues(dir, proto, k.source, k.dst, "request"),
		response: o.m.bytes.WithLabelValues(dir, proto, k.source, k.dst, "response"),
	}
	o.pairs[k] = s
	return s
}

// end returns the children of c's full labels, resolving them the first
// time.
func (o *Observer) end(c *observe.Call) *endSeries {
	k := endKey{pair: keyOf(c), route: c.Route, reason: c.MeshError, code: int32(codeOf(c)), failure: c.Result() == observe.Failure}
	o.mu.RLock()
	s := o.ends[k]
	o.mu.RUnlock()
	if s != nil {
		return s
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if s = o.ends[k]; s != nil {
		return s
	}
	dir, proto := k.pair.direction.String(), string(k.pair.protocol)
	result, code := string(observe.Success), ""
	if k.failure {
		result = string(observe.Failure)
	}
	if k.code >= 0 {
		code = strconv.Itoa(int(k.code))
	}
	s = &endSeries{
		requests: o.m.requests.WithLabelValues(dir, proto, k.pair.source, k.pair.dst, k.route, result, code, k.reason),
		duration: o.m.duration.WithLabelValues(dir, proto, k.pair.source, k.pair.dst, k.route, result),
		pair:     o.pairLocked(k.pair),
	}
	o.ends[k] = s
	return s
}

// codeOf is the number of c's code label: the gRPC status of a gRPC
// answer, else the HTTP status; -1, no code, for a TCP connection or when
// no status was sent.
func codeOf(c *observe.Call) int {
	switch {
	case c.Protocol == observe.TCP:
		return -1
	case c.Protocol == observe.GRPC && c.GRPCStatus >= 0:
		return c.GRPCStatus // 0 is OK
	case c.Status <= 0:
		return -1
	}
	return c.Status
}

var _ observe.Observer = (*Observer)(nil)
