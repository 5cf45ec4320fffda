package transport

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/freeport"
)

// samePortBackends starts one backend per address on a common port, so
// that several nodes can declare the same service port on one host.
func samePortBackends(t *testing.T, handle func(ip string) func(net.Conn), ips ...string) int {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		first.Close()
		ok := true
		for _, ip := range ips {
			ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if !ok {
			continue
		}
		for _, ip := range ips {
			startBackendAt(t, fmt.Sprintf("%s:%d", ip, port), handle(ip))
		}
		return port
	}
	t.Fatal("no common free port")
	return 0
}

// ask connects to addr and returns what the service says.
func ask(t *testing.T, addr string) string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	c.CloseWrite()
	got, err := readAll(t, c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return got
}

func TestFailoverOnDialFailure(t *testing.T) {
	m := newMesh(t)
	// b1 declares the service at 127.0.0.2, where nothing listens: every
	// dial there fails, and the client must move to b2.
	port := samePortBackends(t, func(ip string) func(net.Conn) { return identify(ip) }, "127.0.0.3")
	m.addAgent("b1", []LocalService{{Name: "api", Address: "127.0.0.2", Ports: []int{port}}}, agentOpts{})
	m.addAgent("b2", []LocalService{{Name: "api", Address: "127.0.0.3", Ports: []int{port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "api", port)
	for i := range 20 {
		if got := ask(t, addr); got != "127.0.0.3" {
			t.Fatalf("connection %d answered %q", i, got)
		}
	}
	if n := client.metric(t, MetricAttemptFailures, "reason", "dial_failed"); n < 1 {
		t.Error("b1 was never tried: the test proves nothing")
	}
	if n := client.metric(t, MetricOutbound, "result", "ok"); n != 20 {
		t.Errorf("ok = %v, want 20", n)
	}
}

func TestFailoverPeerDown(t *testing.T) {
	m := newMesh(t)
	port := samePortBackends(t, func(ip string) func(net.Conn) { return identify(ip) }, "127.0.0.2", "127.0.0.3")
	b1 := m.addAgent("b1", []LocalService{{Name: "api", Address: "127.0.0.2", Ports: []int{port}}}, agentOpts{})
	m.addAgent("b2", []LocalService{{Name: "api", Address: "127.0.0.3", Ports: []int{port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{cfg: func(c *Config) {
		c.HandshakeTimeout = 500 * time.Millisecond
		c.AttemptTimeout = time.Second
	}})
	addr := client.vipAddr(t, "api", port)
	seen := map[string]int{}
	for range 10 {
		seen[ask(t, addr)]++
	}
	if seen["127.0.0.2"] == 0 {
		t.Fatalf("b1 unused before it died (%v); the test proves nothing", seen)
	}
	// b1's agent dies, and gossip has not noticed yet.
	b1.tr.Close()
	b1.pc.Close()
	for i := range 10 {
		if got := ask(t, addr); got != "127.0.0.3" {
			t.Fatalf("connection %d after b1 died answered %q", i, got)
		}
	}
}

func TestNodeFailedLeavesPoolAtOnce(t *testing.T) {
	m := newMesh(t)
	port := samePortBackends(t, func(ip string) func(net.Conn) { return identify(ip) }, "127.0.0.2", "127.0.0.3")
	b1 := m.addAgent("b1", []LocalService{{Name: "api", Address: "127.0.0.2", Ports: []int{port}}}, agentOpts{})
	m.addAgent("b2", []LocalService{{Name: "api", Address: "127.0.0.3", Ports: []int{port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "api", port)
	seen := map[string]int{}
	for range 20 {
		seen[ask(t, addr)]++
	}
	if seen["127.0.0.2"] == 0 || seen["127.0.0.3"] == 0 {
		t.Fatalf("both instances must serve first: %v", seen)
	}
	cur, _ := client.tr.tun.PeerConn("b1")
	conn := cur.Conn
	if conn == nil {
		t.Fatal("no connection to b1")
	}

	// Gossip declares b1 failed; its agent is in fact still up, so only
	// the catalog can keep traffic away from it.
	b1.setStatus(catalog.StatusFailed)
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection to the failed node was not closed")
	}
	_, still := client.tr.tun.PeerConn("b1")
	if still {
		t.Error("the failed node is still in the peer table")
	}
	if n := client.tr.lb.eps.Len(); n != 1 {
		t.Errorf("balancer keeps %d endpoints, want 1 (b2 only)", n)
	}
	for i := range 20 {
		if got := ask(t, addr); got != "127.0.0.3" {
			t.Fatalf("connection %d went to %q after b1 failed", i, got)
		}
	}
	if n := client.metric(t, MetricAttemptFailures); n != 0 {
		t.Errorf("%v failed attempts: the failed node was tried", n)
	}
}

// vclock is a virtual clock shared by the test's agents.
type vclock struct{ ns atomic.Int64 }

func (c *vclock) now() time.Duration      { return time.Duration(c.ns.Load()) }
func (c *vclock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestBalancingPrefersFastInstance(t *testing.T) {
	m := newMesh(t)
	clk := &vclock{}
	port := samePortBackends(t, func(ip string) func(net.Conn) { return identify(ip) }, "127.0.0.2", "127.0.0.3")
	// The slow instance takes 10 virtual ms to connect, the fast one 1 ms:
	// the balancer sees the difference through its clock, as it would see
	// real latency, without the test depending on timing.
	slowDial := func(d time.Duration) func(*Deps) {
		return func(deps *Deps) {
			deps.DialLocal = func(ctx context.Context, network, addr string) (net.Conn, error) {
				clk.advance(d)
				var nd net.Dialer
				return nd.DialContext(ctx, network, addr)
			}
		}
	}
	m.addAgent("slow", []LocalService{{Name: "api", Address: "127.0.0.2", Ports: []int{port}}}, agentOpts{deps: slowDial(10 * time.Millisecond)})
	m.addAgent("fast", []LocalService{{Name: "api", Address: "127.0.0.3", Ports: []int{port}}}, agentOpts{deps: slowDial(time.Millisecond)})
	client := m.addAgent("client", nil, agentOpts{deps: func(d *Deps) { d.Clock = clk.now }})
	addr := client.vipAddr(t, "api", port)
	seen := map[string]int{}
	const n = 100
	for range n {
		seen[ask(t, addr)]++
		clk.advance(100 * time.Millisecond) // requests arrive spaced out
	}
	t.Logf("picks: %v", seen)
	if fast := float64(seen["127.0.0.3"]) / n; fast < 0.9 {
		t.Errorf("fast instance got %.2f of connections, want ≥ 0.9", fast)
	}
}

// splitSource is a fixed split.
type splitSource map[string][]SplitTarget

func (s splitSource) SplitFor(svc string) []SplitTarget { return s[strings.ToLower(svc)] }

func TestSplitWeightsHonoured(t *testing.T) {
	m := newMesh(t)
	port := samePortBackends(t, func(ip string) func(net.Conn) { return identify(ip) }, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	m.addAgent("v1", []LocalService{{Name: "api", Address: "127.0.0.2", Ports: []int{port}}}, agentOpts{tags: map[string][]string{"api": {"v1"}}})
	m.addAgent("v2", []LocalService{{Name: "api", Address: "127.0.0.3", Ports: []int{port}}}, agentOpts{tags: map[string][]string{"api": {"v2"}}})
	m.addAgent("canary", []LocalService{{Name: "api", Address: "127.0.0.4", Ports: []int{port}}}, agentOpts{meta: map[string]map[string]string{"api": {"track": "canary"}}})
	splits := splitSource{"api": {
		{Tags: []string{"v1"}, Weight: 70},
		{Tags: []string{"v2"}, Weight: 20},
		{Meta: map[string]string{"track": "canary"}, Weight: 10},
		{Tags: []string{"v3"}, Weight: 50}, // no instance: its share goes to the others
	}}
	client := m.addAgent("client", nil, agentOpts{deps: func(d *Deps) { d.Splits = splits }, cfg: func(c *Config) { c.Seed = 99 }})
	addr := client.vipAddr(t, "api", port)
	const n = 400
	counts := map[string]int{}
	for range n {
		counts[ask(t, addr)]++
	}
	obs := []int{counts["127.0.0.2"], counts["127.0.0.3"], counts["127.0.0.4"]}
	w := []float64{70, 20, 10}
	var x2 float64
	for i, o := range obs {
		exp := n * w[i] / 100
		x2 += (float64(o) - exp) * (float64(o) - exp) / exp
	}
	t.Logf("counts v1/v2/canary = %v, χ² = %.2f", obs, x2)
	if obs[0]+obs[1]+obs[2] != n {
		t.Fatalf("some connections went elsewhere: %v", counts)
	}
	if x2 > 13.82 { // χ², 2 degrees of freedom, p = 0.001
		t.Errorf("split weights not honoured: χ² = %.2f", x2)
	}
}

func TestSelfDialThroughUpstream(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	bind := freeAddr(t)
	a := m.addAgent("solo", []LocalService{
		{Name: "echo", Ports: []int{be.port}},
		{Name: "frontend", Upstreams: []Upstream{{Service: "echo", LocalBind: bind}}},
	}, agentOpts{})
	eventually(t, "upstream listener", func() bool { return len(a.tr.Listeners()) > 0 })
	c := dial(t, bind)
	io.WriteString(c, "to myself")
	c.CloseWrite()
	if got, err := readAll(t, c); got != "to myself" || err != nil {
		t.Fatalf("got %q, %v", got, err)
	}
	if calls := a.authz.seen(); len(calls) != 1 || calls[0] != m.ca.ServiceID("frontend")+"->echo" {
		t.Errorf("authorizer saw %v", calls)
	}
}

// freeAddr returns a loopback address nothing listens on, for a listener
// that the transport opens later.
func freeAddr(t *testing.T) string {
	t.Helper()
	// A loopback address of its own, which nothing else in the tests
	// binds: the port found free cannot be taken before the caller binds
	// it, as one on 127.0.0.1 can by any test's outbound connection.
	ip := fmt.Sprintf("127.200.%d.%d", rand.IntN(256), 1+rand.IntN(254))
	port, err := freeport.TCP(ip)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(ip, strconv.Itoa(port))
}
