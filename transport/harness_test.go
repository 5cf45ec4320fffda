package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/transport/transporttest"
)

const testTD = "mesh.test"

// mesh is a set of agents sharing one catalog, each with a real UDP socket
// on loopback (newMesh) or a socket on the network twin (newTwinMesh), real
// QUIC and mutual TLS from a test CA.
type mesh struct {
	t     testing.TB
	ca    *transporttest.CA
	store *catalog.Store
	// twin is the network the tunnels run on; nil on loopback.
	twin   *testnet.Network
	mu     sync.Mutex
	agents []*agent
}

// agent is one Transport with its collaborators.
type agent struct {
	m        *mesh
	name     string
	tr       *Transport
	id       *transporttest.Identity
	local    *StaticLocal
	reg      *prometheus.Registry
	pc       net.PacketConn
	status   catalog.MemberStatus
	services []catalog.Service
	authz    *recordingAuthz
	cfg      Config
	deps     Deps
	setup    func(*Transport) // called between New and Start
}

// recordingAuthz records every decision and applies a deny list.
type recordingAuthz struct {
	mu    sync.Mutex
	deny  map[string]bool // "src->dst" or "*->dst"
	calls []string        // "srcID->dst"
	srcs  []Source        // the Source of each call
}

func (a *recordingAuthz) Allowed(src Source, dst string) (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, src.ID+"->"+dst)
	a.srcs = append(a.srcs, src)
	name := src.Service
	if name == "" {
		name = "node/" + src.Node
	}
	if a.deny[name+"->"+dst] || a.deny["*->"+dst] {
		return false, "intention deny"
	}
	return true, "allowed in test"
}

func (a *recordingAuthz) setDeny(rule string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.deny == nil {
		a.deny = map[string]bool{}
	}
	a.deny[rule] = true
}

func (a *recordingAuthz) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func (a *recordingAuthz) sources() []Source {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Source(nil), a.srcs...)
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	ca, err := transporttest.NewCA(testTD)
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{t: t, ca: ca, store: catalog.NewStore()}
}

// newTwinMesh is newMesh with every tunnel socket on one network twin, whose
// faults (m.twin) cut, delay and lose the tunnels' packets. The agents'
// VIP listeners and backends stay on loopback.
func newTwinMesh(t testing.TB) *mesh {
	t.Helper()
	m := newMesh(t)
	m.twin = testnet.New(testnet.Options{})
	t.Cleanup(m.twin.Close)
	return m
}

// listenTunnel opens name's tunnel socket at port (0: any).
func (m *mesh) listenTunnel(name string, port int) net.PacketConn {
	m.t.Helper()
	var pc net.PacketConn
	var err error
	if m.twin != nil {
		pc, err = m.twin.Host(name).ListenPacket(port)
	} else {
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	}
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { pc.Close() })
	return pc
}

// agentOpts tweak one agent.
type agentOpts struct {
	cfg      func(*Config)
	deps     func(*Deps)
	ca       *transporttest.CA   // issuer of its certificate; default the mesh CA
	certSvcs []string            // services in its certificate; default its local services
	tags     map[string][]string // catalog tags by service
	meta     map[string]map[string]string
	setup    func(*Transport) // called between New and Start
}

func testLogger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("TRANSPORT_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("agent", name)
}

