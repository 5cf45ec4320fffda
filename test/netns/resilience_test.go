//go:build e2e

package netns

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/transport/retrybudget"
)

// The resilience scenarios of issue 26, with the real binary on five hosts:
//
//	h1      server (bootstrap_expect 1): the CA and the policy
//	h2      the caller: service "client", whose upstream to "flaky" is a
//	        local listener the test's HTTP client dials inside h2
//	h3..h5  one instance of flaky each
//
// Each instance is an HTTP server of the test inside its host whose
// behaviour the test sets while the load runs: a share of 503 answers or
// an added delay. It counts every request it receives, so that attempts are
// counted where they land, not taken from the mesh's own metrics.

const (
	flakyPort     = 8091
	flakyUpstream = "127.0.0.1:9091"

	resRate  = 500  // requests a second, as the issue asks
	resCalls = 3000 // 6 s at resRate per scenario
)

// resPolicy is the scenarios' base policy: flaky per request, retried on
// 5xx and connection failures within a 20 % budget, with ejection after 5
// consecutive errors capped at half the instances.
const resPolicy = `kind: IntentionDefaults
name: default
action: allow
---
kind: ServiceDefaults
name: flaky
protocol: http
---
kind: Resilience
name: flaky
retries:
  attempts: 2
  retry_on: [5xx, reset, connect-failure, refused-stream]
  per_try_timeout: 500ms
  budget: {percent: 20, min_per_second: 10}
outlier_detection:
  consecutive_errors: 5
  interval: 1s
  base_ejection_time: 2s
  max_ejected_percent: 50
`

// Budget of resPolicy, for the attempt bounds.
const (
	resBudgetPercent = 20
	resBudgetFloor   = 10 // retries a second
)

// flakyApp is one instance whose answers the test sets.
type flakyApp struct {
	name     string
	failPct  atomic.Int64 // share of requests answered 503, in percent
	delay    atomic.Int64 // added before every answer, ns
	hits     atomic.Int64 // requests received
	failed   atomic.Int64 // requests answered 503
	inFlight atomic.Int64
	maxIn    atomic.Int64 // the most requests in flight at once
	mu       sync.Mutex
	rng      *rand.Rand
}

