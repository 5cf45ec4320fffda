package transport

// Fault policies on real agents' transports: real QUIC tunnels between two
// agents in one process, the Fault applied by the receiving agent to the
// requests of the service it hosts.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/telemetry/signals"
	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/l7"
	"github.com/meshwork/meshwork/transport/observe"
)

// faultApp answers every request 200 "ok" (gRPC: grpc-status 0), and
// counts the requests that reached it.
type faultApp struct{ got atomic.Int64 }

func (a *faultApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.got.Add(1)
	io.Copy(io.Discard, r.Body)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.Write([]byte{0, 0, 0, 0, 2, 'o', 'k'})
		w.Header().Set("Grpc-Status", "0")
		return
	}
	io.WriteString(w, "ok")
}

// faultMesh is a server agent hosting web (http) and rpc (grpc) on one
// app, and a client agent whose service shop calls both through upstream
// listeners. Both agents keep records and golden signals.
type faultMesh struct {
	pol                *l7Policy
	app                *faultApp
	server, client     *agent
	serverRec          *callRecorder
	webBind, rpcBind   string
	h1, h2             *http.Client
	webURL, rpcURLBase string
}

func newFaultMesh(t *testing.T) *faultMesh {
	t.Helper()
	fm := &faultMesh{pol: newL7Policy(), app: &faultApp{}, serverRec: &callRecorder{}}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	port := serveApp(t, &http.Server{Protocols: &protos}, fm.app)
	fm.pol.protos["web"], fm.pol.protos["rpc"] = "http", "grpc"
	m := newMesh(t)
	fm.server = m.addAgent("server", []LocalService{{Name: "web", Ports: []int{port}}, {Name: "rpc", Ports: []int{port}}},
		agentOpts{deps: observed(fm.serverRec, fm.pol.deps)})
	fm.webBind, fm.rpcBind = freeAddr(t), freeAddr(t)
	fm.client = m.addAgent("client", []LocalService{{Name: "shop", Upstreams: []Upstream{
		{Service: "web", LocalBind: fm.webBind, Port: port}, {Service: "rpc", LocalBind: fm.rpcBind, Port: port}}}},
		agentOpts{deps: observed(&callRecorder{}, fm.pol.deps)})
	waitUpstreams(t, fm.client, fm.webBind, fm.rpcBind)
	fm.h1 = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	fm.h2 = &http.Client{Transport: &http.Transport{Protocols: h2cOnly()}, Timeout: 30 * time.Second}
	t.Cleanup(fm.h1.CloseIdleConnections)
	t.Cleanup(fm.h2.CloseIdleConnections)
	return fm
}

func (fm *faultMesh) setFault(service string, f *policy.Fault) {
	fm.pol.mu.Lock()
	fm.pol.faults[service] = f
	fm.pol.mu.Unlock()
}

// answer is what a caller got.
type answer struct {
	status         int
	fault, meshErr string
	body           string
	grpcStatus     string
	elapsed        time.Duration
	transportErr   error
}

func (fm *faultMesh) do(c *http.Client, req *http.Request) answer {
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return answer{transportErr: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, fault: strings.Join(resp.Header.Values(l7.FaultHeader), ","),
		meshErr: resp.Header.Get(l7.ErrorHeader), body: string(b), elapsed: time.Since(t0), transportErr: err}
	if a.grpcStatus = resp.Trailer.Get("Grpc-Status"); a.grpcStatus == "" {
		a.grpcStatus = resp.Header.Get("Grpc-Status")
	}
	return a
}

func (fm *faultMesh) get(t *testing.T, path string, header map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+fm.webBind+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return fm.do(fm.h1, req)
}

