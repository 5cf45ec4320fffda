// Package transport is the data plane: QUIC tunnels with mutual TLS between
// agents, virtual-IP and upstream listeners on this host, inbound
// authorization and splicing to local services, and latency-aware
// balancing across instances.
//
// It is split by concern into packages with narrow APIs:
//
//   - transport/tunnel: the QUIC endpoint and the pool of peer connections,
//     stream open and accept, the wire header and status, and the decision
//     on each inbound stream (the claimed identity proven by the peer's
//     certificate, the service and port declared here, the Authorizer's
//     verdict): OpenStream(ctx, peer, hdr) and Admit(hdr, peer, now).
//   - transport/l4: the per-connection protocol handler. It dials the local
//     service of an admitted stream and splices, or opens a stream for an
//     application's connection and splices, with half-close, backpressure
//     and the idle timeout. It uses the tunnel's Stream, Inbound and
//     Connector, never Transport.
//   - transport/l7: the per-request handler of "http", "http2" and "grpc"
//     services. It carries each HTTP request on a stream of its own,
//     routed and balanced per request through the Connector, which is then
//     also an l7.Router.
//   - transport (this package): reconciling the VIP and upstream listeners
//     with the catalog and the local services; working out who is calling;
//     routing (Route rules, traffic splits) and balancing
//     (transport/balance) across the instances that may serve a service,
//     with retries on connect; and picking the Handler of each service's
//     protocol, and of each inbound stream by its framing.
//
// One Transport runs per agent on one UDP socket (port 7948 by default),
// shared by its QUIC listener and its dials. It keeps one long-lived QUIC
// connection to each peer agent it talks to, dialled on first use, kept
// alive, and dialled again after a failure; every proxied TCP connection,
// and every request of a per-request service, is one bidirectional stream
// on it.
//
// The path of a connection: an application connects to VIP:port (or to an
// explicit upstream's local address). The agent works out who is calling
// (the upstream's service, else the local service running as the caller's
// uid, found through sock_diag, else the node), picks a healthy instance
// (traffic split, then power of two choices over peak-EWMA latency) that
// may serve the service (its node is allowed the service's identity by
// policy, and its agent's certificate holds that identity; others are
// skipped), opens a stream to that instance's agent and writes the
// header. The receiver
// checks that the claimed identity is one of the URI SANs of the peer's
// certificate, that policy allows it, that the service declares the port,
// dials the local service and answers with a status; on a retryable
// refusal the caller tries another instance. Then both agents splice,
// keeping half-close and backpressure.
package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/balance"
	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/l7"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/retrybudget"
	"github.com/meshwork/meshwork/transport/sockdiag"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/vip"
)

// Errors. Compare with errors.Is.
var (
	// ErrClosed is returned after Close.
	ErrClosed = tunnel.ErrClosed
	// ErrIdentity means a SPIFFE ID or a certificate's identities are not
	// what the mesh expects.
	ErrIdentity = tunnel.ErrIdentity
	// ErrNoInstance means no healthy instance with a tunnel is known for the
	// destination.
	ErrNoInstance = tunnel.ErrNoInstance
	// ErrRefused means the receiving agent refused the stream; the error is
	// a *RefusedError carrying the status code.
	ErrRefused = tunnel.ErrRefused
	// ErrPeerUnreachable means no QUIC connection to the peer agent could
	// be made (or one is backing off after a failure).
	ErrPeerUnreachable = tunnel.ErrPeerUnreachable
)

// RefusedError is the error of a connect the receiving agent refused.
// errors.Is(err, ErrRefused) holds for it.
type RefusedError = tunnel.RefusedError

// Deps are the collaborators of a Transport.
type Deps struct {
	// PacketConn is the UDP socket of the tunnel (port 7948). Required. A
	// *net.UDPConn enables GSO, ECN and batched reads. The Transport does
	// not close it: its owner does, after Close.
	PacketConn net.PacketConn
	// Identity supplies certificates and verifies peers. Required.
	Identity Identity
	// Catalog is the gossip catalog. Required.
	Catalog Catalog
	// Local lists the services of this node. nil means none.
	Local LocalServices
	// Authorizer decides inbound streams. nil applies Config.DefaultAllow.
	Authorizer Authorizer
	// Splits gives traffic splits. nil means none.
	Splits SplitSource
	// IdentityPolicy decides which nodes may serve a service, besides its
	// identity in their certificates. nil lets any node whose certificate
	// holds the service's identity serve it.
	IdentityPolicy IdentityPolicy
	// Protocols gives each service's protocol (ServiceDefaults.protocol),
	// which picks its handler. nil means every service is "tcp".
	Protocols ProtocolSource
	// Routes gives the Route rules of per-request services. nil sends
	// every request to the default split.
	Routes RouteSource
	// Resilience gives the settings of calls to a service: timeouts,
	// circuit breaker limits and outlier detection, read per connection
	// and request, so that a change applies without a restart. It must
	// not block. nil applies policy.DefaultResilience.
	Resilience func(service string) *policy.Resilience
	// RequestAuthorizer decides each request to a local per-request
	// service (L7 intentions). nil allows every request whose stream the
	// Authorizer admitted.
	RequestAuthorizer l7.RequestAuthorizer
	// Fault gives the Fault policy of a local service, applied by this
	// agent to the requests (or connections) the service receives once
	// they are authorized. It must not block. nil, or a nil answer,
	// injects no fault.
	Fault func(service string) *policy.Fault
	// Logger receives the logs. nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics. nil keeps them private.
	Registerer prometheus.Registerer
	// PeerUID finds the uid of a VIP caller. nil uses sock_diag.
	PeerUID PeerUIDFunc
	// DialLocal dials local services. nil uses a net.Dialer.
	DialLocal func(ctx context.Context, network, address string) (net.Conn, error)
	// Listen opens the VIP and upstream listeners, such as with the
	// sockets the previous agent handed over (internal/sockets); network is
	// "tcp" and the result must be a *net.TCPListener. It is called under
	// the listeners' lock and must not block. nil uses net.Listen.
	Listen func(network, addr string) (net.Listener, error)
	// Clock is the balancer's clock. nil uses the system's.
	Clock balance.Clock
	// Observer receives a record of every L7 request and L4 connection,
	// on both sides (observe.Observers fans out to several). It is called
	// on the data path and must not block. nil means none.
	Observer observe.Observer
}

