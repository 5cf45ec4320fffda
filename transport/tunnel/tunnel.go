// Package tunnel is the agent-to-agent layer of the data plane: QUIC
// connections with mutual TLS to peer agents, one bidirectional stream per
// proxied call, the stream header and status of package wire, and the
// decision on each inbound stream.
//
// It owns the UDP socket's QUIC transport, the pool of peer connections
// (one long-lived connection per peer, dialled on first use, replaced when
// a certificate changes or expires, backed off after a failure), the
// accept loop, and the check that a stream's claimed identity is proven by
// the peer's certificate and allowed by policy. Its API is narrow:
//
//   - OpenStream(ctx, peer, hdr) opens a stream to a peer agent, writes the
//     header and returns the stream once the peer accepted it, or the
//     peer's refusal.
//   - Admit(hdr, peer, now) decides an inbound stream: a Target on this
//     node, or a Refusal with the wire code the caller gets.
//   - Every admitted stream is handed to Deps.Serve as an Inbound, which
//     the protocol handler accepts (and then carries) or refuses.
//
// The tunnel knows nothing of listeners, routing, balancing or what the
// bytes on a stream mean: those are package transport's and the protocol
// handlers' (transport/l4).
package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/transport/udpgro"
	"github.com/meshwork/meshwork/transport/wire"
)

// ALPN is the TLS application protocol of the tunnel. A new incompatible
// stream format gets a new ALPN as well as a new header version.
const ALPN = "meshwork/1"

// Errors. Compare with errors.Is. Their texts keep the "transport:" prefix
// the data plane has always logged and returned.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("transport: closed")
	// ErrIdentity means a SPIFFE ID or a certificate's identities are not
	// what the mesh expects.
	ErrIdentity = errors.New("transport: bad identity")
	// ErrRefused means the receiving agent refused the stream; the error is
	// a *RefusedError carrying the status code.
	ErrRefused = errors.New("transport: refused")
	// ErrPeerUnreachable means no QUIC connection to the peer agent could
	// be made (or one is backing off after a failure).
	ErrPeerUnreachable = errors.New("transport: peer unreachable")
	// ErrConnLost wraps a failed OpenStream whose QUIC connection died
	// under it: the instance may be fine, and a fresh connection is worth
	// one more try.
	ErrConnLost = errors.New("connection lost")
	// ErrNotHolder wraps a *NotHolderError: the peer's certificate on the
	// connection lacks the identity of the service asked for.
	ErrNotHolder = errors.New("peer does not hold the service identity")
	// ErrNoInstance means no healthy instance with a tunnel is known for
	// the destination (package transport's routing returns it).
	ErrNoInstance = errors.New("transport: no healthy instance")
)

// Config configures a Tunnel. transport.Config.Validate fills in and checks
// every value before transport builds it; New only checks what is required.
type Config struct {
	// Node is this agent's node name. Required.
	Node string
	// TrustDomain is the SPIFFE trust domain of the mesh. Required.
	TrustDomain string
	// QUIC is the quic-go configuration of listener and dials. Required.
	QUIC *quic.Config
	// StatelessResetKey lets a restarted agent reset its peers' stale
	// connections at once. nil: none.
	StatelessResetKey *[32]byte
	// SocketBuffer is the UDP buffer size asked for, in bytes.
	SocketBuffer int
	// MaxStreamsPerPeer caps the inbound streams one peer node may hold.
	MaxStreamsPerPeer int
	// HeaderTimeout bounds how long a receiver waits for a stream header.
	HeaderTimeout time.Duration
	// AttemptTimeout bounds one OpenStream: peer dial and stream setup.
	AttemptTimeout time.Duration
	// DialBackoff is the first pause after a failed peer dial.
	DialBackoff time.Duration
	// IdentityRecheck is how old a peer connection must be before it is
	// redialled for a renewed certificate (transport.Config has the why).
	IdentityRecheck time.Duration
}

// Deps are the collaborators of a Tunnel.
type Deps struct {
	// PacketConn is the UDP socket. Required; its owner closes it.
	PacketConn net.PacketConn
	// Identity supplies certificates and verifies peers. Required.
	Identity Identity
	// Authorizer decides inbound streams. Required.
	Authorizer Authorizer
	// Services finds the local services inbound streams may reach.
	// Required.
	Services func(name string) (*Service, bool)
	// Serve carries an admitted inbound stream: it must Accept or Refuse
	// it, and returns once the stream is finished with. It runs on the
	// stream's own goroutine. Required.
	Serve func(ctx context.Context, in *Inbound)
	// Control serves an admitted control stream (IsControl), which holds
	// or resumes a session: it must Accept, Refuse or Abort it. Its
	// Target.Source is the peer's node. nil refuses control streams.
	Control func(ctx context.Context, in *Inbound)
	// Logger receives the logs. nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics. nil keeps them private.
	Registerer prometheus.Registerer
}

