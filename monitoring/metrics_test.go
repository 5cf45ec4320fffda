package monitoring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/agent"
	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
)

// wait bounds the wait for a dev agent to register every metric the files
// name (some only once it holds a certificate): generous for a loaded
// machine; a healthy agent takes a few seconds.
const wait = 60 * time.Second

// family is what the checks know of one metric name: its labels and, for
// each, the values known: the contract's fixed ones, or those an agent was
// seen to export; nil for any value.
type family struct {
	labels map[string]map[string]bool
}

// targetLabels are added by Prometheus to every series it scrapes.
var targetLabels = []string{"instance", "job"}

// goldenSignals are the per-service metrics of the observability contract
// (issue 28, telemetry/signals). They are registered only once the lead
// wires the observer into the agent, and a labelled metric shows in a
// registry only after its first observation, so the checks take them from
// the contract rather than from an agent.
var goldenSignals = map[string]struct {
	kind   dto.MetricType
	labels []string
}{
	"meshwork_service_requests_total":           {dto.MetricType_COUNTER, []string{"direction", "protocol", "source", "destination", "route", "result", "code", "reason"}},
	"meshwork_service_request_duration_seconds": {dto.MetricType_HISTOGRAM, []string{"direction", "protocol", "source", "destination", "route", "result"}},
	"meshwork_service_bytes_total":              {dto.MetricType_COUNTER, []string{"direction", "protocol", "source", "destination", "flow"}},
	"meshwork_service_active":                   {dto.MetricType_GAUGE, []string{"direction", "protocol", "source", "destination"}},
}

// goldenSignalValues are the contract's fixed label values.
var goldenSignalValues = map[string][]string{
	"direction": {"inbound", "outbound"},
	"protocol":  {"tcp", "http", "grpc"},
	"result":    {"success", "failure"},
	"flow":      {"request", "response"},
}

// catalog maps each series name a query may use to its family: a
// histogram's _bucket (with le), _sum and _count, and its own name for a
// native histogram.
type catalog map[string]*family

func (c catalog) add(name string, kind dto.MetricType, labels map[string]map[string]bool) {
	with := func(extra string) map[string]map[string]bool {
		m := map[string]map[string]bool{}
		for l, v := range labels {
			m[l] = v
		}
		if extra != "" {
			m[extra] = nil
		}
		for _, l := range targetLabels {
			m[l] = nil
		}
		return m
	}
	switch kind {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		c[name] = &family{with("")}
		c[name+"_bucket"] = &family{with("le")}
		c[name+"_sum"] = &family{with("")}
		c[name+"_count"] = &family{with("")}
	case dto.MetricType_SUMMARY:
		c[name] = &family{with("quantile")}
		c[name+"_sum"] = &family{with("")}
		c[name+"_count"] = &family{with("")}
	default:
		c[name] = &family{with("")}
	}
}

// goldenCatalog holds the golden signals' series as the contract gives them.
var goldenCatalog = contractCatalog()

func contractCatalog() catalog {
	c := catalog{}
	for name, g := range goldenSignals {
		labels := map[string]map[string]bool{}
		for _, l := range g.labels {
			labels[l] = nil
			if vs, ok := goldenSignalValues[l]; ok {
				labels[l] = map[string]bool{}
				for _, v := range vs {
					labels[l][v] = true
				}
			}
		}
		c.add(name, g.kind, labels)
	}
	return c
}

// agentCatalog is what reg holds now. A label's values are the ones seen:
// the checks use them only for what the files match with "=".
func agentCatalog(reg prometheus.Gatherer) (catalog, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	c := catalog{}
	for _, mf := range mfs {
		labels := map[string]map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] == nil {
					labels[lp.GetName()] = map[string]bool{}
				}
				labels[lp.GetName()][lp.GetValue()] = true
			}
		}
		c.add(mf.GetName(), mf.GetType(), labels)
	}
	return c, nil
}

