package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/transport/transporttest"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// rawClient dials an agent's QUIC listener directly with cert, trusting
// roots, so that tests can write arbitrary headers.
func rawClient(t *testing.T, target *agent, cert *tls.Certificate, roots ...*transporttest.CA) (*quic.Conn, error) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	qt := &quic.Transport{Conn: pc}
	t.Cleanup(func() { qt.Close(); pc.Close() })
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r.Cert)
	}
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPN},
		Certificates:       []tls.Certificate{*cert},
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return qt.Dial(ctx, target.pc.LocalAddr(), conf, &quic.Config{HandshakeIdleTimeout: 2 * time.Second})
}

// expectReset connects to addr as an application and expects the agent to
// reset the connection without a byte of answer. The reset may even beat
// the end of connect(2).
func expectReset(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	io.WriteString(c, "ping")
	got, err := readAll(t, c)
	if got != "" || err == nil || isTimeout(err) {
		t.Fatalf("read %q, %v; want a reset and nothing else", got, err)
	}
}

// exchange opens a stream, writes raw and reads the status.
func exchange(t *testing.T, c *quic.Conn, raw []byte) wire.Status {
	t.Helper()
	s, err := c.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.CancelRead(0)
	if _, err := s.Write(raw); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	st, err := wire.ReadStatus(s)
	if err != nil {
		t.Fatalf("read status: %v", err)
	}
	return st
}

func header(t *testing.T, h wire.Header) []byte {
	t.Helper()
	b, err := wire.AppendHeader(nil, &h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestForeignCACannotConnect(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})

	other, err := transporttest.NewCA(testTD) // same trust domain, other root
	if err != nil {
		t.Fatal(err)
	}
	t.Run("client with a foreign certificate is refused by the server", func(t *testing.T) {
		cert, err := other.IssueNode("intruder", []string{"echo"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := rawClient(t, server, cert, m.ca)
		if err == nil {
			// TLS 1.3 may finish the client side before the server's verdict
			// arrives; the server then kills the connection at once.
			s, serr := c.OpenStreamSync(context.Background())
			if serr == nil {
				s.Write(header(t, wire.Header{Service: "echo", Port: uint16(be.port), Source: other.ServiceID("echo")}))
				s.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = wire.ReadStatus(s)
			} else {
				err = serr
			}
		}
		if err == nil {
			t.Fatal("a client certificate from another CA got a stream through")
		}
		t.Logf("refused with: %v", err)
	})
	t.Run("agent with a foreign certificate cannot tunnel", func(t *testing.T) {
		intruder := m.addAgent("intruder", nil, agentOpts{ca: other})
		expectReset(t, intruder.vipAddr(t, "echo", be.port))
		if n := intruder.metric(t, MetricPeerDials, "result", "failed"); n == 0 {
			t.Error("the intruder's dial must fail")
		}
	})
	t.Run("server with a foreign certificate is refused by the client", func(t *testing.T) {
		m2 := newMesh(t)
		be2 := startBackend(t, echo)
		m2.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be2.port}}}, agentOpts{ca: other})
		client := m2.addAgent("client", nil, agentOpts{})
		expectReset(t, client.vipAddr(t, "echo", be2.port))
	})
}

