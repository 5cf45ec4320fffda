package ca

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/smallstep/cli-utils/token"
	"github.com/smallstep/cli-utils/token/provision"
	"go.step.sm/crypto/jose"
)

const testTD = "mesh.test"

// testLogger logs to the test output when -v is given.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

func newStateKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, StateKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// cluster is a set of CA servers sharing one replicated state.
type cluster struct {
	t     *testing.T // the test that made it; see in
	state StateStore
	key   []byte
}

// in returns c bound to the subtest t, so that its helpers fail t.
func (c *cluster) in(t *testing.T) *cluster {
	cc := *c
	cc.t = t
	return &cc
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return &cluster{t: t, state: NewMemStore(), key: newStateKey(t)}
}

// server starts a CA server named node; mod may change its config and deps.
func (c *cluster) server(node string, mod func(*ServerConfig, *ServerDeps)) *Server {
	c.t.Helper()
	cfg := ServerConfig{TrustDomain: testTD, Node: node, StateKey: c.key, LeafTTL: time.Hour, RotationCheck: 50 * time.Millisecond, RetireGrace: 2 * time.Second}
	deps := ServerDeps{State: c.state, Logger: testLogger(c.t), PeerTLS: testPeerTLS}
	if mod != nil {
		mod(&cfg, &deps)
	}
	s, err := NewServer(cfg, deps)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { s.Close() })
	if err := s.WaitReady(ctxT(c.t, 10*time.Second)); err != nil {
		c.t.Fatal(err)
	}
	return s
}

// idleServer makes a server on the cluster's state without starting it:
// no goroutines, nothing loaded until load.
func (c *cluster) idleServer(cfg ServerConfig) *Server {
	c.t.Helper()
	cfg.TrustDomain, cfg.StateKey, cfg.LeafTTL = testTD, c.key, time.Hour
	s, err := NewServer(cfg, ServerDeps{State: c.state, Logger: testLogger(c.t)})
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// load makes an idle server load the current CA state.
func (c *cluster) load(s *Server) {
	c.t.Helper()
	val, idx, err := c.state.Get(context.Background(), KeyAuthority)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := s.apply(context.Background(), val, idx); err != nil {
		c.t.Fatal(err)
	}
}

// rpcServer is a server agent's RPC port: its own leaf from the local
// issuer, HTTP over TLS on loopback, client certificates requested but not
// required, as raftstore's RPC port does it.
type rpcServer struct {
	srv  *Server
	mgr  *Manager
	addr string
	stop func()
}

func (c *cluster) rpc(s *Server) *rpcServer {
	c.t.Helper()
	mgr := c.manager(s.cfg.Node, nil, s.LocalIssuer(), nil)
	addr, stop := serveRPC(c.t, s.RPCHandler(), mgr)
	return &rpcServer{srv: s, mgr: mgr, addr: addr, stop: stop}
}

// serveRPC serves h on a loopback TLS port with m's leaf, as a server's RPC
// port does.
func serveRPC(t *testing.T, h http.Handler, m *Manager) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: m.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
		NextProtos:     []string{RPCALPN},
	}
	// As raftstore's port does: handshake first, then hand the connection
	// to net/http with its type hidden (net/http drops a *tls.Conn whose
	// ALPN protocol it does not know) and its TLS state in the context.
	hs := &http.Server{
		Handler:  h,
		ErrorLog: log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if hc, ok := c.(*hiddenTLS); ok {
				return context.WithValue(ctx, peerTLSKey{}, hc.state)
			}
			return ctx
		},
	}
	tl := &handshakeListener{Listener: ln, cfg: cfg}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(tl) }()
	var once sync.Once
	stop := func() { once.Do(func() { hs.Close(); <-done }) }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

type peerTLSKey struct{}

// testPeerTLS is ServerDeps.PeerTLS for servers behind rpc.
func testPeerTLS(r *http.Request) (tls.ConnectionState, bool) {
	st, ok := r.Context().Value(peerTLSKey{}).(tls.ConnectionState)
	return st, ok
}

