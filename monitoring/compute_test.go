package monitoring

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// goldenSeries are made-up golden signals, one sample a minute for ten
// minutes, whose answers are worked out by hand below.
//
// Inbound at api (per minute): from web 60 answered and 6 failed with a
// 503; from cron 38 answered and 2 refused by its agent (403, denied). Every
// answered request from web took between 50 and 100 ms. 100 B/s of requests
// and 1000 B/s of responses; 3 requests in progress.
//
// Outbound from web (per minute): 60 to api answered; 30 to db answered and
// 30 failed in the mesh with no instance.
const goldenSeries = `
- series: 'meshwork_service_requests_total{direction="inbound",protocol="http",source="web",destination="api",route="",result="success",code="200",reason=""}'
  values: '0+60x10'
- series: 'meshwork_service_requests_total{direction="inbound",protocol="http",source="cron",destination="api",route="",result="success",code="200",reason=""}'
  values: '0+38x10'
- series: 'meshwork_service_requests_total{direction="inbound",protocol="http",source="web",destination="api",route="",result="failure",code="503",reason=""}'
  values: '0+6x10'
- series: 'meshwork_service_requests_total{direction="inbound",protocol="http",source="cron",destination="api",route="",result="failure",code="403",reason="denied"}'
  values: '0+2x10'
- series: 'meshwork_service_request_duration_seconds_bucket{direction="inbound",protocol="http",source="web",destination="api",route="",result="success",le="0.05"}'
  values: '0x10'
- series: 'meshwork_service_request_duration_seconds_bucket{direction="inbound",protocol="http",source="web",destination="api",route="",result="success",le="0.1"}'
  values: '0+60x10'
- series: 'meshwork_service_request_duration_seconds_bucket{direction="inbound",protocol="http",source="web",destination="api",route="",result="success",le="+Inf"}'
  values: '0+60x10'
- series: 'meshwork_service_bytes_total{direction="inbound",protocol="http",source="web",destination="api",flow="request"}'
  values: '0+6000x10'
- series: 'meshwork_service_bytes_total{direction="inbound",protocol="http",source="web",destination="api",flow="response"}'
  values: '0+60000x10'
- series: 'meshwork_service_active{direction="inbound",protocol="http",source="web",destination="api"}'
  values: '3x10'
- series: 'meshwork_service_requests_total{direction="outbound",protocol="http",source="web",destination="api",route="",result="success",code="200",reason=""}'
  values: '0+60x10'
- series: 'meshwork_service_requests_total{direction="outbound",protocol="tcp",source="web",destination="db",route="",result="success",code="",reason=""}'
  values: '0+30x10'
- series: 'meshwork_service_requests_total{direction="outbound",protocol="tcp",source="web",destination="db",route="",result="failure",code="",reason="no_healthy_instance"}'
  values: '0+30x10'
`

