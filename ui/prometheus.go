package ui

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshwork/meshwork/telemetry/signals"
)

// DefaultPrometheusRange is the span the Prometheus provider's rates
// cover: four scrapes at Prometheus's common 15 s interval.
const DefaultPrometheusRange = time.Minute

// PrometheusConfig configures the Prometheus provider.
type PrometheusConfig struct {
	// URL is Prometheus's base URL, such as http://prometheus:9090.
	// Required.
	URL string
	// Range is the span of rate(). Default: DefaultPrometheusRange.
	Range time.Duration
	// Timeout bounds each query. Default: DefaultAgentTimeout.
	Timeout time.Duration
}

// Validate checks the config; errors name the field and the value.
func (c PrometheusConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("ui: prometheus url %q must be an http or https URL: %w", c.URL, ErrConfig)
	}
	if c.Range < 0 || (c.Range > 0 && c.Range < time.Second) {
		return fmt.Errorf("ui: prometheus range %s must be at least 1s: %w", c.Range, ErrConfig)
	}
	return nil
}

// Prometheus is the Provider that asks a Prometheus scraping the agents'
// telemetry listeners, as Consul's UI does.
type Prometheus struct {
	cfg    PrometheusConfig
	client *http.Client
	now    func() time.Time
}

// NewPrometheus validates cfg. client may be nil (a client with no proxy).
func NewPrometheus(cfg PrometheusConfig, client *http.Client) (*Prometheus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Range = cmp.Or(cfg.Range, DefaultPrometheusRange)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultAgentTimeout)
	cfg.URL = strings.TrimSuffix(cfg.URL, "/")
	if client == nil {
		client = &http.Client{Transport: &http.Transport{Proxy: nil}}
	}
	return &Prometheus{cfg: cfg, client: client, now: time.Now}, nil
}

// The queries, over the calling agents' counts (direction outbound) so
// that a call is counted once. %s is the range.
const (
	queryRate     = `sum by (source, destination) (rate(` + signals.MetricRequests + `{direction="outbound"}[%s]))`
	queryFailures = `sum by (source, destination) (rate(` + signals.MetricRequests + `{direction="outbound",result="failure"}[%s]))`
	// The native histogram where Prometheus keeps it (its
	// native-histograms feature takes it instead of the classic buckets),
	// else the classic buckets. %[1]s is the range.
	queryP99 = `histogram_quantile(0.99, sum by (source, destination) (rate(` + signals.MetricDuration + `{direction="outbound"}[%[1]s])))` +
		` or histogram_quantile(0.99, sum by (le, source, destination) (rate(` + signals.MetricDuration + `_bucket{direction="outbound"}[%[1]s])))`
	queryTotal = `sum by (source, destination) (` + signals.MetricRequests + `{direction="outbound"})`
	queryLeaf  = leafExpiryMetric
	queryBuild = MetricBuildInfo
)

