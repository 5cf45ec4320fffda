package dnsserver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshwork/meshwork/catalog"
)

// queryCase is one question and the answer the server must give.
type queryCase struct {
	name   string
	qname  string
	qtype  uint16
	qclass uint16 // IN when 0
	rcode  int
	auth   bool     // AA expected
	answer []string // rrStrings of the answer section
	extra  []string // rrStrings of the additional section (OPT excluded)
	soa    bool     // the SOA is expected in the authority section
	ttl    int      // TTL of every answer record, when >= 0
}

func directCases() []queryCase {
	const (
		svcTTL  = 0
		nodeTTL = 30
	)
	return []queryCase{
		{name: "service A", qname: "web.service.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1", "a 10.9.9.9"}, ttl: svcTTL},
		{name: "service AAAA", qname: "web.service.mesh.", qtype: dns.TypeAAAA, auth: true, answer: []string{"aaaa fd00::4"}, ttl: svcTTL},
		{name: "service ANY", qname: "web.service.mesh.", qtype: dns.TypeANY, auth: true, answer: []string{"a 10.0.0.1", "a 10.9.9.9", "aaaa fd00::4"}, ttl: svcTTL},
		{name: "tag A skips failed node", qname: "v1.web.service.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1"}, ttl: svcTTL},
		{name: "tag case-insensitive", qname: "primary.web.service.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1"}, ttl: svcTTL},
		{name: "tag NODATA for other family", qname: "v2.web.service.mesh.", qtype: dns.TypeAAAA, auth: true, soa: true, ttl: -1},
		{name: "unknown tag NXDOMAIN", qname: "nope.web.service.mesh.", qtype: dns.TypeA, rcode: dns.RcodeNameError, auth: true, soa: true, ttl: -1},
		{name: "service name case", qname: "api.service.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.5"}, ttl: svcTTL},
		{name: "SRV", qname: "web.service.mesh.", qtype: dns.TypeSRV, auth: true,
			answer: []string{"srv 1 1 80 node-a.node.mesh.", "srv 1 1 80 node-d.node.mesh.", "srv 1 1 8080 0a090909.addr.mesh."},
			extra:  []string{"a 10.0.0.1", "a 10.9.9.9", "aaaa fd00::4"}, ttl: svcTTL},
		{name: "SRV RFC 2782", qname: "_web._tcp.service.mesh.", qtype: dns.TypeSRV, auth: true,
			answer: []string{"srv 1 1 80 node-a.node.mesh.", "srv 1 1 80 node-d.node.mesh.", "srv 1 1 8080 0a090909.addr.mesh."},
			extra:  []string{"a 10.0.0.1", "a 10.9.9.9", "aaaa fd00::4"}, ttl: svcTTL},
		{name: "SRV RFC 2782 tag", qname: "_web._v1.service.mesh.", qtype: dns.TypeSRV, auth: true,
			answer: []string{"srv 1 1 80 node-a.node.mesh."}, extra: []string{"a 10.0.0.1"}, ttl: svcTTL},
		{name: "RFC 2782 name A is NODATA", qname: "_web._tcp.service.mesh.", qtype: dns.TypeA, auth: true, soa: true, ttl: -1},
		{name: "SRV without port is NODATA", qname: "noport.service.mesh.", qtype: dns.TypeSRV, auth: true, soa: true, ttl: -1},
		{name: "service without port has A", qname: "noport.service.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1"}, ttl: svcTTL},
		{name: "critical only is NODATA", qname: "db.service.mesh.", qtype: dns.TypeA, auth: true, soa: true, ttl: -1},
		{name: "unknown service NXDOMAIN", qname: "nope.service.mesh.", qtype: dns.TypeA, rcode: dns.RcodeNameError, auth: true, soa: true, ttl: -1},
		{name: "service TXT is NODATA", qname: "web.service.mesh.", qtype: dns.TypeTXT, auth: true, soa: true, ttl: -1},
		{name: "too many labels NXDOMAIN", qname: "a.b.web.service.mesh.", qtype: dns.TypeA, rcode: dns.RcodeNameError, auth: true, soa: true, ttl: -1},
		{name: "direct A", qname: "web.service.direct.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1", "a 10.9.9.9"}, ttl: svcTTL},
		{name: "empty non-terminal service", qname: "service.mesh.", qtype: dns.TypeA, auth: true, soa: true, ttl: -1},
		{name: "empty non-terminal direct", qname: "service.direct.mesh.", qtype: dns.TypeA, auth: true, soa: true, ttl: -1},
		{name: "node A", qname: "node-a.node.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1"}, ttl: nodeTTL},
		{name: "node name case", qname: "node-e.node.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.5"}, ttl: nodeTTL},
		{name: "node AAAA", qname: "node-d.node.mesh.", qtype: dns.TypeAAAA, auth: true, answer: []string{"aaaa fd00::4"}, ttl: nodeTTL},
		{name: "node other family NODATA", qname: "node-d.node.mesh.", qtype: dns.TypeA, auth: true, soa: true, ttl: -1},
		{name: "unknown node NXDOMAIN", qname: "nope.node.mesh.", qtype: dns.TypeA, rcode: dns.RcodeNameError, auth: true, soa: true, ttl: -1},
		{name: "addr name", qname: "0a090909.addr.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.9.9.9"}, ttl: nodeTTL},
		{name: "bad addr name", qname: "0a0909.addr.mesh.", qtype: dns.TypeA, rcode: dns.RcodeNameError, auth: true, soa: true, ttl: -1},
		{name: "apex SOA", qname: "mesh.", qtype: dns.TypeSOA, auth: true, answer: []string{"soa ns.mesh. hostmaster.mesh. 2 3600 600 86400 5"}, ttl: 5},
		{name: "apex NS", qname: "mesh.", qtype: dns.TypeNS, auth: true, answer: []string{"ns ns.mesh."}, extra: []string{"a 127.0.0.1"}, ttl: nodeTTL},
		{name: "apex A is NODATA", qname: "mesh.", qtype: dns.TypeA, auth: true, soa: true, ttl: -1},
		{name: "NS target", qname: "ns.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 127.0.0.1"}, ttl: nodeTTL},
		{name: "other name NXDOMAIN", qname: "foo.mesh.", qtype: dns.TypeA, rcode: dns.RcodeNameError, auth: true, soa: true, ttl: -1},
		{name: "PTR node", qname: "1.0.0.10.in-addr.arpa.", qtype: dns.TypePTR, auth: true, answer: []string{"ptr node-a.node.mesh."}, ttl: nodeTTL},
		{name: "PTR service address", qname: "9.9.9.10.in-addr.arpa.", qtype: dns.TypePTR, auth: true, answer: []string{"ptr web.service.mesh."}, ttl: svcTTL},
		{name: "PTR IPv6 node", qname: mustReverse("fd00::4"), qtype: dns.TypePTR, auth: true, answer: []string{"ptr node-d.node.mesh."}, ttl: nodeTTL},
		{name: "PTR unknown refused", qname: "9.9.9.9.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeRefused, ttl: -1},
		{name: "other zone refused", qname: "example.org.", qtype: dns.TypeA, rcode: dns.RcodeRefused, ttl: -1},
		{name: "class CH refused", qname: "web.service.mesh.", qtype: dns.TypeA, qclass: dns.ClassCHAOS, rcode: dns.RcodeRefused, ttl: -1},
		{name: "AXFR refused", qname: "mesh.", qtype: dns.TypeAXFR, rcode: dns.RcodeRefused, ttl: -1},
	}
}