type hiddenTLS struct {
	net.Conn
	state tls.ConnectionState
}

type handshakeListener struct {
	net.Listener
	cfg *tls.Config
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := tls.Server(c, l.cfg)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			continue
		}
		_ = tc.SetDeadline(time.Time{})
		return &hiddenTLS{Conn: tc, state: tc.ConnectionState()}, nil
	}
}

// manager starts a Manager for node with the given issuer (nil: an RPC
// client to addrs) and waits until it is ready.
func (c *cluster) manager(node string, mod func(*ManagerConfig), iss Issuer, addrs func() []string) *Manager {
	c.t.Helper()
	m := c.newManager(node, mod, iss, addrs)
	if err := m.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { m.Close() })
	if err := m.WaitReady(ctxT(c.t, 15*time.Second)); err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *cluster) newManager(node string, mod func(*ManagerConfig), iss Issuer, addrs func() []string) *Manager {
	c.t.Helper()
	if iss == nil {
		iss = c.rpcClient(addrs)
	}
	cfg := ManagerConfig{TrustDomain: testTD, Node: node, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, RotationSpread: 100 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewManager(cfg, ManagerDeps{Issuer: iss, Bundles: NewStateBundleSource(c.state, testTD), Logger: testLogger(c.t)})
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *cluster) rpcClient(addrs func() []string) *RPCClient {
	c.t.Helper()
	cl, err := NewRPCClient(RPCClientConfig{
		TrustDomain: testTD,
		Servers:     func(context.Context) ([]string, error) { return addrs(), nil },
		Timeout:     5 * time.Second,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

func (c *cluster) token(s *Server, node string) string {
	c.t.Helper()
	tok, _, err := s.Token(context.Background(), node, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

func fixed(addrs ...string) func() []string { return func() []string { return addrs } }

// waitLeafIDs waits until m's leaf names exactly want. One change is not
// enough: Changes also fires for the trust bundle, or for a renewal that was
// already under way when the test asked for a new leaf.
func waitLeafIDs(t *testing.T, m *Manager, want []string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ch := m.Changes()
		l, err := m.Leaf()
		if err == nil && slices.Equal(l.IDs, want) {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("timed out after %s waiting for a leaf naming %v; it names %v (%v)", d, want, l.IDs, err)
		}
		select {
		case <-ch:
		case <-time.After(left):
		}
	}
}

// tlsEcho serves TLS on loopback with the manager's server config: every
// accepted connection completes its handshake, writes the client's first
// SPIFFE ID back, and closes.
func tlsEcho(t *testing.T, m *Manager) (addr string, handshakeErrs func() []error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, m.ServerTLSConfig())
				if err := tc.Handshake(); err != nil {
					if !errors.Is(err, net.ErrClosed) {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
					return
				}
				_, _ = tc.Write([]byte(tc.ConnectionState().PeerCertificates[0].URIs[0].String() + "\n"))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), func() []error {
		mu.Lock()
		defer mu.Unlock()
		return append([]error(nil), errs...)
	}
}

// forgedToken is a well-formed bootstrap token for node signed by a key that
// is not the provisioner's.
func forgedToken(t *testing.T, node string) string {
	t.Helper()
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := provision.New(node,
		token.WithJWTID("forged-"+node),
		token.WithIssuer(DefaultProvisioner),
		token.WithAudience(tokenAudience(testTD)),
		token.WithValidity(now, now.Add(5*time.Minute)),
		token.WithSANS([]string{spiffeid.Node(testTD, node)}),
	)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tok.SignedString(jwk.Algorithm, jwk.Key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// newTestLeaf returns a one-certificate chain with the given validity, for
// tests that only look at times.
func newTestLeaf(t *testing.T, notBefore, notAfter time.Time) []*x509.Certificate {
	t.Helper()
	k, _ := newKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return []*x509.Certificate{c}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Fatalf("%s: mode %o, want %o", path, got, want)
	}
}

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return -1
}
