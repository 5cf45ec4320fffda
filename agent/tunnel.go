package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/internal/atomicfile"
	"github.com/meshwork/meshwork/internal/httpjson"
	"github.com/meshwork/meshwork/internal/sockets"
	"github.com/meshwork/meshwork/transport"
	"github.com/meshwork/meshwork/transport/vip"
)

// resetKeyFile is where the tunnel's stateless reset key lives, under
// data_dir: a secret of this node, kept across restarts so that a restarted
// agent resets its peers' stale connections at once (docs/wire.md).
const resetKeyFile = "tunnel/reset.key"

// buildTunnel makes the data plane (docs/wire.md), unless ports.tunnel is
// -1. The QUIC socket is bound at start; the tunnel starts serving once the
// certificate manager holds a leaf and a trust bundle, and only then does
// this node publish its tunnel port, so that peers never dial a node that
// cannot answer. Until then DNS answers service names with the instances'
// own addresses, as it does with no tunnel.
func (a *Agent) buildTunnel() error {
	if a.cfg.Ports.Tunnel < 0 && a.deps.TunnelConn == nil {
		return a.http.Mount("GET "+transport.StatusPath, acl.Require(acl.ResourceAgent, "", acl.Read), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			httpjson.CodedError(w, http.StatusNotFound, httpjson.CodeTunnelDisabled, errors.New("the tunnel is disabled (ports.tunnel: -1)"))
		}))
	}
	prefix, err := netip.ParsePrefix(a.cfg.Tunnel.VIPRange)
	if err != nil {
		return fmt.Errorf("agent: tunnel.vip_range: %w", err)
	}
	key, err := loadResetKey(filepath.Join(a.cfg.DataDir, resetKeyFile))
	if err != nil {
		return err
	}
	cfg := transport.Config{
		Node:              a.cfg.Node,
		TrustDomain:       a.cfg.CA.TrustDomain,
		VIPRange:          prefix,
		DefaultAllow:      a.cfg.Tunnel.DefaultPolicy == "allow",
		IdleTimeout:       a.cfg.Tunnel.IdleTimeout.D(),
		MaxStreamsPerPeer: a.cfg.Tunnel.MaxStreamsPerPeer,
		StatelessResetKey: key,
	}
	if r := a.cfg.Telemetry.Tracing.SampleRate; r != nil {
		cfg.TraceSampleRate = *r
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	met, err := newTunnelMetrics(a.reg)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	obs, err := a.buildObservers()
	if err != nil {
		return err
	}
	local := transport.NewStaticLocal()
	var last []transport.LocalService
	a.services.add(func(svcs []localService) {
		defs := localServices(svcs)
		if last != nil && slices.EqualFunc(defs, last, equalLocal) {
			return
		}
		local.Set(defs)
		last = defs
	})
	pol := newPolicyReader(a.raft.Policy, a.cfg.Tunnel.DefaultPolicy)
	t := &tunnel{
		a:   a,
		cfg: cfg,
		deps: transport.Deps{
			Identity:          newCountingIdentity(a.ca.Manager(), met.refusedCerts, a.logger("tunnel")),
			Catalog:           a.store,
			Local:             local,
			Authorizer:        pol,
			Splits:            pol,
			IdentityPolicy:    pol,
			Protocols:         pol,
			Routes:            pol,
			Resilience:        pol.Resilience,
			RequestAuthorizer: pol,
			Fault:             pol.Fault,
			Logger:            a.log,
			Registerer:        a.reg,
			Observer:          obs,
			Listen: func(network, addr string) (net.Listener, error) {
				return a.deps.Sockets.Listener(sockets.ListenerName(addr), network, addr)
			},
		},
		mgr:   a.ca.Manager(),
		log:   a.logger("tunnel"),
		ready: make(chan struct{}),
	}
	a.tunnel = t
	if err := a.http.Mount("GET "+transport.StatusPath, acl.Require(acl.ResourceAgent, "", acl.Read), http.HandlerFunc(t.serveStatus)); err != nil {
		return err
	}
	a.add("tunnel", t.start, t.close)
	return nil
}

