package httpapi

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as documented and checked by a test.
const (
	MetricRequests        = "meshwork_http_requests_total"
	MetricRequestDuration = "meshwork_http_request_duration_seconds"
	MetricBlocking        = "meshwork_http_blocking_queries"
	// MetricACLDenials counts the requests the ACLs refused, by route and
	// code (permission_denied, acl_not_found, malformed_token).
	MetricACLDenials = "meshwork_http_acl_denials_total"
	// MetricDeprecated counts the calls of deprecated aliases, by route:
	// what must reach zero before the release that removes them.
	MetricDeprecated = "meshwork_http_deprecated_requests_total"
	// MetricMonitorDropped counts the log lines GET /v1/agent/monitor
	// dropped for readers that were too slow.
	MetricMonitorDropped = "meshwork_http_monitor_dropped_lines_total"
)

type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	blocking   prometheus.Gauge
	denials    *prometheus.CounterVec
	deprecated *prometheus.CounterVec
	dropped    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: "Requests to the local HTTP API, by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: MetricRequestDuration,
			Help: "Latency of the local HTTP API by route pattern; blocking queries include their wait.",
			// Up to the longest blocking query.
			Buckets: []float64{.0005, .001, .005, .025, .1, .5, 1, 5, 30, 120, 600},
		}, []string{"route"}),
		blocking: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricBlocking,
			Help: "Blocking queries waiting for a catalog change.",
		}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricACLDenials,
			Help: "Requests to the local HTTP API refused by the ACLs, by route pattern and code.",
		}, []string{"route", "code"}),
		deprecated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDeprecated,
			Help: "Calls of the deprecated aliases of the local HTTP API, by route pattern.",
		}, []string{"route"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricMonitorDropped,
			Help: "Log lines the monitor endpoint dropped because its reader was too slow.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.blocking, m.denials, m.deprecated, m.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("httpapi: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}
