//go:build e2e

package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
)

// The per-request (L7) scenarios of issue 25, with the real binary on four
// hosts:
//
//	h1  server (bootstrap_expect 1): the CA and the policy
//	h2  the caller: service "client", whose upstreams are the mesh's
//	    local listeners for api, bg, b and files; the test's HTTP client
//	    dials them inside h2
//	h3  api v1, bg blue, b (with an upstream to c), files
//	h4  api v2, api canary, bg green, c
//
// Every instance is a small HTTP server run by this test inside its host
// (Host.Listen), on loopback only, answering with an x-served-by header that
// names the instance. Every service is ServiceDefaults protocol http, so
// both agents handle it per request: the client keeps its connections alive,
// and a routing decision taken per connection shows up as a wrong share.
//
// The scenarios: a header canary, a 90/10 split over 10,000 requests, a
// blue-green switch under 500 requests a second, a deadline across three
// hops cut at the first hop's budget, and an Intention with L7 permissions.

// Ports of the instances, on their hosts' loopback, and of the upstream
// listeners on h2 (and h3, for b's calls to c).
const (
	apiPort    = 8081 // api v1 on h3, api v2 on h4
	canaryPort = 8082 // api canary on h4
	bgPort     = 8083 // bg blue on h3, bg green on h4
	bPort      = 8084 // b on h3
	cPort      = 8085 // c on h4
	filesPort  = 8086 // files on h3

	apiUpstream   = "127.0.0.1:9081"
	bgUpstream    = "127.0.0.1:9083"
	bUpstream     = "127.0.0.1:9084"
	cUpstream     = "127.0.0.1:9085" // on h3, for b's app
	filesUpstream = "127.0.0.1:9086"
)

// Load and budgets of the scenarios.
const (
	l7Workers    = 16                     // concurrent callers, one kept-alive connection each
	l7CallBound  = 60 * time.Second       // bounds every batch of calls
	splitCalls   = 10000                  // the 90/10 split's sample
	canaryCalls  = 1000                   // half of them marked
	bgRate       = 500                    // requests a second during the blue-green switch
	bgMaxCalls   = 20 * bgRate            // bounds the switch's load (20 s at bgRate)
	bgAfter      = 2 * bgRate             // calls that must start after green first answers
	chainBudget  = 300 * time.Millisecond // A's budget: Resilience timeouts.request of b
	chainSleep   = 2 * time.Second        // c's work, far beyond the budget
	deadlineHdr  = "x-meshwork-deadline-ms"
	meshErrorHdr = "x-meshwork-error"
	servedByHdr  = "x-served-by"
)

// l7Policy is applied once the cluster is up: every service per request,
// api's canary route and 90/10 default split, bg all blue, and b's request
// timeout, which is A's budget in the chain.
const l7Policy = `kind: IntentionDefaults
name: default
action: allow
---
kind: ServiceDefaults
name: api
protocol: http
---
kind: ServiceDefaults
name: bg
protocol: http
---
kind: ServiceDefaults
name: b
protocol: http
---
kind: ServiceDefaults
name: c
protocol: http
---
kind: ServiceDefaults
name: files
protocol: http
---
kind: Split
name: api
splits:
  - {weight: 90, subset: {tags: [v1]}}
  - {weight: 10, subset: {tags: [v2]}}
---
kind: Split
name: api-canary
service: api
splits:
  - {weight: 100, subset: {tags: [canary]}}
---
kind: Route
name: api
routes:
  - match: {headers: [{name: x-canary, exact: "1"}]}
    split: api-canary
---
kind: Split
name: bg
splits:
  - {weight: 100, subset: {tags: [blue]}}
---
kind: Resilience
name: b
timeouts:
  request: 300ms
`

// l7Mesh is the cluster of the scenarios.
type l7Mesh struct {
	agents []*Agent // h1-h4
	caller *Host    // h2
	client *http.Client
	apps   map[string]*l7App // by instance name
}

