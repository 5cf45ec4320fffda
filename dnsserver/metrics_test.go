package dnsserver

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricNames checks the documented metric names and that queries are
// counted by type and rcode and timed by source.
func TestMetricNames(t *testing.T) {
	good := startRecursor(t, answerA, 1)
	cfg := testConfig()
	cfg.Recursors = []string{good.addr}
	s, _, reg := newTestServer(t, cfg, nil)
	addr := startTestServer(t, s)

	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.service.mesh.", dns.TypeA},
		{"web.service.mesh.", dns.TypeA},
		{"_web._tcp.service.mesh.", dns.TypeSRV},
		{"nope.service.mesh.", dns.TypeAAAA},
		{"example.org.", dns.TypeA},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		exchange(t, "udp", addr, m)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	want := []string{MetricQueries, MetricQueryDuration, MetricTruncated, MetricDropped, MetricWriteErrors,
		MetricForwardErrors, MetricForwardOverload, MetricTCPRejected}
	for _, n := range want {
		if !slices.Contains(names, n) {
			t.Errorf("metric %s not registered; have %v", n, names)
		}
	}
	documented := map[string]string{
		MetricQueries:         "meshwork_dns_queries_total",
		MetricQueryDuration:   "meshwork_dns_query_duration_seconds",
		MetricTruncated:       "meshwork_dns_truncated_responses_total",
		MetricDropped:         "meshwork_dns_dropped_queries_total",
		MetricWriteErrors:     "meshwork_dns_write_errors_total",
		MetricForwardErrors:   "meshwork_dns_forward_errors_total",
		MetricForwardOverload: "meshwork_dns_forward_overload_total",
		MetricTCPRejected:     "meshwork_dns_tcp_rejected_connections_total",
	}
	for c, n := range documented {
		if c != n {
			t.Errorf("metric constant %q, documented as %q", c, n)
		}
	}

	counts := []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"qtype": "A", "rcode": "NOERROR"}, 3}, // two local, one forwarded
		{map[string]string{"qtype": "SRV", "rcode": "NOERROR"}, 1},
		{map[string]string{"qtype": "AAAA", "rcode": "NXDOMAIN"}, 1},
	}
	// A query is counted once its answer is written, which may be just
	// after the client has read it: poll, with a deadline.
	var problems []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		problems = problems[:0]
		for _, c := range counts {
			if got := counterValue(t, reg, MetricQueries, c.labels); got != c.want {
				problems = append(problems, fmt.Sprintf("%s%v = %v, want %v", MetricQueries, c.labels, got, c.want))
			}
		}
		if got := histogramCount(t, reg, MetricQueryDuration, "forward"); got != 1 {
			problems = append(problems, fmt.Sprintf("%s{source=forward} count = %d, want 1", MetricQueryDuration, got))
		}
		if got := histogramCount(t, reg, MetricQueryDuration, "local"); got != 4 {
			problems = append(problems, fmt.Sprintf("%s{source=local} count = %d, want 4", MetricQueryDuration, got))
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name, source string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, map[string]string{"source": source}) {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// TestMetricsRegistererConflict checks that a name clash is an error from
// New, not a panic.
func TestMetricsRegistererConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	s1, _, _ := newTestServer(t, testConfig(), nil)
	_ = s1
	if _, err := New(testConfig(), Deps{Catalog: s1.deps.Catalog, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(testConfig(), Deps{Catalog: s1.deps.Catalog, Registerer: reg}); err == nil {
		t.Fatal("second server on the same registry: no error")
	}
}
