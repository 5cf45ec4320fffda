package signals

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics' names (docs/observability.md, "Golden signals").
const (
	MetricRequests = "meshwork_service_requests_total"
	MetricDuration = "meshwork_service_request_duration_seconds"
	MetricBytes    = "meshwork_service_bytes_total"
	MetricActive   = "meshwork_service_active"
)

// MetricNames lists the names of the metrics an Observer registers.
var MetricNames = []string{MetricRequests, MetricDuration, MetricBytes, MetricActive}

// DurationBuckets are the classic buckets of MetricDuration, kept beside
// the native histogram for scrapers and queries that want them.
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// The native histogram's shape. A factor of 1.1 keeps a quantile within
// 5 % of the true value. 160 buckets cover 0.5 ms to 10 s at that factor
// with room to spare; past it the histogram widens its buckets rather
// than grow, and is reset at most once an hour to win back resolution.
const (
	nativeFactor     = 1.1
	nativeMaxBuckets = 160
	nativeMinReset   = time.Hour
)

const helpRequests = "Finished L7 requests and L4 connections, by direction (outbound: the calling agent; inbound: the receiving agent), protocol (tcp, http, grpc), source and destination service, route (the Route rule; empty for the default split), result (success, failure), code (HTTP status, or gRPC status for grpc; empty for tcp) and reason (the mesh's own answer or refusal; empty when the app answered)."

// metrics are the golden-signal families.
type metrics struct {
	requests *prometheus.CounterVec   // direction, protocol, source, destination, route, result, code, reason
	duration *prometheus.HistogramVec // direction, protocol, source, destination, route, result
	bytes    *prometheus.CounterVec   // direction, protocol, source, destination, flow
	active   *prometheus.GaugeVec     // direction, protocol, source, destination
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: helpRequests,
		}, []string{"direction", "protocol", "source", "destination", "route", "result", "code", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            MetricDuration,
			Help:                            "Duration of finished L7 requests (head in to the answer's last byte) and L4 connections (open to close), by direction, protocol, source, destination, route and result.",
			Buckets:                         DurationBuckets,
			NativeHistogramBucketFactor:     nativeFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
			NativeHistogramMinResetDuration: nativeMinReset,
		}, []string{"direction", "protocol", "source", "destination", "route", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricBytes,
			Help: "Bytes carried by finished calls (bodies for L7, the byte streams for L4), by direction, protocol, source, destination and flow (request: caller to service; response: service to caller).",
		}, []string{"direction", "protocol", "source", "destination", "flow"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricActive,
			Help: "L7 requests and L4 connections in progress, by direction, protocol, source and destination.",
		}, []string{"direction", "protocol", "source", "destination"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.bytes, m.active} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
