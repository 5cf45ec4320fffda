package raftstore

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/internal/keytls"
)

// DialFunc opens a connection, as net.Dialer.DialContext does. It is how the
// network is injected: loopback, network namespaces, or an in-memory twin.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// handshakeTimeout bounds the TLS handshake of an accepted connection, so
// that a silent client cannot hold a goroutine.
const handshakeTimeout = 10 * time.Second

// mux accepts connections on the server port, completes the mutual TLS
// handshake, and hands each connection to the listener of its ALPN
// protocol. A connection that offers no known protocol is closed.
//
// Raft is spoken between servers only: a client that offers
// meshwork-raft/1 gets the TLS config of connections between servers,
// which with a server key presents this server's server leaf and accepts
// only another's (keytls.PeerServerConfig). Every other connection gets
// the config that any agent of the cluster passes.
type mux struct {
	ln     net.Listener
	tlsCfg *tls.Config
	log    *slog.Logger
	subs   map[string]*chanListener

	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // handshakes in progress
	// mismatchWarned is when a refusal for a key mismatch was last
	// logged as a warning: a misconfigured agent retries all the time.
	mismatchWarned time.Time
}

// mismatchWarnEvery bounds the warnings about peers refused for a key
// mismatch; the others are logged at debug level.
const mismatchWarnEvery = 30 * time.Second

func newMux(ln net.Listener, auth *keytls.Authority, advertise net.Addr, log *slog.Logger, protos ...string) *mux {
	agents := slices.DeleteFunc(slices.Clone(protos), func(p string) bool { return p == ALPNRaft })
	cfg := auth.ServerConfig(agents...)
	if slices.Contains(protos, ALPNRaft) {
		peers := auth.PeerServerConfig(ALPNRaft)
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if slices.Contains(hello.SupportedProtos, ALPNRaft) {
				return peers, nil
			}
			return nil, nil
		}
	}
	m := &mux{ln: ln, tlsCfg: cfg, log: log, subs: map[string]*chanListener{}, conns: map[net.Conn]struct{}{}}
	for _, p := range protos {
		m.subs[p] = newChanListener(advertise)
	}
	return m
}

// listener returns the listener of connections that chose proto.
func (m *mux) listener(proto string) *chanListener { return m.subs[proto] }

func (m *mux) start() {
	m.wg.Add(1)
	go m.acceptLoop()
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure such as EMFILE: back off, do not spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("raftstore accept failed", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			<-t.C
			continue
		}
		backoff = 0
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			c.Close()
			return
		}
		m.conns[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.handshake(c)
	}
}

func (m *mux) handshake(c net.Conn) {
	defer m.wg.Done()
	tc := tls.Server(c, m.tlsCfg)
	_ = tc.SetDeadline(time.Now().Add(handshakeTimeout))
	err := tc.Handshake()
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
	if err != nil {
		level := slog.LevelDebug
		if errors.Is(err, keytls.ErrKeyMismatch) && m.warnMismatch() {
			// Not an attack as a rule: a rotation of the cluster key
			// (or server key) that skipped a step, or a typo.
			level = slog.LevelWarn
		}
		m.log.Log(context.Background(), level, "raftstore handshake refused", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	proto := tc.ConnectionState().NegotiatedProtocol
	sub := m.subs[proto]
	var conn net.Conn = tc
	if proto == ALPNRPC {
		// net/http closes a *tls.Conn whose ALPN protocol it has no
		// TLSNextProto handler for; hide the type, keep the state.
		conn = &rpcConn{Conn: tc, state: tc.ConnectionState()}
	}
	if sub == nil || !sub.deliver(conn) {
		tc.Close()
	}
}

// warnMismatch reports whether a key-mismatch refusal may be logged as a
// warning now.
func (m *mux) warnMismatch() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if now.Sub(m.mismatchWarned) < mismatchWarnEvery {
		return false
	}
	m.mismatchWarned = now
	return true
}

func (m *mux) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// close stops accepting, closes connections still in their handshake and
// the sub-listeners, and waits for its goroutines.
func (m *mux) close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	for c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.ln.Close()
	for _, s := range m.subs {
		s.Close()
	}
	m.wg.Wait()
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// deliver hands c to Accept; false when the listener is closed.
func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the advertised address: raft's NetworkTransport tells peers this.
func (l *chanListener) Addr() net.Addr { return l.addr }

// streamLayer is the raft.StreamLayer over the mux: Accept yields the
// connections that chose meshwork-raft/1; Dial opens a TCP connection and
// does the mutual TLS handshake asking for that protocol, with the config
// of connections between servers (keytls.PeerClientConfig).
type streamLayer struct {
	*chanListener
	dial   DialFunc
	tlsCfg *tls.Config
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return dialTLS(ctx, s.dial, string(address), s.tlsCfg)
}

// dialTLS dials addr and completes a TLS handshake within ctx.
func dialTLS(ctx context.Context, dial DialFunc, addr string, cfg *tls.Config) (*tls.Conn, error) {
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// tcpAddr is a net.Addr for an advertised "ip:port".
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

// rpcConn is a handshaken TLS connection handed to the RPC HTTP server.
type rpcConn struct {
	net.Conn
	state tls.ConnectionState
}

type peerKey struct{}

// connContext puts the TLS state of an RPC connection in its context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if rc, ok := c.(*rpcConn); ok {
		return context.WithValue(ctx, peerKey{}, rc.state)
	}
	return ctx
}

// PeerTLS returns the verified TLS state of the caller of an RPC handler
// (mounted with MountRPC): its certificate chain names the calling agent.
func PeerTLS(r *http.Request) (tls.ConnectionState, bool) {
	st, ok := r.Context().Value(peerKey{}).(tls.ConnectionState)
	return st, ok
}
