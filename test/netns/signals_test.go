//go:build e2e

package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The golden signals of issue 28 through a real Prometheus (the Debian
// package), on three hosts:
//
//	h1  server (bootstrap_expect 1), service web (the test's app), and
//	    Prometheus on h1's loopback, scraping every agent's telemetry
//	    listener (telemetry.listen on its host's address)
//	h2  service shop, with an upstream to web
//	h3  service cart, with an upstream to web
//
// shop and cart send 1,500 requests each; the app answers every tenth with
// a 500. PromQL over Prometheus's HTTP API must then give those counts per
// source and destination, on the receiving and the calling agents, within
// 1 %, and the failures likewise.

const (
	sigWebPort     = 8081
	sigUpstream    = "127.0.0.1:9081"
	sigRequests    = 3000 // in all, half from each caller
	sigFailEvery   = 10   // the app answers every tenth request 500
	sigPromAddr    = "127.0.0.1:9090"
	sigTelemetry   = "9102" // port of each agent's telemetry listener
	sigScrapeEvery = time.Second
)

const sigPolicy = `kind: IntentionDefaults
name: default
action: allow
---
kind: ServiceDefaults
name: web
protocol: http
`

func TestPrometheusGoldenSignals(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run scripts/deps.sh test (Debian package prometheus)")
	}
	nw := New(t, 3)
	h1, h2, h3 := nw.Hosts[0], nw.Hosts[1], nw.Hosts[2]
	serveApp(t, h1, sigWebPort, "web", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "injected failure", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "web")
	})

	// The telemetry listener, on the host's address, is what Prometheus
	// on h1 scrapes; the API stays on loopback.
	telemetry := func(h *Host) string {
		return fmt.Sprintf("telemetry:\n  listen: %s\n", net.JoinHostPort(h.Addr, sigTelemetry))
	}
	enc, ck := Key(), Key()
	server := h1.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Server: true, BootstrapExpect: 1,
		Extra: telemetry(h1) + fmt.Sprintf("services:\n  - {name: web, id: web, port: %d}\n", sigWebPort)})
	Eventually(t, 90*time.Second, "the CA on h1", func() error {
		_, err := server.CLI("ca", "roots")
		return err
	})
	agents := []*Agent{server}
	callers := map[*Host]string{h2: "shop", h3: "cart"}
	for _, h := range []*Host{h2, h3} {
		tok, err := server.Token(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		svc := fmt.Sprintf("services:\n  - name: %s\n    id: %s\n    upstreams:\n      - {service: web, local_bind: %q}\n", callers[h], callers[h], sigUpstream)
		agents = append(agents, h.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: []string{h1.Addr}, Token: tok, Extra: telemetry(h) + svc}))
	}
	holds := map[*Host][]string{h1: {"web"}, h2: {"shop"}, h3: {"cart"}}
	waitForLeaves(t, agents, holds)
	for _, a := range agents[1:] {
		waitForInstances(t, a, map[string]int{"web": 1})
	}
	applyPolicy(t, server, agents, sigPolicy)
	clients := map[*Host]*http.Client{}
	for _, h := range []*Host{h2, h3} {
		c := hostClient(h, l7Workers)
		t.Cleanup(c.CloseIdleConnections)
		clients[h] = c
		Eventually(t, 30*time.Second, "a call through "+h.Name+"'s upstream", func() error {
			req, _ := http.NewRequest(http.MethodGet, "http://"+sigUpstream+"/warmup", nil)
			if r := do(c, req); !r.reached() {
				return errors.New(r.String())
			}
			return nil
		})
	}

	promURL := startPrometheus(t, h1, prom, []string{h1.Addr, h2.Addr, h3.Addr})

	// The warm-up calls counted too: what the agents hold now is the
	// baseline, read from each agent itself.
	type pair struct{ source, dir, result string }
	baseline := map[pair]float64{}
	for _, src := range []string{"shop", "cart"} {
		for _, dir := range []string{"inbound", "outbound"} {
			for _, result := range []string{"success", "failure"} {
				labels := fmt.Sprintf(`destination="web",direction=%q,protocol="http",`, dir)
				var sum float64
				for _, a := range agents {
					v, err := metricLabels(a, "meshwork_service_requests_total", labels,
						fmt.Sprintf("result=%q", result), fmt.Sprintf("source=%q", src))
					if err != nil {
						t.Fatal(err)
					}
					sum += v
				}
				baseline[pair{src, dir, result}] = sum
			}
		}
	}
	t.Logf("baseline (warm-up calls): %v", baseline)

	// The load: 1,500 calls from each caller, every tenth to /fail.
	start := time.Now()
	per := sigRequests / 2
	type tallyOf struct{ ok, failed, other int }
	tallies := map[string]*tallyOf{}
	done := make(chan struct{})
	for _, h := range []*Host{h2, h3} {
		tl := &tallyOf{}
		tallies[callers[h]] = tl
		go func(h *Host, tl *tallyOf) {
			defer func() { done <- struct{}{} }()
			load := (&l7Mesh{client: clients[h]}).startLoad(per, 0, func(i int) l7Result {
				path := "/ok"
				if i%sigFailEvery == 0 {
					path = "/fail"
				}
				req, _ := http.NewRequest(http.MethodGet, "http://"+sigUpstream+path, nil)
				return do(clients[h], req)
			})
			for _, r := range load.wait() {
				switch {
				case r.err == nil && r.status == http.StatusOK:
					tl.ok++
				case r.err == nil && r.status == http.StatusInternalServerError && r.meshError == "":
					tl.failed++
				default:
					tl.other++
				}
			}
		}(h, tl)
	}
	<-done
	<-done
	t.Logf("load of %d calls took %s", sigRequests, time.Since(start).Round(time.Millisecond))
	for src, tl := range tallies {
		if tl.ok != per-per/sigFailEvery || tl.failed != per/sigFailEvery || tl.other != 0 {
			t.Fatalf("%s's calls: %d ok, %d app 500s, %d other; want %d, %d, 0", src, tl.ok, tl.failed, tl.other, per-per/sigFailEvery, per/sigFailEvery)
		}
	}

	// PromQL: the counts per source and destination, on each side, once
	// Prometheus has scraped them.
	want := map[pair]float64{}
	for _, src := range []string{"shop", "cart"} {
		for _, dir := range []string{"inbound", "outbound"} {
			want[pair{src, dir, "success"}] = baseline[pair{src, dir, "success"}] + float64(per-per/sigFailEvery)
			want[pair{src, dir, "failure"}] = baseline[pair{src, dir, "failure"}] + float64(per/sigFailEvery)
		}
	}
	const query = `sum by (source, destination, direction, result) (meshwork_service_requests_total{destination="web",protocol="http"})`
	var got map[pair]float64
	Eventually(t, 30*time.Second, "Prometheus to hold the counts of the load", func() error {
		rs, err := promQuery(h1, promURL, query)
		if err != nil {
			return err
		}
		got = map[pair]float64{}
		for _, r := range rs {
			if r.Metric["destination"] != "web" {
				return fmt.Errorf("series for destination %q", r.Metric["destination"])
			}
			got[pair{r.Metric["source"], r.Metric["direction"], r.Metric["result"]}] = r.Value
		}
		for k, w := range want {
			if math.Abs(got[k]-w) > 0.01*w {
				return fmt.Errorf("%v = %v, want %v (±1%%); all: %v", k, got[k], w, got)
			}
		}
		return nil
	})
	t.Logf("PromQL %s:\n%v", query, got)

	// The error rate of the contract's dashboard query, per source: 10 %
	// of the load, diluted a little by the successful warm-up calls.
	const rate = `sum by (source) (meshwork_service_requests_total{direction="inbound",destination="web",result="failure"}) / sum by (source) (meshwork_service_requests_total{direction="inbound",destination="web"})`
	rs, err := promQuery(h1, promURL, rate)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		src := r.Metric["source"]
		w := want[pair{src, "inbound", "failure"}] / (want[pair{src, "inbound", "failure"}] + want[pair{src, "inbound", "success"}])
		if math.Abs(r.Value-w) > 0.01*w {
			t.Errorf("error rate of %s's calls = %v, want %v", src, r.Value, w)
		}
	}
	if len(rs) != 2 {
		t.Errorf("error rate: %d series, want one per source: %+v", len(rs), rs)
	}

	// The duration histogram is native: Prometheus counts its samples.
	const hist = `histogram_count(sum by (source) (meshwork_service_request_duration_seconds{direction="inbound",destination="web"}))`
	rs, err = promQuery(h1, promURL, hist)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		src := r.Metric["source"]
		w := want[pair{src, "inbound", "failure"}] + want[pair{src, "inbound", "success"}]
		if math.Abs(r.Value-w) > 0.01*w {
			t.Errorf("native histogram count of %s's calls = %v, want %v", src, r.Value, w)
		}
	}
	if len(rs) != 2 {
		t.Errorf("native histogram: %d series, want one per source: %+v", len(rs), rs)
	}
}

