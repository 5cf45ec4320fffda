package dnsserver

import (
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testRecursor is a DNS server on loopback standing in for an upstream
// resolver. It counts the queries it receives.
type testRecursor struct {
	addr string
	hits atomic.Int64
	opts atomic.Int64 // queries that carried an OPT record
}

// recursorMode says how a test recursor answers.
type recursorMode int

const (
	answerA  recursorMode = iota // example.org. A 192.0.2.<n>
	hang                         // never answers while the test runs
	servfail                     // SERVFAIL
)

// startRecursor serves UDP and TCP on one loopback port; n is the last
// octet of its A answers, so tests can tell recursors apart.
func startRecursor(t *testing.T, mode recursorMode, n byte) *testRecursor {
	t.Helper()
	pc, l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &testRecursor{addr: pc.LocalAddr().String()}
	release := make(chan struct{})
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r.hits.Add(1)
		if q.IsEdns0() != nil {
			r.opts.Add(1)
		}
		m := new(dns.Msg)
		m.SetReply(q)
		m.RecursionAvailable = true
		switch mode {
		case hang:
			<-release
			return
		case servfail:
			m.Rcode = dns.RcodeServerFailure
		default:
			if q.Question[0].Qtype == dns.TypeA || q.Question[0].Qtype == dns.TypePTR {
				rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2." + itoa(int(n)))
				if q.Question[0].Qtype == dns.TypePTR {
					rr, _ = dns.NewRR(q.Question[0].Name + " 60 IN PTR host" + itoa(int(n)) + ".example.")
				}
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: l, Handler: h}
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
	})
	// Registered after the shutdowns, so it runs before them: a hung
	// handler is let go first.
	t.Cleanup(func() { close(release) })
	return r
}

// deadAddr is a loopback UDP/TCP port with nothing listening.
func deadAddr(t *testing.T) string {
	t.Helper()
	pc, l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	l.Close()
	return addr
}

func forwardServer(t *testing.T, recursors ...string) (string, *Server) {
	t.Helper()
	cfg := testConfig()
	cfg.Recursors = recursors
	cfg.RecursorTimeout = 300 * time.Millisecond
	s, _, _ := newTestServer(t, cfg, nil)
	return startTestServer(t, s), s
}

func TestForward(t *testing.T) {
	good := startRecursor(t, answerA, 1)
	good2 := startRecursor(t, answerA, 2)
	tests := []struct {
		name      string
		recursors []string
		rcode     int
		answer    []string
	}{
		{"one recursor", []string{good.addr}, dns.RcodeSuccess, []string{"a 192.0.2.1"}},
		{"dead first fails over", []string{deadAddr(t), good2.addr}, dns.RcodeSuccess, []string{"a 192.0.2.2"}},
		{"SERVFAIL first fails over", []string{startRecursor(t, servfail, 0).addr, good.addr}, dns.RcodeSuccess, []string{"a 192.0.2.1"}},
		{"slow first fails over", []string{startRecursor(t, hang, 0).addr, good2.addr}, dns.RcodeSuccess, []string{"a 192.0.2.2"}},
		{"all dead is SERVFAIL", []string{deadAddr(t), deadAddr(t)}, dns.RcodeServerFailure, nil},
		{"all SERVFAIL is SERVFAIL", []string{startRecursor(t, servfail, 0).addr}, dns.RcodeServerFailure, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := forwardServer(t, tc.recursors...)
			for _, network := range []string{"udp", "tcp"} {
				m := new(dns.Msg)
				m.SetQuestion("Example.ORG.", dns.TypeA)
				m.SetEdns0(1232, false)
				r := exchange(t, network, addr, m)
				if r.Rcode != tc.rcode {
					t.Fatalf("%s: rcode %s, want %s", network, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if got := rrStrings(r.Answer); !slices.Equal(got, tc.answer) {
					t.Errorf("%s: answer %q, want %q", network, got, tc.answer)
				}
				if r.Id != m.Id || r.Question[0].Name != "Example.ORG." || r.Authoritative || !r.RecursionAvailable {
					t.Errorf("%s: id %d/%d question %q AA %v RA %v", network, r.Id, m.Id, r.Question[0].Name, r.Authoritative, r.RecursionAvailable)
				}
			}
		})
	}
	if good.opts.Load() == 0 {
		t.Error("the recursor never saw the client's OPT record")
	}
}

// TestForwardSticky checks that once the first recursor failed, the next
// queries go to the one that answered, without waiting for the timeout.
func TestForwardSticky(t *testing.T) {
	slow := startRecursor(t, hang, 0)
	good := startRecursor(t, answerA, 1)
	addr, _ := forwardServer(t, slow.addr, good.addr)
	for i := 0; i < 5; i++ {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeA)
		if r := exchange(t, "udp", addr, m); len(r.Answer) != 1 {
			t.Fatalf("query %d: %v", i, r)
		}
	}
	if n := slow.hits.Load(); n != 1 {
		t.Errorf("the hung recursor got %d queries, want only the first", n)
	}
	if n := good.hits.Load(); n != 5 {
		t.Errorf("the good recursor got %d queries, want 5", n)
	}
}

