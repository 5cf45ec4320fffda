package local

import (
	"fmt"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as documented and checked by a test.
const (
	MetricServices  = "meshwork_local_services"
	MetricChecks    = "meshwork_local_checks"
	MetricPublishes = "meshwork_local_record_publishes_total"
	MetricReaped    = "meshwork_local_services_deregistered_critical_total"
)

type metrics struct {
	services  *prometheus.GaugeVec
	checks    *prometheus.GaugeVec
	publishes prometheus.Counter
	reaped    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		services: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricServices,
			Help: "Services registered on this node, by source (config or api).",
		}, []string{"source"}),
		checks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricChecks,
			Help: "Health checks run by this node, by current status.",
		}, []string{"status"}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricPublishes,
			Help: "New versions of this node's record handed to gossip.",
		}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricReaped,
			Help: "Services removed because a check stayed critical past its deregister_critical_after.",
		}),
	}
	for _, c := range []prometheus.Collector{m.services, m.checks, m.publishes, m.reaped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("local: metrics: %w", err)
		}
	}
	return m, nil
}

// update sets the gauges from the current services; the caller holds m.mu.
func (m *metrics) update(services map[string]*service) {
	bySource := map[string]float64{api.SourceConfig: 0, api.SourceAPI: 0}
	byStatus := map[catalog.Health]float64{catalog.Passing: 0, catalog.Warning: 0, catalog.Critical: 0}
	for _, s := range services {
		bySource[s.source]++
		for _, c := range s.checks {
			byStatus[c.State().Status]++
		}
	}
	for k, v := range bySource {
		m.services.WithLabelValues(k).Set(v)
	}
	for k, v := range byStatus {
		m.checks.WithLabelValues(string(k)).Set(v)
	}
}
