package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/logstream"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/raftstore"
	"github.com/meshwork/meshwork/transport"
)

// wait is the limit of every wait in these tests: generous, because the
// machine may be loaded; the assertions themselves are strict.
const wait = 60 * time.Second

// testAgent is one agent on loopback with every socket injected, so that
// tests need no fixed port.
type testAgent struct {
	*Agent
	cfg    *config.Config
	reg    *prometheus.Registry
	gossip string // gossip address, for retry_join
	logs   *meshtest.LogBuffer
}

// newConfig returns a validated configuration of an agent on 127.0.0.1; edit
// it before startAgent.
func newConfig(t *testing.T, node string, dev bool, vipRange string) *config.Config {
	t.Helper()
	cfg := &config.Config{Node: node, Dev: dev, DataDir: t.TempDir(), Bind: "127.0.0.1", LogLevel: "debug"}
	cfg.Tunnel.VIPRange = vipRange
	if err := cfg.ApplyDefaults(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func listenUDP(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startAgent starts an agent with cfg, its sockets bound here on ephemeral
// ports (no tunnel socket with ports.tunnel -1), and closes it at cleanup.
func startAgent(t *testing.T, cfg *config.Config) *testAgent {
	t.Helper()
	return startAgentWith(t, cfg, nil)
}

// startAgentWith is startAgent with edit, when not nil, applied to the
// agent's Deps before it is made.
func startAgentWith(t *testing.T, cfg *config.Config, edit func(*Deps)) *testAgent {
	t.Helper()
	logs := &meshtest.LogBuffer{}
	tee, logStream := logstream.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log := slog.New(tee)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s log:\n%s", cfg.Node, logs.String())
		}
	})
	nt, err := gossip.NewNetTransport("127.0.0.1", 0, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Ports.Gossip = nt.Port()
	raftL := listenTCP(t)
	cfg.Ports.Raft = raftL.Addr().(*net.TCPAddr).Port
	var tunnel net.PacketConn // none when the configuration turns the tunnel off
	if cfg.Ports.Tunnel >= 0 {
		tunnel = listenUDP(t)
		cfg.Ports.Tunnel = tunnel.LocalAddr().(*net.UDPAddr).Port
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	deps := Deps{
		Logger: log, Registry: reg, GossipTransport: nt,
		HTTPListener: listenTCP(t), DNSConn: listenUDP(t), DNSListener: listenTCP(t),
		RaftListener: raftL, TunnelConn: tunnel, LogStream: logStream,
	}
	if edit != nil {
		edit(&deps)
	}
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return &testAgent{Agent: a, cfg: cfg, reg: reg, gossip: fmt.Sprintf("127.0.0.1:%d", nt.Port()), logs: logs}
}

// waitTunnel waits until the agent's tunnel serves.
func (ta *testAgent) waitTunnel(t *testing.T) {
	t.Helper()
	select {
	case <-ta.TunnelReady():
	case <-time.After(wait):
		t.Fatalf("%s: the tunnel did not start", ta.cfg.Node)
	}
}

// lookupA asks the agent's DNS server for name's A records.
func (ta *testAgent) lookupA(name string) ([]netip.Addr, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, err := dns.Exchange(m, ta.DNSAddr())
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ip, _ := netip.AddrFromSlice(a.A.To4())
			out = append(out, ip)
		}
	}
	return out, nil
}

