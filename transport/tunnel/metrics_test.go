package tunnel

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricNames checks that MetricNames is what the tunnel registers.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Touch every vector so that Gather lists it.
	m.refused.WithLabelValues("unauthorized").Inc()
	m.peerConns.WithLabelValues("dialed").Inc()
	m.peerDials.WithLabelValues("ok").Inc()
	m.udpBuffer.WithLabelValues("receive").Set(1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
	}
	want := slices.Clone(MetricNames)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("metrics\n got %v\nwant %v", got, want)
	}
	for _, n := range want {
		if !strings.HasPrefix(n, "meshwork_transport_") {
			t.Errorf("%s lacks the meshwork_transport_ prefix", n)
		}
	}
	if _, err := newMetrics(reg); err == nil {
		t.Error("duplicate registration accepted")
	}
}