// TestFaultAbortShare sends 10,000 requests through the mesh to a service
// whose Fault aborts 10 % of them, and finds that share aborted, each
// aborted answer marked, and every one counted by both agents.
func TestFaultAbortShare(t *testing.T) {
	fm := newFaultMesh(t)
	fm.setFault("web", &policy.Fault{Abort: &policy.FaultAbort{Percent: 10, HTTPStatus: 503}})

	const n, workers = 10_000, 8
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		next            atomic.Int64
		aborted, passed atomic.Int64
		mu              sync.Mutex
		odd             []string // answers that are neither, the first few
		wg              sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= n && ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+fm.webBind+"/x", nil)
				a := fm.do(fm.h1, req)
				switch {
				case a.transportErr == nil && a.status == 503 && a.fault == "abort" && a.meshErr == l7.ReasonFaultInjected:
					aborted.Add(1)
				case a.transportErr == nil && a.status == 200 && a.body == "ok" && a.fault == "" && a.meshErr == "":
					passed.Add(1)
				default:
					mu.Lock()
					if len(odd) < 5 {
						odd = append(odd, fmt.Sprintf("%+v", a))
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the load did not finish in time: %d sent", next.Load())
	}
	if len(odd) > 0 {
		t.Fatalf("answers neither aborted (503, %s: abort) nor the app's: %v", l7.FaultHeader, odd)
	}
	ab, ok := aborted.Load(), passed.Load()
	if ab+ok != n {
		t.Fatalf("%d aborted + %d passed != %d", ab, ok, n)
	}
	// At p = 0.1 and n = 10,000 the standard deviation of the share is
	// sqrt(p(1-p)/n) = 0.3 %: ±1 % is 3.3 sigma, which a fair draw misses
	// about once in a thousand runs.
	share := float64(ab) / n
	t.Logf("aborted %d of %d: %.2f %%", ab, n, share*100)
	if share < 0.09 || share > 0.11 {
		t.Fatalf("aborted %.2f %% of the requests, want 10 %% ± 1 %%", share*100)
	}
	if got := fm.app.got.Load(); got != ok {
		t.Errorf("the app got %d requests, want the %d not aborted", got, ok)
	}
	if got := fm.server.metric(t, l7.MetricFaults, "kind", "abort", "service", "web"); got != float64(ab) {
		t.Errorf("%s{abort, web} = %v, want %d", l7.MetricFaults, got, ab)
	}
	// The golden signals of both agents count the aborts as failures with
	// their reason, and the rest as the app's successes.
	for _, a := range []*agent{fm.client, fm.server} {
		dir := "outbound"
		if a == fm.server {
			dir = "inbound"
		}
		for _, tc := range []struct {
			labels []string
			want   int64
		}{
			{[]string{"result", "failure", "code", "503", "reason", l7.ReasonFaultInjected}, ab},
			{[]string{"result", "success", "code", "200", "reason", ""}, ok},
		} {
			labels := append([]string{"direction", dir, "source", "shop", "destination", "web", "protocol", "http"}, tc.labels...)
			eventually(t, fmt.Sprintf("%s to count %v", a.name, labels), func() bool {
				return a.metric(t, signals.MetricRequests, labels...) == float64(tc.want)
			})
		}
	}
}