func vipCases() []queryCase {
	return []queryCase{
		{name: "service A is the VIP", qname: "web.service.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 127.77.0.1"}, ttl: 0},
		{name: "tag A is the VIP", qname: "v1.web.service.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 127.77.0.1"}, ttl: 0},
		{name: "unknown tag still NXDOMAIN", qname: "nope.web.service.mesh.", qtype: dns.TypeA, rcode: dns.RcodeNameError, auth: true, soa: true, ttl: -1},
		{name: "AAAA of an IPv4 VIP is NODATA", qname: "web.service.mesh.", qtype: dns.TypeAAAA, auth: true, soa: true, ttl: -1},
		{name: "direct A is the instances", qname: "web.service.direct.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1", "a 10.9.9.9"}, ttl: 0},
		{name: "direct SRV is the instances", qname: "_web._tcp.service.direct.mesh.", qtype: dns.TypeSRV, auth: true,
			answer: []string{"srv 1 1 80 node-a.node.mesh.", "srv 1 1 80 node-d.node.mesh.", "srv 1 1 8080 0a090909.addr.mesh."},
			extra:  []string{"a 10.0.0.1", "a 10.9.9.9", "aaaa fd00::4"}, ttl: 0},
		{name: "SRV names the VIP", qname: "web.service.mesh.", qtype: dns.TypeSRV, auth: true,
			answer: []string{"srv 1 1 80 web.service.mesh.", "srv 1 1 8080 web.service.mesh."}, extra: []string{"a 127.77.0.1"}, ttl: 0},
		{name: "PTR of a VIP", qname: "1.0.77.127.in-addr.arpa.", qtype: dns.TypePTR, auth: true, answer: []string{"ptr web.service.mesh."}, ttl: 0},
		{name: "no VIP falls back to instances", qname: "noport.service.mesh.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1"}, ttl: 0},
		{name: "no VIP critical is NODATA", qname: "db.service.mesh.", qtype: dns.TypeA, auth: true, soa: true, ttl: -1},
		{name: "unknown service NXDOMAIN", qname: "nope.service.mesh.", qtype: dns.TypeA, rcode: dns.RcodeNameError, auth: true, soa: true, ttl: -1},
	}
}

