package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
)

// scriptedApp is an instance's app whose answers a test scripts: it
// counts every request it gets (the attempts, counted where they land)
// and answers with handle.
type scriptedApp struct {
	name      string
	port      int
	srv       *http.Server
	attempts  atomic.Int64 // requests received
	cancelled atomic.Int64 // requests whose caller went away first
	handle    func(a *scriptedApp, w http.ResponseWriter, r *http.Request)
}

func (a *scriptedApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.attempts.Add(1)
	a.handle(a, w, r)
}

// startScriptedApps starts n apps on one port number, on 127.0.0.1,
// 127.0.0.2, ..., as instances on n hosts would be.
func startScriptedApps(t *testing.T, n int, handle func(a *scriptedApp, w http.ResponseWriter, r *http.Request)) []*scriptedApp {
	t.Helper()
	var apps []*scriptedApp
	port := 0
	for i := range n {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", i+1, port))
		if err != nil {
			t.Fatal(err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		a := &scriptedApp{name: fmt.Sprintf("web-%d", i+1), port: port, handle: handle}
		var protos http.Protocols
		protos.SetHTTP1(true)
		protos.SetUnencryptedHTTP2(true)
		a.srv = &http.Server{Handler: a, Protocols: &protos}
		go a.srv.Serve(ln)
		t.Cleanup(func() { a.srv.Close() })
		apps = append(apps, a)
	}
	return apps
}

// retryPolicy adds Route rule options to the tests' policy.
type retryPolicy struct {
	*l7Policy
	opts   func(policy.Request) policy.RouteOptions
	frozen bool // the client's clock stands still (stoppedClock)
}

func (p *retryPolicy) RouteOptionsFor(service string, req policy.Request) policy.RouteOptions {
	if p.opts == nil || service != "web" {
		return policy.RouteOptions{}
	}
	return p.opts(req)
}

func (p *retryPolicy) deps(d *Deps) {
	p.l7Policy.deps(d)
	d.Routes = p
	if p.frozen {
		d.Clock = stoppedClock
	}
}

// stoppedClock is a balancer and budget clock that never moves: every
// request of a test falls in the retry budget's one window, so that the
// budget's bound holds exactly however long the test runs.
func stoppedClock() time.Duration { return time.Hour }

// retryMesh runs web's apps each behind an agent of its own, and a
// client agent; it returns the client and web's VIP address.
func retryMesh(t *testing.T, pol *retryPolicy, apps []*scriptedApp) (*agent, string) {
	t.Helper()
	pol.protos["web"] = "http"
	m := newMesh(t)
	for i, a := range apps {
		m.addAgent(fmt.Sprintf("s%d", i+1), []LocalService{{Name: "web", Address: fmt.Sprintf("127.0.0.%d", i+1), Ports: []int{a.port}}},
			agentOpts{deps: pol.deps})
	}
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	return client, client.vipAddr(t, "web", apps[0].port)
}

// retries is a Resilience with retries only.
func retries(attempts int, percent, minPerSecond int, on ...policy.RetryCondition) *policy.Resilience {
	return &policy.Resilience{Retries: &policy.Retries{Attempts: attempts, RetryOn: on,
		Budget: &policy.RetryBudget{Percent: percent, MinPerSecond: minPerSecond}}}
}

// load sends n requests from workers goroutines, bounded by a deadline,
// and returns how many were answered 200.
func load(t *testing.T, url string, n, workers int, newReq func(i int) *http.Request) (ok int64) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Minute)
	var next atomic.Int64
	var okN atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				resp, err := c.Do(newReq(i))
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					okN.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := next.Load(); got < int64(n) {
		t.Fatalf("sent %d of %d requests in the time allowed", got, n)
	}
	return okN.Load()
}

func getReq(url string) func(int) *http.Request {
	return func(int) *http.Request {
		r, _ := http.NewRequest("GET", url, nil)
		return r
	}
}

func totalAttempts(apps []*scriptedApp) int64 {
	var n int64
	for _, a := range apps {
		n += a.attempts.Load()
	}
	return n
}