// startDevAgent runs a dev agent (a server of one, with its CA) in this
// process on loopback sockets, and returns its registry.
func startDevAgent(t *testing.T) *prometheus.Registry {
	t.Helper()
	cfg := &config.Config{Node: "monitoring", Dev: true, DataDir: t.TempDir(), Bind: "127.0.0.1", LogLevel: "warn"}
	cfg.Tunnel.VIPRange = "127.236.0.0/16"
	if err := cfg.ApplyDefaults(); err != nil {
		t.Fatal(err)
	}
	logs := &meshtest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- agent log:\n%s", logs.Tail(50))
		}
	})
	listen := func(network string) net.Listener {
		l, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	packet := func() net.PacketConn {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	nt, err := gossip.NewNetTransport("127.0.0.1", 0, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Ports.Gossip = nt.Port()
	raftL := listen("tcp")
	cfg.Ports.Raft = raftL.Addr().(*net.TCPAddr).Port
	tunnel := packet()
	cfg.Ports.Tunnel = tunnel.LocalAddr().(*net.UDPAddr).Port
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a, err := agent.New(cfg, agent.Deps{
		Logger: log, Registry: reg, GossipTransport: nt,
		HTTPListener: listen("tcp"), DNSConn: packet(), DNSListener: listen("tcp"),
		RaftListener: raftL, TunnelConn: tunnel,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return reg
}

// use is one place a file names a metric.
type use struct {
	where  string
	sel    selector
	group  []string // grouping labels of the whole expression
	series bool     // an input series of a rule test: its label values are made up
}

var labelValues = regexp.MustCompile(`^\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// uses scans every expression of the dashboards (with their variable
// queries) and the alert rules, and every input series of the rule tests.
func uses(t *testing.T) []use {
	t.Helper()
	var out []use
	scan := func(where, expr string, series bool) {
		refs, err := scanQuery(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		if len(refs.Selectors) == 0 {
			t.Errorf("%s: %q names no metric", where, expr)
		}
		for _, s := range refs.Selectors {
			out = append(out, use{where, s, refs.Grouping, series})
		}
	}
	ds, _ := loadDashboards(t)
	for _, d := range ds {
		for _, q := range d.queries(nil) {
			scan(q.Where, q.Expr, false)
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			q := v.Query
			if m, ok := q.(map[string]any); ok {
				q = m["query"]
			}
			s, _ := q.(string)
			m := labelValues.FindStringSubmatch(s)
			if m == nil {
				t.Errorf("%s: variable %s: query %q, want label_values(metric, label)", d.File, v.Name, s)
				continue
			}
			scan(fmt.Sprintf("%s: variable %s", d.File, v.Name), fmt.Sprintf("group by (%s) (%s%s)", m[3], m[1], m[2]), false)
		}
	}
	for _, r := range alertRules(t) {
		scan(rulesFile+": "+r.Alert, r.Expr, false)
	}
	var tests ruleTestFile
	readYAML(t, rulesTestFile, &tests)
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			scan(fmt.Sprintf("%s: %q: input series", rulesTestFile, tc.Name), s.Series, true)
		}
	}
	return out
}

// TestFilesNameRealMetrics checks every metric and label that the
// dashboards, the rules and the rule tests name against a dev agent's
// registry and the golden signals of the contract: a misspelt name would
// otherwise give an empty panel, an alert that never fires, or a rule test
// that passes on series no agent exports.
func TestFilesNameRealMetrics(t *testing.T) {
	all := uses(t)
	reg := startDevAgent(t)

	// An agent registers some metrics, and some label values, only once it
	// has a leader, a certificate or policy: wait for what the files need.
	var known catalog
	testnet.Eventually(t, wait, "the dev agent to register every metric the files name", func() error {
		c, err := agentCatalog(reg)
		if err != nil {
			return err
		}
		known = c
		var missing []string
		for _, u := range all {
			if goldenCatalog[u.sel.Metric] != nil {
				continue
			}
			f := c[u.sel.Metric]
			if f == nil {
				missing = append(missing, u.sel.Metric)
				continue
			}
			for _, m := range u.sel.Matchers {
				if vs := f.labels[m.Name]; m.Op == "=" && vs != nil && !vs[m.Value] && !u.series {
					missing = append(missing, fmt.Sprintf("%s{%s=%q}", u.sel.Metric, m.Name, m.Value))
				}
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return fmt.Errorf("not registered: %s", strings.Join(slices.Compact(missing), ", "))
		}
		return nil
	})
	// The contract is the golden signals' specification, whatever an
	// agent has observed of them so far.
	for name, f := range goldenCatalog {
		known[name] = f
	}
	for _, err := range checkUses(all, known) {
		t.Error(err)
	}
}

// checkUses returns an error for each metric, label or fixed label value
// that known does not have, and each grouping label that none of its
// expression's metrics has.
func checkUses(all []use, known catalog) []error {
	var errs []error
	groupLabels := map[string]map[string]bool{} // where -> labels its metrics have
	for _, u := range all {
		f := known[u.sel.Metric]
		if f == nil {
			errs = append(errs, fmt.Errorf("%s: metric %s: no agent registers it, and it is not a golden signal", u.where, u.sel.Metric))
			continue
		}
		if groupLabels[u.where] == nil {
			groupLabels[u.where] = map[string]bool{}
		}
		for l := range f.labels {
			groupLabels[u.where][l] = true
		}
		for _, m := range u.sel.Matchers {
			vs, ok := f.labels[m.Name]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: %s has no label %s (labels: %s)", u.where, u.sel.Metric, m.Name, strings.Join(labelNames(f), ", ")))
				continue
			}
			if m.Op == "=" && vs != nil && !vs[m.Value] && goldenCatalog[u.sel.Metric] != nil {
				errs = append(errs, fmt.Errorf("%s: %s{%s=%q}: the contract's values are %v", u.where, u.sel.Metric, m.Name, m.Value, sortedKeys(vs)))
			}
		}
	}
	for _, u := range all {
		for _, l := range u.group {
			if groupLabels[u.where] != nil && !groupLabels[u.where][l] {
				errs = append(errs, fmt.Errorf("%s: grouping by %s, which none of its metrics has", u.where, l))
			}
		}
	}
	return dedupe(errs)
}

func labelNames(f *family) []string {
	return sortedKeys(f.labels)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func dedupe(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	return out
}

// TestCheckUsesFindsMistakes shows that the name checks fail on the
// mistakes they are for.
func TestCheckUsesFindsMistakes(t *testing.T) {
	known := contractCatalog()
	known.add("meshwork_gossip_members", dto.MetricType_GAUGE, map[string]map[string]bool{"status": {"alive": true, "failed": true}})
	tests := []struct {
		name, expr, want string
	}{
		{"misspelt metric", `meshwork_gossip_member{status="failed"}`, "metric meshwork_gossip_member: no agent registers it"},
		{"misspelt label", `meshwork_gossip_members{state="failed"}`, "has no label state"},
		{"value outside the contract", `rate(meshwork_service_requests_total{direction="inbund"}[5m])`, `the contract's values are [inbound outbound]`},
		{"grouping by a label no metric has", `sum by (dest) (rate(meshwork_service_requests_total[5m]))`, "grouping by dest"},
		{"native histogram has no le", `sum by (le) (rate(meshwork_service_request_duration_seconds[5m]))`, "grouping by le"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			refs, err := scanQuery(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			var us []use
			for _, s := range refs.Selectors {
				us = append(us, use{where: "q", sel: s, group: refs.Grouping})
			}
			errs := checkUses(us, known)
			if !slices.ContainsFunc(errs, func(e error) bool { return strings.Contains(e.Error(), tc.want) }) {
				t.Errorf("errors %v, want one with %q", errors.Join(errs...), tc.want)
			}
		})
	}
	// And it passes what is right.
	refs, err := scanQuery(`histogram_quantile(0.99, sum by (destination, le) (rate(meshwork_service_request_duration_seconds_bucket{direction="inbound"}[5m]))) and on (job) meshwork_gossip_members{status="failed"}`)
	if err != nil {
		t.Fatal(err)
	}
	var us []use
	for _, s := range refs.Selectors {
		us = append(us, use{where: "q", sel: s, group: refs.Grouping})
	}
	if errs := checkUses(us, known); len(errs) > 0 {
		t.Errorf("a right query: %v", errors.Join(errs...))
	}
}