func mustReverse(ip string) string {
	r, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return r
}

// checkCase asserts that r answers tc.
func checkCase(t *testing.T, tc queryCase, r *dns.Msg) {
	t.Helper()
	if r.Rcode != tc.rcode {
		t.Fatalf("rcode = %s, want %s\n%v", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode], r)
	}
	if r.Authoritative != tc.auth {
		t.Errorf("AA = %v, want %v", r.Authoritative, tc.auth)
	}
	if r.Truncated {
		t.Errorf("TC set")
	}
	if got := rrStrings(r.Answer); !slices.Equal(got, tc.answer) {
		t.Errorf("answer = %q, want %q", got, tc.answer)
	}
	if got := rrStrings(r.Extra); !slices.Equal(got, tc.extra) {
		t.Errorf("additional = %q, want %q", got, tc.extra)
	}
	hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
	if hasSOA != tc.soa || !tc.soa && len(r.Ns) != 0 {
		t.Errorf("authority = %v, want SOA: %v", r.Ns, tc.soa)
	}
	if hasSOA {
		soa := r.Ns[0].(*dns.SOA)
		if soa.Hdr.Name != "mesh." || soa.Hdr.Ttl != 5 || soa.Minttl != 5 {
			t.Errorf("negative SOA = %v, want owner mesh., TTL 5, minimum 5", soa)
		}
	}
	for _, rr := range r.Answer {
		if tc.ttl >= 0 && rr.Header().Ttl != uint32(tc.ttl) {
			t.Errorf("TTL of %v = %d, want %d", rr, rr.Header().Ttl, tc.ttl)
		}
		if !strings.EqualFold(rr.Header().Name, tc.qname) {
			t.Errorf("answer owner %q, want %q", rr.Header().Name, tc.qname)
		}
	}
}

func runCases(t *testing.T, addr string, cases []queryCase) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					m := new(dns.Msg)
					m.SetQuestion(tc.qname, tc.qtype)
					if tc.qclass != 0 {
						m.Question[0].Qclass = tc.qclass
					}
					checkCase(t, tc, exchange(t, network, addr, m))
				})
			}
		})
	}
}

func TestQueriesDirect(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), nil)
	runCases(t, startTestServer(t, s), directCases())
}