// backend is an HTTP server on loopback that names itself in every answer.
func backend(t *testing.T, name string) int {
	t.Helper()
	l := listenTCP(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// get fetches url over a fresh connection; the body or the error.
func get(url string) (string, error) {
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// getBody fetches url and checks that the body is want.
func getBody(url, want string) error {
	body, err := get(url)
	if err == nil && body != want {
		return fmt.Errorf("body %q, want %q", body, want)
	}
	return err
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == k && lp.GetValue() == v {
			return true
		}
	}
	return false
}

func applyPolicy(t *testing.T, n *raftstore.Node, src string) {
	t.Helper()
	docs, err := policy.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := n.ApplyDocuments(ctx, docs, nil); err != nil {
		t.Fatal(err)
	}
}

// TestDevAgentServesItsOwnServicesThroughTheTunnel is `meshwork agent --dev`
// with no files: it makes its CA and its own leaf, and its tunnel carries a
// call from an explicit upstream to its own service over QUIC and mutual
// TLS, with the caller identified as the service that declares the
// upstream.
func TestDevAgentServesItsOwnServicesThroughTheTunnel(t *testing.T) {
	port := backend(t, "web-dev")
	up := listenTCP(t) // reserve a free port for the upstream's local_bind
	bind := up.Addr().String()
	up.Close()
	cfg := newConfig(t, "dev1", true, "127.250.0.0/16")
	cfg.Services = []api.ServiceDefinition{
		{Name: "web", Port: port},
		{Name: "app", Upstreams: []api.Upstream{{Service: "web", LocalBind: bind}}},
	}
	a := startAgent(t, cfg)
	a.waitTunnel(t)

	leaf, err := a.CA().Manager().Leaf()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"spiffe://meshwork.local/node/dev1", "spiffe://meshwork.local/svc/app", "spiffe://meshwork.local/svc/web"}
	if !slices.Equal(leaf.IDs, want) {
		t.Fatalf("leaf IDs %v, want %v", leaf.IDs, want)
	}
	if a.Local().NodeInfo().TunnelPort != cfg.Ports.Tunnel {
		t.Fatalf("published tunnel port %d, want %d", a.Local().NodeInfo().TunnelPort, cfg.Ports.Tunnel)
	}
	var body string
	testnet.Eventually(t, wait, "a call through the upstream", func() error {
		body, err = get("http://" + bind + "/hello")
		return err
	})
	if body != "web-dev /hello" {
		t.Fatalf("body %q", body)
	}
	if n := counterValue(t, a.reg, "meshwork_transport_inbound_streams_total", nil); n < 1 {
		t.Fatalf("the call did not go through the tunnel: %v inbound streams", n)
	}

	// A deny for the caller's service blocks it; the node identity and other
	// services are not concerned.
	applyPolicy(t, a.Raft(), "kind: Intention\nname: web\nsources: [{name: app, action: deny}]\n")
	testnet.Eventually(t, wait, "the deny applies", func() error {
		if _, err := get("http://" + bind + "/"); err == nil {
			return errors.New("the call still goes through")
		}
		return nil
	})
	if n := counterValue(t, a.reg, "meshwork_transport_refused_streams_total", nil); n < 1 {
		t.Fatalf("refusal not counted: %v", n)
	}
}

// serverAndClient starts a server agent s1 that runs the service web (a
// backend answering "web-s1 PATH" on port) and a client agent c1 that joins
// it, bootstraps its certificate with a token made on s1 and runs
// clientServices. Each gets its own VIP range; both tunnels are up on return.
func serverAndClient(t *testing.T, serverVIPs, clientVIPs string, clientServices []api.ServiceDefinition) (s, c *testAgent, port int) {
	t.Helper()
	port = backend(t, "web-s1")
	scfg := newConfig(t, "s1", false, serverVIPs)
	scfg.Server, scfg.BootstrapExpect = true, 1
	scfg.ClusterKey = config.NewKey()
	scfg.Services = []api.ServiceDefinition{{Name: "web", Port: port}}
	s = startAgent(t, scfg)
	s.waitTunnel(t)

	tok, _, err := s.CA().Server().Token(context.Background(), "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	ccfg := newConfig(t, "c1", false, clientVIPs)
	ccfg.ClusterKey = scfg.ClusterKey
	ccfg.RetryJoin = []string{s.gossip}
	ccfg.CA.TokenFile = tokFile
	ccfg.Services = clientServices
	c = startAgent(t, ccfg)
	c.waitTunnel(t)
	return s, c, port
}

// TestClientAgentBootstrapsAndCallsByName runs a server agent and a client
// agent on loopback. The client trades a token for its leaf, resolves
// web.service.mesh through its own DNS to a virtual IP and reaches the
// server's instance through the tunnel. Default deny refuses the call until
// policy allows it; an Intention deny refuses it again, and deleting it
// allows it. A service the client registers later is named on its next
// leaf, checked by the server against the client's gossip record.
func TestClientAgentBootstrapsAndCallsByName(t *testing.T) {
	s, c, port := serverAndClient(t, "127.251.0.0/16", "127.252.0.0/16", nil)
	if leaf, err := c.CA().Manager().Leaf(); err != nil || leaf.IDs[0] != "spiffe://meshwork.local/node/c1" {
		t.Fatalf("client leaf %v, %v", leaf.IDs, err)
	}

	var vip netip.Addr
	testnet.Eventually(t, wait, "web.service.mesh answers a virtual IP on c1", func() error {
		ips, err := c.lookupA("web.service.mesh")
		if err != nil {
			return err
		}
		if len(ips) != 1 || !netip.MustParsePrefix("127.252.0.0/16").Contains(ips[0]) {
			return fmt.Errorf("answers %v", ips)
		}
		vip = ips[0]
		return nil
	})
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(vip, uint16(port)))
	// The VIP listener opens with the catalog, the call is refused by
	// default deny on s1.
	testnet.Eventually(t, wait, "s1 refuses c1 by default", func() error {
		if _, err := get(url); err == nil {
			return errors.New("the call went through under default deny")
		}
		if counterValue(t, s.reg, "meshwork_transport_refused_streams_total", nil) < 1 {
			return errors.New("no refusal counted on s1 yet")
		}
		return nil
	})

	applyPolicy(t, s.Raft(), "kind: IntentionDefaults\nname: default\naction: allow\n")
	testnet.Eventually(t, wait, "the call goes through once IntentionDefaults allows", func() error { return getBody(url, "web-s1 /") })
	applyPolicy(t, s.Raft(), "kind: Intention\nname: web\nsources: [{name: \"*\", action: deny}]\n")
	testnet.Eventually(t, wait, "the Intention deny blocks the node caller", func() error {
		if _, err := get(url); err == nil {
			return errors.New("the call still goes through")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := s.Raft().DeleteDocument(ctx, policy.Key{Kind: policy.KindIntention, Name: "web"}, nil); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "deleting the deny allows again", func() error {
		_, err := get(url)
		return err
	})

	// A new local service is named on the client's next leaf.
	changes := c.CA().Manager().Changes()
	if err := c.Local().Register(api.ServiceDefinition{Name: "api", Port: 9}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "c1's leaf names api", func() error {
		select {
		case <-changes:
		default:
			return errors.New("no new leaf yet")
		}
		changes = c.CA().Manager().Changes()
		leaf, err := c.CA().Manager().Leaf()
		if err != nil {
			return err
		}
		if !slices.Contains(leaf.IDs, "spiffe://meshwork.local/svc/api") {
			return fmt.Errorf("leaf IDs %v", leaf.IDs)
		}
		return nil
	})
}

// TestClientWithoutTokenRunsWithoutTunnel starts a client agent that has
// neither a leaf nor a token: it runs (membership, catalog, DNS), says why
// it has no tunnel, and publishes no tunnel port.
func TestClientWithoutTokenRunsWithoutTunnel(t *testing.T) {
	cfg := newConfig(t, "c9", false, "127.253.0.0/16")
	cfg.ClusterKey = config.NewKey()
	a := startAgent(t, cfg)
	if _, err := a.CA().Manager().Leaf(); err == nil {
		t.Fatal("a leaf without a token")
	}
	select {
	case <-a.TunnelReady():
		t.Fatal("the tunnel serves without a certificate")
	default:
	}
	if p := a.Local().NodeInfo().TunnelPort; p != 0 {
		t.Fatalf("tunnel port %d published without a tunnel", p)
	}
	if !strings.Contains(a.logs.String(), "no certificate and no bootstrap token") || !strings.Contains(a.logs.String(), "meshwork ca token c9") {
		t.Fatalf("the log does not say what is missing:\n%s", a.logs.String())
	}
	if st := tunnelStatus(t, a); st.State != "waiting for a certificate" || st.Addr != "" || len(st.Listeners) != 0 {
		t.Fatalf("tunnel status %+v, want waiting for a certificate, with no address or listener", st)
	}
}

// TestTunnelDisabled runs a --dev agent with ports.tunnel -1: DNS answers
// service names with the instances' own addresses, no tunnel port is
// published, and the tunnel's status endpoint says why it has nothing.
func TestTunnelDisabled(t *testing.T) {
	port := backend(t, "web-plain")
	cfg := newConfig(t, "plain", true, "127.249.0.0/16")
	cfg.Ports.Tunnel = -1
	cfg.Services = []api.ServiceDefinition{{Name: "web", Port: port}}
	a := startAgent(t, cfg)
	if a.TunnelReady() != nil || a.Tunnel() != nil {
		t.Fatal("a tunnel exists with ports.tunnel -1")
	}
	testnet.Eventually(t, wait, "web.service.mesh answers the instance's own address", func() error {
		ips, err := a.lookupA("web.service.mesh")
		if err == nil && (len(ips) != 1 || ips[0] != netip.MustParseAddr("127.0.0.1")) {
			err = fmt.Errorf("answers %v", ips)
		}
		return err
	})
	if p := a.Local().NodeInfo().TunnelPort; p != 0 {
		t.Fatalf("tunnel port %d published with the tunnel off", p)
	}
	_, err := api.NewClient(a.HTTPAddr()).Do(context.Background(), http.MethodGet, transport.StatusPath, nil, nil, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Code != "tunnel_disabled" || !strings.Contains(ae.Message, "ports.tunnel: -1") {
		t.Fatalf("GET %s = %v, want 404 tunnel_disabled naming ports.tunnel", transport.StatusPath, err)
	}
}
