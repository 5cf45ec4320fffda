package transport

// The records of calls (transport/observe) and the golden-signal metrics
// built on them (telemetry/signals), on both agents of real QUIC calls:
// counts, labels, bytes, statuses, gRPC statuses, and the trace context
// that reaches the app.

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/telemetry/signals"
	"github.com/meshwork/meshwork/transport/l7"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/wire"
)

// callRecorder keeps a copy of every record it is handed.
type callRecorder struct {
	mu    sync.Mutex
	begun int
	ended []observe.Call
}

func (r *callRecorder) Begin(*observe.Call) {
	r.mu.Lock()
	r.begun++
	r.mu.Unlock()
}

func (r *callRecorder) End(c *observe.Call) {
	r.mu.Lock()
	r.ended = append(r.ended, *c)
	r.mu.Unlock()
}

// calls returns the records of ended calls that match keep.
func (r *callRecorder) calls(keep func(*observe.Call) bool) []observe.Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []observe.Call
	for i := range r.ended {
		if keep(&r.ended[i]) {
			out = append(out, r.ended[i])
		}
	}
	return out
}

// counts returns how many calls began and ended.
func (r *callRecorder) counts() (begun, ended int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.begun, len(r.ended)
}

// byRequestID indexes records by x-request-id.
func byRequestID(calls []observe.Call) map[string]observe.Call {
	m := map[string]observe.Call{}
	for _, c := range calls {
		m[c.RequestID] = c
	}
	return m
}

// observed gives an agent a recorder and the golden-signal observer on
// its registry.
func observed(rec *callRecorder, more func(*Deps)) func(*Deps) {
	return func(d *Deps) {
		if more != nil {
			more(d)
		}
		sig, err := signals.New(d.Registerer)
		if err != nil {
			panic(err) // a second registration on one registry: a test bug
		}
		d.Observer = observe.Observers{sig, rec}
	}
}

// signalApp answers by path, echoes request bodies, and keeps the
// traceparent of each request by x-request-id.
//
//	/ok      200, the request body back
//	/fail    500, "failed"
//	/grpc/N  a gRPC answer with grpc-status N in the trailers
//	/grpc-only/N  a trailers-only gRPC answer: grpc-status N in the head
type signalApp struct {
	mu           sync.Mutex
	traceparents map[string]string
}

func (a *signalApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.traceparents[r.Header.Get("X-Request-Id")] = r.Header.Get("Traceparent")
	a.mu.Unlock()
	switch {
	case r.URL.Path == "/ok":
		w.Write(b)
	case r.URL.Path == "/fail":
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "failed")
	case strings.HasPrefix(r.URL.Path, "/grpc-only/"):
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", strings.TrimPrefix(r.URL.Path, "/grpc-only/"))
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(r.URL.Path, "/grpc/"):
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.Write([]byte{0, 0, 0, 0, 3, 'a', 'b', 'c'})
		w.Header().Set("Grpc-Status", strings.TrimPrefix(r.URL.Path, "/grpc/"))
	default:
		http.NotFound(w, r)
	}
}

func (a *signalApp) traceparent(id string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.traceparents[id]
}

