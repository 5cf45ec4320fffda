// Package transport is the data plane: QUIC tunnels with mutual TLS between
// agents, the stream header of package wire, virtual-IP and upstream
// listeners on this host, inbound authorization and splicing to local
// services, and latency-aware balancing across instances.
//
// One Transport runs per agent on one UDP socket (port 7948 by default),
// shared by its QUIC listener and its dials. It keeps one long-lived QUIC
// connection to each peer agent it talks to, dialled on first use, kept
// alive, and dialled again after a failure; every proxied TCP connection is
// one bidirectional stream on it.
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
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/transport/balance"
	"github.com/meshwork/meshwork/transport/sockdiag"
	"github.com/meshwork/meshwork/transport/udpgro"
	"github.com/meshwork/meshwork/transport/vip"
)

// Errors. Compare with errors.Is.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("transport: closed")
	// ErrIdentity means a SPIFFE ID or a certificate's identities are not
	// what the mesh expects.
	ErrIdentity = errors.New("transport: bad identity")
	// ErrNoInstance means no healthy instance with a tunnel is known for the
	// destination.
	ErrNoInstance = errors.New("transport: no healthy instance")
	// ErrRefused means the receiving agent refused the stream; the error is
	// a *RefusedError carrying the status code.
	ErrRefused = errors.New("transport: refused")
	// ErrPeerUnreachable means no QUIC connection to the peer agent could
	// be made (or one is backing off after a failure).
	ErrPeerUnreachable = errors.New("transport: peer unreachable")
)

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
	// Logger receives the logs. nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics. nil keeps them private.
	Registerer prometheus.Registerer
	// PeerUID finds the uid of a VIP caller. nil uses sock_diag.
	PeerUID PeerUIDFunc
	// DialLocal dials local services. nil uses a net.Dialer.
	DialLocal func(ctx context.Context, network, address string) (net.Conn, error)
	// Clock is the balancer's clock. nil uses the system's.
	Clock balance.Clock
}

// Transport is one agent's data plane.
type Transport struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	m    *metrics

	qt        *quic.Transport
	ln        *quic.Listener
	quicConf  *quic.Config
	serverTLS *tls.Config

	vips *vip.Allocator
	bal  *balance.Balancer
	eps  *balance.Table[epKey]

	nodeID string

	peersMu sync.Mutex
	peers   map[string]*peer // by lower-cased node name

	inboundPerNode sync.Map // node -> *atomic.Int64: streams held now

	skipLogged sync.Map // epKey -> *atomic.Int64: unix ns of the last log of a skip

	local atomic.Pointer[localState]

	reconcileMu sync.Mutex    // serialises listener reconciliation between the watchers
	reconciled  atomic.Uint64 // index of the last catalog snapshot reconciled
	lnMu        sync.Mutex
	listeners   map[string]*outListener // by bind address

	connsMu sync.Mutex
	conns   map[io.Closer]struct{} // QUIC connections and proxied TCP connections, closed by Close

	certCache atomic.Pointer[certInfo] // parsed SANs of the last certificate seen

	gso       atomic.Bool
	gsoLogged atomic.Bool
	gro       bool // set by Start

	bufPool sync.Pool // *[]byte of cfg.CopyBuffer

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	draining atomic.Bool // Drain has begun
	flight   inFlight    // connections and streams being carried, for Drain
	closed   atomic.Bool
	once     sync.Once

	rcvBuf, sndBuf int
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
	if deps.DialLocal == nil {
		d := &net.Dialer{}
		deps.DialLocal = d.DialContext
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("transport: metrics: %w", err)
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
	t := &Transport{
		cfg:       cfg,
		deps:      deps,
		log:       log.With("component", "transport"),
		m:         m,
		vips:      vips,
		bal:       bal,
		eps:       balance.NewTable[epKey](bal),
		nodeID:    spiffeid.Node(cfg.TrustDomain, cfg.Node),
		peers:     make(map[string]*peer),
		listeners: make(map[string]*outListener),
		conns:     make(map[io.Closer]struct{}),
	}
	t.bufPool.New = func() any { b := make([]byte, cfg.CopyBuffer); return &b }
	t.quicConf = cfg.QUIC()
	t.serverTLS = &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{ALPN},
		GetCertificate: deps.Identity.GetCertificate,
		// The chain is verified by Identity against the current bundle,
		// not by crypto/tls against a pool fixed at start.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if _, err := deps.Identity.VerifyPeer(raw); err != nil {
				return fmt.Errorf("meshwork: client certificate refused: %w", err)
			}
			return nil
		},
	}
	t.local.Store(&localState{})
	return t, nil
}

