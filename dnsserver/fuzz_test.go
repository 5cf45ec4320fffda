package dnsserver

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// FuzzServeDNS feeds arbitrary bytes to the query path, as UDP and as TCP,
// in direct and VIP mode. It must never panic; a query gets no reply only
// when it is shorter than a header or is itself a response; every reply
// unpacks, carries the query's ID, fits the transport's size limit, and is
// not FORMERR for a well-formed single question as miekg/dns packs it.
// The seed corpus is in testdata/fuzz/FuzzServeDNS.
func FuzzServeDNS(f *testing.F) {
	for _, hq := range hotQueries {
		f.Add(packQuery(f, hq.qname, hq.qtype, hq.edns))
	}
	for _, mc := range malformedCases(f) {
		f.Add(mc.msg)
	}
	direct, _, _ := newTestServer(f, testConfig(), nil)
	vip, _, _ := newTestServer(f, testConfig(), testVIPs)
	sc := newScratch()
	f.Fuzz(func(t *testing.T, data []byte) {
		ref := new(dns.Msg)
		refErr := ref.Unpack(data)
		for _, s := range []*Server{direct, vip} {
			for _, tcp := range []bool{false, true} {
				resp, act := s.respond(sc, data, tcp)
				switch act {
				case actForward:
					t.Fatal("forward without recursors")
				case actDrop:
					if len(data) >= headerLen && data[2]&0x80 == 0 {
						t.Fatalf("no reply to a %d-byte query that is not a response", len(data))
					}
					continue
				}
				r := new(dns.Msg)
				if err := r.Unpack(resp); err != nil {
					t.Fatalf("reply does not unpack: %v\nquery %x\nreply %x", err, data, resp)
				}
				if r.Id != binary.BigEndian.Uint16(data) || !r.Response {
					t.Fatalf("reply id %#x response %v, query id %#x", r.Id, r.Response, binary.BigEndian.Uint16(data))
				}
				limit := 65535
				if !tcp {
					limit = 512
					if sc.q.opt {
						limit = max(512, min(int(sc.q.udpSize), DefaultEDNSBufferSize))
					}
				}
				if len(resp) > limit {
					t.Fatalf("reply of %d bytes over the %d limit", len(resp), limit)
				}
			}
		}
		// What miekg/dns reads, packed again (complete and canonical), must
		// not be FORMERR when it is one question with opcode QUERY and at
		// most one OPT, owned by the root (RFC 6891 6.1.1 makes two a
		// FORMERR).
		if refErr == nil && len(ref.Question) == 1 && ref.Opcode == dns.OpcodeQuery && !ref.Response && countOPT(ref) <= 1 {
			if canon, err := ref.Pack(); err == nil {
				resp, act := direct.respond(sc, canon, false)
				if act != actReply || binary.BigEndian.Uint16(resp[2:])&0xF == rcodeForm {
					t.Fatalf("no reply or FORMERR for a well-formed query: %v", ref)
				}
			}
		}
		// The dns.Handler adapter on whatever miekg/dns can read.
		if refErr == nil && !ref.Response {
			rec := &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
			direct.ServeDNS(rec, ref)
			for _, b := range rec.msgs {
				r := new(dns.Msg)
				if err := r.Unpack(b); err != nil {
					t.Fatalf("ServeDNS reply does not unpack: %v", err)
				}
				if r.Id != ref.Id {
					t.Fatalf("ServeDNS reply id %#x, want %#x", r.Id, ref.Id)
				}
			}
		}
	})
}

// countOPT counts m's OPT records; one owned by a name other than the root
// counts as two, since either makes the query a FORMERR (RFC 6891 6.1.1,
// 6.1.2), though miekg/dns reads and packs both.
func countOPT(m *dns.Msg) int {
	n := 0
	for _, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			n++
			if rr.Header().Name != "." {
				n++
			}
		}
	}
	return n
}
