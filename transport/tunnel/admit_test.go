package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/transport/transporttest"
	"github.com/meshwork/meshwork/transport/wire"
)

const testTD = "mesh.test"

// newTestTunnel builds (and never starts) a tunnel of node "here" whose
// local services are "api" on ports 8080 and 9090 at 127.0.0.7, and whose
// Authorizer denies node/evil and any call to "Secret" (the local name of
// "secret").
func newTestTunnel(t *testing.T, ca *transporttest.CA) (*Tunnel, *[]Source) {
	t.Helper()
	cert, err := ca.IssueNode("here", []string{"api"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var seen []Source
	authz := AuthorizerFunc(func(src Source, dst string) (bool, string) {
		seen = append(seen, src)
		if src.Node == "evil" && src.Service == "" || dst == "Secret" {
			return false, "intention deny"
		}
		return true, "allowed in test"
	})
	ip := netip.MustParseAddr("127.0.0.7")
	services := map[string]*Service{
		"api":    {Name: "api", Ports: map[int]netip.Addr{8080: ip, 9090: ip}},
		"secret": {Name: "Secret", Ports: map[int]netip.Addr{7000: ip}},
	}
	tun, err := New(Config{Node: "here", TrustDomain: testTD, QUIC: &quic.Config{}}, Deps{
		PacketConn: pc,
		Identity:   transporttest.NewIdentity(testTD, cert, ca),
		Authorizer: authz,
		Services: func(name string) (*Service, bool) {
			s, ok := services[strings.ToLower(name)]
			return s, ok
		},
		Serve:      func(context.Context, *Inbound) { t.Error("Serve called on a tunnel never started") },
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return tun, &seen
}

// leafParser returns a function that parses the leaf of a certificate
// just issued, failing t on an error.
func leafParser(t *testing.T) func(*tls.Certificate, error) *x509.Certificate {
	return func(c *tls.Certificate, err error) *x509.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
}

// TestAdmit decides streams from real certificates: every refusal with its
// wire code, and what an admitted stream's Target and Source carry.
func TestAdmit(t *testing.T) {
	ca, err := transporttest.NewCA(testTD)
	if err != nil {
		t.Fatal(err)
	}
	other, err := transporttest.NewCA("other.test")
	if err != nil {
		t.Fatal(err)
	}
	tun, seen := newTestTunnel(t, ca)
	leafOf := leafParser(t)

	web := leafOf(ca.IssueNode("n1", []string{"web"}, time.Hour))
	evil := leafOf(ca.IssueNode("evil", nil, time.Hour))
	// A service identity with no node SAN: the Authorizer gets no node.
	bare := leafOf(ca.Issue([]string{ca.ServiceID("web")}, time.Hour))
	foreign := leafOf(other.IssueNode("n1", nil, time.Hour))
	now := time.Now()

	tests := []struct {
		name     string
		leaf     *x509.Certificate
		hdr      wire.Header
		now      time.Time
		code     wire.Code // CodeAccepted: admitted
		reason   string    // part of the refusal's reason
		want     Target    // when admitted
		authzHit bool      // the Authorizer was asked
	}{
		{
			name: "service identity of the certificate",
			leaf: web,
			hdr:  wire.Header{Source: ca.ServiceID("web"), Service: "API", Port: 8080},
			code: wire.CodeAccepted,
			want: Target{Service: "api", Addr: netip.MustParseAddrPort("127.0.0.7:8080"),
				Source: Source{ID: ca.ServiceID("web"), Service: "web", Node: "n1"}},
			authzHit: true,
		},
		{
			name: "node identity of the certificate",
			leaf: web,
			hdr:  wire.Header{Source: ca.NodeID("n1"), Service: "api", Port: 9090},
			code: wire.CodeAccepted,
			want: Target{Service: "api", Addr: netip.MustParseAddrPort("127.0.0.7:9090"),
				Source: Source{ID: ca.NodeID("n1"), Node: "n1"}},
			authzHit: true,
		},
		{
			name: "service identity without a node SAN",
			leaf: bare,
			hdr:  wire.Header{Source: ca.ServiceID("web"), Service: "api", Port: 8080},
			code: wire.CodeAccepted,
			want: Target{Service: "api", Addr: netip.MustParseAddrPort("127.0.0.7:8080"),
				Source: Source{ID: ca.ServiceID("web"), Service: "web"}},
			authzHit: true,
		},
		{
			name:   "claim not in the certificate",
			leaf:   web,
			hdr:    wire.Header{Source: ca.ServiceID("billing"), Service: "api", Port: 8080},
			code:   wire.CodeIdentityMismatch,
			reason: "is not in the peer certificate",
		},
		{
			name:   "another node's identity",
			leaf:   evil,
			hdr:    wire.Header{Source: ca.NodeID("n1"), Service: "api", Port: 8080},
			code:   wire.CodeIdentityMismatch,
			reason: "is not in the peer certificate",
		},
		{
			name:   "certificate expired since the handshake",
			leaf:   web,
			hdr:    wire.Header{Source: ca.ServiceID("web"), Service: "api", Port: 8080},
			now:    web.NotAfter.Add(time.Second),
			code:   wire.CodeIdentityMismatch,
			reason: "peer certificate expired",
		},
		{
			name:   "identity of another trust domain",
			leaf:   foreign,
			hdr:    wire.Header{Source: other.NodeID("n1"), Service: "api", Port: 8080},
			code:   wire.CodeIdentityMismatch,
			reason: "bad identity",
		},
		{
			name:   "service not on this node",
			leaf:   web,
			hdr:    wire.Header{Source: ca.ServiceID("web"), Service: "db", Port: 5432},
			code:   wire.CodeNoSuchService,
			reason: "service db does not run on node here",
		},
		{
			name:   "port not declared",
			leaf:   web,
			hdr:    wire.Header{Source: ca.ServiceID("web"), Service: "api", Port: 22},
			code:   wire.CodeNoSuchPort,
			reason: "does not declare port 22",
		},
		{
			name:     "caller denied",
			leaf:     evil,
			hdr:      wire.Header{Source: ca.NodeID("evil"), Service: "api", Port: 8080},
			code:     wire.CodeUnauthorized,
			reason:   ca.NodeID("evil") + " may not call api: intention deny",
			authzHit: true,
		},
		{
			name:     "destination denied, by its local name",
			leaf:     web,
			hdr:      wire.Header{Source: ca.ServiceID("web"), Service: "secret", Port: 7000},
			code:     wire.CodeUnauthorized,
			reason:   "may not call Secret",
			authzHit: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			*seen = nil
			at := tc.now
			if at.IsZero() {
				at = now
			}
			got, r := tun.Admit(tc.hdr, PeerCertOf(testTD, tc.leaf), at)
			if hit := len(*seen) > 0; hit != tc.authzHit {
				t.Errorf("Authorizer asked = %v, want %v", hit, tc.authzHit)
			}
			if tc.code == wire.CodeAccepted {
				if r != nil {
					t.Fatalf("refused %s: %s", r.Code, r.Reason)
				}
				if got != tc.want {
					t.Fatalf("target %+v, want %+v", got, tc.want)
				}
				if (*seen)[0] != tc.want.Source {
					t.Errorf("Authorizer got %+v, want %+v", (*seen)[0], tc.want.Source)
				}
				return
			}
			if r == nil {
				t.Fatalf("admitted %+v, want %s", got, tc.code)
			}
			if r.Code != tc.code || !strings.Contains(r.Reason, tc.reason) {
				t.Fatalf("refusal %s %q, want %s containing %q", r.Code, r.Reason, tc.code, tc.reason)
			}
		})
	}
}

func TestPeerCertOf(t *testing.T) {
	ca, err := transporttest.NewCA(testTD)
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafParser(t)(ca.IssueNode("n1", []string{"web", "api"}, time.Hour))
	pc := PeerCertOf(testTD, leaf)
	if pc.Node != "n1" || len(pc.IDs) != 3 || !pc.NotAfter.Equal(leaf.NotAfter) {
		t.Fatalf("PeerCertOf = %+v", pc)
	}
	// A node SAN of another trust domain names no node here.
	if pc := PeerCertOf("other.test", leaf); pc.Node != "" {
		t.Fatalf("node %q from a foreign trust domain", pc.Node)
	}
}

// TestAdmission covers what is decided before a header is read.
func TestAdmission(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stopping bool
		held     int64
		code     wire.Code // CodeAccepted: admitted
		reason   string
	}{
		{"first stream", false, 1, wire.CodeAccepted, ""},
		{"at the limit", false, 4, wire.CodeAccepted, ""},
		{"over the limit", false, 5, wire.CodeOverloaded, "peer holds 4 streams, limit 4"},
		{"stopping wins over the limit", true, 5, wire.CodeShuttingDown, "agent shutting down"},
		{"stopping", true, 1, wire.CodeShuttingDown, "agent shutting down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := admission(tc.stopping, tc.held, 4)
			switch {
			case tc.code == wire.CodeAccepted && r != nil:
				t.Fatalf("refused %s: %s", r.Code, r.Reason)
			case tc.code != wire.CodeAccepted && (r == nil || r.Code != tc.code || r.Reason != tc.reason):
				t.Fatalf("refusal %+v, want %s %q", r, tc.code, tc.reason)
			}
		})
	}
}

func TestHeaderRefusal(t *testing.T) {
	good, err := wire.AppendHeader(nil, &wire.Header{Source: "spiffe://mesh.test/node/a", Service: "api", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	future := append([]byte(nil), good...)
	future[2] = 99 // the version byte after the magic
	for _, tc := range []struct {
		name string
		in   []byte
		code wire.Code
	}{
		{"truncated", good[:len(good)-1], wire.CodeBadHeader},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), wire.CodeBadHeader},
		{"unknown version", future, wire.CodeUnsupportedVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wire.ReadHeader(strings.NewReader(string(tc.in)), nil)
			if err == nil {
				t.Fatal("header accepted")
			}
			if r := headerRefusal(err); r.Code != tc.code || r.Reason != err.Error() {
				t.Fatalf("refusal %+v for %v, want %s", r, err, tc.code)
			}
		})
	}
	if r := headerRefusal(fmt.Errorf("read: %w", wire.ErrVersion)); r.Code != wire.CodeUnsupportedVersion {
		t.Errorf("a wrapped ErrVersion gives %s", r.Code)
	}
}

func TestNewRequires(t *testing.T) {
	if _, err := New(Config{Node: "here", TrustDomain: testTD}, Deps{}); err == nil {
		t.Fatal("New accepted a config without QUIC and deps")
	}
	if _, err := New(Config{Node: "here", TrustDomain: testTD, QUIC: &quic.Config{}}, Deps{}); err == nil {
		t.Fatal("New accepted no deps")
	}
}