// l7App is one instance: an HTTP server of the test inside a host. It
// records the path and the x-meshwork-deadline-ms of every request.
type l7App struct {
	name string
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	path     string
	deadline string // x-meshwork-deadline-ms as received, "" when absent
}

// serveApp starts an instance named name on h's loopback at port. Every
// answer names the instance in x-served-by; handle writes the rest (nil
// answers 200 with the name).
func serveApp(t *testing.T, h *Host, port int, name string, handle http.HandlerFunc) *l7App {
	t.Helper()
	l, err := h.Listen(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("%s: listen for %s: %v", h.Name, name, err)
	}
	app := &l7App{name: name}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.mu.Lock()
		app.seen = append(app.seen, seenRequest{path: r.URL.Path, deadline: r.Header.Get(deadlineHdr)})
		app.mu.Unlock()
		w.Header().Set(servedByHdr, name)
		if handle != nil {
			handle(w, r)
			return
		}
		fmt.Fprintf(w, "%s\n", name)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return app
}

// requests returns the requests the app saw for path.
func (a *l7App) requests(path string) []seenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []seenRequest
	for _, r := range a.seen {
		if r.path == path {
			out = append(out, r)
		}
	}
	return out
}

// hostClient is an HTTP client whose connections are made inside h and
// kept alive, one per concurrent caller, as an application's would be.
func hostClient(h *Host, conns int) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return h.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
	}}
}

// l7Result is one request and its answer.
type l7Result struct {
	index      int    // the call's number in its load
	desc       string // method, URL and marking headers
	start, end time.Time
	status     int
	served     string // x-served-by
	meshError  string // x-meshwork-error
	body       string
	err        error
}

// ok reports a 200 from an instance, with the body it sent: every app
// answers its own name on a line (b and c on paths they answer at once).
func (r l7Result) ok() bool { return r.reached() && r.body == r.served+"\n" }

// reached reports a 200 from an instance, whatever its body.
func (r l7Result) reached() bool { return r.err == nil && r.status == http.StatusOK && r.served != "" }

func (r l7Result) String() string {
	if r.err != nil {
		return fmt.Sprintf("%s: %v", r.desc, r.err)
	}
	return fmt.Sprintf("%s: %d, %s %q, %s %q, body %q", r.desc, r.status, servedByHdr, r.served, meshErrorHdr, r.meshError, clip(r.body))
}

// do sends req with client and records the answer.
func do(client *http.Client, req *http.Request) l7Result {
	r := l7Result{desc: req.Method + " " + req.URL.String(), start: time.Now()}
	for _, h := range []string{"x-canary", deadlineHdr} {
		if v := req.Header.Get(h); v != "" {
			r.desc += fmt.Sprintf(" (%s: %s)", h, v)
		}
	}
	resp, err := client.Do(req)
	if err == nil {
		var b []byte
		b, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		r.status, r.body = resp.StatusCode, string(b)
		r.served, r.meshError = resp.Header.Get(servedByHdr), resp.Header.Get(meshErrorHdr)
	}
	r.end, r.err = time.Now(), err
	return r
}

