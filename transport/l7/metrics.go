package l7

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the per-request handler's counters.
type metrics struct {
	requests   *prometheus.CounterVec // direction, class
	meshErrors *prometheus.CounterVec // direction, reason
	active     *prometheus.GaugeVec   // direction
	retries    prometheus.Counter
	upgrades   *prometheus.CounterVec // direction
	duration   *prometheus.HistogramVec
	faults     *prometheus.CounterVec // kind, service
}

// MetricFaults counts the faults Fault policies injected.
const MetricFaults = "meshwork_l7_faults_injected_total"

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwork_l7_requests_total",
			Help: "Requests carried per request, by direction (outbound: from a local app; inbound: to a local app) and status class (1xx..5xx).",
		}, []string{"direction", "class"}),
		meshErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwork_l7_mesh_errors_total",
			Help: "Requests the mesh answered itself, by direction and reason (x-meshwork-error).",
		}, []string{"direction", "reason"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshwork_l7_active_requests",
			Help: "Requests in progress, by direction.",
		}, []string{"direction"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshwork_l7_retries_total",
			Help: "Requests sent again to another instance after a refusal that came before any answer.",
		}),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwork_l7_upgrades_total",
			Help: "Upgrade (WebSocket) and CONNECT requests that switched to a byte stream, by direction.",
		}, []string{"direction"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshwork_l7_request_duration_seconds",
			Help:    "Time from a request's head to its response's head, by direction.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"direction"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricFaults,
			Help: "Faults injected into inbound requests by Fault policies, by kind (abort, delay) and destination service.",
		}, []string{"kind", "service"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.meshErrors, m.active, m.retries, m.upgrades, m.duration, m.faults} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Directions of the metrics.
const (
	outbound = "outbound"
	inbound  = "inbound"
)

var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// class is the label of a status code.
func class(status int) string {
	if status >= 100 && status < 600 {
		return classes[status/100-1]
	}
	return "other"
}