func TestServerMustProveItsNode(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	// "imposter" holds a valid mesh certificate for itself, but the catalog
	// says it is "server": the client must notice.
	imp := m.addAgent("imposter", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	imp.name = "server"
	m.publish()
	addr := client.vipAddr(t, "echo", be.port)
	eventually(t, "catalog to name the imposter server", func() bool {
		_, ok := m.store.Current().Member("server")
		return ok
	})
	expectReset(t, addr)
}

func TestClaimedIdentityMustBeInCertificate(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	cert, err := m.ca.IssueNode("client", []string{"frontend"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rawClient(t, server, cert, m.ca)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		claim string
		want  wire.Code
	}{
		{m.ca.ServiceID("frontend"), wire.CodeAccepted},
		{m.ca.NodeID("client"), wire.CodeAccepted},
		{m.ca.ServiceID("admin"), wire.CodeIdentityMismatch},
		{m.ca.NodeID("server"), wire.CodeIdentityMismatch},
		{"spiffe://other.td/svc/frontend", wire.CodeIdentityMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.claim, func(t *testing.T) {
			st := exchange(t, c, header(t, wire.Header{Service: "echo", Port: uint16(be.port), Source: tc.claim}))
			if st.Code != tc.want {
				t.Fatalf("status %s (%s), want %s", st.Code, st.Reason, tc.want)
			}
		})
	}
	if n := server.metric(t, MetricRefused, "reason", "identity_mismatch"); n != 3 {
		t.Errorf("identity_mismatch refusals counted %v, want 3", n)
	}
	// Only the proven claims reached the authorizer, each with the node its
	// certificate names, so that policy can check the node may hold a
	// service's identity.
	for _, call := range server.authz.seen() {
		if strings.Contains(call, "admin") || strings.Contains(call, "node/server") {
			t.Errorf("unproven claim reached policy: %s", call)
		}
	}
	want := []Source{
		{ID: m.ca.ServiceID("frontend"), Service: "frontend", Node: "client"},
		{ID: m.ca.NodeID("client"), Node: "client"},
	}
	if got := server.authz.sources(); !slices.Equal(got, want) {
		t.Errorf("sources given to the authorizer %+v, want %+v", got, want)
	}
}

func TestInboundRefusals(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close() // nothing listens there any more
	server := m.addAgent("server", []LocalService{
		{Name: "echo", Ports: []int{be.port}},
		{Name: "down", Ports: []int{deadPort}},
	}, agentOpts{})
	server.authz.setDeny("frontend->echo")
	cert, err := m.ca.IssueNode("client", []string{"frontend", "backoffice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rawClient(t, server, cert, m.ca)
	if err != nil {
		t.Fatal(err)
	}
	ok := header(t, wire.Header{Service: "echo", Port: uint16(be.port), Source: m.ca.ServiceID("backoffice")})
	v2 := append([]byte(nil), ok...)
	v2[2] = 2
	tests := []struct {
		name string
		raw  []byte
		want wire.Code
	}{
		{"allowed", ok, wire.CodeAccepted},
		{"intention deny", header(t, wire.Header{Service: "echo", Port: uint16(be.port), Source: m.ca.ServiceID("frontend")}), wire.CodeUnauthorized},
		{"no such service", header(t, wire.Header{Service: "nope", Port: 80, Source: m.ca.ServiceID("frontend")}), wire.CodeNoSuchService},
		{"undeclared port", header(t, wire.Header{Service: "echo", Port: 22, Source: m.ca.ServiceID("backoffice")}), wire.CodeNoSuchPort},
		{"local dial fails", header(t, wire.Header{Service: "down", Port: uint16(deadPort), Source: m.ca.ServiceID("backoffice")}), wire.CodeDialFailed},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), wire.CodeBadHeader},
		{"future version", v2, wire.CodeUnsupportedVersion},
		{"truncated", ok[:10], wire.CodeBadHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			s, err := c.OpenStreamSync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			s.Write(raw)
			if tc.name == "truncated" {
				s.Close() // FIN inside the header
			}
			s.SetReadDeadline(time.Now().Add(10 * time.Second))
			st, err := wire.ReadStatus(s)
			if err != nil {
				t.Fatal(err)
			}
			s.CancelRead(0)
			s.CancelWrite(0)
			if st.Code != tc.want {
				t.Fatalf("status %s (%s), want %s", st.Code, st.Reason, tc.want)
			}
			if tc.want != wire.CodeAccepted {
				if st.Reason == "" {
					t.Error("a refusal must carry a reason")
				}
				if n := server.metric(t, MetricRefused, "reason", tc.want.String()); n < 1 {
					t.Errorf("refusal %s not counted", tc.want)
				}
			}
			if tc.want == wire.CodeUnsupportedVersion && st.Version != wire.Version {
				t.Errorf("status version %d, want the receiver's %d", st.Version, wire.Version)
			}
		})
	}
}

func TestDenyBlocksThroughTheMesh(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "echo", be.port)

	c := dial(t, addr)
	io.WriteString(c, "before")
	c.CloseWrite()
	if got, err := readAll(t, c); got != "before" || err != nil {
		t.Fatalf("allowed call: %q, %v", got, err)
	}
	server.authz.setDeny("node/client->echo")
	expectReset(t, addr)
	if n := server.metric(t, MetricRefused, "reason", "unauthorized"); n != 1 {
		t.Errorf("unauthorized refusals = %v, want 1", n)
	}
	if n := client.metric(t, MetricOutbound, "result", "refused"); n != 1 {
		t.Errorf("client refused = %v, want 1", n)
	}
	// A denial is final: no other instance is tried.
	if n := client.metric(t, MetricAttemptFailures, "reason", "unauthorized"); n != 1 {
		t.Errorf("unauthorized attempts = %v, want exactly 1", n)
	}
}

