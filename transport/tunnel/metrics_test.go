package tunnel

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/transport/transporttest"
)

// TestMetricNames checks that MetricNames is what the tunnel registers.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg, 8, func() float64 { return 3 })
	if err != nil {
		t.Fatal(err)
	}
	// Touch every vector so that Gather lists it.
	m.refused.WithLabelValues("unauthorized").Inc()
	m.peerConns.WithLabelValues("dialed").Inc()
	m.peerDials.WithLabelValues("ok").Inc()
	m.udpBuffer.WithLabelValues("receive").Set(1)
	transporttest.CheckMetricNames(t, reg, MetricNames)
	if _, err := newMetrics(reg, 8, func() float64 { return 3 }); err == nil {
		t.Error("duplicate registration accepted")
	}
}
