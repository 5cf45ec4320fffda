package dnsserver

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var hotQueries = []struct {
	name  string
	qname string
	qtype uint16
	edns  bool
}{
	{"service A", "web.service.mesh.", dns.TypeA, false},
	{"service A EDNS", "WEB.service.mesh.", dns.TypeA, true},
	{"tag A", "v1.web.service.mesh.", dns.TypeA, false},
	{"SRV", "_web._tcp.service.mesh.", dns.TypeSRV, true},
	{"big SRV truncated", "big.service.mesh.", dns.TypeSRV, false},
	{"node", "node-a.node.mesh.", dns.TypeA, false},
	{"NXDOMAIN", "nope.service.mesh.", dns.TypeA, false},
	{"NODATA", "db.service.mesh.", dns.TypeA, false},
	{"PTR", "1.0.0.10.in-addr.arpa.", dns.TypePTR, false},
	{"refused", "example.org.", dns.TypeA, false},
}

// TestHotPathAllocs checks that answering from the catalog allocates
// nothing: parse, lookup, shuffle, wire encoding and metrics. The only
// allocations left on a UDP query are in the socket layer (none for
// *net.UDPConn with netip addresses); forwarded queries allocate freely.
func TestHotPathAllocs(t *testing.T) {
	for mode, vips := range map[string]VIPResolver{"direct": nil, "vip": testVIPs} {
		s, _, _ := newTestServer(t, testConfig(), vips)
		sc := newScratch()
		for _, hq := range hotQueries {
			msg := packQuery(t, hq.qname, hq.qtype, hq.edns)
			t.Run(mode+"/"+hq.name, func(t *testing.T) {
				s.respond(sc, msg, false) // warm the scratch slices
				allocs := testing.AllocsPerRun(200, func() {
					start := time.Now()
					resp, act := s.respond(sc, msg, false)
					if act != actReply || len(resp) == 0 {
						t.Fatal("no reply")
					}
					s.metrics.observe(sc.q.qtype, sc.rcode, srcLocal, start)
				})
				if allocs != 0 {
					t.Errorf("%v allocations per query, want 0", allocs)
				}
			})
		}
	}
}

// TestUDPAllocs measures a whole query over a real UDP socket, client and
// server together: reading the datagram (ReadFromUDPAddrPort), answering,
// and writing (WriteToUDPAddrPort) allocate nothing either.
func TestUDPAllocs(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), nil)
	addr := startTestServer(t, s)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := packQuery(t, "_web._tcp.service.mesh.", dns.TypeSRV, true)
	buf := make([]byte, 2048)
	c.SetDeadline(time.Now().Add(time.Minute))
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	})
	// AllocsPerRun truncates the average: occasional runtime allocations
	// (a timer, a goroutine stack) round to 0, one per query does not.
	if allocs != 0 {
		t.Errorf("%v allocations per UDP query, want 0", allocs)
	}
}

func BenchmarkRespond(b *testing.B) {
	s, _, _ := newTestServer(b, testConfig(), nil)
	sc := newScratch()
	for _, hq := range hotQueries {
		msg := packQuery(b, hq.qname, hq.qtype, hq.edns)
		b.Run(hq.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.respond(sc, msg, false)
			}
		})
	}
}

// BenchmarkUDP measures one query at a time over loopback UDP, client
// included: a latency figure, not a throughput one (see bench/dns).
func BenchmarkUDP(b *testing.B) {
	s, _, _ := newTestServer(b, testConfig(), nil)
	addr := startTestServer(b, s)
	c, err := net.Dial("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := packQuery(b, "web.service.mesh.", dns.TypeA, true)
	buf := make([]byte, 2048)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