// Tunnel is one agent's QUIC endpoint and peer pool.
type Tunnel struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	m    *metrics

	qt        *quic.Transport
	ln        *quic.Listener
	serverTLS *tls.Config

	peersMu        sync.Mutex
	peers          map[string]*peer // by lower-cased node name
	inboundPerNode sync.Map         // node -> *atomic.Int64: streams held now

	connsMu sync.Mutex
	conns   map[io.Closer]struct{} // QUIC connections, closed by Close

	certCache atomic.Pointer[certInfo] // parsed SANs of the last certificate seen
	hdrPool   sync.Pool                // *[]byte of wire.MaxHeaderSize

	gso            atomic.Bool
	gsoLogged      atomic.Bool
	gro            bool // set by Start
	rcvBuf, sndBuf int  // set by Start

	flight   InFlight
	workers  *workers // run inbound streams
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	draining atomic.Bool
	closed   atomic.Bool
}

// New validates cfg and deps and allocates a Tunnel. It opens nothing.
func New(cfg Config, deps Deps) (*Tunnel, error) {
	switch {
	case cfg.Node == "", cfg.TrustDomain == "", cfg.QUIC == nil:
		return nil, errors.New("tunnel: Config.Node, TrustDomain and QUIC are required")
	case deps.PacketConn == nil, deps.Identity == nil, deps.Authorizer == nil, deps.Services == nil, deps.Serve == nil:
		return nil, errors.New("tunnel: Deps.PacketConn, Identity, Authorizer, Services and Serve are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	t := &Tunnel{
		cfg:   cfg,
		deps:  deps,
		log:   log,
		peers: make(map[string]*peer),
		conns: make(map[io.Closer]struct{}),
	}
	m, err := newMetrics(reg, cfg.MaxStreamsPerPeer, func() float64 { return float64(t.peerStreamsMax()) })
	if err != nil {
		return nil, fmt.Errorf("transport: metrics: %w", err)
	}
	t.m = m
	t.hdrPool.New = func() any { b := make([]byte, wire.MaxHeaderSize); return &b }
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
	return t, nil
}

// Addr returns the UDP address of the tunnel socket.
func (t *Tunnel) Addr() net.Addr { return t.deps.PacketConn.LocalAddr() }

// SocketBuffers reports the UDP buffer sizes the kernel granted, as
// getsockopt reports them, once started; 0 when unknown.
func (t *Tunnel) SocketBuffers() (receive, send int) { return t.rcvBuf, t.sndBuf }

// GSO reports whether quic-go used generic segmentation offload on the
// last connection established.
func (t *Tunnel) GSO() bool { return t.gso.Load() }

// GRO reports whether the socket receives with UDP_GRO, once started.
func (t *Tunnel) GRO() bool { return t.gro }

// Flight counts what the data plane carries, for a graceful drain: the
// tunnel counts its inbound streams, and the caller adds its application
// connections.
func (t *Tunnel) Flight() *InFlight { return &t.flight }

// Start sizes the socket buffers, starts the QUIC listener and its accept
// loop, and returns once it listens.
func (t *Tunnel) Start(ctx context.Context) error {
	if t.closed.Load() {
		return ErrClosed
	}
	if !t.started.CompareAndSwap(false, true) {
		return errors.New("transport: already started")
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.workers = newWorkers(&t.wg, t.ctx.Done())
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
	ln, err := t.qt.Listen(t.serverTLS, t.cfg.QUIC)
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
	t.wg.Add(1)
	go t.acceptLoop()
	return nil
}

// SetDraining makes the tunnel refuse new inbound streams with
// shutting_down, a status on which the caller tries another instance.
// Streams already accepted carry on.
func (t *Tunnel) SetDraining() { t.draining.Store(true) }

// Draining reports whether SetDraining was called.
func (t *Tunnel) Draining() bool { return t.draining.Load() }

// Close closes the listener, then every peer connection (telling peers
// with a CONNECTION_CLOSE), then the QUIC transport, and waits for the
// tunnel's goroutines, Serve calls included. It does not close
// Deps.PacketConn. It is idempotent.
func (t *Tunnel) Close() error {
	if !t.closed.CompareAndSwap(false, true) || !t.started.Load() {
		return nil
	}
	t.cancel()
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
		c.Close()
	}
	t.connsMu.Unlock()
	t.qt.Close()
	t.wg.Wait()
	return nil
}

// track registers c to be closed by Close; it reports false (and closes c)
// when the tunnel is already closing.
func (t *Tunnel) track(c io.Closer) bool {
	t.connsMu.Lock()
	defer t.connsMu.Unlock()
	if t.closed.Load() {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Tunnel) untrack(c io.Closer) {
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
func (t *Tunnel) infoOf(c *tls.Certificate) (*certInfo, error) {
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
func (t *Tunnel) currentCert() (*certInfo, error) {
	c, err := t.deps.Identity.GetClientCertificate(&tls.CertificateRequestInfo{Version: tls.VersionTLS13})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	return t.infoOf(c)
}

// noteGSO records whether quic-go uses GSO, from a fresh connection.
func (t *Tunnel) noteGSO(c *quic.Conn) {
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