func TestQueriesVIP(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), testVIPs)
	runCases(t, startTestServer(t, s), vipCases())
}

// TestDirectSetting checks that Config.Direct keeps instance answers even
// with a VIP resolver.
func TestDirectSetting(t *testing.T) {
	cfg := testConfig()
	cfg.Direct = true
	s, _, _ := newTestServer(t, cfg, testVIPs)
	addr := startTestServer(t, s)
	runCases(t, addr, directCases()[:1])
}

// TestRecorder drives ServeDNS without sockets, on both transports.
func TestRecorder(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), nil)
	for _, remote := range []net.Addr{&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}} {
		for _, tc := range directCases() {
			t.Run(remote.Network()+"/"+tc.name, func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion(tc.qname, tc.qtype)
				if tc.qclass != 0 {
					m.Question[0].Qclass = tc.qclass
				}
				rec := &recorder{remote: remote}
				s.ServeDNS(rec, m)
				if len(rec.msgs) != 1 {
					t.Fatalf("%d messages written, want 1", len(rec.msgs))
				}
				r := new(dns.Msg)
				if err := r.Unpack(rec.msgs[0]); err != nil {
					t.Fatalf("unpack: %v", err)
				}
				if r.Id != m.Id {
					t.Errorf("id = %d, want %d", r.Id, m.Id)
				}
				checkCase(t, tc, r)
			})
		}
	}
}

// TestShuffle checks that repeated answers come in more than one order.
func TestShuffle(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), nil)
	addr := startTestServer(t, s)
	orders := map[string]bool{}
	for i := 0; i < 40 && len(orders) < 2; i++ {
		m := new(dns.Msg)
		m.SetQuestion("big.service.mesh.", dns.TypeSRV)
		r := exchange(t, "tcp", addr, m)
		orders[r.Answer[0].String()] = true
	}
	if len(orders) < 2 {
		t.Fatalf("40 answers all started with the same record: not shuffled")
	}
}

// TestCatalogUpdate checks that an answer follows a newly published
// snapshot, and the SOA serial with it.
func TestCatalogUpdate(t *testing.T) {
	s, store, _ := newTestServer(t, testConfig(), nil)
	addr := startTestServer(t, s)
	m := new(dns.Msg)
	m.SetQuestion("new.service.mesh.", dns.TypeA)
	if r := exchange(t, "udp", addr, m); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before publish: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	ms := testMembers()
	ms[0].Services = append(ms[0].Services, catalog0("new"))
	snap := store.Publish(ms)
	r := exchange(t, "udp", addr, m)
	if got := rrStrings(r.Answer); !slices.Equal(got, []string{"a 10.0.0.1"}) {
		t.Fatalf("after publish: answer %q", got)
	}
	m.SetQuestion("mesh.", dns.TypeSOA)
	r = exchange(t, "udp", addr, m)
	if serial := r.Answer[0].(*dns.SOA).Serial; serial != uint32(snap.Index()) {
		t.Errorf("SOA serial = %d, want the catalog index %d", serial, snap.Index())
	}
}