// Read implements Provider.
func (p *Prometheus) Read(ctx context.Context) (Topology, error) {
	rng := promDuration(p.cfg.Range)
	queries := []string{
		fmt.Sprintf(queryRate, rng), fmt.Sprintf(queryFailures, rng), fmt.Sprintf(queryP99, rng), queryTotal, queryLeaf, queryBuild,
	}
	answers := make([][]promSample, len(queries))
	errs := make([]error, len(queries))
	var wg sync.WaitGroup
	for i, q := range queries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = p.query(ctx, q)
		}()
	}
	wg.Wait()
	now := p.now()
	top := Topology{Provider: ProviderPrometheus, At: now, WindowSeconds: p.cfg.Range.Seconds(), Edges: []Edge{}}
	src := Source{URL: p.cfg.URL + "/api/v1/query", OK: true}
	for _, err := range errs[:4] {
		if err != nil {
			src.OK, src.Error = false, err.Error()
			top.Sources = []Source{src}
			return top, nil
		}
	}
	top.Sources = []Source{src}
	edges := map[edgeKey]*Edge{}
	edge := func(s promSample) *Edge {
		k := edgeKey{s.Metric["source"], s.Metric["destination"]}
		e := edges[k]
		if e == nil {
			e = &Edge{Source: k.source, Destination: k.destination}
			edges[k] = e
		}
		return e
	}
	for _, s := range answers[3] {
		edge(s).Total = s.Value
	}
	for _, s := range answers[0] {
		edge(s).RPS = s.Value
	}
	for _, s := range answers[1] {
		if e := edge(s); e.RPS > 0 {
			e.ErrorRate = math.Min(1, s.Value/e.RPS)
		}
	}
	for _, s := range answers[2] {
		if !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0) {
			v := s.Value
			edge(s).P99Seconds = &v
		}
	}
	for _, e := range edges {
		top.Edges = append(top.Edges, *e)
	}
	sortEdges(top.Edges)
	// The leaves' expiry and the versions, by the scraped instance; the
	// nodes page matches its host to a node's address. A failure here
	// costs only those.
	byInstance := map[string]*Source{}
	var instances []string
	instance := func(s promSample) *Source {
		in := s.Metric["instance"]
		src := byInstance[in]
		if src == nil {
			host := in
			if h, _, err := net.SplitHostPort(in); err == nil {
				host = h
			}
			src = &Source{URL: in, OK: true, Addr: host}
			byInstance[in] = src
			instances = append(instances, in)
		}
		return src
	}
	if errs[4] == nil {
		for _, s := range answers[4] {
			t := now.Add(time.Duration(s.Value * float64(time.Second))).UTC().Truncate(time.Second)
			instance(s).LeafExpiresAt = &t
		}
	}
	if errs[5] == nil {
		for _, s := range answers[5] {
			instance(s).Version = s.Metric["version"]
		}
	}
	sort.Strings(instances)
	for _, in := range instances {
		top.Sources = append(top.Sources, *byInstance[in])
	}
	return top, nil
}

// promDuration writes d as PromQL does ("1m", "90s").
func promDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// promSample is one element of an instant vector.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promAnswer is the Prometheus HTTP API's envelope for an instant query.
type promAnswer struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// query runs an instant query.
func (p *Prometheus) query(ctx context.Context, q string) ([]promSample, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	u := p.cfg.URL + "/api/v1/query?" + url.Values{"query": {q}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("ui: prometheus: %w: %v", ErrPrometheus, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ui: prometheus: %w: %v", ErrPrometheus, err)
	}
	defer resp.Body.Close()
	return parsePromAnswer(io.LimitReader(resp.Body, maxScrapeBytes), resp.StatusCode)
}

// parsePromAnswer reads an instant query's answer.
func parsePromAnswer(r io.Reader, status int) ([]promSample, error) {
	var a promAnswer
	if err := json.NewDecoder(r).Decode(&a); err != nil {
		return nil, fmt.Errorf("ui: prometheus: %w: status %d, body is not the API's JSON: %v", ErrPrometheus, status, err)
	}
	if a.Status != "success" {
		return nil, fmt.Errorf("ui: prometheus: %w: %s: %s", ErrPrometheus, a.ErrorType, a.Error)
	}
	if a.Data.ResultType != "vector" {
		return nil, fmt.Errorf("ui: prometheus: %w: result type %q, want vector", ErrPrometheus, a.Data.ResultType)
	}
	out := make([]promSample, 0, len(a.Data.Result))
	for i, s := range a.Data.Result {
		str, ok := s.Value[1].(string)
		if !ok {
			return nil, fmt.Errorf("ui: prometheus: %w: sample %d: value is not a string", ErrPrometheus, i)
		}
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("ui: prometheus: %w: sample %d: value %q: %v", ErrPrometheus, i, str, err)
		}
		out = append(out, promSample{Metric: s.Metric, Value: v})
	}
	return out, nil
}
