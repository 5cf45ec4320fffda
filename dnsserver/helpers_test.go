package dnsserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/catalog"
)

// bigCount is the number of instances of the "big" service: enough that an
// A answer (16 bytes each) overflows any UDP size this server sends.
const bigCount = 200

// testMembers is the catalog most tests answer from.
func testMembers() []catalog.Member {
	ms := []catalog.Member{
		{Status: catalog.StatusAlive, Record: catalog.Record{Node: "node-a", Addr: "10.0.0.1", Services: []catalog.Service{
			{ID: "web-1", Name: "web", Port: 80, Tags: []string{"v1", "Primary"}, Health: catalog.Passing},
			{ID: "db", Name: "db", Port: 5432, Health: catalog.Critical},
			{ID: "noport", Name: "noport", Health: catalog.Passing},
		}}},
		{Status: catalog.StatusFailed, Record: catalog.Record{Node: "node-b", Addr: "10.0.0.2", Services: []catalog.Service{
			{ID: "web-2", Name: "web", Port: 80, Tags: []string{"v1"}, Health: catalog.Passing},
		}}},
		{Status: catalog.StatusSuspect, Record: catalog.Record{Node: "node-c", Addr: "10.0.0.3", Services: []catalog.Service{
			{ID: "web-3", Name: "web", Address: "10.9.9.9", Port: 8080, Tags: []string{"v2"}, Health: catalog.Passing},
		}}},
		{Status: catalog.StatusAlive, Record: catalog.Record{Node: "node-d", Addr: "fd00::4", Services: []catalog.Service{
			{ID: "web-4", Name: "web", Port: 80, Health: catalog.Passing},
		}}},
		{Status: catalog.StatusAlive, Record: catalog.Record{Node: "Node-E", Addr: "10.0.0.5", Services: []catalog.Service{
			{ID: "api", Name: "API", Port: 9000, Health: catalog.Passing},
			{ID: "web-5", Name: "web", Port: 80, Health: catalog.Warning},
		}}},
	}
	for i := 0; i < bigCount; i++ {
		ms = append(ms, catalog.Member{Status: catalog.StatusAlive, Record: catalog.Record{
			Node: fmt.Sprintf("big-%03d", i), Addr: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1),
			Services: []catalog.Service{{ID: "big", Name: "big", Port: 7000, Health: catalog.Passing}},
		}})
	}
	return ms
}

// fakeVIPs is a VIPResolver over a fixed table.
type fakeVIPs map[string]netip.Addr

func (f fakeVIPs) VIP(svc string) (netip.Addr, bool) {
	a, ok := f[strings.ToLower(svc)]
	return a, ok
}

func (f fakeVIPs) ServiceAt(ip netip.Addr) (string, bool) {
	for s, a := range f {
		if a == ip {
			return s, true
		}
	}
	return "", false
}

var testVIPs = fakeVIPs{"web": netip.MustParseAddr("127.77.0.1"), "api": netip.MustParseAddr("127.77.0.2")}

func testConfig() Config {
	c := DefaultConfig()
	c.ServiceTTL = 0
	c.NodeTTL = 30e9
	c.NegativeTTL = 5e9
	return c
}

// newTestServer returns an unstarted server over testMembers.
func newTestServer(t testing.TB, cfg Config, vips VIPResolver) (*Server, *catalog.Store, *prometheus.Registry) {
	t.Helper()
	store := catalog.NewStore()
	store.Publish(testMembers())
	reg := prometheus.NewRegistry()
	deps := Deps{Catalog: store, Registerer: reg}
	if vips != nil {
		deps.VIPs = vips
	}
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, store, reg
}

// startTestServer starts s on a free loopback port and returns the address.
func startTestServer(t testing.TB, s *Server) string {
	t.Helper()
	pc, l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if err := s.Start(context.Background(), pc, l); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return pc.LocalAddr().String()
}

// exchange sends m over network ("udp" or "tcp") and fails the test on a
// transport error.
func exchange(t testing.TB, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange %s %s: %v", network, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	}
	return r
}

// rawExchange is exchange that also returns the response bytes as sent.
func rawExchange(t testing.TB, network, addr string, m *dns.Msg) ([]byte, *dns.Msg) {
	t.Helper()
	co, err := dns.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	co.SetDeadline(time.Now().Add(10 * time.Second))
	if err := co.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := co.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil {
		t.Fatalf("unpack response: %v", err)
	}
	return buf[:n], r
}

// rrStrings renders records without owner and TTL ("A 10.0.0.1",
// "SRV 1 1 80 node-a.node.mesh."), sorted, for order-free comparison.
func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		f := strings.Fields(rr.String())
		// owner TTL class type rdata...
		out = append(out, strings.ToLower(strings.Join(append([]string{f[3]}, f[4:]...), " ")))
	}
	sort.Strings(out)
	return out
}

// recorder is a dns.ResponseWriter that keeps what is written.
type recorder struct {
	mu     sync.Mutex
	remote net.Addr
	msgs   [][]byte
}

func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = r.Write(b)
	return err
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, append([]byte(nil), b...))
	return len(b), nil
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

// catalog0 is a passing service on port 1.
func catalog0(name string) catalog.Service {
	return catalog.Service{ID: name, Name: name, Port: 1, Health: catalog.Passing}
}

func itoa(i int) string { return fmt.Sprint(i) }

// counterValue sums the counter name over the series whose labels include
// labels.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := labels[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}