// tunnel is the lifecycle of the data plane inside the agent.
type tunnel struct {
	a    *Agent
	cfg  transport.Config
	deps transport.Deps
	mgr  *ca.Manager
	log  *slog.Logger

	vips   atomic.Pointer[vip.Allocator] // set once the transport exists
	tr     atomic.Pointer[transport.Transport]
	ownPC  net.PacketConn // bound here, closed here
	ready  chan struct{}  // closed once the transport serves
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// start binds the tunnel socket and makes the transport, then waits in the
// background for a certificate before it starts it.
func (t *tunnel) start(context.Context) error {
	pc := t.a.deps.TunnelConn
	if pc == nil {
		bind := net.JoinHostPort(t.a.cfg.Bind, strconv.Itoa(t.a.cfg.Ports.Tunnel))
		addr, err := net.ResolveUDPAddr("udp", bind)
		if err != nil {
			return fmt.Errorf("agent: tunnel: %w", err)
		}
		c, err := t.a.deps.Sockets.PacketConn("tunnel-udp", "udp", addr.String())
		if err != nil {
			return fmt.Errorf("agent: tunnel: listen on %s: %w", bind, err)
		}
		pc, t.ownPC = c, c
	}
	deps := t.deps
	deps.PacketConn = pc
	tr, err := transport.New(t.cfg, deps)
	if err != nil {
		t.closePC()
		return fmt.Errorf("agent: %w", err)
	}
	t.tr.Store(tr)
	t.vips.Store(tr.VIPs())

	ctx, cancel := context.WithCancel(context.Background())
	t.cancel, t.done = cancel, make(chan struct{})
	go t.serve(ctx, tr, pc.LocalAddr().(*net.UDPAddr).Port)
	return nil
}

// serve starts the transport once the certificate manager is ready, then
// publishes the tunnel port.
func (t *tunnel) serve(ctx context.Context, tr *transport.Transport, port int) {
	defer close(t.done)
	select {
	case <-t.mgr.Ready():
	default:
		t.log.Info("tunnel waiting for a certificate", "port", port)
		select {
		case <-t.mgr.Ready():
		case <-ctx.Done():
			return
		}
	}
	if err := tr.Start(ctx); err != nil {
		if ctx.Err() == nil {
			t.log.Error("tunnel not started", "err", err)
		}
		return
	}
	info := t.a.local.NodeInfo()
	info.TunnelPort = port
	if err := t.a.local.SetNodeInfo(info); err != nil {
		t.log.Error("tunnel port not published", "port", port, "err", err)
		return
	}
	close(t.ready)
}

// close stops the transport, then closes the socket it was given.
func (t *tunnel) close() error {
	var err error
	t.once.Do(func() {
		if t.cancel != nil {
			t.cancel()
			<-t.done
		}
		if tr := t.tr.Load(); tr != nil {
			err = tr.Close()
		}
		t.closePC()
	})
	return err
}

func (t *tunnel) closePC() {
	if t.ownPC != nil {
		t.ownPC.Close()
	}
}

// serveStatus answers GET /v1/agent/tunnel with the transport's status.
func (t *tunnel) serveStatus(w http.ResponseWriter, _ *http.Request) {
	st := transport.Status{Node: t.cfg.Node, State: transport.StateNotStarted}
	if tr := t.tr.Load(); tr != nil {
		st = tr.Status()
	}
	if st.State == transport.StateNotStarted {
		select {
		case <-t.mgr.Ready():
		default:
			st.State = "waiting for a certificate"
		}
	}
	httpjson.Write(w, http.StatusOK, st)
}

// VIP implements dnsserver.VIPResolver over the transport's allocator, which
// exists once the tunnel has started (before DNS starts).
func (t *tunnel) VIP(service string) (netip.Addr, bool) {
	if v := t.vips.Load(); v != nil {
		return v.VIP(service)
	}
	return netip.Addr{}, false
}

// ServiceAt implements dnsserver.VIPResolver.
func (t *tunnel) ServiceAt(ip netip.Addr) (string, bool) {
	if v := t.vips.Load(); v != nil {
		return v.ServiceAt(ip)
	}
	return "", false
}

// Tunnel is the agent's data plane, nil when it is disabled or before
// Start.
func (a *Agent) Tunnel() *transport.Transport {
	if a.tunnel == nil {
		return nil
	}
	return a.tunnel.tr.Load()
}

// TunnelReady is closed once the data plane serves and this node publishes
// its tunnel port; nil when the tunnel is disabled.
func (a *Agent) TunnelReady() <-chan struct{} {
	if a.tunnel == nil {
		return nil
	}
	return a.tunnel.ready
}

// loadResetKey reads the node's stateless reset key, making it (32 random
// bytes, mode 0600) when it is missing.
func loadResetKey(path string) (*[32]byte, error) {
	var key [32]byte
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) == len(key):
		copy(key[:], b)
		return &key, nil
	case err == nil:
		return nil, fmt.Errorf("agent: tunnel reset key %s: %d bytes, want %d (delete it to make a new one)", path, len(b), len(key))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("agent: tunnel reset key: %w", err)
	}
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("agent: tunnel reset key: %w", err)
	}
	if err := atomicfile.Write(path, key[:], 0o600); err != nil {
		return nil, fmt.Errorf("agent: tunnel reset key: %w", err)
	}
	return &key, nil
}

// localServices converts agent/local's services to the data plane's
// definitions: the ports inbound streams may reach (the main port and the
// named ones), the unix user that identifies callers, the upstreams.
func localServices(svcs []localService) []transport.LocalService {
	out := make([]transport.LocalService, 0, len(svcs))
	for _, s := range svcs {
		ls := transport.LocalService{Name: s.Name, Address: s.Address, User: s.User}
		if s.Port != 0 {
			ls.Ports = append(ls.Ports, s.Port)
		}
		for _, p := range s.Ports {
			ls.Ports = append(ls.Ports, p.Port)
		}
		for _, u := range s.Upstreams {
			ls.Upstreams = append(ls.Upstreams, transport.Upstream{Service: u.Service, LocalBind: u.LocalBind, Port: u.Port})
		}
		out = append(out, ls)
	}
	return out
}

func equalLocal(a, b transport.LocalService) bool {
	return a.Name == b.Name && a.Address == b.Address && a.User == b.User &&
		slices.Equal(a.Ports, b.Ports) && slices.Equal(a.Upstreams, b.Upstreams)
}
