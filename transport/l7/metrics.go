package l7

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the per-request handler's counters.
type metrics struct {
	requests   *prometheus.CounterVec // direction, class
	meshErrors *prometheus.CounterVec // direction, reason
	active     *prometheus.GaugeVec   // direction
	retries    *prometheus.CounterVec // reason
	// budgetExhausted counts retries and hedges the budget refused.
	budgetExhausted prometheus.Counter
	hedges          *prometheus.CounterVec // result
	attempts        prometheus.Histogram
	upgrades        *prometheus.CounterVec // direction
	duration        *prometheus.HistogramVec
	faults          *prometheus.CounterVec // kind, service
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
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwork_l7_retries_total",
			Help: "Tries sent again to another instance, by reason: the retry_on condition the failed try met.",
		}, []string{"reason"}),
		budgetExhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshwork_l7_retries_budget_exhausted_total",
			Help: "Retries and hedges not made because the destination's retry budget was spent; the failure was answered.",
		}),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshwork_l7_hedges_total",
			Help: "Hedged requests, by result: won (the hedge answered first) or lost (the first try did).",
		}, []string{"result"}),
		attempts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshwork_l7_request_attempts",
			Help:    "Tries an outbound request took, hedges included.",
			Buckets: []float64{1, 2, 3, 4, 6, 11},
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
	for _, c := range []prometheus.Collector{m.requests, m.meshErrors, m.active, m.retries, m.budgetExhausted, m.hedges, m.attempts, m.upgrades, m.duration, m.faults} {
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
