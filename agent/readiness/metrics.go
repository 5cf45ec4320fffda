package readiness

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as documented and checked by a test.
const (
	// MetricReady is 1 when every check passes, else 0.
	MetricReady = "meshwork_readiness_ready"
	// MetricCheck is 1 for each check that passes, else 0, by check.
	MetricCheck = "meshwork_readiness_check_passing"
)

// collector reports the checks as they are at each scrape, so that the
// gauges are never older than the scrape.
type collector struct {
	c     *Checker
	ready *prometheus.Desc
	check *prometheus.Desc
}

// Register adds the readiness gauges to reg.
func (c *Checker) Register(reg prometheus.Registerer) error {
	col := &collector{
		c:     c,
		ready: prometheus.NewDesc(MetricReady, "1 when the agent is ready: joined (or serving a restored catalog), with a catalog, holding a valid certificate, with the policy; else 0.", nil, nil),
		check: prometheus.NewDesc(MetricCheck, "1 when the readiness check passes, else 0.", []string{"check"}, nil),
	}
	if err := reg.Register(col); err != nil {
		return fmt.Errorf("readiness: metrics: %w", err)
	}
	return nil
}

func (col *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- col.ready
	ch <- col.check
}

func (col *collector) Collect(ch chan<- prometheus.Metric) {
	r := col.c.Report()
	ch <- prometheus.MustNewConstMetric(col.ready, prometheus.GaugeValue, b2f(r.Ready))
	for _, c := range r.Checks {
		ch <- prometheus.MustNewConstMetric(col.check, prometheus.GaugeValue, b2f(c.OK), c.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