// addAgent starts an agent running local services svcs (published in the
// catalog too).
func (m *mesh) addAgent(name string, svcs []LocalService, o agentOpts) *agent {
	t := m.t
	t.Helper()
	m.mu.Lock()
	idx := len(m.agents)
	m.mu.Unlock()
	pc := m.listenTunnel(name, 0)
	certSvcs := o.certSvcs
	if certSvcs == nil {
		for _, s := range svcs {
			certSvcs = append(certSvcs, s.Name)
		}
	}
	issuer := o.ca
	if issuer == nil {
		issuer = m.ca
	}
	cert, err := issuer.IssueNode(name, certSvcs, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{
		m:      m,
		name:   name,
		id:     transporttest.NewIdentity(testTD, cert, issuer),
		local:  NewStaticLocal(svcs...),
		reg:    prometheus.NewRegistry(),
		pc:     pc,
		status: catalog.StatusAlive,
		authz:  &recordingAuthz{},
	}
	for _, s := range svcs {
		cs := catalog.Service{ID: s.Name, Name: s.Name, Health: catalog.Passing, Tags: o.tags[s.Name], Meta: o.meta[s.Name]}
		if len(s.Ports) > 0 {
			cs.Port = s.Ports[0]
			for _, p := range s.Ports[1:] {
				cs.Ports = append(cs.Ports, catalog.Port{Name: fmt.Sprint(p), Port: p})
			}
		}
		a.services = append(a.services, cs)
	}
	cfg := Config{
		Node:        name,
		TrustDomain: testTD,
		VIPRange:    netip.PrefixFrom(netip.AddrFrom4([4]byte{127, byte(100 + idx), 0, 0}), 16),
		DialBackoff: 20 * time.Millisecond,
		Seed:        uint64(idx + 1),
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	deps := Deps{
		PacketConn: pc,
		Identity:   a.id,
		Catalog:    m.store,
		Local:      a.local,
		Authorizer: a.authz,
		Logger:     testLogger(t, name),
		Registerer: a.reg,
	}
	if o.deps != nil {
		o.deps(&deps)
	}
	a.cfg, a.deps, a.setup = cfg, deps, o.setup
	m.mu.Lock()
	m.agents = append(m.agents, a)
	m.mu.Unlock()
	m.publish()
	a.start()
	return a
}

// start starts a's transport on a.pc.
func (a *agent) start() {
	t := a.m.t
	t.Helper()
	deps := a.deps
	deps.PacketConn = a.pc
	deps.Registerer = a.reg
	tr, err := New(a.cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	a.tr = tr
	if a.setup != nil {
		a.setup(tr)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
}

// restart stops a's transport and starts a new one on the same UDP port,
// as a restarted agent would.
func (a *agent) restart() {
	t := a.m.t
	t.Helper()
	port := a.pc.LocalAddr().(*net.UDPAddr).Port
	a.tr.Close()
	a.pc.Close()
	a.pc = a.m.listenTunnel(a.name, port)
	a.reg = prometheus.NewRegistry()
	a.start()
}

// publish puts every agent in the catalog with its status and services.
func (m *mesh) publish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	var members []catalog.Member
	for _, a := range m.agents {
		members = append(members, catalog.Member{
			Status: a.status,
			Record: catalog.Record{
				Node:       a.name,
				Addr:       a.pc.LocalAddr().(*net.UDPAddr).IP.String(),
				TunnelPort: a.pc.LocalAddr().(*net.UDPAddr).Port,
				Services:   append([]catalog.Service(nil), a.services...),
			},
		})
	}
	m.store.Publish(members)
}

// setStatus changes what gossip says about an agent.
func (a *agent) setStatus(s catalog.MemberStatus) {
	a.m.mu.Lock()
	a.status = s
	a.m.mu.Unlock()
	a.m.publish()
}

// eventually is testnet.Eventually with this package's 10 s limit.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testnet.Eventually(t, 10*time.Second, what, testnet.Holds(cond))
}

// reconciled waits until a has followed the catalog's current snapshot.
func (a *agent) reconciled(t testing.TB) {
	t.Helper()
	want := a.m.store.Current().Index()
	eventually(t, a.name+" to follow the catalog", func() bool { return a.tr.lns.reconciled.Load() >= want })
}

// vipAddr waits for a's VIP listener of service:port and returns it.
func (a *agent) vipAddr(t testing.TB, service string, port int) string {
	t.Helper()
	var addr string
	eventually(t, fmt.Sprintf("VIP listener of %s:%d on %s", service, port, a.name), func() bool {
		for _, l := range a.tr.Listeners() {
			if l.Kind == "vip" && strings.EqualFold(l.Service, service) && l.Port == port {
				addr = l.Addr
				return true
			}
		}
		return false
	})
	return addr
}

// counter reads a counter or gauge of a's registry with the given labels.
func (a *agent) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return metricIn(t, a.reg, name, labels...)
}

// metricIn is agent.metric on a registry.
func metricIn(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matchLabels(m, labels) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount())
				}
			}
		}
	}
	return 0
}

func matchLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == kv[i] && lp.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// backend is a local TCP service for tests.
type backend struct {
	ln   net.Listener
	port int
	wg   sync.WaitGroup
}

// startBackend serves each connection with handle on 127.0.0.1.
func startBackend(t testing.TB, handle func(c net.Conn)) *backend {
	t.Helper()
	return startBackendAt(t, "127.0.0.1:0", handle)
}

// startBackendAt serves each connection with handle on addr.
func startBackendAt(t testing.TB, addr string, handle func(c net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

// echo copies back what it reads, then half-closes.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// identify writes its name and closes.
func identify(name string) func(net.Conn) {
	return func(c net.Conn) { io.WriteString(c, name) }
}

// dial connects to addr on behalf of an application.
func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readAll reads c to the end with a deadline.
func readAll(t testing.TB, c net.Conn) (string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}