func (a *flakyApp) serve(w http.ResponseWriter, r *http.Request) {
	a.hits.Add(1)
	n := a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	for {
		m := a.maxIn.Load()
		if n <= m || a.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	if d := time.Duration(a.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	a.mu.Lock()
	fail := a.rng.IntN(100) < int(a.failPct.Load())
	a.mu.Unlock()
	if fail {
		a.failed.Add(1)
		http.Error(w, a.name+" fails on purpose", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "%s\n", a.name)
}

// resMesh is the cluster of the scenarios.
type resMesh struct {
	*l7Mesh
	server *Agent
	caller *Agent
	agents map[string]*Agent    // h3..h5 by host name
	flaky  map[string]*flakyApp // by host name

	mu     sync.Mutex
	starts []time.Time // of every call, for the retry budget's window
}

// reset makes every instance healthy and zeroes its counts.
func (m *resMesh) reset() {
	for _, a := range m.flaky {
		a.failPct.Store(0)
		a.delay.Store(0)
		a.hits.Store(0)
		a.failed.Store(0)
		a.maxIn.Store(0)
	}
}

// hits is the number of requests every instance received.
func (m *resMesh) hits() (total int64, by map[string]int64) {
	by = map[string]int64{}
	for h, a := range m.flaky {
		n := a.hits.Load()
		by[h] = n
		total += n
	}
	return total, by
}

// call is a GET of flaky through the caller's upstream.
func (m *resMesh) call(i int) l7Result {
	m.mu.Lock()
	m.starts = append(m.starts, time.Now())
	m.mu.Unlock()
	return m.get(flakyUpstream, fmt.Sprintf("/work/%d", i))
}

// callsSince counts the calls started since t.
func (m *resMesh) callsSince(t time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, _ := slices.BinarySearchFunc(m.starts, t, func(a, b time.Time) int { return a.Compare(b) })
	return len(m.starts) - i
}

// load makes n calls at resRate and returns them.
func (m *resMesh) load(n int) []l7Result {
	return m.startLoad(n, resRate, m.call).wait()
}

// allServe makes every instance healthy and waits until a batch of calls
// reaches each of them: ejections of an earlier scenario have ended. The
// counts start from zero.
func (m *resMesh) allServe(t *testing.T) {
	t.Helper()
	m.reset()
	Eventually(t, 90*time.Second, "every instance of flaky serves", func() error {
		seen := map[string]bool{}
		for i := range 60 {
			if r := m.call(i); r.ok() {
				seen[r.served] = true
			}
		}
		if len(seen) < len(m.flaky) {
			return fmt.Errorf("served by %v only", seen)
		}
		return nil
	})
	m.reset()
}

func startResMesh(t *testing.T) *resMesh {
	t.Helper()
	nw := New(t, 5)
	h1, h2 := nw.Hosts[0], nw.Hosts[1]
	m := &resMesh{
		l7Mesh: &l7Mesh{caller: h2, client: hostClient(h2, l7Workers), apps: map[string]*l7App{}},
		agents: map[string]*Agent{},
		flaky:  map[string]*flakyApp{},
	}
	t.Cleanup(m.client.CloseIdleConnections)
	for i, h := range nw.Hosts[2:] {
		a := &flakyApp{name: "flaky-" + h.Name, rng: rand.New(rand.NewPCG(uint64(i+1), 26))}
		m.flaky[h.Name] = a
		serveApp(t, h, flakyPort, a.name, a.serve)
	}

	enc, ck := Key(), Key()
	m.server = h1.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Server: true, BootstrapExpect: 1})
	Eventually(t, 90*time.Second, "the CA on h1", func() error {
		_, err := m.server.CLI("ca", "roots")
		return err
	})
	start := func(h *Host, extra string) *Agent {
		tok, err := m.server.Token(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		return h.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: []string{h1.Addr}, Token: tok, Extra: extra})
	}
	m.caller = start(h2, fmt.Sprintf(`services:
  - name: client
    id: client
    upstreams:
      - {service: flaky, local_bind: %q}
`, flakyUpstream))
	all := []*Agent{m.server, m.caller}
	holds := map[*Host][]string{h2: {"client"}}
	for _, h := range nw.Hosts[2:] {
		a := start(h, fmt.Sprintf("services:\n  - {name: flaky, id: flaky-%s, port: %d}\n", h.Name, flakyPort))
		m.agents[h.Name] = a
		all = append(all, a)
		holds[h] = []string{"flaky"}
	}
	waitForLeaves(t, all[1:], holds)
	waitForInstances(t, m.caller, map[string]int{"flaky": 3})
	m.l7Mesh.agents = all
	applyPolicy(t, m.caller, all, resPolicy)
	m.allServe(t)
	return m
}

func TestResilience(t *testing.T) {
	needTools(t, "curl")
	m := startResMesh(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *resMesh)
	}{
		{"FlakyInstance", resFlaky},
		{"EveryInstanceFailing", resAllFailing},
		{"KilledInstance", resKilled},
		{"SlowInstance", resSlow},
		{"CircuitBreaker", resBreaker},
		{"FaultAbort", resFault},
	} {
		m.allServe(t)
		t.Run(sc.name, func(t *testing.T) { sc.run(t, m) })
	}
}

// succeeded counts the calls answered 200 by an instance.
func succeeded(rs []l7Result) int {
	n := 0
	for _, r := range rs {
		if r.ok() {
			n++
		}
	}
	return n
}