// TestGoldenSignalsL7 sends HTTP/1.1 requests (some answered 500 by the
// app, one denied by an intention) and gRPC requests from service shop
// to web and rpc through two agents, and checks the records and metrics
// of both.
func TestGoldenSignalsL7(t *testing.T) {
	app := &signalApp{traceparents: map[string]string{}}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	port := serveApp(t, &http.Server{Protocols: &protos}, app)

	pol := newL7Policy()
	pol.protos["web"], pol.protos["rpc"] = "http", "grpc"
	pol.routes["web"] = func(policy.Request) []SplitTarget { return []SplitTarget{{Weight: 100}} }
	pol.deny["GET /admin"] = true
	m := newMesh(t)
	serverRec, clientRec := &callRecorder{}, &callRecorder{}
	server := m.addAgent("server", []LocalService{{Name: "web", Ports: []int{port}}, {Name: "rpc", Ports: []int{port}}},
		agentOpts{deps: observed(serverRec, pol.deps)})
	webBind, rpcBind := freeAddr(t), freeAddr(t)
	client := m.addAgent("client", []LocalService{{Name: "shop", Upstreams: []Upstream{
		{Service: "web", LocalBind: webBind, Port: port}, {Service: "rpc", LocalBind: rpcBind, Port: port}}}},
		agentOpts{deps: observed(clientRec, pol.deps)})
	waitUpstreams(t, client, webBind, rpcBind)

	// HTTP/1.1: 7 answered 200 with the 100-byte body back, 3 answered
	// 500 by the app, 1 denied by the receiving agent.
	const appTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	h1 := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer h1.CloseIdleConnections()
	body := strings.Repeat("x", 100)
	want := map[string]int{} // request ID -> status
	for i := range 10 {
		id, path, status := "h1-"+strconv.Itoa(i), "/ok", 200
		if i%4 == 1 {
			path, status = "/fail", 500
		}
		req, _ := http.NewRequest("POST", "http://"+webBind+path, strings.NewReader(body))
		req.Header.Set("X-Request-Id", id)
		if i == 0 {
			req.Header.Set("Traceparent", appTrace)
		}
		sendExpect(t, h1, req, status)
		want[id] = status
	}
	req, _ := http.NewRequest("GET", "http://"+webBind+"/admin", nil)
	req.Header.Set("X-Request-Id", "denied")
	sendExpect(t, h1, req, http.StatusForbidden)
	want["denied"] = http.StatusForbidden

	// gRPC over h2c: NOT_FOUND (the caller's doing), then UNAVAILABLE,
	// then PERMISSION_DENIED in a trailers-only answer.
	h2 := &http.Client{Transport: &http.Transport{Protocols: h2cOnly()}}
	defer h2.CloseIdleConnections()
	for _, path := range []string{"/grpc/5", "/grpc/14", "/grpc-only/7"} {
		code := path[strings.LastIndexByte(path, '/')+1:]
		req, _ := http.NewRequest("POST", "http://"+rpcBind+path, bytes.NewReader([]byte{0, 0, 0, 0, 1, 'q'}))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("X-Request-Id", "grpc-"+code)
		resp := sendExpect(t, h2, req, 200)
		got := resp.Trailer.Get("Grpc-Status")
		if got == "" {
			got = resp.Header.Get("Grpc-Status")
		}
		if got != code {
			t.Fatalf("gRPC call: grpc-status %q, want %q; head %v trailer %v", got, code, resp.Header, resp.Trailer)
		}
	}

	const total = 14
	for _, a := range []struct {
		name string
		rec  *callRecorder
	}{{"client", clientRec}, {"server", serverRec}} {
		eventually(t, a.name+" to end its records", func() bool { _, e := a.rec.counts(); return e >= total })
		if begun, ended := a.rec.counts(); begun != total || ended != total {
			t.Errorf("%s: %d records begun, %d ended; want %d each", a.name, begun, ended, total)
		}
	}
	out := byRequestID(clientRec.calls(func(*observe.Call) bool { return true }))
	in := byRequestID(serverRec.calls(func(*observe.Call) bool { return true }))
	for id, status := range want {
		o, i := out[id], in[id]
		for _, c := range []struct {
			side string
			c    observe.Call
			dir  observe.Direction
		}{{"outbound", o, observe.Outbound}, {"inbound", i, observe.Inbound}} {
			if c.c.Direction != c.dir || c.c.Protocol != observe.HTTP || c.c.Status != status || c.c.GRPCStatus != -1 ||
				c.c.Source != "shop" || c.c.Destination != "web" ||
				c.c.SourceIdentity != m.ca.ServiceID("shop") || c.c.DestinationIdentity != m.ca.ServiceID("web") ||
				c.c.Instance == "" || c.c.Duration <= 0 || c.c.Start.IsZero() || c.c.Authority != webBind {
				t.Errorf("%s %s record: %+v", id, c.side, c.c)
			}
		}
		if o.Route != "web-route" || o.Attempts != 1 {
			t.Errorf("%s outbound: route %q, attempts %d; want web-route, 1", id, o.Route, o.Attempts)
		}
		switch status {
		case http.StatusForbidden:
			if o.MeshError != l7.ReasonDenied || i.MeshError != l7.ReasonDenied || o.Result() != observe.Failure {
				t.Errorf("denied request: reasons %q (outbound) %q (inbound), result %s", o.MeshError, i.MeshError, o.Result())
			}
		default:
			wantOut := int64(len(body))
			if status == 500 {
				wantOut = int64(len("failed"))
			}
			if o.MeshError != "" || i.MeshError != "" || o.Method != "POST" {
				t.Errorf("%s: mesh errors %q %q, method %q", id, o.MeshError, i.MeshError, o.Method)
			}
			if o.BytesIn != 100 || i.BytesIn != 100 || i.BytesOut != wantOut {
				t.Errorf("%s: bytes in %d (outbound) %d (inbound), out %d (inbound); want 100, 100, %d", id, o.BytesIn, i.BytesIn, i.BytesOut, wantOut)
			}
			if o.BytesOut < wantOut {
				t.Errorf("%s: outbound bytes out %d, want at least the body's %d", id, o.BytesOut, wantOut)
			}
		}
		// The server span is the client span's child in one trace, and
		// the app's traceparent names the server span.
		if i.Trace.TraceID != o.Trace.TraceID || i.Trace.ParentID != o.Trace.SpanID || i.Trace.SpanID == o.Trace.SpanID || i.Trace.SpanID == [8]byte{} {
			t.Errorf("%s: client span %+v, server span %+v", id, o.Trace, i.Trace)
		}
		if status != http.StatusForbidden {
			tp, err := wire.ParseTraceparent(app.traceparent(id))
			if err != nil || tp.TraceID != i.Trace.TraceID || tp.ParentID != i.Trace.SpanID {
				t.Errorf("%s: the app got traceparent %q (%v), want trace %x parent %x", id, app.traceparent(id), err, i.Trace.TraceID, i.Trace.SpanID)
			}
		}
	}
	// The app's own trace is joined, and its sampled flag kept.
	sent, _ := wire.ParseTraceparent(appTrace)
	if o := out["h1-0"]; o.Trace.TraceID != sent.TraceID || o.Trace.ParentID != sent.ParentID || !o.Trace.Sampled || !in["h1-0"].Trace.Sampled {
		t.Errorf("the app's trace: client span %+v, want trace %x parent %x, sampled", o.Trace, sent.TraceID, sent.ParentID)
	}
	for _, code := range []int{5, 14, 7} {
		id := "grpc-" + strconv.Itoa(code)
		for side, c := range map[string]observe.Call{"outbound": out[id], "inbound": in[id]} {
			wantResult := observe.Success
			if code == 14 {
				wantResult = observe.Failure
			}
			wantOut := int64(8)
			if code == 7 {
				wantOut = 0 // trailers-only
			}
			if c.Protocol != observe.GRPC || c.Status != 200 || c.GRPCStatus != code || c.Destination != "rpc" || c.Result() != wantResult ||
				c.BytesIn != 6 || c.BytesOut != wantOut || c.MeshError != "" {
				t.Errorf("%s %s record: %+v", id, side, c)
			}
		}
	}

	// The metrics: the same counts on both agents.
	for _, a := range []*agent{client, server} {
		dir := "outbound"
		route := "web-route"
		if a == server {
			dir, route = "inbound", "" // the receiving agent does not know the route
		}
		for _, tc := range []struct {
			labels []string
			want   float64
		}{
			{[]string{"protocol", "http", "destination", "web", "route", route, "result", "success", "code", "200", "reason", ""}, 7},
			{[]string{"protocol", "http", "destination", "web", "route", route, "result", "failure", "code", "500", "reason", ""}, 3},
			{[]string{"protocol", "http", "destination", "web", "route", route, "result", "failure", "code", "403", "reason", "denied"}, 1},
			{[]string{"destination", "rpc", "protocol", "grpc", "result", "success", "code", "5"}, 1},
			{[]string{"destination", "rpc", "protocol", "grpc", "result", "failure", "code", "14"}, 1},
			{[]string{"destination", "rpc", "protocol", "grpc", "result", "success", "code", "7"}, 1},
		} {
			labels := append([]string{"direction", dir, "source", "shop"}, tc.labels...)
			if got := a.metric(t, signals.MetricRequests, labels...); got != tc.want {
				t.Errorf("%s: %s%v = %v, want %v", a.name, signals.MetricRequests, labels, got, tc.want)
			}
		}
		if got := a.metric(t, signals.MetricBytes, "direction", dir, "destination", "web", "flow", "request"); got != 1000 {
			t.Errorf("%s: request bytes to web = %v, want 1000", a.name, got)
		}
		if got := a.metric(t, signals.MetricDuration, "direction", dir, "destination", "web", "result", "failure"); got != 4 {
			t.Errorf("%s: failures timed = %v, want 4", a.name, got)
		}
		if got := a.metric(t, signals.MetricActive, "direction", dir, "destination", "web"); got != 0 {
			t.Errorf("%s: %v requests still active", a.name, got)
		}
	}
}