// get is a GET of path on the upstream listener at bind, from the caller,
// with the headers given as name, value pairs.
func (m *l7Mesh) get(bind, path string, hdr ...string) l7Result {
	req, err := http.NewRequest(http.MethodGet, "http://"+bind+path, nil)
	if err != nil {
		return l7Result{desc: "GET " + path, err: err}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(m.client, req)
}

// l7Load is workers calling from the caller, bounded by a count and a
// time, optionally paced to a rate; every call is recorded.
type l7Load struct {
	mu      sync.Mutex
	results []l7Result
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// startLoad makes up to n calls, call(i) for i in [0, n), with l7Workers
// callers; rate > 0 paces them to rate calls a second in all.
func (m *l7Mesh) startLoad(n, rate int, call func(i int) l7Result) *l7Load {
	l := &l7Load{stop: make(chan struct{})}
	// One goroutine ends the load at its bound and, when paced, hands
	// the callers a token per tick; a tick they are too busy for is lost.
	var tokens chan struct{}
	var tick <-chan time.Time // nil, never ready, when not paced
	stopTick := func() {}
	if rate > 0 {
		tokens = make(chan struct{}, l7Workers)
		ticker := time.NewTicker(time.Second / time.Duration(rate))
		tick, stopTick = ticker.C, ticker.Stop
	}
	go func() {
		defer stopTick()
		bound := time.NewTimer(l7CallBound)
		defer bound.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-bound.C:
				l.halt()
				return
			case <-tick:
				select {
				case tokens <- struct{}{}:
				default:
				}
			}
		}
	}()
	var next atomic.Int64
	for range l7Workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				if tokens != nil {
					select {
					case <-l.stop:
						return
					case <-tokens:
					}
				}
				select {
				case <-l.stop:
					return
				default:
				}
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				r := call(i)
				r.index = i
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *l7Load) halt() { l.once.Do(func() { close(l.stop) }) }

// wait waits for the callers to end, after n calls or at the bound, and
// returns every call.
func (l *l7Load) wait() []l7Result {
	l.wg.Wait()
	l.halt() // ends the goroutine of the bound and the pacer
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.results)
}

// finish stops the callers and returns every call.
func (l *l7Load) finish() []l7Result {
	l.halt()
	return l.wait()
}

// snapshot returns the calls recorded so far.
func (l *l7Load) snapshot() []l7Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.results)
}

// tally counts the answers that reached an instance by instance, and the
// failures (no answer from an instance, or not its body), keeping the
// first few. A request that reached an instance but lost its body counts
// in both: where it went is still a fact about routing.
type tally struct {
	served   map[string]int
	failed   int
	failures []string
}

func tallyOf(rs []l7Result) tally {
	t := tally{served: map[string]int{}}
	for _, r := range rs {
		if r.reached() {
			t.served[r.served]++
		}
		if !r.ok() {
			t.failed++
			if len(t.failures) < 5 {
				t.failures = append(t.failures, r.String())
			}
		}
	}
	return t
}