// startPrometheus runs Prometheus in h, listening on h's loopback only,
// with its storage in a temporary directory, scraping the telemetry
// listeners (/metrics) of the agents at addrs every second. It returns the base URL of its API once it
// is ready; the process is stopped by its PID when the test ends.
func startPrometheus(t *testing.T, h *Host, bin string, addrs []string) string {
	t.Helper()
	dir := t.TempDir()
	var targets []string
	for _, a := range addrs {
		targets = append(targets, strconv.Quote(net.JoinHostPort(a, sigTelemetry)))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: %s
  evaluation_interval: %s
scrape_configs:
  - job_name: meshwork
    metrics_path: /metrics
    static_configs:
      - targets: [%s]
`, sigScrapeEvery, sigScrapeEvery, strings.Join(targets, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := h.Start(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+sigPromAddr,
		"--enable-feature=native-histograms",
		"--log.level=warn")
	t.Cleanup(func() {
		p.Signal(syscall.SIGTERM)
		if _, exited := p.Wait(10 * time.Second); !exited {
			p.Signal(syscall.SIGKILL)
		}
	})
	base := "http://" + sigPromAddr
	Eventually(t, 30*time.Second, "Prometheus ready and scraping every agent", func() error {
		rs, err := promQuery(h, base, `up{job="meshwork"} == 1`)
		if err != nil {
			return err
		}
		if len(rs) != len(addrs) {
			return fmt.Errorf("%d of %d targets up", len(rs), len(addrs))
		}
		return nil
	})
	return base
}

// promSample is one series of an instant vector.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery runs an instant PromQL query against Prometheus's HTTP API at
// base, from inside h.
func promQuery(h *Host, base, query string) ([]promSample, error) {
	c := hostClient(h, 1)
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: %d: %v", query, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", query, body.Error)
	}
	var out []promSample
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %v: %v", query, r.Value, err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// metricLabels sums the samples of name on a's /v1/metrics whose label set
// contains each of labels (each as written in the text format).
func metricLabels(a *Agent, name string, labels ...string) (float64, error) {
	if len(labels) == 0 {
		return metric(a, name, "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := a.Host.Run(ctx, "curl", "-sS", "--max-time", "10", "http://127.0.0.1:8500/v1/metrics")
	if err != nil {
		return 0, fmt.Errorf("metrics of %s: %v: %s", a.Host.Name, err, out)
	}
	var sum float64
lines:
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics of %s: %q: %v", a.Host.Name, line, err)
		}
		sum += v
	}
	return sum, nil
}
