package transport

import (
	"bufio"
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
	"testing"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/telemetry/signals"
	"github.com/meshwork/meshwork/transport/l7"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// httpApp is a local app speaking HTTP/1.1 and h2c: it answers with its
// name, the request's method, path and deadline header, echoes the body,
// and sends a trailer.
type httpApp struct {
	name string
	port int
	srv  *http.Server

	mu        sync.Mutex
	seen      []*http.Request // heads of the requests it got
	hold      chan struct{}   // when set, requests to /hold wait on it
	cancelled atomic.Int32    // held requests whose caller gave up
}

func startHTTPApp(t testing.TB, name string) *httpApp {
	t.Helper()
	return startHTTPAppAt(t, name, "127.0.0.1:0")
}

// startHTTPAppAt starts the app on addr.
func startHTTPAppAt(t testing.TB, name, addr string) *httpApp {
	t.Helper()
	return startHTTPAppWith(t, name, addr, nil)
}

// startHTTPAppWith starts the app on addr, its server set up by tune.
func startHTTPAppWith(t testing.TB, name, addr string, tune func(*http.Server)) *httpApp {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	a := &httpApp{name: name, port: ln.Addr().(*net.TCPAddr).Port, hold: make(chan struct{})}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	a.srv = &http.Server{Handler: a, Protocols: &protos}
	if tune != nil {
		tune(a.srv)
	}
	go a.srv.Serve(ln)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

func (a *httpApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, &http.Request{Method: r.Method, URL: r.URL, Header: r.Header.Clone(), Proto: r.Proto})
	a.mu.Unlock()
	if r.URL.Path == "/hold" {
		select {
		case <-a.hold:
		case <-r.Context().Done():
			a.cancelled.Add(1)
			return
		}
	}
	if r.URL.Path == "/stall" {
		// A first piece of the answer, then nothing until released.
		io.WriteString(w, "start")
		w.(http.Flusher).Flush()
		select {
		case <-a.hold:
		case <-r.Context().Done():
			a.cancelled.Add(1)
		}
		return
	}
	if ms := r.URL.Query().Get("status"); ms != "" {
		code, _ := strconv.Atoi(ms)
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Trailer", "X-Body-Bytes")
	w.Header().Set("X-App", a.name)
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Deadline", r.Header.Get(l7.DeadlineHeader))
	// Read whole, then answer: an HTTP/1.1 handler may not read the body
	// once it has started its answer.
	b, _ := io.ReadAll(r.Body)
	w.Write(b)
	n := len(b)
	w.Header().Set("X-Body-Bytes", strconv.Itoa(n))
}

func (a *httpApp) requests() []*http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*http.Request(nil), a.seen...)
}

// l7Policy is the data plane's policy for these tests, set field by field.
type l7Policy struct {
	mu     sync.Mutex
	protos map[string]string
	routes map[string]func(policy.Request) []SplitTarget
	res    map[string]*policy.Resilience
	deny   map[string]bool // "METHOD path" denied
	faults map[string]*policy.Fault
}

func newL7Policy() *l7Policy {
	return &l7Policy{protos: map[string]string{}, routes: map[string]func(policy.Request) []SplitTarget{},
		res: map[string]*policy.Resilience{}, deny: map[string]bool{}, faults: map[string]*policy.Fault{}}
}

func (p *l7Policy) ProtocolOf(service string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.protos[strings.ToLower(service)]
}

// RouteFor names a route that picks targets "<service>-route".
func (p *l7Policy) RouteFor(service string, req policy.Request) (string, []SplitTarget) {
	p.mu.Lock()
	f := p.routes[service]
	p.mu.Unlock()
	if f == nil {
		return "", nil
	}
	if targets := f(req); targets != nil {
		return service + "-route", targets
	}
	return "", nil
}

func (p *l7Policy) Resilience(service string) *policy.Resilience {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.res[service]; ok {
		return r
	}
	return &policy.DefaultResilience
}

func (p *l7Policy) Fault(service string) *policy.Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults[service]
}

func (p *l7Policy) AllowedRequest(src Source, dst string, req policy.Request) (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deny[req.Method+" "+req.Path] {
		return false, "test denies " + req.Method + " " + req.Path
	}
	return true, "allowed"
}

func (p *l7Policy) deps(d *Deps) {
	d.Protocols = p
	d.Routes = p
	d.Resilience = p.Resilience
	d.RequestAuthorizer = p
	d.Fault = p.Fault
}

