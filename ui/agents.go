package ui

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/telemetry/signals"
)

// Defaults of AgentsConfig.
const (
	// DefaultAgentTimeout bounds the read of one agent's counters: a
	// scrape answers in milliseconds, and a page refreshes every few
	// seconds.
	DefaultAgentTimeout = 2 * time.Second
	// DefaultMinInterval is the shortest span between two readings: pages
	// open at once share one, so the agents are asked at most once a
	// second whatever the number of viewers.
	DefaultMinInterval = time.Second
)

// maxScrapeBytes bounds one agent's answer; a registry is tens of KiB.
const maxScrapeBytes = 16 << 20

// leafExpiryMetric is ca.MetricLeafExpiry, named here so that the UI
// does not link the CA (a test holds the two equal).
const leafExpiryMetric = "meshwork_ca_leaf_expiry_seconds"

// ProviderAgents and ProviderPrometheus name the providers in Topology.
const (
	ProviderAgents     = "agents"
	ProviderPrometheus = "prometheus"
)

// AgentsConfig configures the Agents provider.
type AgentsConfig struct {
	// TelemetryPort is the port of the other agents' telemetry listeners,
	// on their gossip address. 0: only this agent's counters are read,
	// and the topology says so.
	TelemetryPort int
	// Timeout bounds the read of one agent. Default: DefaultAgentTimeout.
	Timeout time.Duration
	// MinInterval is the shortest span between two readings. Default:
	// DefaultMinInterval.
	MinInterval time.Duration
}

// AgentsDeps are the Agents provider's collaborators.
type AgentsDeps struct {
	// Self is this agent's node name, whose counters are read from Local.
	Self string
	// Local is this agent's registry. Required.
	Local prometheus.Gatherer
	// Members lists the nodes to ask (the catalog's members). Required.
	Members func() []*catalog.Member
	// Client makes the reads. Default: a client with no proxy.
	Client *http.Client
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Registerer receives the provider's metrics. Default: none.
	Registerer prometheus.Registerer
}

// Agents is the default Provider: it asks every live agent for its
// golden-signal counters (this one from its registry, the others on their
// telemetry listeners) and turns two readings into rates.
type Agents struct {
	cfg     AgentsConfig
	deps    AgentsDeps
	metrics *metrics

	mu   sync.Mutex // serialises readings
	prev map[string]agentReading
	last Topology
}

// agentReading is one agent's counters at one time.
type agentReading struct {
	at         time.Time
	edges      map[edgeKey]edgeCounts
	leafExpiry *time.Time
	version    string
}

// NewAgents validates its arguments.
func NewAgents(cfg AgentsConfig, deps AgentsDeps) (*Agents, error) {
	if cfg.TelemetryPort < 0 || cfg.TelemetryPort > 65535 {
		return nil, fmt.Errorf("ui: agents: telemetry port %d: %w", cfg.TelemetryPort, ErrConfig)
	}
	if deps.Local == nil || deps.Members == nil {
		return nil, fmt.Errorf("ui: agents: local registry and members are required: %w", ErrConfig)
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultAgentTimeout)
	cfg.MinInterval = cmp.Or(cfg.MinInterval, DefaultMinInterval)
	if deps.Client == nil {
		deps.Client = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second}}
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ui: agents: metrics: %w", err)
	}
	return &Agents{cfg: cfg, deps: deps, metrics: m, prev: map[string]agentReading{}}, nil
}

