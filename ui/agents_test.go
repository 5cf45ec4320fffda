package ui

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/telemetry/signals"
	"github.com/meshwork/meshwork/transport/observe"
)

// fakeAgent is an agent's registry with the real golden-signal observer,
// served by a real telemetry-style /metrics on loopback.
type fakeAgent struct {
	reg *prometheus.Registry
	obs *signals.Observer
	url string
}

func newFakeAgent(t *testing.T, serve bool) *fakeAgent {
	t.Helper()
	reg := prometheus.NewRegistry()
	obs, err := signals.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := RegisterBuildInfo(reg, "1.2.3", "abc"); err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{reg: reg, obs: obs}
	if serve {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		a.url = srv.URL
	}
	return a
}

// call records n finished calls from src to dst on this agent, failed of
// them answered 503, each taking d; both sides count, as agents do.
func (a *fakeAgent) call(src, dst string, n, failed int, d time.Duration) {
	for i := range n {
		status := 200
		if i < failed {
			status = 503
		}
		for _, dir := range []observe.Direction{observe.Outbound, observe.Inbound} {
			c := &observe.Call{Direction: dir, Protocol: observe.HTTP, Source: src, Destination: dst, Status: status, GRPCStatus: -1, Duration: d}
			a.obs.Begin(c)
			a.obs.End(c)
		}
	}
}

