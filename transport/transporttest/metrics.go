package transporttest

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// CheckMetricNames fails t unless the metrics g gathers are exactly want,
// each named with the data plane's meshwork_transport_ prefix. Vectors
// appear only once they have a child: touch each before the call.
func CheckMetricNames(t testing.TB, g prometheus.Gatherer, want []string) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
	}
	want = slices.Sorted(slices.Values(want))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("metrics\n got %v\nwant %v", got, want)
	}
	for _, n := range want {
		if !strings.HasPrefix(n, "meshwork_transport_") {
			t.Errorf("%s lacks the meshwork_transport_ prefix", n)
		}
	}
}
