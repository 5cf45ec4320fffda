package health

import (
	"fmt"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as documented and checked by a test.
const (
	MetricProbes        = "meshwork_health_probes_total"
	MetricProbeDuration = "meshwork_health_probe_duration_seconds"
	MetricChanges       = "meshwork_health_status_changes_total"
)

// Metrics counts the probes and status changes of every check of a node.
// One value is shared by all checks; a nil *Metrics records nothing.
type Metrics struct {
	probes   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	changes  *prometheus.CounterVec
}

// NewMetrics registers the health metrics in reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricProbes,
			Help: "HTTP and TCP probes run, by check kind and result.",
		}, []string{"kind", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricProbeDuration,
			Help:    "Time taken by one HTTP or TCP probe, by check kind.",
			Buckets: []float64{.001, .005, .025, .1, .5, 1, 5, 10},
		}, []string{"kind"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricChanges,
			Help: "Changes of a check's status, by the new status.",
		}, []string{"status"}),
	}
	for _, c := range []prometheus.Collector{m.probes, m.duration, m.changes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("health: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) observeProbe(kind string, status catalog.Health, d time.Duration) {
	if m == nil {
		return
	}
	m.probes.WithLabelValues(kind, string(status)).Inc()
	m.duration.WithLabelValues(kind).Observe(d.Seconds())
}

func (m *Metrics) observeChange(status catalog.Health) {
	if m == nil {
		return
	}
	m.changes.WithLabelValues(string(status)).Inc()
}