// resFlaky: one instance fails 30 % of its requests. Retries hide it from
// the callers within the budget.
func resFlaky(t *testing.T, m *resMesh) {
	m.flaky["h3"].failPct.Store(30)
	rs := m.load(resCalls)
	ok := succeeded(rs)
	total, by := m.hits()
	answered503 := m.flaky["h3"].failed.Load()
	t.Logf("%d calls, %d succeeded (%.2f %%), %d attempts at the instances (%.3f per call): %v; h3 answered 503 %d times",
		len(rs), ok, 100*float64(ok)/float64(len(rs)), total, float64(total)/float64(len(rs)), by, answered503)
	if len(rs) != resCalls {
		t.Fatalf("%d calls made, want %d", len(rs), resCalls)
	}
	if float64(ok) < 0.999*float64(len(rs)) {
		t.Errorf("%d of %d calls succeeded, want at least 99.9 %%: %v", ok, len(rs), tallyOf(rs).failures)
	}
	if float64(total) > 1.2*float64(len(rs)) {
		t.Errorf("%d attempts for %d calls, want at most 1.2 per call", total, len(rs))
	}
	// The budget (20 %, and 10 a second) has room for every one of them:
	// a 503 that reached a caller was not retried.
	if ok < len(rs) {
		t.Errorf("%d calls failed though h3's %d failures fit in the retry budget: %v", len(rs)-ok, answered503, tallyOf(rs).failures)
	}
}

