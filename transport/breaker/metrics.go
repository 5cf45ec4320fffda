package breaker

import "github.com/prometheus/client_golang/prometheus"

// MetricRejections counts the calls the breakers refused. It keeps the
// meshwork_transport_ prefix of the data plane it belongs to, for L4 and
// L7 alike: the limit label tells connections from requests.
const MetricRejections = "meshwork_transport_circuit_rejections_total"

// MetricNames lists the names of the metrics a Set registers.
var MetricNames = []string{MetricRejections}

// newRejections registers the refusal counter, by service and limit.
func newRejections(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRejections,
		Help: "Calls a circuit breaker refused at once, by destination service and limit: " +
			"max_connections (the app's connection was reset), max_pending or max_requests " +
			"(503 circuit_open for L7, a reset for L4).",
	}, []string{"service", "limit"})
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c, nil
}
