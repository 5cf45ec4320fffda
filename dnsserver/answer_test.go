package dnsserver

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

func TestReverseAddr(t *testing.T) {
	tests := []struct {
		name string
		want string // "" when not a full reverse name
	}{
		{"1.0.0.10.in-addr.arpa.", "10.0.0.1"},
		{"1.0.0.10.IN-ADDR.ARPA.", "10.0.0.1"},
		{mustReverse("fd00::4"), "fd00::4"},
		{mustReverse("::ffff:10.0.0.1"), "10.0.0.1"},
		{"0.0.10.in-addr.arpa.", ""},
		{"1.0.0.010.in-addr.arpa.", ""},
		{"1.0.0.256.in-addr.arpa.", ""},
		{"1.0.0.10.x-addr.arpa.", ""},
		{"1.0.0.10.in-addr.arpa.mesh.", ""},
		{"1.0.0.10.ab\\007in-addr.arpa.", ""},
		{"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var q query
			msg := packQuery(t, tc.name, dns.TypePTR, false)
			if q.parse(msg) != parseOK {
				t.Fatal("parse failed")
			}
			ip, ok := reverseAddr(&q)
			if tc.want == "" {
				if ok {
					t.Errorf("read %s from a name that is not a full reverse name", ip)
				}
				return
			}
			if !ok || ip != netip.MustParseAddr(tc.want) {
				t.Errorf("got %v %v, want %s", ip, ok, tc.want)
			}
		})
	}
}

func TestHexAddr(t *testing.T) {
	for _, s := range []string{"10.9.9.9", "fd00::4", "255.255.255.255", "::1"} {
		ip := netip.MustParseAddr(s)
		w := &wmsg{b: make([]byte, 64)}
		hexAddrLabel(w, ip)
		got, ok := parseHexAddr(w.b[1:w.n])
		if !ok || got != ip {
			t.Errorf("%s: round trip gave %v %v (label %q)", s, got, ok, w.b[1:w.n])
		}
	}
	for _, bad := range []string{"", "0a0909", "0a09090g", "0A090909x"} {
		if ip, ok := parseHexAddr([]byte(bad)); ok {
			t.Errorf("%q parsed as %s", bad, ip)
		}
	}
}