// resAllFailing: every instance fails every request. The budget bounds
// the retries, and ejection never takes out more than half the instances.
func resAllFailing(t *testing.T, m *resMesh) {
	for _, a := range m.flaky {
		a.failPct.Store(100)
	}
	// Watch the caller's ejection gauge while the load runs.
	stop := make(chan struct{})
	var peak atomic.Int64
	var watched sync.WaitGroup
	watched.Go(func() {
		for {
			if v, err := metric(m.caller, "meshwork_transport_outliers_ejected", `service="flaky"`); err == nil && int64(v) > peak.Load() {
				peak.Store(int64(v))
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	start := time.Now()
	rs := m.load(resCalls)
	took := time.Since(start)
	close(stop)
	watched.Wait()
	total, by := m.hits()
	// The budget allows retries up to 20 % of the requests of the last
	// 10 s (counted in one-second slots: up to 11 s back), the calls of
	// the scenarios before this one among them, plus 10 a second of that
	// window (Linkerd's budget).
	window := m.callsSince(start.Add(-retrybudget.Window - time.Second))
	allowed := float64(len(rs)) + float64(window)*resBudgetPercent/100 + resBudgetFloor*(took.Seconds()+retrybudget.Window.Seconds()+2)
	t.Logf("%d calls in %s (%d in the budget's window), %d succeeded, %d attempts at the instances (%.3f per call, at most %.0f allowed): %v; at most %d instances ejected at once",
		len(rs), took.Round(time.Millisecond), window, succeeded(rs), total, float64(total)/float64(len(rs)), allowed, by, peak.Load())
	if float64(total) > allowed {
		t.Errorf("%d attempts for %d calls in %s, want at most %.0f: a retry storm", total, len(rs), took, allowed)
	}
	if peak.Load() > 1 {
		t.Errorf("%d of 3 instances ejected at once, above max_ejected_percent 50", peak.Load())
	}
	if peak.Load() == 0 {
		t.Error("no instance was ejected while every one failed")
	}
}

// resKilled: the agent of one instance is killed with SIGKILL under load.
// Only calls in flight may fail; none fails once the caller stopped
// sending to the instance (ejected, or failed by gossip); the instance
// serves again once its agent is back.
func resKilled(t *testing.T, m *resMesh) {
	victim := m.agents["h5"]
	before, err := metric(m.caller, "meshwork_transport_outlier_ejections_total", `service="flaky"`)
	if err != nil {
		t.Fatal(err)
	}
	l := m.startLoad(resCalls, resRate, m.call)
	Eventually(t, 30*time.Second, "calls before the kill", func() error {
		if n := len(l.snapshot()); n < 300 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	victim.Proc.Signal(syscall.SIGKILL)
	if _, ok := victim.Proc.Wait(30 * time.Second); !ok {
		t.Fatal("the killed agent did not exit")
	}
	killed := time.Now()
	// The caller stops sending to h5 when it ejects the instance (its
	// connects or requests failed) or when gossip declares h5 failed,
	// whichever comes first.
	var ejected time.Time
	how := ""
	Eventually(t, 30*time.Second, "the caller ejects h5's instance or gossip declares h5 failed", func() error {
		v, err := metric(m.caller, "meshwork_transport_outlier_ejections_total", `service="flaky"`)
		if err != nil {
			return err
		}
		status, err := m.caller.StatusOf("h5")
		if err != nil {
			return err
		}
		switch {
		case v > before:
			how = "ejected"
		case status == "failed":
			how = "failed by gossip"
		default:
			return fmt.Errorf("%v ejections (%v before the kill); h5 %s", v, before, status)
		}
		ejected = time.Now()
		return nil
	})
	rs := l.wait()
	var inFlight, inFlightFailed, after int
	for _, r := range rs {
		switch {
		case r.start.Before(ejected):
			if r.end.After(killed) {
				inFlight++
				if !r.ok() {
					inFlightFailed++
				}
			}
		default:
			after++
			if !r.ok() {
				t.Errorf("a call started %s after the ejection failed: %s", r.start.Sub(ejected).Round(time.Millisecond), r)
			}
		}
	}
	t.Logf("killed h5's agent: %s %s later; %d calls between (%d failed), %d after", how, ejected.Sub(killed).Round(time.Millisecond), inFlight, inFlightFailed, after)
	if after == 0 {
		t.Error("no call started after the ejection: the load ended too soon")
	}

	victim.Restart()
	Eventually(t, 90*time.Second, "h5's instance serves again", func() error {
		for i := range 60 {
			if r := m.call(i); r.ok() && r.served == "flaky-h5" {
				return nil
			}
		}
		return fmt.Errorf("no call reached flaky-h5")
	})
}

// resSlow: one instance answers 200 ms late. Peak-EWMA sends it less than
// 10 % of the requests; then, with hedging on flaky's route, a request the
// slow instance holds past its p95 gets a second try elsewhere. The
// callers' p99 is logged for docs/benchmarks.md, not asserted.
func resSlow(t *testing.T, m *resMesh) {
	m.flaky["h4"].delay.Store(int64(200 * time.Millisecond))
	for _, hedge := range []bool{false, true} {
		if hedge {
			m.apply(t, resPolicy+hedgePolicy)
		}
		m.reset()
		m.flaky["h4"].delay.Store(int64(200 * time.Millisecond))
		rs := m.load(resCalls)
		total, by := m.hits()
		lat := make([]time.Duration, 0, len(rs))
		for _, r := range rs {
			lat = append(lat, r.end.Sub(r.start))
		}
		slices.Sort(lat)
		t.Logf("hedging %v: %d calls, %d succeeded, p50 %s, p99 %s, max %s; at the instances %d: %v", hedge, len(rs), succeeded(rs),
			lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), total, by)
		if float64(by["h4"]) >= 0.1*float64(len(rs)) {
			t.Errorf("hedging %v: the slow instance received %d of %d requests, want under 10 %%", hedge, by["h4"], len(rs))
		}
		if ok := succeeded(rs); ok != len(rs) {
			t.Errorf("hedging %v: %d of %d calls succeeded: %v", hedge, ok, len(rs), tallyOf(rs).failures)
		}
	}
	// The Route goes before the Split it names; the apply then waits
	// until every agent holds the policy past both deletes.
	for _, kind := range []string{"Route", "Split"} {
		if out, err := m.caller.CLI("policy", "delete", kind, "flaky"); err != nil {
			t.Fatalf("policy delete %s flaky: %v: %s", kind, err, out)
		}
	}
	m.apply(t, resPolicy)
}

// hedgePolicy hedges every request to flaky, through a Route to a Split
// over all its instances.
const hedgePolicy = `---
kind: Split
name: flaky
splits:
  - {weight: 100}
---
kind: Route
name: flaky
routes:
  - match: {}
    split: flaky
    hedge: true
`

// resBreaker: with max_requests 4 and instances that answer 100 ms late,
// 32 concurrent callers are cut to 4 requests in flight; the rest are
// refused at once with circuit_open.
func resBreaker(t *testing.T, m *resMesh) {
	m.apply(t, resPolicy+`circuit_breaker: {max_requests: 4, max_pending: 1}
`)
	t.Cleanup(func() { m.apply(t, resPolicy) })
	for _, a := range m.flaky {
		a.delay.Store(int64(100 * time.Millisecond))
	}
	const callers, each = 32, 10
	var wg sync.WaitGroup
	results := make([][]l7Result, callers)
	client := hostClient(m.caller.Host, callers)
	defer client.CloseIdleConnections()
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/breaker/%d/%d", flakyUpstream, c, i), nil)
				results[c] = append(results[c], do(client, req))
			}
		})
	}
	wg.Wait()
	var ok, open, other int
	var rejected []time.Duration
	for _, rs := range results {
		for _, r := range rs {
			switch {
			case r.ok():
				ok++
			case r.status == http.StatusServiceUnavailable && r.meshError == "circuit_open":
				open++
				rejected = append(rejected, r.end.Sub(r.start))
			default:
				other++
			}
		}
	}
	var inFlight int64
	for _, a := range m.flaky {
		inFlight += a.maxIn.Load()
	}
	slices.Sort(rejected)
	p99 := time.Duration(0)
	if len(rejected) > 0 {
		p99 = rejected[len(rejected)*99/100]
	}
	t.Logf("%d calls: %d served, %d refused circuit_open (p99 %s from the caller's side), %d other; at most %d in flight at the instances",
		callers*each, ok, open, p99.Round(time.Microsecond), other, inFlight)
	if open == 0 {
		t.Error("no call was refused with circuit_open")
	}
	if ok == 0 {
		t.Error("no call was served")
	}
	if other > 0 {
		t.Errorf("%d calls neither served nor refused circuit_open", other)
	}
	// The instances' peaks need not coincide, so their sum bounds the
	// requests in flight from above.
	if inFlight > 4*int64(len(m.flaky)) {
		t.Errorf("up to %d requests in flight at the instances", inFlight)
	}
}

// resFault: a Fault abort of 10 % is observed within ±1 % over 10,000
// requests, with retries off so that callers see every abort.
func resFault(t *testing.T, m *resMesh) {
	m.apply(t, `kind: Resilience
name: flaky
retries: {attempts: 0}
---
kind: Fault
name: flaky
abort: {percent: 10, http_status: 503}
`)
	t.Cleanup(func() {
		if out, err := m.caller.CLI("policy", "delete", "Fault", "flaky"); err != nil {
			t.Errorf("policy delete Fault flaky: %v: %s", err, out)
		}
		m.apply(t, resPolicy)
	})
	const n = 10000
	rs := m.startLoad(n, 0, m.call).wait()
	var aborted, ok int
	for _, r := range rs {
		switch {
		case r.status == http.StatusServiceUnavailable && r.meshError == "fault_injected":
			aborted++
		case r.ok():
			ok++
		}
	}
	share := 100 * float64(aborted) / float64(len(rs))
	t.Logf("%d calls: %d aborted (%.2f %%), %d served", len(rs), aborted, share, ok)
	if len(rs) != n {
		t.Fatalf("%d calls made, want %d", len(rs), n)
	}
	if share < 9 || share > 11 {
		t.Errorf("%.2f %% aborted, want 10 ± 1 %%", share)
	}
	if aborted+ok != n {
		t.Errorf("%d calls neither served nor aborted", n-aborted-ok)
	}
}