// TestL7RetryFlakyInstance: one of three instances fails 30 % of its
// requests with 503. With retries on gateway errors, callers see at
// least 99.9 % success, and the instances get at most 1.2 attempts per
// request.
func TestL7RetryFlakyInstance(t *testing.T) {
	const requests = 3000
	apps := startScriptedApps(t, 3, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		if a.name == "web-1" && a.attempts.Load()%10 < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, a.name)
	})
	pol := &retryPolicy{l7Policy: newL7Policy()}
	pol.res["web"] = retries(2, 20, 10, policy.RetryGatewayError)
	client, vip := retryMesh(t, pol, apps)

	ok := load(t, "http://"+vip+"/", requests, 16, getReq("http://"+vip+"/"))
	attempts := totalAttempts(apps)
	t.Logf("%d of %d answered 200; %d attempts at the instances (%d at the flaky one)", ok, requests, attempts, apps[0].attempts.Load())
	if ok*1000 < requests*999 {
		t.Errorf("%d of %d requests succeeded, want at least 99.9 %%", ok, requests)
	}
	if attempts*10 > requests*12 {
		t.Errorf("%d attempts for %d requests, want at most 1.2 per request", attempts, requests)
	}
	if apps[0].attempts.Load() == 0 || attempts <= requests {
		t.Errorf("the flaky instance got %d requests and %d were retried: the test did not test retries", apps[0].attempts.Load(), attempts-requests)
	}
	if got := client.metric(t, "meshwork_l7_retries_total", "reason", "gateway-error"); int64(got) != attempts-requests {
		t.Errorf("meshwork_l7_retries_total{reason=gateway-error} = %v, want the %d extra attempts", got, attempts-requests)
	}
}

// TestL7RetryBudgetStopsStorm: every instance fails. Retries stop at the
// budget: at most (1 + 20 %) attempts per request reach the instances,
// and the retries refused are counted.
func TestL7RetryBudgetStopsStorm(t *testing.T) {
	const requests = 1000
	apps := startScriptedApps(t, 3, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	pol := &retryPolicy{l7Policy: newL7Policy(), frozen: true}
	pol.res["web"] = retries(3, 20, 0, policy.Retry5xx)
	client, vip := retryMesh(t, pol, apps)

	ok := load(t, "http://"+vip+"/", requests, 16, getReq("http://"+vip+"/"))
	attempts := totalAttempts(apps)
	t.Logf("%d attempts for %d requests", attempts, requests)
	if ok != 0 {
		t.Errorf("%d requests succeeded against instances that all fail", ok)
	}
	if attempts*10 > requests*12 {
		t.Errorf("%d attempts for %d requests, want at most 1.2 per request: a retry storm", attempts, requests)
	}
	if attempts <= requests {
		t.Errorf("no retry was made (%d attempts): the budget allows 20 %%", attempts)
	}
	if got := client.metric(t, "meshwork_l7_retries_budget_exhausted_total"); got == 0 {
		t.Error("no retry was refused by the budget")
	}
}

// TestL7RetryIdempotency: a POST answered 503 is not retried unless its
// route marks it safe; a GET is; a PUT whose body is over 64 KiB is not.
func TestL7RetryIdempotency(t *testing.T) {
	apps := startScriptedApps(t, 3, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	pol := &retryPolicy{l7Policy: newL7Policy(), opts: func(r policy.Request) policy.RouteOptions {
		return policy.RouteOptions{RetryNonIdempotent: strings.HasPrefix(r.Path, "/safe")}
	}}
	// A floor of 1000 a second: the budget does not stand in the way.
	pol.res["web"] = retries(2, 20, 1000, policy.RetryGatewayError)
	_, vip := retryMesh(t, pol, apps)
	c := &http.Client{}
	defer c.CloseIdleConnections()

	tests := []struct {
		name, method, path string
		body               int
		wantAttempts       int64
	}{
		{"POST", "POST", "/orders", 10, 1},
		{"PATCH", "PATCH", "/orders", 10, 1},
		{"POST marked safe", "POST", "/safe/orders", 10, 3},
		{"GET", "GET", "/orders", 0, 3},
		{"PUT", "PUT", "/orders", 1 << 10, 3},
		{"PUT over 64 KiB", "PUT", "/orders", 65<<10 + 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := totalAttempts(apps)
			for i := range 5 {
				req, _ := http.NewRequest(tt.method, "http://"+vip+tt.path, bytes.NewReader(make([]byte, tt.body)))
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("request %d: status %d, want the instances' 503 relayed", i, resp.StatusCode)
				}
			}
			if got := totalAttempts(apps) - before; got != 5*tt.wantAttempts {
				t.Errorf("%d attempts for 5 requests, want %d each", got, tt.wantAttempts)
			}
		})
	}
}