// startL7Mesh starts the hosts, the apps and the agents, waits until the
// caller sees every instance passing behind a serving tunnel and every
// agent holds its leaf, applies l7Policy and waits until every agent
// holds it.
func startL7Mesh(t *testing.T) *l7Mesh {
	t.Helper()
	nw := New(t, 4)
	h1, h2, h3, h4 := nw.Hosts[0], nw.Hosts[1], nw.Hosts[2], nw.Hosts[3]
	m := &l7Mesh{caller: h2, client: hostClient(h2, l7Workers), apps: map[string]*l7App{}}
	t.Cleanup(m.client.CloseIdleConnections)

	// The apps, before the agents register them: an instance without
	// checks passes at once.
	for _, a := range []struct {
		h    *Host
		port int
		name string
	}{
		{h3, apiPort, "api-v1"}, {h4, apiPort, "api-v2"}, {h4, canaryPort, "api-canary"},
		{h3, bgPort, "bg-blue"}, {h4, bgPort, "bg-green"}, {h3, filesPort, "files"},
	} {
		m.apps[a.name] = serveApp(t, a.h, a.port, a.name, nil)
	}
	bClient := hostClient(h3, l7Workers)
	t.Cleanup(bClient.CloseIdleConnections)
	m.apps["b"] = serveApp(t, h3, bPort, "b", forwardToC(bClient))
	m.apps["c"] = serveApp(t, h4, cPort, "c", slowC)

	enc, ck := Key(), Key()
	join := []string{h1.Addr}
	server := h1.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Server: true, BootstrapExpect: 1})
	Eventually(t, 90*time.Second, "the CA on h1", func() error {
		_, err := server.CLI("ca", "roots")
		return err
	})
	m.agents = append(m.agents, server)
	services := map[*Host]string{
		h2: fmt.Sprintf(`services:
  - name: client
    id: client
    upstreams:
      - {service: api, local_bind: %q}
      - {service: bg, local_bind: %q}
      - {service: b, local_bind: %q}
      - {service: files, local_bind: %q}
`, apiUpstream, bgUpstream, bUpstream, filesUpstream),
		h3: fmt.Sprintf(`services:
  - {name: api, id: api-v1, port: %d, tags: [v1]}
  - {name: bg, id: bg-blue, port: %d, tags: [blue]}
  - name: b
    id: b
    port: %d
    upstreams:
      - {service: c, local_bind: %q}
  - {name: files, id: files, port: %d}
`, apiPort, bgPort, bPort, cUpstream, filesPort),
		h4: fmt.Sprintf(`services:
  - {name: api, id: api-v2, port: %d, tags: [v2]}
  - {name: api, id: api-canary, port: %d, tags: [canary]}
  - {name: bg, id: bg-green, port: %d, tags: [green]}
  - {name: c, id: c, port: %d}
`, apiPort, canaryPort, bgPort, cPort),
	}
	holds := map[*Host][]string{h2: {"client"}, h3: {"api", "bg", "b", "files"}, h4: {"api", "bg", "c"}}
	for _, h := range []*Host{h2, h3, h4} {
		tok, err := server.Token(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		m.agents = append(m.agents, h.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: join, Token: tok, Extra: services[h]}))
	}
	waitForLeaves(t, m.agents[1:], holds)
	waitForInstances(t, m.agents[1], map[string]int{"api": 3, "bg": 2, "b": 1, "c": 1, "files": 1})
	waitForInstances(t, m.agents[2], map[string]int{"c": 1})
	m.apply(t, l7Policy)

	// Every upstream reaches its instances (the scenarios check the
	// bodies). b's /ping and c's /ping are answered by the apps
	// themselves.
	for _, w := range []struct{ bind, path string }{{apiUpstream, "/warmup"}, {bgUpstream, "/warmup"}, {bUpstream, "/ping"}, {filesUpstream, "/warmup"}} {
		Eventually(t, 30*time.Second, "a call through h2's upstream "+w.bind, func() error {
			if r := m.get(w.bind, w.path); !r.reached() {
				return errors.New(r.String())
			}
			return nil
		})
	}
	cClient := hostClient(h3, 1)
	defer cClient.CloseIdleConnections()
	Eventually(t, 30*time.Second, "a call through h3's upstream to c", func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+cUpstream+"/ping", nil)
		if r := do(cClient, req); !r.reached() {
			return errors.New(r.String())
		}
		return nil
	})
	return m
}

// waitForInstances waits until a sees each service with want instances
// passing, each on an alive node whose tunnel serves.
func waitForInstances(t *testing.T, a *Agent, want map[string]int) {
	t.Helper()
	Eventually(t, 90*time.Second, a.Host.Name+" sees every instance passing behind a tunnel", func() error {
		var nodes []api.Node
		if err := a.JSON(&nodes, "catalog", "nodes"); err != nil {
			return err
		}
		tunnels := map[string]bool{}
		for _, n := range nodes {
			tunnels[n.Name] = n.Status == "alive" && n.TunnelPort > 0
		}
		for svc, n := range want {
			var es []api.CatalogServiceEntry
			if err := a.JSON(&es, "catalog", "service", svc, "--passing"); err != nil {
				return err
			}
			ready := 0
			for _, e := range es {
				if tunnels[e.Node] {
					ready++
				}
			}
			if ready != n {
				return fmt.Errorf("%s: %d of %d instances passing behind a tunnel (nodes %v)", svc, ready, n, tunnels)
			}
		}
		return nil
	})
}

// apply applies src through the caller's agent and waits until every agent
// holds the policy at the index of the change.
func (m *l7Mesh) apply(t *testing.T, src string) { applyPolicy(t, m.agents[1], m.agents, src) }

