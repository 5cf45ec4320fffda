package ui

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names (docs/observability.md).
const (
	// MetricAgentReads counts the reads of agents' counters by the agents
	// provider, by result (ok, error).
	MetricAgentReads = "meshwork_ui_agent_reads_total"
	// MetricBuildInfo is 1, labelled with the agent's version and commit,
	// so that the nodes page shows each agent's version from the same
	// scrape as its counters.
	MetricBuildInfo = "meshwork_build_info"
)

// metrics are the agents provider's.
type metrics struct {
	reads *prometheus.CounterVec // result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{reads: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricAgentReads,
		Help: "Reads of agents' golden-signal counters by the UI's topology (the agents provider), by result (ok, error).",
	}, []string{"result"})}
	for _, r := range []string{"ok", "error"} {
		m.reads.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.reads); err != nil {
		return nil, err
	}
	return m, nil
}

// RegisterBuildInfo registers MetricBuildInfo on reg.
func RegisterBuildInfo(reg prometheus.Registerer, version, commit string) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        MetricBuildInfo,
		Help:        "Always 1; its labels are the agent's version and the commit it was built from.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit},
	})
	g.Set(1)
	return reg.Register(g)
}