func TestTruncation(t *testing.T) {
	s, _, reg := newTestServer(t, testConfig(), nil)
	addr := startTestServer(t, s)
	tests := []struct {
		name    string
		edns    uint16 // 0: no OPT
		qtype   uint16
		maxSize int
	}{
		{"A no EDNS", 0, dns.TypeA, 512},
		{"A EDNS 1000", 1000, dns.TypeA, 1000},
		{"A EDNS 4096 capped", 4096, dns.TypeA, DefaultEDNSBufferSize},
		{"A EDNS below 512", 100, dns.TypeA, 512},
		{"SRV no EDNS", 0, dns.TypeSRV, 512},
		{"SRV EDNS 4096 capped", 4096, dns.TypeSRV, DefaultEDNSBufferSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion("big.service.mesh.", tc.qtype)
			if tc.edns > 0 {
				m.SetEdns0(tc.edns, false)
			}
			wire, r := rawExchange(t, "udp", addr, m)
			if !r.Truncated {
				t.Fatalf("TC not set on a %d-instance answer", bigCount)
			}
			if len(wire) > tc.maxSize {
				t.Errorf("UDP response is %d bytes, limit %d", len(wire), tc.maxSize)
			}
			if len(r.Answer) == 0 || len(r.Answer) >= bigCount {
				t.Errorf("truncated answer has %d records, want a partial answer", len(r.Answer))
			}
			// Whatever fits is whole and correct: the partial answer is usable.
			for _, rr := range r.Answer {
				if rr.Header().Rrtype != tc.qtype || !strings.EqualFold(rr.Header().Name, "big.service.mesh.") {
					t.Errorf("bad record in partial answer: %v", rr)
				}
			}
			if tc.edns > 0 && r.IsEdns0() == nil {
				t.Errorf("OPT missing from a truncated EDNS response")
			}
			// Fallback: the same question over TCP gets everything.
			full := exchange(t, "tcp", addr, m)
			if full.Truncated || len(full.Answer) != bigCount {
				t.Errorf("TCP: TC=%v with %d answers, want %d", full.Truncated, len(full.Answer), bigCount)
			}
			if tc.qtype == dns.TypeSRV && len(full.Extra) < bigCount {
				t.Errorf("TCP SRV: %d additional records, want %d targets", len(full.Extra), bigCount)
			}
		})
	}
	if v := counterValue(t, reg, MetricTruncated, nil); v != float64(len(tests)) {
		t.Errorf("%s = %v, want %d", MetricTruncated, v, len(tests))
	}
}

// TestTCPLimit checks that a TCP answer too big for one message is cut to
// what fits in 64 KiB.
func TestTCPLimit(t *testing.T) {
	store := catalog.NewStore()
	var ms []catalog.Member
	// 5000 AAAA answers: 28 bytes each plus the question, about 140 KB.
	for i := 0; i < 5000; i++ {
		ms = append(ms, catalog.Member{Status: catalog.StatusAlive, Record: catalog.Record{
			Node: "n" + itoa(i), Addr: netip.AddrFrom16([16]byte{0xfd, 0, 14: byte(i >> 8), 15: byte(i)}).String(),
			Services: []catalog.Service{{ID: "huge", Name: "huge", Port: 1, Health: catalog.Passing}},
		}})
	}
	store.Publish(ms)
	s, err := New(testConfig(), Deps{Catalog: store})
	if err != nil {
		t.Fatal(err)
	}
	addr := startTestServer(t, s)
	m := new(dns.Msg)
	m.SetQuestion("huge.service.mesh.", dns.TypeAAAA)
	wire, r := rawExchange(t, "tcp", addr, m)
	if len(wire) > dns.MaxMsgSize || len(r.Answer) < 2000 || len(r.Answer) >= 5000 {
		t.Fatalf("TCP answer: %d bytes with %d records; want under 64 KiB and as many as fit", len(wire), len(r.Answer))
	}
}

func TestEDNS(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), nil)
	addr := startTestServer(t, s)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			t.Run("OPT answered with our size and DO copied", func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion("web.service.mesh.", dns.TypeA)
				m.SetEdns0(4096, true)
				r := exchange(t, network, addr, m)
				opt := r.IsEdns0()
				if opt == nil {
					t.Fatal("no OPT in response")
				}
				if opt.UDPSize() != DefaultEDNSBufferSize || !opt.Do() || opt.Version() != 0 {
					t.Errorf("OPT size %d DO %v version %d; want %d true 0", opt.UDPSize(), opt.Do(), opt.Version(), DefaultEDNSBufferSize)
				}
				if len(r.Answer) != 2 {
					t.Errorf("answers = %d, want 2", len(r.Answer))
				}
			})
			t.Run("no OPT without EDNS", func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion("web.service.mesh.", dns.TypeA)
				if r := exchange(t, network, addr, m); r.IsEdns0() != nil {
					t.Error("OPT in response to a query without one")
				}
			})
			t.Run("version 1 gets BADVERS", func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion("web.service.mesh.", dns.TypeA)
				m.SetEdns0(1232, false)
				m.IsEdns0().SetVersion(1)
				r := exchange(t, network, addr, m)
				if r.Rcode != dns.RcodeBadVers || len(r.Answer) != 0 {
					t.Errorf("rcode %s with %d answers, want BADVERS and none", dns.RcodeToString[r.Rcode], len(r.Answer))
				}
				if opt := r.IsEdns0(); opt == nil || opt.Version() != 0 {
					t.Errorf("BADVERS response OPT = %v, want version 0", opt)
				}
			})
			t.Run("options are accepted", func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion("web.service.mesh.", dns.TypeA)
				m.SetEdns0(1232, false)
				m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
				if r := exchange(t, network, addr, m); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
					t.Errorf("rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
				}
			})
		})
	}
}