// TestL7RetryNeverSentPOST: a POST whose stream an instance's agent
// refuses (it never reached an app) is retried on another instance.
func TestL7RetryNeverSentPOST(t *testing.T) {
	apps := startScriptedApps(t, 2, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, a.name)
	})
	// web-1's app is gone: its agent answers 502 connect_failed.
	apps[0].srv.Close()
	pol := &retryPolicy{l7Policy: newL7Policy()}
	pol.res["web"] = retries(2, 20, 1000, policy.RetryConnectFailure)
	_, vip := retryMesh(t, pol, apps)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	for i := range 20 {
		resp, err := c.Post("http://"+vip+"/orders", "text/plain", strings.NewReader("order "+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "web-2" {
			t.Fatalf("POST %d: %d %q, want web-2's answer after the retry", i, resp.StatusCode, b)
		}
	}
	if got := apps[1].attempts.Load(); got != 20 {
		t.Errorf("web-2 got %d requests, want each of the 20 once", got)
	}
}

// TestL7Hedge: the instance a request goes to first holds it; after that
// instance's p95 latency a hedge goes to the other one, whose answer
// wins, and the first try is cancelled at its app.
func TestL7Hedge(t *testing.T) {
	var (
		mu    sync.Mutex
		first = map[string]string{} // request id -> the app that got it first
	)
	apps := startScriptedApps(t, 2, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if id == "" {
			io.WriteString(w, a.name) // warm-up: answer at once
			return
		}
		mu.Lock()
		_, seen := first[id]
		if !seen {
			first[id] = a.name
		}
		mu.Unlock()
		if !seen {
			// The slow instance: nothing until the caller gives up.
			<-r.Context().Done()
			a.cancelled.Add(1)
			return
		}
		io.WriteString(w, a.name)
	})
	pol := &retryPolicy{l7Policy: newL7Policy(), opts: func(r policy.Request) policy.RouteOptions {
		return policy.RouteOptions{Hedge: r.Path == "/hedge"}
	}}
	res := retries(1, 20, 100, policy.RetryGatewayError)
	// One failure ejects: a try cut because the other one answered first
	// must not count as one.
	res.OutlierDetection = &policy.OutlierDetection{ConsecutiveErrors: 1, Interval: policy.Duration(10 * time.Second),
		BaseEjectionTime: policy.Duration(30 * time.Second), MaxEjectedPercent: 50}
	pol.res["web"] = res
	client, vip := retryMesh(t, pol, apps)
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()

	// Warm up: both instances' p95 needs samples.
	// 50 each: the estimate halves every 10 s, and needs 20. A latency
	// spike can steer peak-EWMA away from one instance for seconds (its
	// estimate decays over 10 s), so the bound leaves room for that.
	for i := 0; apps[0].attempts.Load() < 50 || apps[1].attempts.Load() < 50; i++ {
		if i == 20000 {
			t.Fatalf("after %d requests the instances got %d and %d", i, apps[0].attempts.Load(), apps[1].attempts.Load())
		}
		get(t, c, "GET", "http://"+vip+"/", nil)
	}
	const hedged = 20
	warm := totalAttempts(apps)
	for i := range hedged {
		id := strconv.Itoa(i)
		resp, body := get(t, c, "GET", "http://"+vip+"/hedge", map[string]string{"X-Request-Id": id})
		mu.Lock()
		slow := first[id]
		mu.Unlock()
		if resp.StatusCode != http.StatusOK || body == "" || body == slow {
			t.Fatalf("hedged request %d: %d %q; the slow instance was %q", i, resp.StatusCode, body, slow)
		}
	}
	eventually(t, "every first try cancelled at its app", func() bool {
		return apps[0].cancelled.Load()+apps[1].cancelled.Load() == hedged
	})
	// Usually the hedge wins; when the hedge reaches its app before the
	// first try reaches its own, the first try answers and the hedge is
	// the one held and cancelled.
	won := client.metric(t, "meshwork_l7_hedges_total", "result", "won")
	lost := client.metric(t, "meshwork_l7_hedges_total", "result", "lost")
	if won+lost != hedged || won == 0 {
		t.Errorf("meshwork_l7_hedges_total: won %v, lost %v; want %d in all, most of them won", won, lost, hedged)
	}
	if got := totalAttempts(apps) - warm; got != 2*hedged {
		t.Errorf("%d attempts for %d hedged requests, want two each", got, hedged)
	}
	if n := client.metric(t, "meshwork_transport_outlier_ejections_total", "service", "web"); n != 0 {
		t.Errorf("%v ejections: the tries cut by a hedge's answer were taken for failures", n)
	}
}

