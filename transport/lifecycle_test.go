package transport

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/transporttest"
	"github.com/meshwork/meshwork/transport/tunnel"
)

func TestConfigValidate(t *testing.T) {
	good := func() Config { return Config{Node: "n", TrustDomain: "td"} }
	tests := []struct {
		name  string
		mod   func(*Config)
		field string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no node", func(c *Config) { c.Node = "" }, "Node"},
		{"no trust domain", func(c *Config) { c.TrustDomain = "" }, "TrustDomain"},
		{"vip range outside loopback", func(c *Config) { c.VIPRange = netip.MustParsePrefix("10.0.0.0/8") }, "VIPRange"},
		{"vip range over 127.0.0.1", func(c *Config) { c.VIPRange = netip.MustParsePrefix("127.0.0.0/8") }, "VIPRange"},
		{"negative timeout", func(c *Config) { c.IdleTimeout = -time.Second }, "IdleTimeout"},
		{"keepalive too long", func(c *Config) { c.KeepAlive = time.Minute }, "KeepAlive"},
		{"stream limit", func(c *Config) { c.MaxStreamsPerPeer = -1 }, "MaxStreamsPerPeer"},
		{"attempts", func(c *Config) { c.ConnectAttempts = 100 }, "ConnectAttempts"},
		{"socket buffer", func(c *Config) { c.SocketBuffer = 10 }, "SocketBuffer"},
		{"copy buffer", func(c *Config) { c.CopyBuffer = 1 << 30 }, "CopyBuffer"},
		{"windows", func(c *Config) { c.StreamWindow = 1 << 30 }, "StreamWindow"},
		{"sample rate above 1", func(c *Config) { c.TraceSampleRate = 1.5 }, "TraceSampleRate"},
		{"sample rate NaN", func(c *Config) { c.TraceSampleRate = math.NaN() }, "TraceSampleRate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				if c.IdleTimeout != time.Hour || c.MaxStreamsPerPeer != DefaultMaxStreamsPerPeer() || c.VIPRange.String() != "127.240.0.0/12" {
					t.Errorf("defaults not applied: %+v", c)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want ErrConfig naming %s", err, tc.field)
			}
		})
	}
}

// minimalDeps returns the required Deps of a Transport of node "n", which
// is never started.
func minimalDeps(t *testing.T) Deps {
	t.Helper()
	ca, _ := transporttest.NewCA(testTD)
	cert, _ := ca.IssueNode("n", nil, time.Hour)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return Deps{PacketConn: pc, Identity: transporttest.NewIdentity(testTD, cert, ca), Catalog: catalog.NewStore()}
}

