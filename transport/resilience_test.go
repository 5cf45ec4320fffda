package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/l7"
)

// TestL7CircuitBreakerMaxRequests: with max_requests 2 and two requests
// held by the app, a third fails at once with 503 circuit_open (gRPC
// UNAVAILABLE) and never reaches the app; once the two end, requests pass
// again.
func TestL7CircuitBreakerMaxRequests(t *testing.T) {
	pol := newL7Policy()
	pol.res["web"] = &policy.Resilience{CircuitBreaker: &policy.CircuitBreaker{MaxRequests: 2}}
	app, client, vip := l7Mesh(t, pol)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	held := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := c.Get("http://" + vip + "/hold")
			if err != nil {
				held <- -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			held <- resp.StatusCode
		}()
	}
	eventually(t, "the app to hold two requests", func() bool { return len(app.requests()) == 2 })

	resp, body := get(t, c, "GET", "http://"+vip+"/", nil)
	if resp.StatusCode != 503 || resp.Header.Get(l7.ErrorHeader) != l7.ReasonCircuitOpen || !strings.Contains(body, "max_requests 2") {
		t.Errorf("third request: %d %q %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader), body)
	}
	resp, _ = get(t, c, "GET", "http://"+vip+"/", map[string]string{"Content-Type": "application/grpc"})
	if resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get(l7.ErrorHeader) != l7.ReasonCircuitOpen {
		t.Errorf("third gRPC request: grpc-status %q %q, want 14 circuit_open", resp.Header.Get("Grpc-Status"), resp.Header.Get(l7.ErrorHeader))
	}
	if n := len(app.requests()); n != 2 {
		t.Errorf("the app got %d requests, want the 2 held: a refused one reached it", n)
	}
	if got := client.metric(t, MetricCircuitRejected, "service", "web", "limit", "max_requests"); got != 2 {
		t.Errorf("%s{limit=max_requests} = %v, want 2", MetricCircuitRejected, got)
	}

	close(app.hold)
	for range 2 {
		if code := <-held; code != 200 {
			t.Errorf("a held request ended with %d", code)
		}
	}
	// The slots were given back.
	for range 3 {
		if resp, _ := get(t, c, "GET", "http://"+vip+"/", nil); resp.StatusCode != 200 {
			t.Fatalf("after the held requests ended: %d %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader))
		}
	}
}

// echoes writes msg on c and reads it back from an echo backend.
func echoes(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("read %q, want %q", b, msg)
	}
	return nil
}

// TestL4CircuitBreakerMaxConnections: with max_connections 2 and two
// connections open, a third is reset at once; once one closes, a new
// connection is carried.
func TestL4CircuitBreakerMaxConnections(t *testing.T) {
	pol := newL7Policy() // no protocol set: db is tcp
	pol.res["db"] = &policy.Resilience{CircuitBreaker: &policy.CircuitBreaker{MaxConnections: 2}}
	m := newMesh(t)
	be := startBackend(t, echo)
	m.addAgent("server", []LocalService{{Name: "db", Ports: []int{be.port}}}, agentOpts{deps: pol.deps})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	vip := client.vipAddr(t, "db", be.port)

	var open []*net.TCPConn
	for i := range 2 {
		c := dial(t, vip)
		if err := echoes(c, "ping"); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		open = append(open, c)
	}
	third := dial(t, vip)
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := third.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("third connection: read error %v, want a reset", err)
	}
	if got := client.metric(t, MetricCircuitRejected, "service", "db", "limit", "max_connections"); got != 1 {
		t.Errorf("%s{limit=max_connections} = %v, want 1", MetricCircuitRejected, got)
	}
	if got := client.metric(t, MetricOutbound, "result", "circuit_open"); got != 1 {
		t.Errorf("%s{result=circuit_open} = %v, want 1", MetricOutbound, got)
	}
	for i, c := range open {
		if err := echoes(c, "still"); err != nil {
			t.Fatalf("connection %d after the refusal: %v", i+1, err)
		}
	}

	open[0].Close()
	eventually(t, "a new connection to be carried once one closed", func() bool {
		c, err := net.Dial("tcp", vip)
		if err != nil {
			return false
		}
		defer c.Close()
		return echoes(c, "again") == nil
	})

	// The limit raised by policy applies without a restart: three
	// connections are carried at once.
	pol.mu.Lock()
	pol.res["db"] = &policy.Resilience{CircuitBreaker: &policy.CircuitBreaker{MaxConnections: 3}}
	pol.mu.Unlock()
	second := dial(t, vip)
	if err := echoes(second, "raised"); err != nil {
		t.Fatalf("a connection under the raised limit: %v", err)
	}
	eventually(t, "a third connection under the raised limit", func() bool {
		c, err := net.Dial("tcp", vip)
		if err != nil {
			return false
		}
		defer c.Close()
		return echoes(c, "third") == nil
	})
}