// TestFaultHeaderMatch: a Fault with a header match aborts only the
// requests that carry the header, HTTP and gRPC alike.
func TestFaultHeaderMatch(t *testing.T) {
	fm := newFaultMesh(t)
	match := &policy.FaultMatch{Headers: []policy.HeaderMatch{{Name: "x-chaos", Exact: "on"}}}
	fm.setFault("web", &policy.Fault{Abort: &policy.FaultAbort{Percent: 100, HTTPStatus: 429}, Match: match})
	fm.setFault("rpc", &policy.Fault{Abort: &policy.FaultAbort{Percent: 100, GRPCStatus: 8}, Match: match})

	const n = 40
	for i := range n {
		hdr := map[string]string{}
		if i%2 == 0 {
			hdr["X-Chaos"] = "on"
		} else if i%4 == 1 {
			hdr["X-Chaos"] = "off"
		}
		a := fm.get(t, "/x", hdr)
		if a.transportErr != nil {
			t.Fatal(a.transportErr)
		}
		if hdr["X-Chaos"] == "on" {
			if a.status != 429 || a.fault != "abort" || a.meshErr != l7.ReasonFaultInjected {
				t.Fatalf("request %d with the header: %+v, want 429 aborted", i, a)
			}
		} else if a.status != 200 || a.body != "ok" || a.fault != "" {
			t.Fatalf("request %d without the header: %+v, want the app's 200", i, a)
		}
	}
	if got := fm.app.got.Load(); got != n/2 {
		t.Errorf("the app got %d requests, want %d", got, n/2)
	}
	if got := fm.server.metric(t, l7.MetricFaults, "kind", "abort", "service", "web"); got != n/2 {
		t.Errorf("%s{abort, web} = %v, want %d", l7.MetricFaults, got, n/2)
	}

	// gRPC: a trailers-only answer with the Fault's grpc-status.
	for _, chaos := range []string{"on", ""} {
		req, _ := http.NewRequest("POST", "http://"+fm.rpcBind+"/pkg.Svc/Call", bytes.NewReader([]byte{0, 0, 0, 0, 1, 'q'}))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("X-Request-Id", "grpc-"+chaos)
		if chaos != "" {
			req.Header.Set("X-Chaos", chaos)
		}
		a := fm.do(fm.h2, req)
		if a.transportErr != nil {
			t.Fatal(a.transportErr)
		}
		want := answer{status: 200, grpcStatus: "0"}
		if chaos == "on" {
			want = answer{status: 200, grpcStatus: "8", fault: "abort", meshErr: l7.ReasonFaultInjected}
		}
		if a.status != want.status || a.grpcStatus != want.grpcStatus || a.fault != want.fault || a.meshErr != want.meshErr {
			t.Fatalf("gRPC call, x-chaos %q: %+v, want %+v", chaos, a, want)
		}
	}
	eventually(t, "the server to record the gRPC calls", func() bool {
		return len(fm.serverRec.calls(func(c *observe.Call) bool { return c.Destination == "rpc" })) == 2
	})
	rec := byRequestID(fm.serverRec.calls(func(c *observe.Call) bool { return c.Destination == "rpc" }))
	// An answer of the mesh's own is a failure, whatever its grpc-status:
	// the golden signals count it with its reason.
	if c := rec["grpc-on"]; c.Protocol != observe.GRPC || c.GRPCStatus != 8 || c.MeshError != l7.ReasonFaultInjected || c.Result() != observe.Failure {
		t.Errorf("aborted gRPC call recorded as %+v", c)
	}
	if c := rec["grpc-"]; c.GRPCStatus != 0 || c.MeshError != "" {
		t.Errorf("gRPC call without the header recorded as %+v", c)
	}
}

// TestFaultNeverBypassesIntention: a request an intention denies gets the
// 403, whatever the Fault; the Fault does not draw for it.
func TestFaultNeverBypassesIntention(t *testing.T) {
	fm := newFaultMesh(t)
	fm.pol.deny["GET /admin"] = true
	fm.setFault("web", &policy.Fault{Abort: &policy.FaultAbort{Percent: 100, HTTPStatus: 503},
		Delay: &policy.FaultDelay{Percent: 100, Fixed: policy.Duration(time.Millisecond)}})
	for range 5 {
		a := fm.get(t, "/admin", nil)
		if a.status != http.StatusForbidden || a.meshErr != l7.ReasonDenied || a.fault != "" {
			t.Fatalf("denied request: %+v, want 403 %s without %s", a, l7.ReasonDenied, l7.FaultHeader)
		}
	}
	for _, kind := range []string{"abort", "delay"} {
		if got := fm.server.metric(t, l7.MetricFaults, "kind", kind, "service", "web"); got != 0 {
			t.Errorf("%s{%s} = %v for denied requests, want 0", l7.MetricFaults, kind, got)
		}
	}
	if got := fm.app.got.Load(); got != 0 {
		t.Errorf("the app got %d denied requests", got)
	}
}