// TestDashboardQueriesCompute evaluates the dashboards' golden-signal
// queries with promtool on goldenSeries and compares each answer with the
// one worked out by hand: a query that parses and names real metrics can
// still sum over the wrong labels or divide the wrong rates. Answers are
// rounded to 1e-4 (promtool compares floats exactly), and a label with an
// empty value is no label in Prometheus.
func TestDashboardQueriesCompute(t *testing.T) {
	type sample struct {
		Labels string  `yaml:"labels"`
		Value  float64 `yaml:"value"`
	}
	tests := []struct {
		uid, service, panel, ref string
		want                     []sample
	}{
		{"meshwork-overview", "", "Request rate by service", "A", []sample{{`{destination="api"}`, 1.7667}}},
		{"meshwork-overview", "", "Error rate by service", "A", []sample{{`{destination="api"}`, 0.0755}}}, // 8 of 106
		{"meshwork-overview", "", "p99 latency by service", "A", []sample{{`{destination="api"}`, 0.0995}}},
		{"meshwork-overview", "", "Top services by error rate", "A", []sample{{`{destination="api"}`, 0.0755}}},
		{"meshwork-overview", "", "Top services by error rate", "B", []sample{{`{destination="api"}`, 1.7667}}},
		{"meshwork-overview", "", "Top mesh failures by reason", "A", []sample{{`{destination="db",reason="no_healthy_instance"}`, 0.5}}},

		{"meshwork-service", "api", "Requests", "A", []sample{{`{}`, 1.7667}}},
		{"meshwork-service", "api", "Error rate", "A", []sample{{`{destination="api"}`, 0.0755}}},
		{"meshwork-service", "api", "p50", "A", []sample{{`{}`, 0.075}}},
		{"meshwork-service", "api", "p99", "A", []sample{{`{}`, 0.0995}}},
		{"meshwork-service", "api", "Active", "A", []sample{{`{}`, 3}}},
		{"meshwork-service", "api", "Mesh failures of calls to it", "A", []sample{{`{}`, 0}}},
		{"meshwork-service", "api", "Latency", "B", []sample{{`{}`, 0.0975}}},
		{"meshwork-service", "api", "Errors by code and reason", "A", []sample{{`{code="403",reason="denied"}`, 0.0333}, {`{code="503"}`, 0.1}}},
		{"meshwork-service", "api", "Requests by result and protocol", "A", []sample{{`{protocol="http",result="failure"}`, 0.1333}, {`{protocol="http",result="success"}`, 1.6333}}},
		{"meshwork-service", "api", "Bytes", "A", []sample{{`{flow="request"}`, 100}, {`{flow="response"}`, 1000}}},
		{"meshwork-service", "api", "Active requests and connections", "A", []sample{{`{protocol="http"}`, 3}}},
		{"meshwork-service", "api", "Calls to it as its callers see them", "A", []sample{{`{result="success"}`, 1}}},
		{"meshwork-service", "api", "Callers", "A", []sample{{`{source="cron"}`, 0.6667}, {`{source="web"}`, 1.1}}},
		{"meshwork-service", "api", "Callers", "B", []sample{{`{source="cron"}`, 0.05}, {`{source="web"}`, 0.0909}}},
		{"meshwork-service", "api", "Callers", "C", []sample{{`{source="web"}`, 0.0995}}},
		{"meshwork-service", "web", "Requests by callee", "A", []sample{{`{destination="api"}`, 1}, {`{destination="db"}`, 1}}},
		{"meshwork-service", "web", "Errors by callee and reason", "A", []sample{{`{destination="db",reason="no_healthy_instance"}`, 0.5}}},
		{"meshwork-service", "web", "Callees", "B", []sample{{`{destination="api"}`, 0}, {`{destination="db"}`, 0.5}}},
		{"meshwork-service", "db", "Mesh failures of calls to it", "A", []sample{{`{}`, 0.5}}},
	}

	ds, _ := loadDashboards(t)
	type exprTest struct {
		Expr       string   `yaml:"expr"`
		EvalTime   string   `yaml:"eval_time"`
		ExpSamples []sample `yaml:"exp_samples"`
	}
	var exprTests []exprTest
	for _, tc := range tests {
		i := slices.IndexFunc(ds, func(d dashboard) bool { return d.UID == tc.uid })
		if i < 0 {
			t.Fatalf("no dashboard %s", tc.uid)
		}
		qs := ds[i].queries(map[string]string{"service": tc.service})
		j := slices.IndexFunc(qs, func(q dashboardQuery) bool { return q.Panel == tc.panel && q.RefID == tc.ref })
		if j < 0 {
			t.Fatalf("%s: no panel %q with a query %s", tc.uid, tc.panel, tc.ref)
		}
		exprTests = append(exprTests, exprTest{
			Expr:     fmt.Sprintf("round(\n%s\n, 0.0001)", qs[j].Expr),
			EvalTime: "10m", ExpSamples: tc.want,
		})
	}

	var series []any
	if err := yaml.Unmarshal([]byte(goldenSeries), &series); err != nil {
		t.Fatal(err)
	}
	file := map[string]any{
		"rule_files":          []string{},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval": "1m", "input_series": series, "promql_expr_test": exprTests,
		}},
	}
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboards_test.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := promtool(t, "test", "rules", path); !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
}