// TestL4ConnectRetriesDrawFromBudget: every instance's app refuses
// connections, so each connection's connect would try three instances.
// The retries after the first draw from the service's budget: at most
// 20 % more dials than connections reach the instances.
func TestL4ConnectRetriesDrawFromBudget(t *testing.T) {
	const conns = 200
	var dials atomic.Int64
	refuse := func(d *Deps) {
		d.DialLocal = func(ctx context.Context, network, address string) (net.Conn, error) {
			dials.Add(1)
			return nil, errors.New("test: the app refuses connections")
		}
	}
	pol := newL7Policy()
	pol.res["db"] = retries(2, 20, 0, policy.RetryConnectFailure)
	m := newMesh(t)
	for i := range 3 {
		m.addAgent(fmt.Sprintf("s%d", i+1), []LocalService{{Name: "db", Ports: []int{5432}}}, agentOpts{deps: refuse})
	}
	client := m.addAgent("client", nil, agentOpts{deps: func(d *Deps) { pol.deps(d); d.Clock = stoppedClock }})
	vip := client.vipAddr(t, "db", 5432)
	for i := range conns {
		// The agent cuts a connection it cannot carry, sometimes before
		// the dial returns.
		c, err := net.Dial("tcp", vip)
		if errors.Is(err, syscall.ECONNRESET) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("connection %d: read %d bytes, %v; want it closed", i, n, err)
		}
		c.Close()
	}
	got := dials.Load()
	t.Logf("%d dials at the instances for %d connections", got, conns)
	if got*10 > conns*12 {
		t.Errorf("%d dials for %d connections, want at most 1.2 per connection", got, conns)
	}
	if got <= conns {
		t.Errorf("%d dials for %d connections: no connect was retried", got, conns)
	}
	if n := client.metric(t, "meshwork_retrybudget_exhausted_total"); n == 0 {
		t.Error("no connect retry was refused by the budget")
	}
}

// TestL7RetryPerTryTimeout: one instance never answers; after
// per_try_timeout the request goes to the other one, and the first try is
// cancelled at its app.
func TestL7RetryPerTryTimeout(t *testing.T) {
	apps := startScriptedApps(t, 2, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		if a.name == "web-1" {
			<-r.Context().Done()
			a.cancelled.Add(1)
			return
		}
		io.WriteString(w, a.name)
	})
	pol := &retryPolicy{l7Policy: newL7Policy()}
	res := retries(1, 20, 100, policy.RetryGatewayError)
	res.Retries.PerTryTimeout = policy.Duration(100 * time.Millisecond)
	pol.res["web"] = res
	_, vip := retryMesh(t, pol, apps)
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	for i := range 10 {
		resp, body := get(t, c, "GET", "http://"+vip+"/", nil)
		if resp.StatusCode != http.StatusOK || body != "web-2" {
			t.Fatalf("request %d: %d %q, want web-2's answer", i, resp.StatusCode, body)
		}
	}
	if apps[0].attempts.Load() == 0 {
		t.Fatal("no request went to the instance that does not answer: the test tested nothing")
	}
	eventually(t, "the timed-out tries cancelled at their app", func() bool {
		return apps[0].cancelled.Load() == apps[0].attempts.Load()
	})
}

// TestL7RetryGRPCUnavailable: the instance a call reaches first answers
// a trailers-only UNAVAILABLE. On a route that marks its calls safe (gRPC
// calls are POSTs) they are retried on the other instance; on another
// route the UNAVAILABLE reaches the caller.
func TestL7RetryGRPCUnavailable(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{} // call id -> an instance answered it
	apps := startScriptedApps(t, 2, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		id := r.Header.Get("X-Request-Id")
		mu.Lock()
		first := !seen[id]
		seen[id] = true
		mu.Unlock()
		w.Header().Set("Content-Type", "application/grpc")
		if first {
			w.Header().Set("Grpc-Status", "14")
			w.Header().Set("Grpc-Message", "draining")
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte{0, 0, 0, 0, 0})
		w.Header().Set("Grpc-Status", "0")
	})
	pol := &retryPolicy{l7Policy: newL7Policy(), opts: func(r policy.Request) policy.RouteOptions {
		return policy.RouteOptions{RetryNonIdempotent: strings.HasPrefix(r.Path, "/pkg.Safe/")}
	}}
	pol.res["web"] = retries(1, 20, 100, policy.RetryGRPCUnavailable)
	pol.protos["web"] = "grpc"
	m := newMesh(t)
	for i, a := range apps {
		m.addAgent(fmt.Sprintf("s%d", i+1), []LocalService{{Name: "web", Address: fmt.Sprintf("127.0.0.%d", i+1), Ports: []int{a.port}}},
			agentOpts{deps: pol.deps})
	}
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	vip := client.vipAddr(t, "web", apps[0].port)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	call := func(method, id string) (grpcStatus string) {
		req, _ := http.NewRequest("POST", "http://"+vip+method, bytes.NewReader([]byte{0, 0, 0, 0, 0}))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("X-Request-Id", id)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if s := resp.Header.Get("Grpc-Status"); s != "" {
			return s
		}
		return resp.Trailer.Get("Grpc-Status")
	}
	for i := range 20 {
		if got := call("/pkg.Safe/Get", "safe-"+strconv.Itoa(i)); got != "0" {
			t.Fatalf("marked call %d: grpc-status %q, want 0 after the retry", i, got)
		}
	}
	if got := totalAttempts(apps); got != 40 {
		t.Errorf("%d attempts for 20 marked calls, want two each", got)
	}
	for i := range 20 {
		if got := call("/pkg.Other/Put", "other-"+strconv.Itoa(i)); got != "14" {
			t.Fatalf("unmarked call %d: grpc-status %q, want the instance's 14", i, got)
		}
	}
	if got := totalAttempts(apps); got != 60 {
		t.Errorf("%d attempts for 20 unmarked calls, want one each", got-40)
	}
}

