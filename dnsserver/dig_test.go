package dnsserver

import (
	"context"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDig drives dig (bind9-dnsutils, installed by `scripts/deps.sh test`)
// against the server as an independent client: its parser, its EDNS, its
// automatic retry over TCP after TC.
func TestDig(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig not found: install bind9-dnsutils (scripts/deps.sh test) to run this test")
	}
	s, _, _ := newTestServer(t, testConfig(), nil)
	addr := startTestServer(t, s)
	host, port, _ := net.SplitHostPort(addr)

	tests := []struct {
		name    string
		args    []string
		status  string
		answer  []string
		extra   []string
		nanswer int // when > 0, only the count of answers is checked
	}{
		{name: "A", args: []string{"web.service.mesh", "A"}, status: "NOERROR", answer: []string{"a 10.0.0.1", "a 10.9.9.9"}},
		{name: "A over TCP", args: []string{"+tcp", "web.service.mesh", "A"}, status: "NOERROR", answer: []string{"a 10.0.0.1", "a 10.9.9.9"}},
		{name: "AAAA", args: []string{"web.service.mesh", "AAAA"}, status: "NOERROR", answer: []string{"aaaa fd00::4"}},
		{name: "SRV", args: []string{"_web._tcp.service.mesh", "SRV"}, status: "NOERROR",
			answer: []string{"srv 1 1 80 node-a.node.mesh.", "srv 1 1 80 node-d.node.mesh.", "srv 1 1 8080 0a090909.addr.mesh."},
			extra:  []string{"a 10.0.0.1", "a 10.9.9.9", "aaaa fd00::4"}},
		{name: "node", args: []string{"node-a.node.mesh"}, status: "NOERROR", answer: []string{"a 10.0.0.1"}},
		{name: "0x20 case", args: []string{"wEb.SeRvIcE.mEsH", "A"}, status: "NOERROR", answer: []string{"a 10.0.0.1", "a 10.9.9.9"}},
		{name: "NXDOMAIN", args: []string{"nope.service.mesh", "A"}, status: "NXDOMAIN"},
		{name: "NODATA", args: []string{"db.service.mesh", "A"}, status: "NOERROR"},
		{name: "SOA", args: []string{"mesh", "SOA"}, status: "NOERROR", answer: []string{"soa ns.mesh. hostmaster.mesh. 2 3600 600 86400 5"}},
		{name: "PTR", args: []string{"-x", "10.0.0.1"}, status: "NOERROR", answer: []string{"ptr node-a.node.mesh."}},
		{name: "TC then TCP retry", args: []string{"big.service.mesh", "A"}, status: "NOERROR", nanswer: bigCount},
		{name: "TC then TCP retry without EDNS", args: []string{"+noedns", "big.service.mesh", "SRV"}, status: "NOERROR", nanswer: bigCount},
		{name: "refused", args: []string{"example.org", "A"}, status: "REFUSED"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"@" + host, "-p", port, "+tries=1", "+time=5", "+nocmd", "+nostats", "+noquestion"}, tc.args...)
			out, err := exec.CommandContext(ctx, dig, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			status, answer, extra := parseDig(t, string(out))
			if status != tc.status {
				t.Fatalf("status %q, want %q\n%s", status, tc.status, out)
			}
			if tc.nanswer > 0 {
				if len(answer) != tc.nanswer {
					t.Errorf("%d answers, want %d\n%s", len(answer), tc.nanswer, out)
				}
				return
			}
			if !slices.Equal(answer, tc.answer) {
				t.Errorf("answer %q, want %q\n%s", answer, tc.answer, out)
			}
			if !slices.Equal(extra, tc.extra) {
				t.Errorf("additional %q, want %q\n%s", extra, tc.extra, out)
			}
		})
	}
}

// parseDig reads the status and the answer and additional sections of
// dig's default output, as rrStrings.
func parseDig(t *testing.T, out string) (status string, answer, extra []string) {
	t.Helper()
	var section string
	var ans, add []dns.RR
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.Contains(line, "status: "):
			f := strings.SplitN(line[strings.Index(line, "status: ")+8:], ",", 2)
			status = f[0]
		case strings.HasPrefix(line, ";; ANSWER SECTION"):
			section = "answer"
		case strings.HasPrefix(line, ";; ADDITIONAL SECTION"):
			section = "additional"
		case strings.HasPrefix(line, ";; "):
			section = ""
		case line == "" || strings.HasPrefix(line, ";"):
		case section != "":
			rr, err := dns.NewRR(line)
			if err != nil {
				t.Fatalf("dig printed a record miekg/dns cannot read: %q: %v", line, err)
			}
			if section == "answer" {
				ans = append(ans, rr)
			} else {
				add = append(add, rr)
			}
		}
	}
	return status, rrStrings(ans), rrStrings(add)
}
