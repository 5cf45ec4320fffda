package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// promAPI answers instant queries as Prometheus's HTTP API does, with the
// vector given for the first query whose text contains a key.
func promAPI(t *testing.T, vectors map[string]string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query().Get("query")
		// Longest keys first: "result=\"failure\"" before the plain rate.
		for _, k := range []string{`result="failure"`, "histogram_quantile", "rate(", "meshwork_ca_leaf", "meshwork_build_info", "meshwork_service_requests_total"} {
			if strings.Contains(q, k) {
				fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[%s]}}`, vectors[k])
				return
			}
		}
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"unknown query"}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPrometheusProvider(t *testing.T) {
	url := promAPI(t, map[string]string{
		"rate(":                           `{"metric":{"source":"shop","destination":"web"},"value":[1,"40"]}`,
		`result="failure"`:                `{"metric":{"source":"shop","destination":"web"},"value":[1,"10"]}`,
		"histogram_quantile":              `{"metric":{"source":"shop","destination":"web"},"value":[1,"0.025"]},{"metric":{"source":"a","destination":"b"},"value":[1,"NaN"]}`,
		"meshwork_service_requests_total": `{"metric":{"source":"shop","destination":"web"},"value":[1,"1234"]},{"metric":{"source":"a","destination":"b"},"value":[1,"5"]}`,
		"meshwork_ca_leaf":                `{"metric":{"instance":"10.0.0.2:9102"},"value":[1,"3600"]}`,
		"meshwork_build_info":             `{"metric":{"instance":"10.0.0.2:9102","version":"1.4.0"},"value":[1,"1"]}`,
	})
	p, err := NewPrometheus(PrometheusConfig{URL: url + "/"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	top, err := p.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if top.Provider != ProviderPrometheus || top.WindowSeconds != 60 || len(top.Edges) != 2 {
		t.Fatalf("%+v", top)
	}
	ab, sw := top.Edges[0], top.Edges[1]
	if sw.RPS != 40 || sw.ErrorRate != 0.25 || sw.P99Seconds == nil || *sw.P99Seconds != 0.025 || sw.Total != 1234 {
		t.Errorf("shop>web %+v", sw)
	}
	if ab.RPS != 0 || ab.P99Seconds != nil || ab.Total != 5 {
		t.Errorf("a>b, idle %+v", ab)
	}
	if len(top.Sources) != 2 || !top.Sources[0].OK || top.Sources[1].Addr != "10.0.0.2" || top.Sources[1].Version != "1.4.0" ||
		top.Sources[1].LeafExpiresAt == nil || !top.Sources[1].LeafExpiresAt.Equal(time.Unix(1_700_003_600, 0)) {
		t.Errorf("sources %+v", top.Sources)
	}
}

// TestPrometheusDown: an unreachable Prometheus is a failed source, shown
// on the page, not an error of the endpoint.
func TestPrometheusDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	p, err := NewPrometheus(PrometheusConfig{URL: url, Timeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.Read(context.Background())
	if err != nil || len(top.Sources) != 1 || top.Sources[0].OK || !strings.Contains(top.Sources[0].Error, "prometheus query failed") {
		t.Fatalf("%+v, %v", top, err)
	}
}

func TestPrometheusConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg PrometheusConfig
		ok  bool
	}{
		{PrometheusConfig{URL: "http://prom:9090"}, true},
		{PrometheusConfig{URL: "https://prom.example/prefix", Range: 5 * time.Minute}, true},
		{PrometheusConfig{URL: "prom:9090"}, false},
		{PrometheusConfig{URL: "ftp://prom"}, false},
		{PrometheusConfig{URL: ""}, false},
		{PrometheusConfig{URL: "http://prom", Range: time.Millisecond}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%+v: %v", tc.cfg, err)
		}
	}
	if promDuration(time.Minute) != "1m" || promDuration(90*time.Second) != "90s" {
		t.Error("promDuration")
	}
}

func TestParsePromAnswer(t *testing.T) {
	for _, tc := range []struct{ name, body, wantErr string }{
		{"not json", "<html>", "not the API's JSON"},
		{"error", `{"status":"error","errorType":"bad_data","error":"parse error"}`, "bad_data: parse error"},
		{"matrix", `{"status":"success","data":{"resultType":"matrix","result":[]}}`, `result type "matrix"`},
		{"number value", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}`, "value is not a string"},
		{"bad float", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}`, `value "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parsePromAnswer(strings.NewReader(tc.body), 200)
			if !errors.Is(err, ErrPrometheus) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("%v; want %q", err, tc.wantErr)
			}
		})
	}
}
