package dnsserver

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// query packs a question for the raw tests.
func packQuery(t testing.TB, name string, qtype uint16, edns bool) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x1234
	if edns {
		m.SetEdns0(1232, false)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// malformedCases are queries a server must survive. rcode -1 means no reply.
func malformedCases(t testing.TB) []struct {
	name  string
	msg   []byte
	rcode int
} {
	good := packQuery(t, "web.service.mesh.", dns.TypeA, false)
	withEDNS := packQuery(t, "web.service.mesh.", dns.TypeA, true)
	set := func(b []byte, off int, v uint16) []byte {
		c := append([]byte(nil), b...)
		binary.BigEndian.PutUint16(c[off:], v)
		return c
	}
	// Two questions: the question repeated, QDCOUNT 2.
	two := set(append(append([]byte(nil), good...), good[headerLen:]...), 4, 2)
	// A name whose pointer points at itself.
	loop := append(append([]byte(nil), good[:headerLen]...), 0xC0, headerLen, 0, 1, 0, 1)
	// A forward pointer.
	fwdPtr := append(append([]byte(nil), good[:headerLen]...), 0xC0, 0x20, 0, 1, 0, 1)
	// A label of type 0x40 (obsolete extended label).
	ext := append(append([]byte(nil), good[:headerLen]...), 0x41, 'a', 0, 0, 1, 0, 1)
	// Two OPT records.
	opt := withEDNS[len(withEDNS)-11:]
	twoOPT := set(append(append([]byte(nil), withEDNS...), opt...), 10, 2)
	// OPT owned by "a." rather than the root.
	namedOPT := append(append(append([]byte(nil), withEDNS[:len(withEDNS)-11]...), 1, 'a', 0), opt[1:]...)
	// OPT whose RDLENGTH runs past the end.
	longOPT := set(withEDNS, len(withEDNS)-2, 40)
	// OPT with a truncated option inside.
	badOption := set(append(set(withEDNS, len(withEDNS)-2, 3), 0, 10, 0), 10, 1)
	// A name longer than 255 bytes: 5 labels of 63.
	long := append([]byte(nil), good[:headerLen]...)
	for i := 0; i < 5; i++ {
		long = append(long, 63)
		long = append(long, make([]byte, 63)...)
	}
	long = append(long, 0, 0, 1, 0, 1)
	// A compressed question that is valid: name via a pointer to itself in
	// an earlier position is impossible, so point into a valid suffix.
	return []struct {
		name  string
		msg   []byte
		rcode int
	}{
		{"empty", nil, -1},
		{"short header", good[:11], -1},
		{"response bit set", set(good, 2, 0x8100), -1},
		{"header only", good[:headerLen], dns.RcodeFormatError},
		{"no question", set(good, 4, 0), dns.RcodeFormatError},
		{"two questions", two, dns.RcodeFormatError},
		{"truncated name", good[:headerLen+5], dns.RcodeFormatError},
		{"missing type and class", good[:len(good)-4], dns.RcodeFormatError},
		{"pointer loop", loop, dns.RcodeFormatError},
		{"forward pointer", fwdPtr, dns.RcodeFormatError},
		{"extended label", ext, dns.RcodeFormatError},
		{"name over 255 bytes", long, dns.RcodeFormatError},
		{"ARCOUNT past the end", set(good, 10, 3), dns.RcodeFormatError},
		{"ANCOUNT past the end", set(good, 6, 1), dns.RcodeFormatError},
		{"two OPT", twoOPT, dns.RcodeFormatError},
		{"OPT not owned by the root", namedOPT, dns.RcodeFormatError},
		{"OPT past the end", longOPT, dns.RcodeFormatError},
		{"OPT with a bad option", badOption, dns.RcodeFormatError},
		{"opcode STATUS", set(good, 2, 2<<11|flagRD), dns.RcodeNotImplemented},
		{"opcode UPDATE", set(good, 2, 5<<11), dns.RcodeNotImplemented},
		{"trailing garbage ignored", append(append([]byte(nil), good...), 1, 2, 3), dns.RcodeSuccess},
	}
}

// TestMalformed sends broken queries over real UDP and TCP: each gets the
// expected reply or none, and the server keeps answering.
func TestMalformed(t *testing.T) {
	cfg := testConfig()
	cfg.UDPReaders = 1 // in order, so "no reply" can be told from "late reply"
	s, _, reg := newTestServer(t, cfg, nil)
	addr := startTestServer(t, s)
	good := packQuery(t, "web.service.mesh.", dns.TypeA, false)
	binary.BigEndian.PutUint16(good, 0xBEEF)

	t.Run("udp", func(t *testing.T) {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, tc := range malformedCases(t) {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := c.Write(tc.msg); err != nil {
					t.Fatal(err)
				}
				// A good query behind it: its answer comes right after the
				// reply to the bad one, if there is one.
				if _, err := c.Write(good); err != nil {
					t.Fatal(err)
				}
				checkReplies(t, c, tc.msg, tc.rcode, func(c net.Conn, b []byte) (int, error) { return c.Read(b) })
			})
		}
	})
	t.Run("tcp", func(t *testing.T) {
		for _, tc := range malformedCases(t) {
			t.Run(tc.name, func(t *testing.T) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				for _, m := range [][]byte{tc.msg, good} {
					if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(m))), m...)); err != nil {
						t.Fatal(err)
					}
				}
				checkReplies(t, c, tc.msg, tc.rcode, readTCPMsg)
			})
		}
	})
	if v := counterValue(t, reg, MetricQueries, map[string]string{"rcode": "FORMERR"}); v == 0 {
		t.Errorf("no FORMERR counted in %s", MetricQueries)
	}
}

func readTCPMsg(c net.Conn, b []byte) (int, error) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return 0, err
	}
	return io.ReadFull(c, b[:binary.BigEndian.Uint16(l[:])])
}

// checkReplies reads the reply to bad (unless rcode is -1) and then the
// reply to the good query with ID 0xBEEF.
func checkReplies(t *testing.T, c net.Conn, bad []byte, rcode int, read func(net.Conn, []byte) (int, error)) {
	t.Helper()
	buf := make([]byte, 65535)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rcode >= 0 {
		n, err := read(c, buf)
		if err != nil {
			t.Fatalf("no reply: %v", err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if r.Id != binary.BigEndian.Uint16(bad) || !r.Response {
			t.Errorf("reply id %#x response %v, want %#x true", r.Id, r.Response, binary.BigEndian.Uint16(bad))
		}
		if r.Rcode != rcode {
			t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode])
		}
	}
	n, err := read(c, buf)
	if err != nil {
		t.Fatalf("no reply to the good query after it: %v", err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil || r.Id != 0xBEEF || len(r.Answer) != 2 {
		t.Fatalf("next reply is not the good query's answer (err %v): %v", err, r)
	}
}