// Read implements Provider.
func (p *Agents) Read(ctx context.Context) (Topology, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.deps.Now()
	if !p.last.At.IsZero() && now.Sub(p.last.At) < p.cfg.MinInterval {
		return p.last, nil
	}
	type result struct {
		src     Source
		reading agentReading
	}
	var targets []*catalog.Member
	skipped := 0
	for _, m := range p.deps.Members() {
		switch {
		case m.Node == p.deps.Self:
			targets = append(targets, m)
		case m.Status != catalog.StatusAlive:
		case p.cfg.TelemetryPort == 0 || !m.IP.IsValid():
			skipped++
		default:
			targets = append(targets, m)
		}
	}
	results := make([]result, len(targets))
	var wg sync.WaitGroup
	for i, m := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := result{src: Source{Node: m.Node}}
			var fams []*dto.MetricFamily
			var err error
			if m.Node == p.deps.Self {
				res.src.URL = "local"
				fams, err = p.deps.Local.Gather()
			} else {
				res.src.URL = "http://" + net.JoinHostPort(m.IP.String(), strconv.Itoa(p.cfg.TelemetryPort)) + "/metrics"
				fams, err = p.scrape(ctx, res.src.URL)
			}
			at := p.deps.Now()
			if err != nil {
				res.src.Error = err.Error()
				p.metrics.reads.WithLabelValues("error").Inc()
			} else {
				res.src.OK = true
				res.reading = readFamilies(fams, at)
				res.src.LeafExpiresAt = res.reading.leafExpiry
				res.src.Version = res.reading.version
				p.metrics.reads.WithLabelValues("ok").Inc()
			}
			results[i] = res
		}()
	}
	wg.Wait()

	top := Topology{Provider: ProviderAgents, At: now, Sources: []Source{}, Edges: []Edge{}}
	sums := map[edgeKey]*edgeSum{}
	next := map[string]agentReading{}
	var window float64
	for _, res := range results {
		top.Sources = append(top.Sources, res.src)
		if !res.src.OK {
			// Keep its last reading: the next one then covers the
			// longer span, rather than starting over.
			if prev, ok := p.prev[res.src.Node]; ok {
				next[res.src.Node] = prev
			}
			continue
		}
		node := res.src.Node
		next[node] = res.reading
		prev, seen := p.prev[node]
		span := res.reading.at.Sub(prev.at).Seconds()
		for k, cur := range res.reading.edges {
			s := sums[k]
			if s == nil {
				s = &edgeSum{buckets: map[float64]float64{}}
				sums[k] = s
			}
			s.total += cur.total
			if !seen || span <= 0 {
				continue
			}
			old := prev.edges[k]
			if cur.total < old.total { // the agent restarted
				old = edgeCounts{}
			}
			s.measured = true
			s.rate += (cur.total - old.total) / span
			s.calls += cur.total - old.total
			s.failures += cur.failures - old.failures
			for b, c := range cur.buckets {
				s.buckets[b] += c - old.buckets[b]
			}
		}
		if seen && span > window {
			window = span
		}
	}
	for k, s := range sums {
		e := Edge{Source: k.source, Destination: k.destination, Total: s.total}
		if s.measured {
			e.RPS = s.rate
			if s.calls > 0 {
				e.ErrorRate = math.Min(1, math.Max(0, s.failures/s.calls))
				if q, ok := quantile(0.99, s.buckets); ok {
					e.P99Seconds = &q
				}
			}
		}
		top.Edges = append(top.Edges, e)
	}
	sortEdges(top.Edges)
	top.WindowSeconds = window
	switch {
	case skipped > 0 && p.cfg.TelemetryPort == 0:
		top.Note = fmt.Sprintf("%d other agents were not asked: no telemetry port is known (set telemetry.listen on every agent, or ui.agent_telemetry_port)", skipped)
	case skipped > 0:
		top.Note = fmt.Sprintf("%d agents were not asked: they have no address yet", skipped)
	}
	p.prev = next
	p.last = top
	return top, nil
}

// edgeSum adds one edge's deltas over the agents that count it.
type edgeSum struct {
	total, rate, calls, failures float64
	buckets                      map[float64]float64
	measured                     bool
}

// scrape reads an agent's telemetry listener in the text format.
func (p *Agents) scrape(ctx context.Context, url string) ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("ui: scrape %s: %w: %v", url, ErrScrape, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := p.deps.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ui: scrape %s: %w: %v", url, ErrScrape, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ui: scrape %s: %w: status %s", url, ErrScrape, resp.Status)
	}
	return parseText(io.LimitReader(resp.Body, maxScrapeBytes), url)
}

// parseText parses the Prometheus text format.
func parseText(r io.Reader, from string) ([]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	m, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("ui: scrape %s: %w: %v", from, ErrScrape, err)
	}
	out := make([]*dto.MetricFamily, 0, len(m))
	for _, f := range m {
		out = append(out, f)
	}
	return out, nil
}

// readFamilies takes an agent's edge counters, as the calling agent counts
// them (direction outbound, so that a call is counted once), and its leaf's
// expiry, out of its metric families.
func readFamilies(fams []*dto.MetricFamily, at time.Time) agentReading {
	rd := agentReading{at: at, edges: map[edgeKey]edgeCounts{}}
	get := func(k edgeKey) edgeCounts {
		c, ok := rd.edges[k]
		if !ok {
			c = edgeCounts{buckets: map[float64]float64{}}
		}
		return c
	}
	for _, f := range fams {
		switch f.GetName() {
		case signals.MetricRequests:
			for _, m := range f.GetMetric() {
				l := labelsOf(m)
				if l["direction"] != "outbound" {
					continue
				}
				k := edgeKey{l["source"], l["destination"]}
				c := get(k)
				v := m.GetCounter().GetValue()
				c.total += v
				if l["result"] == "failure" {
					c.failures += v
				}
				rd.edges[k] = c
			}
		case signals.MetricDuration:
			for _, m := range f.GetMetric() {
				l := labelsOf(m)
				if l["direction"] != "outbound" {
					continue
				}
				k := edgeKey{l["source"], l["destination"]}
				c := get(k)
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					if ub := b.GetUpperBound(); !math.IsInf(ub, 1) { // +Inf is the count, below
						c.buckets[ub] += float64(b.GetCumulativeCount())
					}
				}
				c.buckets[math.Inf(1)] += float64(h.GetSampleCount())
				rd.edges[k] = c
			}
		case MetricBuildInfo:
			if ms := f.GetMetric(); len(ms) > 0 {
				rd.version = labelsOf(ms[0])["version"]
			}
		case leafExpiryMetric:
			if ms := f.GetMetric(); len(ms) > 0 {
				t := at.Add(time.Duration(ms[0].GetGauge().GetValue() * float64(time.Second))).UTC().Truncate(time.Second)
				rd.leafExpiry = &t
			}
		}
	}
	return rd
}

func labelsOf(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}