// Transport is one agent's data plane. It reconciles the VIP and upstream
// listeners with the catalog and the local services, routes and balances
// each application connection, and picks the protocol handler that carries
// it; the tunnel layer (transport/tunnel) owns peers and streams, and the
// handlers (transport/l4) the bytes.
type Transport struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	m    *metrics

	tun      *tunnel.Tunnel // peer pool, streams, inbound admission
	handlers handlerSet     // protocol handlers, transport/l4 first

	lb     routing                    // balancer state of instances
	lns    listenerSet                // VIPs, listeners and their reconciliation
	local  atomic.Pointer[localState] // this node's services
	nodeID string                     // this node's SPIFFE ID, the default caller identity

	breakers *breaker.Set // circuit breakers of destinations

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started atomic.Bool
	closed  atomic.Bool
}

// epKey names one service instance: its node and its service ID there.
type epKey struct{ node, id string }

// New validates cfg and deps and allocates a Transport. It opens nothing.
func New(cfg Config, deps Deps) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.PacketConn == nil:
		return nil, fmt.Errorf("%w: Deps.PacketConn is required", ErrConfig)
	case deps.Identity == nil:
		return nil, fmt.Errorf("%w: Deps.Identity is required", ErrConfig)
	case deps.Catalog == nil:
		return nil, fmt.Errorf("%w: Deps.Catalog is required", ErrConfig)
	}
	if deps.Local == nil {
		deps.Local = NewStaticLocal()
	}
	if deps.Authorizer == nil {
		allow := cfg.DefaultAllow
		reason := "default deny"
		if allow {
			reason = "default allow"
		}
		deps.Authorizer = AuthorizerFunc(func(Source, string) (bool, string) { return allow, reason })
	}
	if deps.PeerUID == nil {
		deps.PeerUID = func(c net.Conn) (uint32, error) {
			s, err := sockdiag.PeerOf(c)
			return s.UID, err
		}
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "transport")
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	vips, err := vip.New(cfg.VIPRange)
	if err != nil {
		return nil, fmt.Errorf("%w: VIPRange: %v", ErrConfig, err)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	bal := balance.New(cfg.Balance, seed, deps.Clock)
	budgets, err := retrybudget.NewSet(retrybudget.Clock(deps.Clock), reg)
	if err != nil {
		return nil, fmt.Errorf("transport: metrics: %w", err)
	}
	t := &Transport{
		cfg:    cfg,
		deps:   deps,
		log:    log,
		lb:     routing{bal: bal, eps: balance.NewTable[epKey](bal), budgets: budgets},
		lns:    listenerSet{vips: vips, byBind: make(map[string]*outListener)},
		nodeID: spiffeid.Node(cfg.TrustDomain, cfg.Node),
	}
	t.local.Store(&localState{})
	t.tun, err = tunnel.New(tunnel.Config{
		Node:              cfg.Node,
		TrustDomain:       cfg.TrustDomain,
		QUIC:              cfg.QUIC(),
		StatelessResetKey: cfg.StatelessResetKey,
		SocketBuffer:      cfg.SocketBuffer,
		MaxStreamsPerPeer: cfg.MaxStreamsPerPeer,
		HeaderTimeout:     cfg.HeaderTimeout,
		AttemptTimeout:    cfg.AttemptTimeout,
		DialBackoff:       cfg.DialBackoff,
		IdentityRecheck:   cfg.IdentityRecheck,
	}, tunnel.Deps{
		PacketConn: deps.PacketConn,
		Identity:   deps.Identity,
		Authorizer: deps.Authorizer,
		Services:   func(name string) (*tunnel.Service, bool) { return t.local.Load().service(name) },
		Serve:      t.serveStream,
		Control:    func(ctx context.Context, in *tunnel.Inbound) { t.handlers.l4.ServeControl(ctx, in) },
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	proxy, err := l4.New(l4.Config{
		IdleTimeout:      cfg.IdleTimeout,
		LocalDialTimeout: cfg.LocalDialTimeout,
		CopyBuffer:       cfg.CopyBuffer,
		TraceSampleRate:  cfg.TraceSampleRate,
		TrustDomain:      cfg.TrustDomain,
		Node:             cfg.Node,
	}, l4.Deps{DialLocal: deps.DialLocal, Logger: log, Registerer: reg, Observer: deps.Observer, Fault: deps.Fault,
		OpenControl: t.tun.OpenControl})
	if err != nil {
		return nil, err
	}
	if t.breakers, err = breaker.NewSet(reg); err != nil {
		return nil, fmt.Errorf("transport: metrics: %w", err)
	}
	perRequest, err := l7.New(l7.Config{
		IdleTimeout:      cfg.IdleTimeout,
		HeaderTimeout:    cfg.HeaderTimeout,
		LocalDialTimeout: cfg.LocalDialTimeout,
		TraceSampleRate:  cfg.TraceSampleRate,
		TrustDomain:      cfg.TrustDomain,
	}, l7.Deps{
		Resilience:   deps.Resilience,
		Breakers:     t.breakers,
		RouteOptions: t.routeOptions,
		Budgets:      budgets,
		Protocol: func(service string) policy.Protocol {
			if deps.Protocols == nil {
				return policy.ProtocolHTTP
			}
			return policy.Protocol(strings.ToLower(deps.Protocols.ProtocolOf(service)))
		},
		Authorizer: deps.RequestAuthorizer,
		Fault:      deps.Fault,
		DialLocal:  deps.DialLocal,
		Logger:     log,
		Registerer: reg,
		Observer:   deps.Observer,
	})
	if err != nil {
		return nil, err
	}
	t.handlers = newHandlerSet(proxy, perRequest)
	if t.m, err = newMetrics(reg); err != nil {
		return nil, fmt.Errorf("transport: metrics: %w", err)
	}
	bal.OnEvent(t.outlierEvent)
	return t, nil
}

// VIPs returns the virtual-IP allocator; DNS answers from it (it implements
// VIP(service) and ServiceAt(ip)). With DisableVIPs it stays empty.
func (t *Transport) VIPs() *vip.Allocator { return t.lns.vips }

// Addr returns the UDP address of the tunnel socket.
func (t *Transport) Addr() net.Addr { return t.tun.Addr() }

// SocketBuffers reports the UDP buffer sizes the kernel granted, as
// getsockopt reports them (Linux doubles the figure asked for), once
// started; 0 when unknown.
func (t *Transport) SocketBuffers() (receive, send int) { return t.tun.SocketBuffers() }

// GSO reports whether quic-go used generic segmentation offload on the
// last connection established.
func (t *Transport) GSO() bool { return t.tun.GSO() }

// GRO reports whether the tunnel socket receives with generic receive
// offload (UDP_GRO), once started.
func (t *Transport) GRO() bool { return t.tun.GRO() }

// Start sizes the socket buffers, starts the QUIC listener, opens the
// listeners of the current catalog and local services, and returns once
// they are open. Listeners that fail to bind are logged, counted and
// retried every ResyncInterval; they do not fail Start.
func (t *Transport) Start(ctx context.Context) error {
	if t.closed.Load() {
		return ErrClosed
	}
	if !t.started.CompareAndSwap(false, true) {
		return errors.New("transport: already started")
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if err := t.tun.Start(ctx); err != nil {
		t.cancel()
		return err
	}
	t.reconcileLocal()
	t.reconcileCatalog(t.deps.Catalog.Current())
	t.wg.Add(2)
	go t.watchCatalog()
	go t.watchLocal()
	rcv, snd := t.tun.SocketBuffers()
	t.log.Info("tunnel listening", "addr", t.Addr().String(), "node", t.cfg.Node,
		"udp_rcvbuf", rcv, "udp_sndbuf", snd, "gro", t.tun.GRO())
	return nil
}

// Close stops the data plane: it closes the listeners, then the tunnel
// (every peer connection, telling peers with a CONNECTION_CLOSE, and the
// QUIC transport), then every proxied connection still open, and waits for
// its goroutines. It does not close Deps.PacketConn. It is idempotent.
func (t *Transport) Close() error {
	if !t.closed.CompareAndSwap(false, true) || !t.started.Load() {
		return nil
	}
	t.cancel()
	// A reconciliation in progress finishes before the listeners are
	// closed; later ones see the cancelled context and do nothing.
	t.lns.reconcileMu.Lock()
	t.lns.reconcileMu.Unlock()
	t.closeListeners()
	t.tun.Close()
	t.handlers.l4.Close()
	t.handlers.l7.Close()
	t.wg.Wait()
	return nil
}