// forwardToC is b's app: /chain calls c's /slow through b's local agent
// (the upstream on h3), forwarding the x-meshwork-deadline-ms it received,
// and relays c's answer (status, x-meshwork-error and body) to its caller.
// Other paths answer at once.
func forwardToC(client *http.Client) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/chain" {
			fmt.Fprintln(w, "b")
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+cUpstream+"/slow", nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if d := r.Header.Get(deadlineHdr); d != "" {
			req.Header.Set(deadlineHdr, d)
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, "b: call to c: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		if e := resp.Header.Get(meshErrorHdr); e != "" {
			w.Header().Set(meshErrorHdr, e)
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}
}

// slowC is c's app: /slow works far longer than A's budget, or until its
// caller goes away; other paths answer at once.
func slowC(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/slow" {
		fmt.Fprintln(w, "c")
		return
	}
	work := time.NewTimer(chainSleep) // the app's work, not a wait for an event
	defer work.Stop()
	select {
	case <-work.C:
		fmt.Fprintln(w, "c: done after", chainSleep)
	case <-r.Context().Done():
	}
}

// TestL7 runs the per-request scenarios of issue 25 on one cluster.
func TestL7(t *testing.T) {
	m := startL7Mesh(t)
	for _, tc := range []struct {
		name string
		run  func(*testing.T, *l7Mesh)
	}{
		{"a header canary takes every marked request and no other", l7HeaderCanary},
		{"a 90/10 split holds within 2 points over 10,000 requests", l7Split},
		{"a deadline across three hops is cut at the first hop's budget", l7Deadline},
		{"an L7 Intention denies one path and allows another", l7Intention},
		{"a blue-green switch under load fails no request", l7BlueGreen},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, m) })
	}
}

// l7HeaderCanary interleaves marked (x-canary: 1) and unmarked requests on
// the same kept-alive connections: every marked one goes to api-canary,
// no unmarked one does.
func l7HeaderCanary(t *testing.T, m *l7Mesh) {
	rs := m.startLoad(canaryCalls, 0, func(i int) l7Result {
		if i%2 == 0 {
			return m.get(apiUpstream, fmt.Sprintf("/canary-%d", i), "x-canary", "1")
		}
		return m.get(apiUpstream, fmt.Sprintf("/canary-%d", i))
	}).wait()
	if len(rs) != canaryCalls {
		t.Fatalf("made %d of %d calls within %s", len(rs), canaryCalls, l7CallBound)
	}
	var marked, unmarked []l7Result
	for _, r := range rs {
		if r.index%2 == 0 {
			marked = append(marked, r)
		} else {
			unmarked = append(unmarked, r)
		}
	}
	mt, ut := tallyOf(marked), tallyOf(unmarked)
	t.Logf("marked: %v, %d failed; unmarked: %v, %d failed", mt.served, mt.failed, ut.served, ut.failed)
	if mt.failed+ut.failed > 0 {
		t.Errorf("%d marked and %d unmarked requests failed; first: %v %v", mt.failed, ut.failed, mt.failures, ut.failures)
	}
	for name, n := range mt.served {
		if name != "api-canary" {
			t.Errorf("%d marked requests were served by %s, want api-canary only", n, name)
		}
	}
	if n := ut.served["api-canary"]; n > 0 {
		t.Errorf("%d unmarked requests were served by api-canary", n)
	}
}