func TestNewRequiresDeps(t *testing.T) {
	full := minimalDeps(t)
	cfg := Config{Node: "n", TrustDomain: testTD}
	for name, mod := range map[string]func(*Deps){
		"PacketConn": func(d *Deps) { d.PacketConn = nil },
		"Identity":   func(d *Deps) { d.Identity = nil },
		"Catalog":    func(d *Deps) { d.Catalog = nil },
	} {
		d := full
		mod(&d)
		if _, err := New(cfg, d); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("missing %s: err = %v", name, err)
		}
	}
	tr, err := New(cfg, full)
	if err != nil {
		t.Fatal(err)
	}
	// New opened nothing: Close without Start is fine, Start after Close is not.
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	m := newMesh(t)
	hold := make(chan struct{})
	be := startBackend(t, func(c net.Conn) { <-hold; io.Copy(io.Discard, c) })
	defer close(hold)
	server := m.addAgent("server", []LocalService{{Name: "hold", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "hold", be.port)
	c := dial(t, addr)
	io.WriteString(c, "x")
	eventually(t, "the stream to be up", func() bool { return server.metric(t, MetricActive, "direction", "inbound") == 1 })

	done := make(chan struct{})
	go func() { client.tr.Close(); client.tr.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: a goroutine was left behind")
	}
	if _, err := readAll(t, c); err == nil {
		t.Error("a proxied connection survived Close without an error")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the VIP listener survived Close")
	}
	// The server hears of it through CONNECTION_CLOSE, not an idle timeout.
	eventually(t, "the server to drop the stream", func() bool {
		return server.metric(t, MetricActive, "direction", "inbound") == 0
	})
}

func TestMetricNamesAsDocumented(t *testing.T) {
	want := []string{MetricRefused, MetricInbound, MetricOutbound, MetricAttemptFailures, MetricActive,
		MetricBytes, MetricPeerConns, MetricPeerDials, MetricConnectSeconds, MetricListeners,
		MetricListenErrors, MetricUDPBuffer, MetricGSO, MetricGRO, MetricSkipped,
		MetricNoCredit, MetricStreamLimit, MetricPeerStreamsMax, MetricFaults, MetricEjections, MetricEjected,
		MetricCircuitRejected, l4.MetricHeld, l4.MetricResumed, l4.MetricParked}
	// The tunnel and the handlers register part of them; each package's
	// own test checks that its list is what it registers.
	got := append(append(append(append([]string(nil), metricNames...), tunnel.MetricNames...), l4.MetricNames...), breaker.MetricNames...)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("metrics\n got %v\nwant %v", got, want)
	}
	for _, n := range want {
		if !strings.HasPrefix(n, "meshwork_transport_") {
			t.Errorf("%s lacks the meshwork_transport_ prefix", n)
		}
	}
	// docs/wire.md's table lists each of them.
	doc, err := os.ReadFile("../docs/wire.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range want {
		if !strings.Contains(string(doc), "| `"+n+"` |") {
			t.Errorf("docs/wire.md does not list %s", n)
		}
	}
	// A Transport registers every one of them: a probe of the same name is
	// refused by the registry.
	reg := prometheus.NewRegistry()
	deps := minimalDeps(t)
	deps.Registerer = reg
	cfg := Config{Node: "n", TrustDomain: testTD}
	if _, err := New(cfg, deps); err != nil {
		t.Fatal(err)
	}
	for _, n := range want {
		if err := reg.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: "probe"})); err == nil {
			t.Errorf("%s is not registered by New", n)
		}
	}
	// A second transport on the same registry is refused, not a panic.
	if _, err := New(cfg, deps); err == nil {
		t.Error("duplicate registration accepted")
	}
}

func TestSocketBuffersAndSysctls(t *testing.T) {
	m := newMesh(t)
	a := m.addAgent("a", nil, agentOpts{})
	rcv, snd := a.tr.SocketBuffers()
	if rcv == 0 || snd == 0 {
		t.Fatal("buffer sizes not read back")
	}
	if a.metric(t, MetricUDPBuffer, "direction", "receive") != float64(rcv) {
		t.Error("buffer gauge does not match")
	}
	// Loopback on Linux coalesces UDP runs; the tunnel must have asked.
	if runtime.GOOS == "linux" && (!a.tr.GRO() || a.metric(t, MetricGRO) != 1) {
		t.Errorf("GRO() = %v, gauge %v on Linux; want receive offload on", a.tr.GRO(), a.metric(t, MetricGRO))
	}
	s := Sysctls(Config{})
	if s["net.core.rmem_max"] != "7340032" || s["net.core.wmem_max"] != "7340032" {
		t.Errorf("Sysctls = %v", s)
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		in      string
		svc     string
		node    string
		wantErr bool
	}{
		{"spiffe://td/svc/web", "web", "", false},
		{"spiffe://td/node/n1", "", "n1", false},
		{"spiffe://other/svc/web", "", "", true},
		{"spiffe://td/svc/", "", "", true},
		{"spiffe://td/svc/a/b", "", "", true},
		{"spiffe://td/user/x", "", "", true},
		{"https://td/svc/web", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			s, err := ParseID("td", tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err == nil && (s.Service != tc.svc || s.Node != tc.node || s.ID != tc.in) {
				t.Fatalf("got %+v", s)
			}
			if err != nil && !errors.Is(err, ErrIdentity) {
				t.Fatalf("err %v is not ErrIdentity", err)
			}
		})
	}
}

// The gossip catalog is what the transport reads.
var _ Catalog = (*catalog.Store)(nil)