// outlier finds instance in a's status.
func (a *agent) outlier(instance string) (OutlierStatus, bool) {
	for _, o := range a.tr.Status().Outliers {
		if o.Instance == instance {
			return o, true
		}
	}
	return OutlierStatus{}, false
}

// remaining parses an OutlierStatus's Remaining; 0 when not ejected.
func remaining(t *testing.T, o OutlierStatus) time.Duration {
	t.Helper()
	if !o.Ejected {
		return 0
	}
	d, err := time.ParseDuration(o.Remaining)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// randomPicks makes the client's balancer forget latencies at once, so
// that it picks at random between instances and a failing one keeps
// getting its share: peak-EWMA alone would steer away from it after its
// first failure, and outlier ejection is what is tested here.
func randomPicks(c *Config) { c.Balance.Decay = time.Nanosecond }

// TestOutlierEjects5xxInstance: an instance whose app answers 503 every
// time is ejected after consecutive_errors, gets no request while
// ejected, returns on probation, and is ejected again, for twice as long,
// at its first failure there.
func TestOutlierEjects5xxInstance(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	const base = 2 * time.Second
	pol.res["web"] = &policy.Resilience{OutlierDetection: &policy.OutlierDetection{
		ConsecutiveErrors: 3, Interval: policy.Duration(time.Minute), BaseEjectionTime: policy.Duration(base), MaxEjectedPercent: 50,
	}}
	good := startHTTPApp(t, "good")
	var badHits atomic.Int64
	startHTTPAppWith(t, "bad", fmt.Sprintf("127.0.0.2:%d", good.port), func(s *http.Server) {
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			badHits.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
		})
	})
	m := newMesh(t)
	m.addAgent("s1", []LocalService{{Name: "web", Ports: []int{good.port}}}, agentOpts{deps: pol.deps})
	m.addAgent("s2", []LocalService{{Name: "web", Address: "127.0.0.2", Ports: []int{good.port}}}, agentOpts{deps: pol.deps})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps, cfg: randomPicks})
	vip := client.vipAddr(t, "web", good.port)
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer c.CloseIdleConnections()

	const bad = "s2/web"
	for i := 0; ; i++ {
		if o, ok := client.outlier(bad); ok && o.Ejected {
			break
		}
		if i == 200 {
			t.Fatalf("not ejected after 200 requests; it answered %d of them", badHits.Load())
		}
		get(t, c, "GET", "http://"+vip+"/", nil)
	}
	if got := badHits.Load(); got < 3 {
		t.Fatalf("ejected after %d errors, want consecutive_errors 3", got)
	}
	// The failure is fed back after the answer was relayed: the event
	// that counts it may follow the state the status reads.
	eventually(t, "the ejection to be counted", func() bool {
		return client.metric(t, MetricEjections, "service", "web") == 1 && client.metric(t, MetricEjected, "service", "web") == 1
	})

	// While it is out, every request goes to the other instance. Only
	// requests sent with time to spare before the ejection ends count.
	hits := badHits.Load()
	sent := 0
	for range 30 {
		o, _ := client.outlier(bad)
		if remaining(t, o) < base/4 {
			break
		}
		if resp, _ := get(t, c, "GET", "http://"+vip+"/", nil); resp.StatusCode != 200 {
			t.Fatalf("while the failing instance is ejected: %d", resp.StatusCode)
		}
		sent++
	}
	if sent == 0 {
		t.Fatal("no request sent while ejected: the machine is too slow for this test")
	}
	if got := badHits.Load(); got != hits {
		t.Errorf("the ejected instance got %d of %d requests", got-hits, sent)
	}

	// After base_ejection_time it returns on probation...
	eventually(t, "the instance to return on probation", func() bool {
		o, ok := client.outlier(bad)
		return ok && !o.Ejected && o.Probation
	})
	eventually(t, "the return to be counted", func() bool {
		return client.metric(t, MetricEjected, "service", "web") == 0
	})
	// ...gets requests again, and its first failure ejects it for twice
	// as long.
	eventually(t, "the instance to be ejected again on probation", func() bool {
		get(t, c, "GET", "http://"+vip+"/", nil)
		o, _ := client.outlier(bad)
		return o.Ejected
	})
	o, _ := client.outlier(bad)
	if o.Ejections != 2 || remaining(t, o) <= base {
		t.Errorf("second ejection: %+v, want ejection 2 for about %s", o, 2*base)
	}
	eventually(t, "the second ejection to be counted", func() bool {
		return client.metric(t, MetricEjections, "service", "web") == 2
	})
}