// l7Split makes 10,000 unmarked requests on l7Workers kept-alive
// connections: api-v2 serves 10 % of them within 2 points, api-v1 the
// rest, the canary none.
func l7Split(t *testing.T, m *l7Mesh) {
	rs := m.startLoad(splitCalls, 0, func(i int) l7Result {
		return m.get(apiUpstream, fmt.Sprintf("/split-%d", i))
	}).wait()
	if len(rs) != splitCalls {
		t.Fatalf("made %d of %d calls within %s", len(rs), splitCalls, l7CallBound)
	}
	tl := tallyOf(rs)
	v2 := tl.served["api-v2"]
	share := 100 * float64(v2) / float64(splitCalls)
	t.Logf("FIGURE 90/10 split over %d requests on %d connections: %v, %d failed; api-v2 %.2f %%", splitCalls, l7Workers, tl.served, tl.failed, share)
	if tl.failed > 0 {
		t.Errorf("%d requests failed; first: %v", tl.failed, tl.failures)
	}
	for name, n := range tl.served {
		if name != "api-v1" && name != "api-v2" {
			t.Errorf("%d requests were served by %s, want api-v1 or api-v2", n, name)
		}
	}
	if share < 8 || share > 12 {
		t.Errorf("api-v2 served %.2f %% of the requests (%d of %d), want 10 %% ± 2", share, v2, splitCalls)
	}
}

// l7Deadline: the client calls b, whose Resilience gives every request
// chainBudget; b's app forwards the x-meshwork-deadline-ms it received on
// its call to c through its own agent; c works far longer. The client gets
// the mesh's 504, and b and c saw a deadline no larger than the budget.
func l7Deadline(t *testing.T, m *l7Mesh) {
	r := m.get(bUpstream, "/chain")
	by := "h2's agent"
	if r.served == "b" {
		by = "b's app, relaying its own call's answer"
	}
	t.Logf("the chain answered in %s, from %s: %s", r.end.Sub(r.start).Round(time.Millisecond), by, r)
	if r.err != nil {
		t.Fatalf("the call to b failed without an answer: %v", r.err)
	}
	if r.status != http.StatusGatewayTimeout {
		t.Errorf("the call to b answered %d, want 504 (%s)", r.status, r)
	}
	if r.meshError != "timeout" && r.meshError != "deadline_exceeded" {
		t.Errorf("%s is %q, want timeout or deadline_exceeded (%s)", meshErrorHdr, r.meshError, r)
	}
	if !strings.HasPrefix(r.body, "meshwork: ") {
		t.Errorf("the body %q is not the mesh's (want \"meshwork: <detail>\")", clip(r.body))
	}
	budgetMS := chainBudget.Milliseconds()
	for _, hop := range []struct{ app, path string }{{"b", "/chain"}, {"c", "/slow"}} {
		seen := m.apps[hop.app].requests(hop.path)
		if len(seen) != 1 {
			t.Errorf("%s's app saw %d requests for %s, want 1", hop.app, len(seen), hop.path)
			continue
		}
		d := seen[0].deadline
		ms, err := strconv.ParseInt(d, 10, 64)
		switch {
		case d == "":
			t.Errorf("%s's app got no %s", hop.app, deadlineHdr)
		case err != nil || ms < 0:
			t.Errorf("%s's app got %s: %q, want a count of milliseconds", hop.app, deadlineHdr, d)
		case ms > budgetMS:
			t.Errorf("%s's app got %s: %d, more than A's budget of %d", hop.app, deadlineHdr, ms, budgetMS)
		default:
			t.Logf("%s's app got %s: %d (budget %d)", hop.app, deadlineHdr, ms, budgetMS)
		}
	}
}

// l7Intention: an Intention for files lets the client GET /public/...
// and denies /admin. The denied request gets the mesh's 403 and never
// reaches the app; the allowed one gets the app's 200.
func l7Intention(t *testing.T, m *l7Mesh) {
	m.apply(t, `kind: Intention
name: files
sources:
  - name: client
    permissions:
      - action: allow
        http: {path_prefix: /public, methods: [GET]}
      - action: deny
        http: {path_exact: /admin}
`)
	allowed := m.get(filesUpstream, "/public/readme")
	if !allowed.ok() || allowed.served != "files" {
		t.Errorf("the allowed path: %s, want 200 from files", allowed)
	}
	denied := m.get(filesUpstream, "/admin")
	if denied.err != nil || denied.status != http.StatusForbidden || denied.meshError != "denied" || denied.served != "" {
		t.Errorf("the denied path: %s, want the mesh's 403 with %s: denied", denied, meshErrorHdr)
	}
	if !strings.HasPrefix(denied.body, "meshwork: ") {
		t.Errorf("the denied path's body %q is not the mesh's (want \"meshwork: <detail>\")", clip(denied.body))
	}
	if n := len(m.apps["files"].requests("/admin")); n > 0 {
		t.Errorf("files' app saw /admin %d times; a denied request must not reach it", n)
	}
	// And again on the same connections, the other way round: the
	// decision is the request's, not the connection's.
	if r := m.get(filesUpstream, "/public/again"); !r.ok() || r.served != "files" {
		t.Errorf("the allowed path after a denial: %s, want 200 from files", r)
	}
}