// l7Mesh is a server agent running web (HTTP/1.1 app) and a client agent.
func l7Mesh(t *testing.T, pol *l7Policy) (app *httpApp, client *agent, vip string) {
	t.Helper()
	pol.protos["web"] = "http"
	m := newMesh(t)
	app = startHTTPApp(t, "web-1")
	m.addAgent("server", []LocalService{{Name: "web", Ports: []int{app.port}}}, agentOpts{deps: pol.deps})
	client = m.addAgent("client", nil, agentOpts{deps: pol.deps})
	return app, client, client.vipAddr(t, "web", app.port)
}

func TestL7KeepAliveChunkedAndTrailers(t *testing.T) {
	app, client, vip := l7Mesh(t, newL7Policy())
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	for i := range 3 {
		body := strings.Repeat("x", 1000*(i+1))
		// A reader of unknown length: sent chunked.
		resp, err := c.Post("http://"+vip+"/echo?i="+strconv.Itoa(i), "text/plain", io.MultiReader(strings.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(got) != body {
			t.Fatalf("request %d: body %d bytes, %v; want %d bytes; head %v trailer %v", i, len(got), err, len(body), resp.Header, resp.Trailer)
		}
		if resp.Header.Get("X-App") != "web-1" || resp.Trailer.Get("X-Body-Bytes") != strconv.Itoa(len(body)) {
			t.Fatalf("request %d: X-App %q, trailer X-Body-Bytes %q", i, resp.Header.Get("X-App"), resp.Trailer.Get("X-Body-Bytes"))
		}
	}
	if n := len(app.requests()); n != 3 {
		t.Fatalf("app got %d requests, want 3", n)
	}
	if got := client.metric(t, "meshwork_l7_requests_total", "direction", "outbound", "class", "2xx"); got != 3 {
		t.Errorf("outbound 2xx requests = %v, want 3", got)
	}
}

// get sends a request through c and returns the answer with its body read.
func get(t *testing.T, c *http.Client, method, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestL7HeaderCanary routes requests that carry x-canary: 1 to the canary
// instance (Route rule, then its Split), all others to the stable one, on
// one keep-alive connection: the choice is per request.
func TestL7HeaderCanary(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	pol.routes["web"] = func(req policy.Request) []SplitTarget {
		if v, ok := req.Header("X-Canary"); ok && v == "1" {
			return []SplitTarget{{Tags: []string{"canary"}, Weight: 100}}
		}
		return []SplitTarget{{Tags: []string{"stable"}, Weight: 100}}
	}
	m := newMesh(t)
	stable := startHTTPApp(t, "stable")
	// The instances share a port number, as on two hosts; the canary's
	// app listens on another loopback address.
	canary := startHTTPAppAt(t, "canary", fmt.Sprintf("127.0.0.2:%d", stable.port))
	m.addAgent("s1", []LocalService{{Name: "web", Ports: []int{stable.port}}}, agentOpts{deps: pol.deps, tags: map[string][]string{"web": {"stable"}}})
	m.addAgent("s2", []LocalService{{Name: "web", Address: "127.0.0.2", Ports: []int{stable.port}}}, agentOpts{deps: pol.deps, tags: map[string][]string{"web": {"canary"}}})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	vip := client.vipAddr(t, "web", stable.port)
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	for i := range 40 {
		marked := i%3 == 0
		h := map[string]string{}
		want := "stable"
		if marked {
			h["X-Canary"] = "1"
			want = "canary"
		}
		resp, _ := get(t, c, "GET", "http://"+vip+"/", h)
		if got := resp.Header.Get("X-App"); got != want {
			t.Fatalf("request %d (marked %v) answered by %q, want %q", i, marked, got, want)
		}
	}
	if n := len(canary.requests()); n != 14 {
		t.Errorf("canary got %d requests, want 14", n)
	}
}

// TestL7MeshErrors checks the mesh's own answers: each names the mesh and
// its reason, in HTTP and, for gRPC callers, as grpc-status.
func TestL7MeshErrors(t *testing.T) {
	pol := newL7Policy()
	pol.deny["GET /admin"] = true
	pol.res["web"] = &policy.Resilience{Timeouts: &policy.Timeouts{Request: policy.Duration(300 * time.Millisecond)}}
	app, _, vip := l7Mesh(t, pol)
	c := &http.Client{}
	defer c.CloseIdleConnections()

	resp, body := get(t, c, "GET", "http://"+vip+"/admin", nil)
	if resp.StatusCode != 403 || resp.Header.Get(l7.ErrorHeader) != l7.ReasonDenied || !strings.Contains(body, "test denies GET /admin") {
		t.Errorf("denied: %d %q %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader), body)
	}
	// The same denial for a gRPC caller: PERMISSION_DENIED, trailers-only.
	resp, body = get(t, c, "GET", "http://"+vip+"/admin", map[string]string{"Content-Type": "application/grpc"})
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "7" || resp.Header.Get(l7.ErrorHeader) != l7.ReasonDenied || body != "" {
		t.Errorf("denied gRPC: %d grpc-status %q %q body %q", resp.StatusCode, resp.Header.Get("Grpc-Status"), resp.Header.Get(l7.ErrorHeader), body)
	}
	// The app holds the request past the destination's 300 ms timeout.
	// Whichever agent gives up first answers: the receiving one cannot
	// tell a timeout from the caller's deadline.
	resp, _ = get(t, c, "GET", "http://"+vip+"/hold", nil)
	if reason := resp.Header.Get(l7.ErrorHeader); resp.StatusCode != 504 || (reason != l7.ReasonTimeout && reason != l7.ReasonDeadlineExceeded) {
		t.Errorf("timeout: %d %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader))
	}
	// The app's request is cancelled, not left to run for nobody.
	eventually(t, "the app to see its held request cancelled", func() bool { return app.cancelled.Load() == 1 })
	// A deadline already passed fails at once and never reaches the app.
	before := len(app.requests())
	resp, _ = get(t, c, "GET", "http://"+vip+"/late", map[string]string{l7.DeadlineHeader: "0"})
	if resp.StatusCode != 504 || resp.Header.Get(l7.ErrorHeader) != l7.ReasonDeadlineExceeded {
		t.Errorf("passed deadline: %d %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader))
	}
	if n := len(app.requests()); n != before {
		t.Errorf("a request past its deadline reached the app")
	}
	// The app is gone: the receiving agent cannot connect.
	app.srv.Close()
	resp, _ = get(t, c, "GET", "http://"+vip+"/", nil)
	if resp.StatusCode != 502 || resp.Header.Get(l7.ErrorHeader) != l7.ReasonConnectFailed {
		t.Errorf("app down: %d %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader))
	}
	resp, _ = get(t, c, "GET", "http://"+vip+"/", map[string]string{"Content-Type": "application/grpc+proto"})
	if resp.Header.Get("Grpc-Status") != "14" {
		t.Errorf("app down, gRPC: grpc-status %q, want 14 (UNAVAILABLE)", resp.Header.Get("Grpc-Status"))
	}
}

// TestL7NoInstance answers 503 when no instance is healthy.
func TestL7NoInstance(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	m := newMesh(t)
	app := startHTTPApp(t, "web-1")
	server := m.addAgent("server", []LocalService{{Name: "web", Ports: []int{app.port}}}, agentOpts{deps: pol.deps})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	vip := client.vipAddr(t, "web", app.port)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	if resp, _ := get(t, c, "GET", "http://"+vip+"/", nil); resp.StatusCode != 200 {
		t.Fatalf("healthy: %d", resp.StatusCode)
	}
	server.services[0].Health = catalog.Critical
	m.publish()
	client.reconciled(t)
	resp, body := get(t, c, "GET", "http://"+vip+"/", nil)
	if resp.StatusCode != 503 || resp.Header.Get(l7.ErrorHeader) != l7.ReasonNoInstance {
		t.Errorf("no healthy instance: %d %q %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader), body)
	}
}

// TestL7DeadlineDelivered hands the remaining budget to the app, and keeps
// the smaller of the caller's header and the destination's timeout.
func TestL7DeadlineDelivered(t *testing.T) {
	pol := newL7Policy()
	pol.res["web"] = &policy.Resilience{Timeouts: &policy.Timeouts{Request: policy.Duration(5 * time.Second)}}
	_, _, vip := l7Mesh(t, pol)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	for _, tc := range []struct {
		header map[string]string
		max    int64
	}{
		{nil, 5000},
		{map[string]string{l7.DeadlineHeader: "800"}, 800},
		{map[string]string{"Grpc-Timeout": "700m"}, 700},
		{map[string]string{l7.DeadlineHeader: "60000"}, 5000},
	} {
		resp, _ := get(t, c, "GET", "http://"+vip+"/", tc.header)
		ms, err := strconv.ParseInt(resp.Header.Get("X-Deadline"), 10, 64)
		if err != nil || ms <= 0 || ms > tc.max {
			t.Errorf("caller %v: the app got deadline %q ms, want 1..%d", tc.header, resp.Header.Get("X-Deadline"), tc.max)
		}
	}
}

// TestL7NoHeadOfLineBlocking holds one request in the app while others on
// the same h2c connection, and so on the same QUIC connection between the
// agents, are answered.
func TestL7NoHeadOfLineBlocking(t *testing.T) {
	app, _, vip := l7Mesh(t, newL7Policy())
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}}
	defer c.CloseIdleConnections()
	held := make(chan *http.Response, 1)
	go func() {
		resp, err := c.Get("http://" + vip + "/hold")
		if err != nil {
			held <- nil
			return
		}
		held <- resp
	}()
	eventually(t, "the held request to reach the app", func() bool {
		for _, r := range app.requests() {
			if r.URL.Path == "/hold" {
				return true
			}
		}
		return false
	})
	for i := range 5 {
		resp, _ := get(t, c, "GET", "http://"+vip+"/quick", nil)
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("request %d beside the held one: %d over HTTP/%d", i, resp.StatusCode, resp.ProtoMajor)
		}
	}
	close(app.hold)
	resp := <-held
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("held request: %v", resp)
	}
	resp.Body.Close()
}

// TestL7Upgrade carries an Upgrade request as a request, then, once the
// app switched protocols, the bytes both ways.
func TestL7Upgrade(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	m := newMesh(t)
	app := startBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Header.Get("Upgrade") != "echo" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br)
		c.(*net.TCPConn).CloseWrite()
	})
	serverRec, clientRec := &callRecorder{}, &callRecorder{}
	m.addAgent("server", []LocalService{{Name: "web", Ports: []int{app.port}}}, agentOpts{deps: observed(serverRec, pol.deps)})
	client := m.addAgent("client", nil, agentOpts{deps: observed(clientRec, pol.deps)})
	c := dial(t, client.vipAddr(t, "web", app.port))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade answer: %v, %v", resp, err)
	}
	for _, msg := range []string{"one", "two", "three"} {
		io.WriteString(c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %q after the upgrade: %q, %v", msg, buf, err)
		}
	}
	c.CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q, %v", rest, err)
	}
	if got := client.metric(t, "meshwork_l7_upgrades_total", "direction", "outbound"); got != 1 {
		t.Errorf("outbound upgrades = %v, want 1", got)
	}
	// One record on each side: the switch, and the bytes carried after
	// it each way.
	c.Close()
	for side, rec := range map[string]*callRecorder{"client": clientRec, "server": serverRec} {
		eventually(t, side+" to record the upgrade", func() bool { _, n := rec.counts(); return n == 1 })
		u := rec.calls(func(*observe.Call) bool { return true })[0]
		if u.Status != http.StatusSwitchingProtocols || u.Path != "/ws" || u.BytesIn != 11 || u.BytesOut != 11 || u.Result() != observe.Success {
			t.Errorf("%s's record of the upgrade: %+v", side, u)
		}
	}
}