// port is the fake agent's port on loopback.
func (a *fakeAgent) port(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(a.url[len("http://"):])
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func member(node string, status catalog.MemberStatus) *catalog.Member {
	return &catalog.Member{Record: catalog.Record{Node: node, Addr: "127.0.0.1"}, Status: status, IP: netip.MustParseAddr("127.0.0.1")}
}

// TestAgentsProvider reads a real registry locally and another agent's
// over HTTP on loopback, and turns two readings into rates, error rates
// and a p99; a dead agent is reported, not fatal.
func TestAgentsProvider(t *testing.T) {
	local := newFakeAgent(t, false)
	remote := newFakeAgent(t, true)
	// Every agent answers on the same telemetry port; the dead one is
	// the remote's port on another loopback address, where nothing
	// listens.
	dead := member("n3", catalog.StatusAlive)
	dead.IP = netip.MustParseAddr("127.0.0.3")
	members := []*catalog.Member{member("n1", catalog.StatusAlive), member("n2", catalog.StatusAlive), dead, member("n4", catalog.StatusFailed)}
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	reg := prometheus.NewRegistry()
	p, err := NewAgents(AgentsConfig{TelemetryPort: remote.port(t), Timeout: time.Second}, AgentsDeps{
		Self: "n1", Local: local.reg, Members: func() []*catalog.Member { return members }, Now: clk.Now, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	local.call("web", "api", 5, 0, 3*time.Millisecond)
	remote.call("shop", "web", 7, 0, 3*time.Millisecond)
	top, err := p.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if top.Provider != ProviderAgents || top.WindowSeconds != 0 || len(top.Edges) != 2 {
		t.Fatalf("first reading: %+v", top)
	}
	for _, e := range top.Edges {
		if e.RPS != 0 || e.P99Seconds != nil {
			t.Errorf("first reading has a rate: %+v", e)
		}
	}
	bySource := map[string]Source{}
	for _, s := range top.Sources {
		bySource[s.Node] = s
	}
	if len(top.Sources) != 3 || !bySource["n1"].OK || bySource["n1"].URL != "local" || !bySource["n2"].OK || bySource["n3"].OK || bySource["n3"].Error == "" {
		t.Fatalf("sources %+v (n4 is failed and must not be asked)", top.Sources)
	}
	if bySource["n2"].Version != "1.2.3" {
		t.Errorf("n2's version %q", bySource["n2"].Version)
	}

	// Within MinInterval the reading is shared.
	remote.call("shop", "web", 1000, 0, time.Millisecond)
	clk.advance(DefaultMinInterval / 2)
	again, _ := p.Read(ctx)
	if !again.At.Equal(top.At) {
		t.Fatalf("a reading within the minimum interval was made again")
	}

	// 10 s later: 200 calls on the remote agent (the 1000 above count
	// too), 20 of them failed; 30 on the local one.
	clk.advance(10*time.Second - DefaultMinInterval/2)
	remote.call("shop", "web", 200, 20, 40*time.Millisecond)
	local.call("web", "api", 30, 0, 3*time.Millisecond)
	top, err = p.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	edges := map[string]Edge{}
	for _, e := range top.Edges {
		edges[e.Source+">"+e.Destination] = e
	}
	sw, wa := edges["shop>web"], edges["web>api"]
	if top.WindowSeconds < 9.9 || top.WindowSeconds > 10.1 {
		t.Errorf("window %v s", top.WindowSeconds)
	}
	if math.Abs(sw.RPS-120) > 0.5 || math.Abs(sw.ErrorRate-20.0/1200) > 1e-6 || sw.Total != 1207 {
		t.Errorf("shop>web %+v: want 120 req/s, error rate %.4f, total 1207", sw, 20.0/1200)
	}
	// p99 of 1000 calls of 1 ms and 200 of 40 ms: in the 25-50 ms bucket.
	if sw.P99Seconds == nil || *sw.P99Seconds <= 0.025 || *sw.P99Seconds > 0.05 {
		t.Errorf("shop>web p99 %v", sw.P99Seconds)
	}
	if math.Abs(wa.RPS-3) > 0.05 || wa.ErrorRate != 0 || wa.P99Seconds == nil || *wa.P99Seconds > 0.005 {
		t.Errorf("web>api %+v", wa)
	}
	var m dto.Metric
	if err := p.metrics.reads.WithLabelValues("error").Write(&m); err != nil || m.GetCounter().GetValue() != 2 {
		got := m.GetCounter().GetValue()
		t.Errorf("%s{result=error} = %v, want 2 (n3 read twice)", MetricAgentReads, got)
	}

	// An agent that restarted counts from zero: its new counts are the
	// delta, not a negative rate.
	restarted := newFakeAgent(t, true)
	*remote = *restarted
	p.cfg.TelemetryPort = restarted.port(t)
	restarted.call("shop", "web", 10, 0, time.Millisecond)
	clk.advance(10 * time.Second)
	top, _ = p.Read(ctx)
	for _, e := range top.Edges {
		if e.Source == "shop" && math.Abs(e.RPS-1) > 0.01 {
			t.Errorf("after a restart: %+v, want 1 req/s", e)
		}
	}
}

// TestAgentsProviderWithoutPort: with no telemetry port, only this agent
// is read, and the topology says why.
func TestAgentsProviderWithoutPort(t *testing.T) {
	local := newFakeAgent(t, false)
	p, err := NewAgents(AgentsConfig{}, AgentsDeps{Self: "n1", Local: local.reg,
		Members: func() []*catalog.Member {
			return []*catalog.Member{member("n1", catalog.StatusAlive), member("n2", catalog.StatusAlive)}
		}})
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Sources) != 1 || top.Sources[0].Node != "n1" || top.Note == "" {
		t.Fatalf("%+v", top)
	}
}

func TestNewAgentsRefuses(t *testing.T) {
	reg := prometheus.NewRegistry()
	members := func() []*catalog.Member { return nil }
	for name, tc := range map[string]struct {
		cfg  AgentsConfig
		deps AgentsDeps
	}{
		"port":     {AgentsConfig{TelemetryPort: 70000}, AgentsDeps{Local: reg, Members: members}},
		"registry": {AgentsConfig{}, AgentsDeps{Members: members}},
		"members":  {AgentsConfig{}, AgentsDeps{Local: reg}},
	} {
		if _, err := NewAgents(tc.cfg, tc.deps); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	for _, tc := range []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64
		ok      bool
	}{
		{"empty", 0.99, map[float64]float64{}, 0, false},
		{"no calls", 0.99, map[float64]float64{0.1: 0, inf: 0}, 0, false},
		{"no +Inf bucket", 0.99, map[float64]float64{0.1: 10}, 0, false},
		{"first bucket, from 0", 0.5, map[float64]float64{0.1: 10, inf: 10}, 0.05, true},
		{"interpolated", 0.99, map[float64]float64{0.01: 50, 0.1: 150, inf: 150}, 0.01 + 0.09*(148.5-50)/100, true},
		{"in +Inf: the highest bound", 0.99, map[float64]float64{0.01: 10, 1: 10, inf: 100}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := quantile(tc.q, tc.buckets)
			if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("quantile = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestAgentsProviderAcrossAFailure: a read that fails keeps the agent's
// last reading, so the next one gives the rate over the whole span.
func TestAgentsProviderAcrossAFailure(t *testing.T) {
	local := newFakeAgent(t, false)
	remote := newFakeAgent(t, false)
	var mu sync.Mutex
	failing := false
	metricsHandler := promhttp.HandlerFor(remote.reg, promhttp.HandlerOpts{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := failing
		mu.Unlock()
		if f {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		metricsHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	remote.url = srv.URL
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	p, err := NewAgents(AgentsConfig{TelemetryPort: remote.port(t)}, AgentsDeps{Self: "n1", Local: local.reg, Now: clk.Now,
		Members: func() []*catalog.Member {
			return []*catalog.Member{member("n1", catalog.StatusAlive), member("n2", catalog.StatusAlive)}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	remote.call("shop", "web", 1, 0, time.Millisecond)
	if _, err := p.Read(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	failing = true
	mu.Unlock()
	clk.advance(5 * time.Second)
	top, _ := p.Read(ctx)
	var n2 Source
	for _, s := range top.Sources {
		if s.Node == "n2" {
			n2 = s
		}
	}
	if n2.OK || !strings.Contains(n2.Error, "503") {
		t.Fatalf("n2 while failing: %+v", n2)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	remote.call("shop", "web", 100, 0, time.Millisecond)
	clk.advance(5 * time.Second)
	top, _ = p.Read(ctx)
	if len(top.Edges) != 1 || math.Abs(top.Edges[0].RPS-10) > 0.01 {
		t.Fatalf("edges %+v: want 100 calls over 10 s, 10 req/s", top.Edges)
	}
}