// VIPs returns the virtual-IP allocator; DNS answers from it (it implements
// VIP(service) and ServiceAt(ip)). With DisableVIPs it stays empty.
func (t *Transport) VIPs() *vip.Allocator { return t.vips }

// Addr returns the UDP address of the tunnel socket.
func (t *Transport) Addr() net.Addr { return t.deps.PacketConn.LocalAddr() }

// SocketBuffers reports the UDP buffer sizes the kernel granted, as
// getsockopt reports them (Linux doubles the figure asked for), once
// started; 0 when unknown.
func (t *Transport) SocketBuffers() (receive, send int) { return t.rcvBuf, t.sndBuf }

// GSO reports whether quic-go used generic segmentation offload on the
// last connection established.
func (t *Transport) GSO() bool { return t.gso.Load() }

// GRO reports whether the tunnel socket receives with generic receive
// offload (UDP_GRO), once started.
func (t *Transport) GRO() bool { return t.gro }

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
	t.rcvBuf, t.sndBuf = sizeSocketBuffers(t.deps.PacketConn, t.cfg.SocketBuffer, t.log)
	t.m.udpBuffer.WithLabelValues("receive").Set(float64(t.rcvBuf))
	t.m.udpBuffer.WithLabelValues("send").Set(float64(t.sndBuf))

	// Receive offload: quic-go sends runs of packets in one sendmsg (GSO)
	// but reads one per message unless the socket coalesces them.
	var conn net.PacketConn
	conn, t.gro = udpgro.Wrap(t.deps.PacketConn)
	if t.gro {
		t.m.gro.Set(1)
	}
	t.qt = &quic.Transport{Conn: conn}
	if k := t.cfg.StatelessResetKey; k != nil {
		key := quic.StatelessResetKey(*k)
		t.qt.StatelessResetKey = &key
	}
	ln, err := t.qt.Listen(t.serverTLS, t.quicConf)
	if err != nil {
		t.cancel()
		return fmt.Errorf("transport: listen on %s: %w", t.Addr(), err)
	}
	t.ln = ln
	if err := ctx.Err(); err != nil {
		t.cancel()
		ln.Close()
		return err
	}
	t.reconcileLocal()
	t.reconcileCatalog(t.deps.Catalog.Current())
	t.wg.Add(3)
	go t.acceptLoop()
	go t.watchCatalog()
	go t.watchLocal()
	t.log.Info("tunnel listening", "addr", t.Addr().String(), "node", t.cfg.Node,
		"udp_rcvbuf", t.rcvBuf, "udp_sndbuf", t.sndBuf, "gro", t.gro)
	return nil
}

// Close stops the data plane: it closes the listeners, then every peer
// connection (telling peers with a CONNECTION_CLOSE) and every proxied
// connection, then the QUIC transport, and waits for its goroutines. It
// does not close Deps.PacketConn. It is idempotent.
func (t *Transport) Close() error {
	t.once.Do(func() {
		t.closed.Store(true)
		if !t.started.Load() {
			return
		}
		t.cancel()
		// A reconciliation in progress finishes before the listeners are
		// closed; later ones see the cancelled context and do nothing.
		t.reconcileMu.Lock()
		t.reconcileMu.Unlock()
		t.closeListeners()
		if t.ln != nil {
			t.ln.Close()
		}
		t.peersMu.Lock()
		for k, p := range t.peers {
			p.shutdown("agent shutting down")
			delete(t.peers, k)
		}
		t.peersMu.Unlock()
		t.connsMu.Lock()
		for c := range t.conns {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // applications must see a failure, not an end
			}
			c.Close()
		}
		t.connsMu.Unlock()
		t.qt.Close()
		t.wg.Wait()
	})
	return nil
}