// BenchmarkL7Request sends 1 KiB HTTP/1.1 POSTs on keep-alive connections
// through two agents and the per-request path, beside the same requests
// per connection (tcp) and direct, in one run.
func BenchmarkL7Request(b *testing.B) {
	// "+signals" runs the golden-signal observer on both agents.
	for _, path := range []string{"direct", "tcp", "http", "tcp+signals", "http+signals"} {
		b.Run(path, func(b *testing.B) {
			pol := newL7Policy()
			m := newMesh(b)
			app := startHTTPApp(b, "web-1")
			proto, withSignals := strings.CutSuffix(path, "+signals")
			pol.protos["web"] = proto
			deps := pol.deps
			if withSignals {
				deps = func(d *Deps) {
					pol.deps(d)
					sig, err := signals.New(d.Registerer)
					if err != nil {
						b.Fatal(err)
					}
					d.Observer = sig
				}
			}
			m.addAgent("server", []LocalService{{Name: "web", Ports: []int{app.port}}}, agentOpts{deps: deps})
			client := m.addAgent("client", nil, agentOpts{deps: deps})
			addr := client.vipAddr(b, "web", app.port)
			if path == "direct" {
				addr = fmt.Sprintf("127.0.0.1:%d", app.port)
			}
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer c.CloseIdleConnections()
			body := strings.Repeat("x", 1024)
			b.ReportAllocs()
			b.SetParallelism(l7BenchParallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Post("http://"+addr+"/", "text/plain", strings.NewReader(body))
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

// l7BenchParallelism is BenchmarkL7Request's clients per CPU.
var l7BenchParallelism = 4

// TestL7IdleAnswerCut cuts an answer that stops moving for the
// destination's idle timeout: the application gets what came, then an
// error, and the app's request is cancelled.
func TestL7IdleAnswerCut(t *testing.T) {
	pol := newL7Policy()
	pol.res["web"] = &policy.Resilience{Timeouts: &policy.Timeouts{Idle: policy.Duration(200 * time.Millisecond)}}
	app, _, vip := l7Mesh(t, pol)
	resp, err := http.Get("http://" + vip + "/stall")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil || string(got) != "start" {
		t.Fatalf("stalled answer: %q, %v; want \"start\" then an error", got, err)
	}
	eventually(t, "the app to see its stalled request cancelled", func() bool { return app.cancelled.Load() == 1 })
}

// TestL7StaleAppConnection: the app closes keep-alive connections that
// sat idle; the receiving agent's pooled connection is then closed under
// it, and the next request, whose short body was kept, is sent again on a
// new connection instead of failing.
func TestL7StaleAppConnection(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	closed := make(chan struct{}, 8)
	app := startHTTPAppWith(t, "web-1", "127.0.0.1:0", func(s *http.Server) {
		s.IdleTimeout = 30 * time.Millisecond
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				closed <- struct{}{}
			}
		}
	})
	m := newMesh(t)
	m.addAgent("server", []LocalService{{Name: "web", Ports: []int{app.port}}}, agentOpts{deps: pol.deps})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	vip := client.vipAddr(t, "web", app.port)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	post := func() *http.Response {
		resp, err := c.Post("http://"+vip+"/echo", "text/plain", strings.NewReader("short body"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := post(); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	select {
	case <-closed: // the app closed the agent's idle connection
	case <-time.After(10 * time.Second):
		t.Fatal("the app never closed its idle connection")
	}
	if resp := post(); resp.StatusCode != 200 {
		t.Fatalf("request after the app closed the pooled connection: %d %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader))
	}
}

// TestL7HeadAndHTTP10 answers a HEAD request with its head only, and an
// HTTP/1.0 client with an HTTP/1.0 answer that closes the connection.
func TestL7HeadAndHTTP10(t *testing.T) {
	_, _, vip := l7Mesh(t, newL7Policy())
	c := &http.Client{}
	defer c.CloseIdleConnections()
	resp, body := get(t, c, "HEAD", "http://"+vip+"/", nil)
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Method") != "HEAD" {
		t.Errorf("HEAD: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// A second request on the same connection still works after HEAD.
	if resp, _ := get(t, c, "GET", "http://"+vip+"/", nil); resp.StatusCode != 200 {
		t.Errorf("GET after HEAD: %d", resp.StatusCode)
	}

	conn := dial(t, vip)
	io.WriteString(conn, "POST /old HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	all, err := io.ReadAll(conn) // the agent closes after the answer
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(all))), nil)
	if err != nil {
		t.Fatalf("HTTP/1.0 answer %q: %v", all, err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.ProtoMinor != 0 || string(b) != "abc" || len(r.TransferEncoding) != 0 {
		t.Errorf("HTTP/1.0 answer: HTTP/1.%d, body %q, transfer-encoding %v", r.ProtoMinor, b, r.TransferEncoding)
	}
}

// TestL7BalancesByRequestLatency sends the requests of one keep-alive
// connection to two instances, one of whose apps takes 20 ms to answer:
// the choice is made per request, on request latency, so most go to the
// fast one (per connection, all would go to whichever was picked first).
func TestL7BalancesByRequestLatency(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	fast := startHTTPApp(t, "fast")
	slow := startHTTPAppWith(t, "slow", fmt.Sprintf("127.0.0.2:%d", fast.port), func(s *http.Server) {
		h := s.Handler
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(20 * time.Millisecond) // the app's own latency, not a wait for an event
			h.ServeHTTP(w, r)
		})
	})
	m := newMesh(t)
	m.addAgent("s1", []LocalService{{Name: "web", Ports: []int{fast.port}}}, agentOpts{deps: pol.deps})
	m.addAgent("s2", []LocalService{{Name: "web", Address: "127.0.0.2", Ports: []int{fast.port}}}, agentOpts{deps: pol.deps})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	vip := client.vipAddr(t, "web", fast.port)
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	const n = 60
	for range n {
		if resp, _ := get(t, c, "GET", "http://"+vip+"/", nil); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	nf, ns := len(fast.requests()), len(slow.requests())
	if nf+ns != n || nf < n*3/4 || ns == 0 {
		t.Errorf("fast instance got %d requests, slow %d: want both tried and at least %d on the fast one", nf, ns, n*3/4)
	}
}

// TestL7PerTryTimeout bounds one try by Resilience.retries.per_try_timeout
// when no request timeout is set.
func TestL7PerTryTimeout(t *testing.T) {
	pol := newL7Policy()
	pol.res["web"] = &policy.Resilience{Retries: &policy.Retries{PerTryTimeout: policy.Duration(200 * time.Millisecond)}}
	app, _, vip := l7Mesh(t, pol)
	resp, _ := get(t, &http.Client{}, "GET", "http://"+vip+"/hold", nil)
	if reason := resp.Header.Get(l7.ErrorHeader); resp.StatusCode != 504 || (reason != l7.ReasonTimeout && reason != l7.ReasonDeadlineExceeded) {
		t.Errorf("held past the per-try timeout: %d %q", resp.StatusCode, reason)
	}
	eventually(t, "the app to see its held request cancelled", func() bool { return app.cancelled.Load() == 1 })
}

// TestL7Connect carries a CONNECT request as a request, then, once the
// app answered 200, the bytes both ways.
func TestL7Connect(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	m := newMesh(t)
	app := startBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n")
		io.Copy(c, br)
		c.(*net.TCPConn).CloseWrite()
	})
	m.addAgent("server", []LocalService{{Name: "web", Ports: []int{app.port}}}, agentOpts{deps: pol.deps})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	c := dial(t, client.vipAddr(t, "web", app.port))
	io.WriteString(c, "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT answer: %v, %v", resp, err)
	}
	io.WriteString(c, "tunnelled")
	c.CloseWrite()
	if got, err := io.ReadAll(br); err != nil || string(got) != "tunnelled" {
		t.Fatalf("through the CONNECT tunnel: %q, %v", got, err)
	}
}

// TestL7GarbageOnAStream: a peer agent whose stream is marked as carrying a
// request but holds no readable request gets the stream cut, and the
// receiving agent counts it; the app sees nothing.
func TestL7GarbageOnAStream(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	m := newMesh(t)
	app := startHTTPApp(t, "web-1")
	server := m.addAgent("server", []LocalService{{Name: "web", Ports: []int{app.port}}}, agentOpts{deps: pol.deps})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	hdr := wire.Header{Service: "web", Port: uint16(app.port), Source: client.tr.nodeID, Extensions: httpExtension}
	to := tunnel.Peer{Node: "server", Addr: server.pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	s, err := client.tr.tun.OpenPipelined(context.Background(), to, &hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	io.WriteString(s, "\x00\x01 this is no request\r\n\r\n")
	s.CloseWrite()
	br := bufio.NewReader(s)
	// The stream is admitted before the request is read, so the cut may
	// come before or after the status: never an answer.
	if err := s.Status(br); err == nil {
		if rest, err := io.ReadAll(br); err == nil || len(rest) != 0 {
			t.Fatalf("after garbage the stream gave %q, %v; want it cut with nothing", rest, err)
		}
	} else if errors.Is(err, tunnel.ErrRefused) {
		t.Fatalf("status: %v; want the stream admitted, then cut", err)
	}
	eventually(t, "the receiving agent to count the bad request", func() bool {
		return server.metric(t, "meshwork_l7_mesh_errors_total", "direction", "inbound", "reason", l7.ReasonBadRequest) == 1
	})
	if n := len(app.requests()); n != 0 {
		t.Errorf("the app got %d requests", n)
	}
}
