package catalogstate

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/catalog"
)

// Metric names, as docs/restart.md lists them.
const (
	// MetricWrites counts writes of the file, by result: ok, error,
	// too_large.
	MetricWrites = "meshwork_catalog_state_writes_total"
	// MetricSize is the size of the file last written, in bytes.
	MetricSize = "meshwork_catalog_state_size_bytes"
	// MetricRestored is 1 while the catalog includes one restored from
	// disk (gossip has not synced yet), else 0.
	MetricRestored = "meshwork_catalog_state_restored"
)

// Values of MetricWrites' result label.
const (
	resultOK       = "ok"
	resultError    = "error"
	resultTooLarge = "too_large"
)

type metrics struct {
	writes *prometheus.CounterVec
	size   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, store *catalog.Store) (*metrics, error) {
	m := &metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricWrites,
			Help: "Writes of the catalog state file, by result (ok, error, too_large).",
		}, []string{"result"}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricSize,
			Help: "Size of the catalog state file last written, in bytes.",
		}),
	}
	restored := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricRestored,
		Help: "1 while the catalog includes the one restored from disk at start (gossip not yet synced), else 0.",
	}, func() float64 {
		if store.Current().RestoredAt().IsZero() {
			return 0
		}
		return 1
	})
	for _, r := range []string{resultOK, resultError, resultTooLarge} {
		m.writes.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.writes, m.size, restored} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("catalogstate: metrics: %w", err)
		}
	}
	return m, nil
}