// attemptFailures sums a's connect attempt failures over their reasons.
func (a *agent) attemptFailures(t *testing.T) float64 {
	t.Helper()
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == MetricAttemptFailures {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// TestOutlierEjectsKilledInstance: an instance whose agent is stopped is
// ejected on connect failures (L4), after which no connection tries it,
// and the ejection shows in the status.
func TestOutlierEjectsKilledInstance(t *testing.T) {
	pol := newL7Policy() // db is tcp
	pol.res["db"] = &policy.Resilience{OutlierDetection: &policy.OutlierDetection{
		ConsecutiveErrors: 2, Interval: policy.Duration(time.Minute), BaseEjectionTime: policy.Duration(time.Hour), MaxEjectedPercent: 50,
	}}
	m := newMesh(t)
	b1 := startBackend(t, identify("s1"))
	startBackendAt(t, fmt.Sprintf("127.0.0.2:%d", b1.port), identify("s2"))
	m.addAgent("s1", []LocalService{{Name: "db", Ports: []int{b1.port}}}, agentOpts{deps: pol.deps})
	s2 := m.addAgent("s2", []LocalService{{Name: "db", Address: "127.0.0.2", Ports: []int{b1.port}}}, agentOpts{deps: pol.deps})
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps, cfg: randomPicks})
	vip := client.vipAddr(t, "db", b1.port)
	seen := map[string]int{}
	for range 40 {
		got, _ := readAll(t, dial(t, vip))
		seen[got]++
	}
	if seen["s1"] == 0 || seen["s2"] == 0 {
		t.Fatalf("both instances must serve before the kill: %v", seen)
	}

	// The agent stops; gossip has not noticed, so the catalog still lists
	// it.
	s2.pc.Close()
	s2.tr.Close()
	const dead = "s2/db"
	for i := 0; ; i++ {
		if o, ok := client.outlier(dead); ok && o.Ejected {
			break
		}
		if i == 200 {
			t.Fatalf("the stopped instance was not ejected after 200 connections")
		}
		// Connect tries another instance after a failure: the
		// application is served either way.
		if got, _ := readAll(t, dial(t, vip)); got != "s1" {
			t.Fatalf("connection %d after the kill answered %q, want s1", i, got)
		}
	}
	failures := client.attemptFailures(t)
	for i := range 30 {
		if got, _ := readAll(t, dial(t, vip)); got != "s1" {
			t.Fatalf("connection %d while ejected answered %q", i, got)
		}
	}
	if got := client.attemptFailures(t); got != failures {
		t.Errorf("%v connect attempts failed while the stopped instance was ejected, want none", got-failures)
	}
	if got := client.metric(t, MetricEjections, "service", "db"); got != 1 {
		t.Errorf("%s{service=db} = %v, want 1", MetricEjections, got)
	}
	o, _ := client.outlier(dead)
	if o.Service != "db" || o.Ejections != 1 || remaining(t, o) <= 59*time.Minute {
		t.Errorf("status of the stopped instance: %+v", o)
	}
}

