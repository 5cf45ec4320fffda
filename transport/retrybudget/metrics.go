package retrybudget

import "github.com/prometheus/client_golang/prometheus"

// MetricExhausted counts the retries a budget refused, of either plane.
const MetricExhausted = "meshwork_retrybudget_exhausted_total"

type metrics struct {
	exhausted prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		exhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricExhausted,
			Help: "Retries and hedges (L7) and connect retries (L4) not made because the destination's retry budget was spent.",
		}),
	}
	if err := reg.Register(m.exhausted); err != nil {
		return nil, err
	}
	return m, nil
}