// TestGoldenSignalsL4 carries one TCP connection and has one refused: one
// record on each side of the carried one with its bytes and one trace,
// and an outbound failure for the refused one.
func TestGoldenSignalsL4(t *testing.T) {
	b := startBackend(t, echo)
	m := newMesh(t)
	serverRec, clientRec := &callRecorder{}, &callRecorder{}
	server := m.addAgent("server", []LocalService{{Name: "db", Ports: []int{b.port}}, {Name: "vault", Ports: []int{b.port}}},
		agentOpts{deps: observed(serverRec, nil)})
	server.authz.setDeny("shop->vault")
	dbBind, vaultBind := freeAddr(t), freeAddr(t)
	client := m.addAgent("client", []LocalService{{Name: "shop", Upstreams: []Upstream{
		{Service: "db", LocalBind: dbBind}, {Service: "vault", LocalBind: vaultBind}}}},
		agentOpts{deps: observed(clientRec, nil)})
	waitUpstreams(t, client, dbBind, vaultBind)

	c := dial(t, dbBind)
	payload := bytes.Repeat([]byte("y"), 5000)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || len(got) != len(payload) {
		t.Fatalf("echo: %d bytes, %v; want %d", len(got), err, len(payload))
	}
	// The refused connection is reset, maybe before the dial returns.
	if refused, err := net.Dial("tcp", vaultBind); err == nil {
		io.ReadAll(refused)
		refused.Close()
	}

	eventually(t, "records of both connections", func() bool {
		_, in := serverRec.counts()
		_, out := clientRec.counts()
		return in >= 1 && out >= 2
	})
	outs := clientRec.calls(func(c *observe.Call) bool { return c.Destination == "db" })
	ins := serverRec.calls(func(c *observe.Call) bool { return true })
	if len(outs) != 1 || len(ins) != 1 {
		t.Fatalf("%d outbound and %d inbound records of the carried connection, want 1 each: %+v %+v", len(outs), len(ins), outs, ins)
	}
	o, i := outs[0], ins[0]
	for side, c := range map[string]observe.Call{"outbound": o, "inbound": i} {
		if c.Protocol != observe.TCP || c.Source != "shop" || c.Destination != "db" || c.SourceIdentity != m.ca.ServiceID("shop") ||
			c.BytesIn != 5000 || c.BytesOut != 5000 || c.MeshError != "" || c.Result() != observe.Success || c.Instance == "" {
			t.Errorf("%s record: %+v", side, c)
		}
	}
	if o.Attempts != 1 || i.Trace.TraceID != o.Trace.TraceID || i.Trace.ParentID != o.Trace.SpanID || o.Trace.ParentID != [8]byte{} {
		t.Errorf("attempts %d; client span %+v, server span %+v", o.Attempts, o.Trace, i.Trace)
	}
	denied := clientRec.calls(func(c *observe.Call) bool { return c.Destination == "vault" })
	if len(denied) != 1 || denied[0].MeshError != l7.ReasonDenied || denied[0].Result() != observe.Failure {
		t.Errorf("refused connection's records: %+v", denied)
	}
	for _, tc := range []struct {
		a      *agent
		labels []string
		want   float64
	}{
		{client, []string{"direction", "outbound", "protocol", "tcp", "destination", "db", "result", "success", "code", ""}, 1},
		{client, []string{"direction", "outbound", "protocol", "tcp", "destination", "vault", "result", "failure", "reason", "denied"}, 1},
		{server, []string{"direction", "inbound", "protocol", "tcp", "source", "shop", "destination", "db", "result", "success"}, 1},
	} {
		if got := tc.a.metric(t, signals.MetricRequests, tc.labels...); got != tc.want {
			t.Errorf("%s: %s%v = %v, want %v", tc.a.name, signals.MetricRequests, tc.labels, got, tc.want)
		}
	}
	for _, a := range []*agent{client, server} {
		for _, flow := range []string{"request", "response"} {
			if got := a.metric(t, signals.MetricBytes, "protocol", "tcp", "destination", "db", "flow", flow); got != 5000 {
				t.Errorf("%s: %s bytes = %v, want 5000", a.name, flow, got)
			}
		}
	}
}

// waitUpstreams waits for a's upstream listeners on binds.
func waitUpstreams(t *testing.T, a *agent, binds ...string) {
	t.Helper()
	for _, bind := range binds {
		eventually(t, "upstream listener "+bind, func() bool {
			for _, l := range a.tr.Listeners() {
				if l.Kind == "upstream" && l.Addr == bind {
					return true
				}
			}
			return false
		})
	}
}

// sendExpect sends req, checks its status and reads its body (and so its
// trailers).
func sendExpect(t *testing.T, c *http.Client, req *http.Request, status int) *http.Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d (%s), want %d", req.Method, req.URL, resp.StatusCode, resp.Header.Get(l7.ErrorHeader), status)
	}
	return resp
}

func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}