// track registers c to be closed by Close; it reports false (and closes c)
// when the transport is already closing.
func (t *Transport) track(c io.Closer) bool {
	t.connsMu.Lock()
	defer t.connsMu.Unlock()
	if t.closed.Load() {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c io.Closer) {
	t.connsMu.Lock()
	delete(t.conns, c)
	t.connsMu.Unlock()
}

// quicCloser closes a QUIC connection with an application close.
type quicCloser struct{ c *quic.Conn }

func (q quicCloser) Close() error { return q.c.CloseWithError(codeShutdown, "agent shutting down") }

// QUIC application error codes, on connections and streams.
const (
	codeNoError  quic.ApplicationErrorCode = 0
	codeShutdown quic.ApplicationErrorCode = 1
	codeNodeDown quic.ApplicationErrorCode = 2
	codeReplaced quic.ApplicationErrorCode = 3

	streamRefused quic.StreamErrorCode = 1 // the status frame said why
	streamAborted quic.StreamErrorCode = 2 // the TCP side reset or failed
	streamIdle    quic.StreamErrorCode = 3 // idle timeout
)

// certInfo is what a certificate says about its holder.
type certInfo struct {
	cert     *tls.Certificate
	ids      []string
	notAfter time.Time
}

// has reports whether id is among the certificate's URI SANs.
func (ci *certInfo) has(id string) bool {
	for _, x := range ci.ids {
		if x == id {
			return true
		}
	}
	return false
}

// infoOf parses c's leaf, caching the last one.
func (t *Transport) infoOf(c *tls.Certificate) (*certInfo, error) {
	if ci := t.certCache.Load(); ci != nil && ci.cert == c {
		return ci, nil
	}
	if c == nil || len(c.Certificate) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrIdentity)
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: own certificate: %v", ErrIdentity, err)
		}
	}
	ci := leafInfo(leaf)
	ci.cert = c
	t.certCache.Store(ci)
	return ci, nil
}

func leafInfo(leaf *x509.Certificate) *certInfo {
	ci := &certInfo{notAfter: leaf.NotAfter}
	for _, u := range leaf.URIs {
		ci.ids = append(ci.ids, u.String())
	}
	return ci
}

// currentCert peeks at the certificate the next handshake would present.
func (t *Transport) currentCert() (*certInfo, error) {
	c, err := t.deps.Identity.GetClientCertificate(&tls.CertificateRequestInfo{Version: tls.VersionTLS13})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	return t.infoOf(c)
}

// noteGSO records whether quic-go uses GSO, from a fresh connection.
func (t *Transport) noteGSO(c *quic.Conn) {
	gso := c.ConnectionState().GSO
	if t.gso.Swap(gso) != gso || !t.gsoLogged.Swap(true) {
		t.log.Info("quic segmentation offload", "gso", gso)
	}
	if gso {
		t.m.gso.Set(1)
	} else {
		t.m.gso.Set(0)
	}
}

// ListenerInfo describes one open outbound listener.
type ListenerInfo struct {
	// Kind is "vip" or "upstream".
	Kind string `json:"kind"`
	// Addr is the ip:port listened on.
	Addr string `json:"addr"`
	// Service is the destination service.
	Service string `json:"service"`
	// Port is the destination port; 0 means each instance's main port.
	Port int `json:"port"`
	// Source is the fixed identity of an upstream; "" for VIPs, whose
	// callers are identified per connection.
	Source string `json:"source,omitempty"`
}

// Listeners lists the open outbound listeners, sorted by address.
func (t *Transport) Listeners() []ListenerInfo {
	t.lnMu.Lock()
	out := make([]ListenerInfo, 0, len(t.listeners))
	for _, l := range t.listeners {
		out = append(out, ListenerInfo{Kind: l.kind, Addr: l.bind, Service: l.service, Port: l.port, Source: l.source})
	}
	t.lnMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}