func TestDefaultDenyWithoutAuthorizer(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(map[bool]string{false: "deny", true: "allow"}[allow], func(t *testing.T) {
			m := newMesh(t)
			be := startBackend(t, echo)
			m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{
				cfg:  func(c *Config) { c.DefaultAllow = allow },
				deps: func(d *Deps) { d.Authorizer = nil },
			})
			client := m.addAgent("client", nil, agentOpts{})
			addr := client.vipAddr(t, "echo", be.port)
			if !allow {
				expectReset(t, addr)
				return
			}
			c := dial(t, addr)
			io.WriteString(c, "x")
			c.CloseWrite()
			if got, err := readAll(t, c); got != "x" || err != nil {
				t.Fatalf("DefaultAllow: read %q, %v", got, err)
			}
		})
	}
}

func TestStreamLimitPerPeer(t *testing.T) {
	m := newMesh(t)
	hold := make(chan struct{})
	be := startBackend(t, func(c net.Conn) { <-hold })
	t.Cleanup(func() { close(hold) })
	server := m.addAgent("server", []LocalService{{Name: "hold", Ports: []int{be.port}}}, agentOpts{
		cfg: func(c *Config) { c.MaxStreamsPerPeer = 2 },
	})
	cert, err := m.ca.IssueNode("client", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Two connections from the same node share its budget.
	c1, err := rawClient(t, server, cert, m.ca)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := rawClient(t, server, cert, m.ca)
	if err != nil {
		t.Fatal(err)
	}
	h := header(t, wire.Header{Service: "hold", Port: uint16(be.port), Source: m.ca.NodeID("client")})
	if st := exchange(t, c1, h); !st.Accepted() {
		t.Fatalf("first stream: %s %s", st.Code, st.Reason)
	}
	if st := exchange(t, c2, h); !st.Accepted() {
		t.Fatalf("second stream: %s %s", st.Code, st.Reason)
	}
	st := exchange(t, c2, h)
	if st.Code != wire.CodeOverloaded {
		t.Fatalf("third stream: %s %s, want overloaded", st.Code, st.Reason)
	}
}

func TestIdleTimeoutClosesConnections(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	m.addAgent("server", []LocalService{{Name: "quiet", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{cfg: func(c *Config) { c.IdleTimeout = 200 * time.Millisecond }})
	c := dial(t, client.vipAddr(t, "quiet", be.port))
	io.WriteString(c, "one")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read = %v; the agent must close an idle connection", err)
	}
}

// TestStreamLimitRefusesAppConnectionPromptly holds a server's stream
// limit full through a VIP: the next app connection is closed with the
// refusal, never left waiting, and both agents show why.
func TestStreamLimitRefusesAppConnectionPromptly(t *testing.T) {
	const limit = 4
	m := newMesh(t)
	hold := make(chan struct{})
	be := startBackend(t, func(c net.Conn) { <-hold })
	server := m.addAgent("server", []LocalService{{Name: "hold", Ports: []int{be.port}}}, agentOpts{
		cfg: func(c *Config) { c.MaxStreamsPerPeer = limit },
	})
	client := m.addAgent("client", nil, agentOpts{})
	// Registered after the agents, so run before their Close, which waits
	// for the held connections.
	t.Cleanup(func() { close(hold) })
	addr := client.vipAddr(t, "hold", be.port)
	for range limit {
		dial(t, addr)
	}
	eventually(t, "the client holds the server's limit", func() bool {
		ps := server.tr.Status().Peers
		return len(ps) == 1 && ps[0].StreamsIn == limit
	})
	if ps := server.tr.Status().Peers; ps[0].StreamsInLimit != limit {
		t.Errorf("server's status: streams_in_limit %d, want %d", ps[0].StreamsInLimit, limit)
	}
	if got := server.metric(t, MetricPeerStreamsMax); got != limit {
		t.Errorf("%s = %v, want %d", MetricPeerStreamsMax, got, limit)
	}

	// The refusal may come before the app's connect returns: a reset then.
	c, err := net.Dial("tcp", addr)
	if err == nil {
		defer c.Close()
		// Far beyond any connect timeout: a read that reaches this
		// deadline means the agent left the connection hanging.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection past the limit: %v; want it closed or reset", err)
	}
	if got := client.metric(t, MetricOutbound, "result", "refused"); got != 1 {
		t.Errorf("client's %s{result=refused} = %v, want 1", MetricOutbound, got)
	}
	if got := server.metric(t, MetricRefused, "reason", "overloaded"); got < 1 {
		t.Errorf("server's %s{reason=overloaded} = %v, want at least 1", tunnel.MetricRefused, got)
	}
}