// TestForwardPTR checks that PTR for addresses the catalog does not know
// goes to the recursors, and catalog addresses do not.
func TestForwardPTR(t *testing.T) {
	good := startRecursor(t, answerA, 7)
	addr, _ := forwardServer(t, good.addr)
	m := new(dns.Msg)
	m.SetQuestion("9.9.9.9.in-addr.arpa.", dns.TypePTR)
	if r := exchange(t, "udp", addr, m); !slices.Equal(rrStrings(r.Answer), []string{"ptr host7.example."}) {
		t.Errorf("unknown address: %v", r.Answer)
	}
	m.SetQuestion("1.0.0.10.in-addr.arpa.", dns.TypePTR)
	if r := exchange(t, "udp", addr, m); !slices.Equal(rrStrings(r.Answer), []string{"ptr node-a.node.mesh."}) {
		t.Errorf("catalog address: %v", r.Answer)
	}
	if n := good.hits.Load(); n != 1 {
		t.Errorf("recursor got %d queries, want 1", n)
	}
}

// TestForwardClose checks that Close does not wait for a hung recursor.
func TestForwardClose(t *testing.T) {
	slow := startRecursor(t, hang, 0)
	cfg := testConfig()
	cfg.Recursors = []string{slow.addr}
	cfg.RecursorTimeout = time.Hour
	s, _, _ := newTestServer(t, cfg, nil)
	pc, l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), pc, l); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	b, _ := m.Pack()
	c.Write(b)
	// Wait until the query is in flight at the recursor.
	deadline := time.Now().Add(10 * time.Second)
	for slow.hits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("query never reached the recursor")
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close waited for the recursor timeout of 1h")
	}
}

// TestServeDNSForward checks forwarding through the dns.Handler adapter.
func TestServeDNSForward(t *testing.T) {
	good := startRecursor(t, answerA, 9)
	cfg := testConfig()
	cfg.Recursors = []string{deadAddr(t), good.addr}
	s, _, _ := newTestServer(t, cfg, nil)
	for _, remote := range []net.Addr{&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}} {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeA)
		rec := &recorder{remote: remote}
		s.ServeDNS(rec, m)
		if len(rec.msgs) != 1 {
			t.Fatalf("%s: %d messages written", remote.Network(), len(rec.msgs))
		}
		r := new(dns.Msg)
		if err := r.Unpack(rec.msgs[0]); err != nil {
			t.Fatal(err)
		}
		if r.Id != m.Id || !slices.Equal(rrStrings(r.Answer), []string{"a 192.0.2.9"}) {
			t.Errorf("%s: %v", remote.Network(), r)
		}
	}
}