// l7BlueGreen: bg's default Split sends everything to blue; under bgRate
// requests a second on kept-alive connections, a new Split sends
// everything to green. No request fails, and every request that starts
// after green first answered is green's.
func l7BlueGreen(t *testing.T, m *l7Mesh) {
	load := m.startLoad(bgMaxCalls, bgRate, func(i int) l7Result {
		return m.get(bgUpstream, fmt.Sprintf("/bg-%d", i))
	})
	defer load.finish() // the callers stop however this ends
	Eventually(t, 20*time.Second, "a second of load before the switch", func() error {
		if n := len(load.snapshot()); n < bgRate {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	switched := time.Now()
	m.apply(t, "kind: Split\nname: bg\nsplits:\n  - {weight: 100, subset: {tags: [green]}}\n")
	applied := time.Now()
	var firstGreen time.Time // when green's first answer ended
	Eventually(t, 20*time.Second, "green answers", func() error {
		for _, r := range load.snapshot() {
			if r.reached() && r.served == "bg-green" && (firstGreen.IsZero() || r.end.Before(firstGreen)) {
				firstGreen = r.end
			}
		}
		if firstGreen.IsZero() {
			return errors.New("no answer from bg-green yet")
		}
		return nil
	})
	Eventually(t, 20*time.Second, fmt.Sprintf("%d calls started after green first answered", bgAfter), func() error {
		n := 0
		for _, r := range load.snapshot() {
			if r.start.After(firstGreen) {
				n++
			}
		}
		if n < bgAfter {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	rs := load.finish()
	if len(rs) == 0 {
		t.Fatal("no calls")
	}
	first, last := rs[0].start, rs[0].end
	before, after := map[string]int{}, map[string]int{}
	var failed []string
	nFailed := 0
	for _, r := range rs {
		first, last = minTime(first, r.start), maxTime(last, r.end)
		if !r.ok() {
			if len(failed) < 5 {
				failed = append(failed, fmt.Sprintf("%s (started %s after the apply began)", r, r.start.Sub(switched).Round(time.Millisecond)))
			}
			nFailed++
		}
		if !r.reached() {
			continue
		}
		if r.start.After(firstGreen) {
			after[r.served]++
		} else {
			before[r.served]++
		}
	}
	rate := float64(len(rs)) / last.Sub(first).Seconds()
	t.Logf("FIGURE blue-green: %d requests at %.0f/s (target %d/s), %d failed; the apply took %s, green first answered %s after it began; before: %v, after: %v",
		len(rs), rate, bgRate, nFailed, applied.Sub(switched).Round(time.Millisecond), firstGreen.Sub(switched).Round(time.Millisecond), before, after)
	if nFailed > 0 {
		t.Errorf("%d of %d requests failed during the switch, want 0; first: %v", nFailed, len(rs), failed)
	}
	if before["bg-blue"] == 0 {
		t.Errorf("blue served nothing before the switch: %v", before)
	}
	for name, n := range after {
		if name != "bg-green" {
			t.Errorf("%d requests started after green first answered were served by %s", n, name)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// clip shortens an answer's body for a message.
func clip(s string) string {
	const n = 512
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