// TestCase checks case-insensitive lookups with the question's case kept
// (DNS 0x20, as resolvers randomise it).
func TestCase(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), nil)
	addr := startTestServer(t, s)
	for _, network := range []string{"udp", "tcp"} {
		for _, q := range []string{"WeB.SeRvIcE.MeSh.", "WEB.SERVICE.MESH.", "_WeB._TcP.sErViCe.MeSh.", "NoDe-A.nOdE.mEsH.", "MESH."} {
			t.Run(network+"/"+q, func(t *testing.T) {
				m := new(dns.Msg)
				qt := dns.TypeA
				switch {
				case strings.HasPrefix(q, "_"):
					qt = dns.TypeSRV
				case q == "MESH.":
					qt = dns.TypeSOA
				}
				m.SetQuestion(q, qt)
				r := exchange(t, network, addr, m)
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					t.Fatalf("rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
				}
				if r.Question[0].Name != q {
					t.Errorf("question %q, want %q as sent", r.Question[0].Name, q)
				}
				for _, rr := range r.Answer {
					if rr.Header().Name != q {
						t.Errorf("owner %q, want %q as sent", rr.Header().Name, q)
					}
				}
			})
		}
	}
}

func TestDomainConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Domain = "Mesh.Example" // no trailing dot, mixed case
	cfg.NodeName = "node-a"
	s, _, _ := newTestServer(t, cfg, nil)
	addr := startTestServer(t, s)
	cases := []queryCase{
		{name: "service", qname: "web.service.mesh.example.", qtype: dns.TypeA, auth: true, answer: []string{"a 10.0.0.1", "a 10.9.9.9"}, ttl: 0},
		{name: "NS names the node", qname: "mesh.example.", qtype: dns.TypeNS, auth: true, answer: []string{"ns node-a.node.mesh.example."}, extra: []string{"a 127.0.0.1"}, ttl: 30},
		{name: "old domain is another zone", qname: "web.service.mesh.", qtype: dns.TypeA, rcode: dns.RcodeRefused, ttl: -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tc.qname, tc.qtype)
			r := exchange(t, "udp", addr, m)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
			}
			if got := rrStrings(r.Answer); !slices.Equal(got, tc.answer) {
				t.Errorf("answer = %q, want %q", got, tc.answer)
			}
			if got := rrStrings(r.Extra); !slices.Equal(got, tc.extra) {
				t.Errorf("extra = %q, want %q", got, tc.extra)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), nil)
	pc, l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), pc, l); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), pc, l); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v, want ErrStarted", err)
	}
	// An idle TCP client must not hold Close up.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion("web.service.mesh.", dns.TypeA)
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	if _, err := co.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start(context.Background(), nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		t.Error("TCP listener still accepts after Close")
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(testConfig(), Deps{}); !errors.Is(err, ErrNoCatalog) {
		t.Errorf("New without catalog: %v, want ErrNoCatalog", err)
	}
	cfg := testConfig()
	cfg.Domain = "bad domain"
	if _, err := New(cfg, Deps{Catalog: catalog.NewStore()}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New with bad domain: %v, want ErrInvalidConfig", err)
	}
}