// TestL7CircuitBreakerMaxPending: with max_pending 1 and one request
// waiting on a connect to an agent that does not answer, a second request
// fails at once with 503 circuit_open.
func TestL7CircuitBreakerMaxPending(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	pol.res["web"] = &policy.Resilience{
		CircuitBreaker: &policy.CircuitBreaker{MaxPending: 1},
		Timeouts:       &policy.Timeouts{Request: policy.Duration(time.Second)},
	}
	m := newMesh(t)
	// The instance's agent stops before anyone connects, leaving its UDP
	// socket bound and unread: a QUIC dial to it waits for its timeout.
	mute := m.addAgent("mute", []LocalService{{Name: "web", Ports: []int{8080}}}, agentOpts{deps: pol.deps})
	mute.tr.Close()
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	vip := client.vipAddr(t, "web", 8080)
	c := &http.Client{}
	defer c.CloseIdleConnections()

	first := make(chan int, 1)
	go func() {
		resp, err := c.Get("http://" + vip + "/")
		if err != nil {
			first <- -1
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	eventually(t, "the first request to wait on a connect", func() bool {
		return client.tr.breakers.For("web").InUse(breaker.Pending) == 1
	})
	resp, body := get(t, c, "GET", "http://"+vip+"/", nil)
	if resp.StatusCode != 503 || resp.Header.Get(l7.ErrorHeader) != l7.ReasonCircuitOpen || !strings.Contains(body, "max_pending 1") {
		t.Errorf("second request: %d %q %q", resp.StatusCode, resp.Header.Get(l7.ErrorHeader), body)
	}
	if got := client.metric(t, MetricCircuitRejected, "service", "web", "limit", "max_pending"); got != 1 {
		t.Errorf("%s{limit=max_pending} = %v, want 1", MetricCircuitRejected, got)
	}
	if code := <-first; code < 500 {
		t.Errorf("the request to a silent instance ended with %d", code)
	}
	if n := client.tr.breakers.For("web").InUse(breaker.Pending); n != 0 {
		t.Errorf("%d pending after the request ended", n)
	}
}

// TestOutlierCapWhenEveryInstanceFails: with every instance answering 503
// and max_ejected_percent 50, no more than one of three instances is ever
// ejected at once, and one is.
func TestOutlierCapWhenEveryInstanceFails(t *testing.T) {
	pol := newL7Policy()
	pol.protos["web"] = "http"
	pol.res["web"] = &policy.Resilience{OutlierDetection: &policy.OutlierDetection{
		ConsecutiveErrors: 1, Interval: policy.Duration(time.Minute), BaseEjectionTime: policy.Duration(time.Hour), MaxEjectedPercent: 50,
	}}
	m := newMesh(t)
	port := 0
	for i := range 3 {
		addr := fmt.Sprintf("127.0.0.%d:%d", i+1, port)
		app := startHTTPAppWith(t, fmt.Sprint("web-", i), addr, func(s *http.Server) {
			s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
		})
		port = app.port
		m.addAgent(fmt.Sprint("s", i), []LocalService{{Name: "web", Address: fmt.Sprintf("127.0.0.%d", i+1), Ports: []int{port}}},
			agentOpts{deps: pol.deps})
	}
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps, cfg: randomPicks})
	vip := client.vipAddr(t, "web", port)
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	most := 0
	for range 60 {
		if resp, _ := get(t, c, "GET", "http://"+vip+"/", nil); resp.StatusCode != 503 {
			t.Fatalf("status %d, want the apps' 503", resp.StatusCode)
		}
		n := 0
		for _, o := range client.tr.Status().Outliers {
			if o.Ejected {
				n++
			}
		}
		most = max(most, n)
		if n > 1 {
			t.Fatalf("%d of 3 instances ejected at once, over max_ejected_percent 50", n)
		}
	}
	if most != 1 {
		t.Fatalf("no instance ejected although all failed")
	}
	if got := client.metric(t, MetricEjections, "service", "web"); got != 1 {
		t.Errorf("%s = %v, want 1", MetricEjections, got)
	}
}