// TestFaultDelay: a delayed request reaches the app later, its answer
// marked; a delay past the request's deadline ends as the deadline does,
// and the app never sees the request.
func TestFaultDelay(t *testing.T) {
	fm := newFaultMesh(t)
	const delay = 50 * time.Millisecond
	fm.setFault("web", &policy.Fault{Delay: &policy.FaultDelay{Percent: 100, Fixed: policy.Duration(delay)}})
	a := fm.get(t, "/x", nil)
	if a.status != 200 || a.body != "ok" || a.fault != "delay" {
		t.Fatalf("delayed request: %+v, want the app's 200 marked %s: delay", a, l7.FaultHeader)
	}
	if a.elapsed < delay {
		t.Errorf("a request delayed %v was answered in %v", delay, a.elapsed)
	}

	fm.setFault("web", &policy.Fault{Delay: &policy.FaultDelay{Percent: 100, Fixed: policy.Duration(time.Hour)}})
	a = fm.get(t, "/x", map[string]string{l7.DeadlineHeader: "100"})
	if a.status != http.StatusGatewayTimeout || a.meshErr != l7.ReasonDeadlineExceeded {
		t.Fatalf("request with a deadline shorter than the delay: %+v, want 504 %s", a, l7.ReasonDeadlineExceeded)
	}
	if got := fm.app.got.Load(); got != 1 {
		t.Errorf("the app got %d requests, want only the first", got)
	}
	if got := fm.server.metric(t, l7.MetricFaults, "kind", "delay", "service", "web"); got != 2 {
		t.Errorf("%s{delay, web} = %v, want 2", l7.MetricFaults, got)
	}
}

// faultTable is a Fault source for tests of tcp services.
type faultTable struct {
	mu sync.Mutex
	m  map[string]*policy.Fault
}

func (ft *faultTable) set(service string, f *policy.Fault) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.m == nil {
		ft.m = map[string]*policy.Fault{}
	}
	ft.m[service] = f
}

func (ft *faultTable) get(service string) *policy.Fault {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.m[service]
}

// TestFaultL4: on a tcp service an abort closes the caller's connection
// before any byte and the service is never dialled; a delay holds the
// connection back and then carries it; a Fault with a header match never
// applies to connections.
func TestFaultL4(t *testing.T) {
	var dialled atomic.Int64
	b := startBackend(t, func(c net.Conn) { dialled.Add(1); echo(c) })
	faults := &faultTable{}
	m := newMesh(t)
	serverRec := &callRecorder{}
	server := m.addAgent("server", []LocalService{{Name: "db", Ports: []int{b.port}}},
		agentOpts{deps: observed(serverRec, func(d *Deps) { d.Fault = faults.get })})
	dbBind := freeAddr(t)
	client := m.addAgent("client", []LocalService{{Name: "shop", Upstreams: []Upstream{{Service: "db", LocalBind: dbBind}}}}, agentOpts{})
	waitUpstreams(t, client, dbBind)

	roundTrip := func() (string, error) {
		c := dial(t, dbBind)
		c.Write([]byte("ping"))
		c.CloseWrite()
		return readAll(t, c)
	}

	faults.set("db", &policy.Fault{Abort: &policy.FaultAbort{Percent: 100, HTTPStatus: 503}})
	for i := range 3 {
		if got, err := roundTrip(); got != "" {
			t.Fatalf("aborted connection %d carried %q (%v)", i, got, err)
		}
	}
	if n := dialled.Load(); n != 0 {
		t.Fatalf("the service was dialled %d times for aborted connections", n)
	}
	if got := server.metric(t, MetricFaults, "kind", "abort", "service", "db"); got != 3 {
		t.Errorf("%s{abort, db} = %v, want 3", MetricFaults, got)
	}
	eventually(t, "the server's records of the aborted connections", func() bool {
		return len(serverRec.calls(func(c *observe.Call) bool { return c.MeshError == l4.ReasonFaultInjected })) == 3
	})

	faults.set("db", &policy.Fault{Abort: &policy.FaultAbort{Percent: 100, HTTPStatus: 503},
		Match: &policy.FaultMatch{Headers: []policy.HeaderMatch{{Name: "x-chaos", Exact: "on"}}}})
	if got, err := roundTrip(); got != "ping" || err != nil {
		t.Fatalf("a Fault with a header match applied to a connection: %q, %v", got, err)
	}

	const delay = 50 * time.Millisecond
	faults.set("db", &policy.Fault{Delay: &policy.FaultDelay{Percent: 100, Fixed: policy.Duration(delay)}})
	t0 := time.Now()
	if got, err := roundTrip(); got != "ping" || err != nil {
		t.Fatalf("delayed connection: %q, %v", got, err)
	}
	if el := time.Since(t0); el < delay {
		t.Errorf("a connection delayed %v was carried in %v", delay, el)
	}
	if got := server.metric(t, MetricFaults, "kind", "delay", "service", "db"); got != 1 {
		t.Errorf("%s{delay, db} = %v, want 1", MetricFaults, got)
	}
}
