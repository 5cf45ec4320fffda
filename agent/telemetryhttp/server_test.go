package telemetryhttp

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// protobufAccept is what Prometheus asks for when it scrapes native
// histograms (scrape_protocols: [PrometheusProto, ...]).
const protobufAccept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.9,text/plain;version=0.0.4;q=0.1"

// served starts a server on a loopback port with a registry holding a
// native histogram, and a readiness that the test sets.
func served(t *testing.T) (base string, ready *atomic.Bool, s *Server) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "meshwork_test_duration_seconds", Help: "A native and classic histogram.",
		Buckets: []float64{.001, .01, .1}, NativeHistogramBucketFactor: 1.1,
	})
	reg.MustRegister(h)
	for _, v := range []float64{.0005, .003, .03, .3} {
		h.Observe(v)
	}
	ready = &atomic.Bool{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err = New(Config{}, Deps{Listener: l, Gatherer: reg, Ready: func() api.Readiness {
		return api.Readiness{Ready: ready.Load(), Checks: []api.ReadinessCheck{{Name: "gossip", OK: ready.Load(), Reason: "because"}}}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return "http://" + s.Addr().String(), ready, s
}

func request(t *testing.T, method, url, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestHealthzAndReadyz(t *testing.T) {
	base, ready, _ := served(t)
	resp, body := request(t, http.MethodGet, base+PathHealthz, "")
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %d %q, want 200 ok", resp.StatusCode, body)
	}
	for _, tt := range []struct {
		ready  bool
		status int
	}{{false, http.StatusServiceUnavailable}, {true, http.StatusOK}, {false, http.StatusServiceUnavailable}} {
		ready.Store(tt.ready)
		resp, body := request(t, http.MethodGet, base+PathReadyz, "")
		var r api.Readiness
		if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != tt.status || r.Ready != tt.ready ||
			len(r.Checks) != 1 || r.Checks[0] != (api.ReadinessCheck{Name: "gossip", OK: tt.ready, Reason: "because"}) {
			t.Errorf("GET /readyz when ready=%v: %d %s (%v), want %d with the checks", tt.ready, resp.StatusCode, body, err, tt.status)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET /readyz: Content-Type %q", ct)
		}
		// HEAD: the same status, no body; what a load balancer's probe sends.
		resp, body = request(t, http.MethodHead, base+PathReadyz, "")
		if resp.StatusCode != tt.status || len(body) != 0 {
			t.Errorf("HEAD /readyz when ready=%v: %d with %d bytes, want %d and none", tt.ready, resp.StatusCode, len(body), tt.status)
		}
	}
}

func TestMetricsNegotiatesFormats(t *testing.T) {
	base, _, _ := served(t)
	tests := []struct {
		name, accept, contentType string
	}{
		{"text by default", "", "text/plain; version=0.0.4"},
		{"OpenMetrics", "application/openmetrics-text;version=1.0.0", "application/openmetrics-text"},
		{"protobuf", protobufAccept, "application/vnd.google.protobuf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := request(t, http.MethodGet, base+PathMetrics, tt.accept)
			ct := resp.Header.Get("Content-Type")
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, tt.contentType) {
				t.Fatalf("%d, Content-Type %q; want 200 %s", resp.StatusCode, ct, tt.contentType)
			}
			if !strings.Contains(tt.contentType, "protobuf") {
				if !strings.Contains(string(body), "meshwork_test_duration_seconds_bucket{le=\"0.01\"} 2") {
					t.Errorf("the classic buckets are missing:\n%s", body)
				}
				return
			}
			// The protobuf answer carries the native histogram: its
			// schema and spans, beside the classic buckets.
			dec := expfmt.NewDecoder(strings.NewReader(string(body)), expfmt.NewFormat(expfmt.TypeProtoDelim))
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err != nil {
				t.Fatal(err)
			}
			h := mf.GetMetric()[0].GetHistogram()
			if mf.GetName() != "meshwork_test_duration_seconds" || h.GetSampleCount() != 4 || len(h.GetPositiveSpan()) == 0 || h.Schema == nil || len(h.GetBucket()) != 3 {
				t.Errorf("histogram %v: want 4 samples with native spans and schema, and 3 classic buckets", h)
			}
		})
	}
}

func TestOnlyItsPathsAndMethods(t *testing.T) {
	base, _, _ := served(t)
	for _, tt := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/", http.StatusNotFound, httpjson.CodeUnknownEndpoint},
		{http.MethodGet, "/v1/metrics", http.StatusNotFound, httpjson.CodeUnknownEndpoint},
		{http.MethodGet, "/v1/agent/self", http.StatusNotFound, httpjson.CodeUnknownEndpoint},
		{http.MethodGet, "/metrics/", http.StatusNotFound, httpjson.CodeUnknownEndpoint},
		{http.MethodGet, "/readyz/x", http.StatusNotFound, httpjson.CodeUnknownEndpoint},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed, httpjson.CodeMethodNotAllowed},
		{http.MethodPut, "/readyz", http.StatusMethodNotAllowed, httpjson.CodeMethodNotAllowed},
		{http.MethodDelete, "/healthz", http.StatusMethodNotAllowed, httpjson.CodeMethodNotAllowed},
	} {
		resp, body := request(t, tt.method, base+tt.path, "")
		var eb httpjson.ErrorBody
		if err := json.Unmarshal(body, &eb); err != nil || resp.StatusCode != tt.status || eb.Code != tt.code {
			t.Errorf("%s %s: %d %s, want %d with code %s", tt.method, tt.path, resp.StatusCode, body, tt.status, tt.code)
		}
		if tt.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q, want GET, HEAD", tt.method, tt.path, resp.Header.Get("Allow"))
		}
	}
}

// TestServerBoundsItsClients checks the limits that make the listener safe
// on a host address: they are set, whatever their values.
func TestServerBoundsItsClients(t *testing.T) {
	_, _, s := served(t)
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("server limits: read header %v, read %v, write %v, idle %v, max header %d; want all set",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
}

func TestLifecycle(t *testing.T) {
	base, _, s := served(t)
	if err := s.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v, want ErrStarted", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := http.Get(base + PathHealthz); err == nil {
		t.Error("the listener still answers after Close")
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("Start after Close: %v, want ErrStarted", err)
	}
}

func TestNewRefusesMissingDeps(t *testing.T) {
	reg := prometheus.NewRegistry()
	ready := func() api.Readiness { return api.Readiness{} }
	for _, tt := range []struct {
		name string
		cfg  Config
		deps Deps
		want string
	}{
		{"no gatherer", Config{Addr: "127.0.0.1:0"}, Deps{Ready: ready}, "gatherer is nil"},
		{"no readiness", Config{Addr: "127.0.0.1:0"}, Deps{Gatherer: reg}, "ready is nil"},
		{"no address", Config{}, Deps{Gatherer: reg, Ready: ready}, "addr is empty"},
		{"bad address", Config{Addr: "9100"}, Deps{Gatherer: reg, Ready: ready}, `addr "9100"`},
	} {
		if _, err := New(tt.cfg, tt.deps); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}