// TestL7RetryDiscardsFailedAnswer: the instance a request reaches first
// answers 503 with a body, short or long; the request is retried and the
// failed answer discarded: drained when short, cut when long, and its
// stream released at both agents.
func TestL7RetryDiscardsFailedAnswer(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	apps := startScriptedApps(t, 2, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		mu.Lock()
		first := !seen[id]
		seen[id] = true
		mu.Unlock()
		if !first {
			io.WriteString(w, "ok")
			return
		}
		size, _ := strconv.Atoi(r.URL.Query().Get("body"))
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write(bytes.Repeat([]byte("x"), size))
	})
	pol := &retryPolicy{l7Policy: newL7Policy()}
	pol.protos["web"] = "http"
	pol.res["web"] = retries(1, 20, 100, policy.RetryGatewayError)
	m := newMesh(t)
	var servers []*agent
	for i, a := range apps {
		servers = append(servers, m.addAgent(fmt.Sprintf("s%d", i+1),
			[]LocalService{{Name: "web", Address: fmt.Sprintf("127.0.0.%d", i+1), Ports: []int{a.port}}}, agentOpts{deps: pol.deps}))
	}
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	vip := client.vipAddr(t, "web", apps[0].port)
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			tr := &http.Transport{}
			if proto == "h2c" {
				var protos http.Protocols
				protos.SetUnencryptedHTTP2(true)
				tr.Protocols = &protos
			}
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			defer c.CloseIdleConnections()
			for i, size := range []int{0, 1 << 10, 60 << 10, 300 << 10, 4 << 20} {
				id := fmt.Sprintf("%s-%d", proto, i)
				resp, body := get(t, c, "GET", fmt.Sprintf("http://%s/?body=%d", vip, size), map[string]string{"X-Request-Id": id})
				if resp.StatusCode != http.StatusOK || body != "ok" {
					t.Fatalf("failed answer of %d bytes: then %d %q, want the retry's ok", size, resp.StatusCode, body)
				}
			}
		})
	}
	for _, s := range servers {
		eventually(t, s.name+" to end every inbound request", func() bool {
			return s.metric(t, "meshwork_l7_active_requests", "direction", "inbound") == 0
		})
	}
	if got := client.metric(t, "meshwork_l7_active_requests", "direction", "outbound"); got != 0 {
		t.Errorf("client: %v outbound requests still active", got)
	}
}

// BenchmarkL7Retries sends GETs through two agents with nothing failing,
// side by side in one run: retries off (attempts 0), retries on (2 on
// 5xx, from the budget), and hedging on too. It shows what the retry
// path costs a request that needs no retry.
func BenchmarkL7Retries(b *testing.B) {
	for _, mode := range []string{"off", "retries", "retries+hedge"} {
		b.Run(mode, func(b *testing.B) {
			pol := &retryPolicy{l7Policy: newL7Policy(), opts: func(policy.Request) policy.RouteOptions {
				return policy.RouteOptions{Hedge: mode == "retries+hedge"}
			}}
			pol.protos["web"] = "http"
			pol.res["web"] = retries(0, 20, 10)
			if mode != "off" {
				pol.res["web"] = retries(2, 20, 10, policy.Retry5xx)
			}
			m := newMesh(b)
			app := startHTTPApp(b, "web-1")
			m.addAgent("server", []LocalService{{Name: "web", Ports: []int{app.port}}}, agentOpts{deps: pol.deps})
			client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
			url := "http://" + client.vipAddr(b, "web", app.port) + "/"
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer c.CloseIdleConnections()
			b.ReportAllocs()
			b.SetParallelism(l7BenchParallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
