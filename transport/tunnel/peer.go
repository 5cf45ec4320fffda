package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/internal/spiffeid"
)

// peer is this agent's link to one peer agent: the current QUIC connection,
// the dial in progress (one at a time, shared by every caller that needs
// it), the connections being drained, and the backoff after a failed dial.
type peer struct {
	t    *Tunnel
	node string

	mu        sync.Mutex
	addr      netip.AddrPort
	cur       *peerConn
	draining  map[*peerConn]struct{}
	dialing   *dialCall
	failUntil time.Time
	backoff   time.Duration
	lastErr   error
	down      bool // removed: gossip says the node failed, or Close
}

// peerConn is one QUIC connection to a peer, with what each side presented
// on it.
type peerConn struct {
	conn     *quic.Conn
	local    *certInfo // our certificate on this connection
	services []string  // the service identities the peer's certificate holds
	dialed   time.Time
	expires  time.Time // the earlier NotAfter of both leaves
	active   atomic.Int64
	stale    atomic.Bool // no new streams: replaced, expired or broken
}

// holds reports whether the peer's certificate on pc holds the identity of
// service. Names compare case-insensitively, as the catalog's do.
func (pc *peerConn) holds(service string) bool {
	for _, s := range pc.services {
		if strings.EqualFold(s, service) {
			return true
		}
	}
	return false
}

type dialCall struct {
	done chan struct{}
	pc   *peerConn
	err  error
}

// usable reports whether new streams may go on pc.
func (pc *peerConn) usable(now time.Time) bool {
	return !pc.stale.Load() && pc.conn.Context().Err() == nil && now.Before(pc.expires)
}

// release ends a stream's use of pc and closes pc when it is stale and idle.
func (pc *peerConn) release(p *peer) {
	if pc.active.Add(-1) == 0 && pc.stale.Load() {
		p.closeDrained(pc)
	}
}

// peerFor returns the peer for node, creating it, with addr as its address.
func (t *Tunnel) peerFor(node string, addr netip.AddrPort) (*peer, error) {
	key := strings.ToLower(node)
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	if t.closed.Load() {
		return nil, ErrClosed
	}
	p := t.peers[key]
	if p == nil {
		p = &peer{t: t, node: node, addr: addr, draining: map[*peerConn]struct{}{}}
		t.peers[key] = p
		return p, nil
	}
	p.mu.Lock()
	if p.addr != addr {
		// The node moved: new streams must go to the new address.
		p.addr = addr
		if p.cur != nil {
			p.retireLocked(p.cur)
		}
		p.failUntil = time.Time{}
	}
	p.mu.Unlock()
	return p, nil
}

// acquire returns a usable connection with one stream reserved on it,
// dialling if needed. Callers release it with pc.release(p).
func (p *peer) acquire(ctx context.Context) (*peerConn, error) {
	for round := 0; ; round++ {
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: node %s: removed", ErrPeerUnreachable, p.node)
		}
		if pc := p.cur; pc != nil {
			if pc.usable(time.Now()) {
				pc.active.Add(1)
				p.mu.Unlock()
				return pc, nil
			}
			p.retireLocked(pc)
		}
		if time.Now().Before(p.failUntil) {
			err := p.lastErr
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: node %s: backing off after: %v", ErrPeerUnreachable, p.node, err)
		}
		if round == 3 {
			// Fresh connections keep being unusable (an expired
			// certificate on either side): stop rather than spin.
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: node %s: new connections are unusable (certificate expired?)", ErrPeerUnreachable, p.node)
		}
		call := p.dialing
		if call == nil {
			call = &dialCall{done: make(chan struct{})}
			p.dialing = call
			p.t.wg.Add(1)
			go p.dial(call, p.addr)
		}
		p.mu.Unlock()

		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: node %s: %v", ErrPeerUnreachable, p.node, ctx.Err())
		}
		if call.err != nil {
			return nil, call.err
		}
		// Loop: take the new connection under the lock (it may already be
		// stale if the certificate changed meanwhile).
	}
}

// dial makes a QUIC connection to the peer, for every waiter of call. It
// runs on the transport's context, not a caller's, so that one caller
// giving up does not fail the others.
func (p *peer) dial(call *dialCall, addr netip.AddrPort) {
	t := p.t
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.AttemptTimeout)
	defer cancel()
	pc, err := t.dialPeer(ctx, p.node, addr)

	p.mu.Lock()
	if err == nil && (p.down || t.closed.Load()) {
		pc.conn.CloseWithError(codeShutdown, "not needed")
		err = fmt.Errorf("%w: node %s: removed", ErrPeerUnreachable, p.node)
	}
	if err != nil {
		if p.backoff == 0 {
			p.backoff = t.cfg.DialBackoff
		} else {
			p.backoff = min(p.backoff*2, 30*time.Second)
		}
		p.failUntil = time.Now().Add(p.backoff)
		p.lastErr = err
		t.m.peerDials.WithLabelValues("failed").Inc()
		t.log.Warn("peer dial failed", "node", p.node, "addr", addr.String(), "err", err, "retry_after", p.backoff)
	} else {
		p.backoff = 0
		p.failUntil = time.Time{}
		if p.cur != nil {
			p.retireLocked(p.cur)
		}
		p.cur = pc
		t.m.peerDials.WithLabelValues("ok").Inc()
	}
	p.dialing = nil
	call.pc, call.err = pc, err
	p.mu.Unlock()
	close(call.done)
}

// retireLocked stops new streams on pc and closes it once its streams end,
// so that no stream is dropped when a connection is replaced. p.mu is held.
func (p *peer) retireLocked(pc *peerConn) {
	pc.stale.Store(true)
	if p.cur == pc {
		p.cur = nil
	}
	p.draining[pc] = struct{}{}
	if pc.active.Load() == 0 {
		p.closeDrainedLocked(pc)
	}
}

func (p *peer) closeDrained(pc *peerConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeDrainedLocked(pc)
}

func (p *peer) closeDrainedLocked(pc *peerConn) {
	if _, ok := p.draining[pc]; !ok || pc.active.Load() != 0 {
		return
	}
	delete(p.draining, pc)
	pc.conn.CloseWithError(codeReplaced, "replaced")
}

// recheck dials the peer afresh, in the background, when pc is its current
// connection and is at least IdentityRecheck old: pc's certificate lacks an
// identity asked for, and the peer may hold a renewed certificate that has
// it. The new connection replaces pc once it is up (pc's streams carry
// on); a failed dial leaves pc in use. At most one dial runs per peer.
func (p *peer) recheck(pc *peerConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.cur != pc || p.dialing != nil || p.down || now.Before(p.failUntil) || now.Sub(pc.dialed) < p.t.cfg.IdentityRecheck {
		return
	}
	p.t.log.Debug("peer certificate lacks a service identity; dialling again for a renewed one", "node", p.node, "connection_age", now.Sub(pc.dialed))
	call := &dialCall{done: make(chan struct{})}
	p.dialing = call
	p.t.wg.Add(1)
	go p.dial(call, p.addr)
}

// broken marks pc unusable at once (a stream on it timed out): the next
// caller dials afresh. Streams still open on it are left to fail or finish.
func (p *peer) broken(pc *peerConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retireLocked(pc)
}

// shutdown closes every connection of p now; reason goes to the peer.
func (p *peer) shutdown(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	code := codeShutdown
	if reason != "agent shutting down" {
		code = codeNodeDown
	}
	if p.cur != nil {
		p.cur.conn.CloseWithError(code, reason)
		p.cur = nil
	}
	for pc := range p.draining {
		pc.conn.CloseWithError(code, reason)
		delete(p.draining, pc)
	}
}

// dialPeer dials node at addr and checks that the server proves node's
// identity, so that any other mesh member cannot stand in for it.
func (t *Tunnel) dialPeer(ctx context.Context, node string, addr netip.AddrPort) (*peerConn, error) {
	var presented atomic.Pointer[tls.Certificate]
	want := spiffeid.Node(t.cfg.TrustDomain, node)
	id := t.deps.Identity
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		ServerName: node,
		// The chain is verified below against the current bundle.
		InsecureSkipVerify: true,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := id.GetClientCertificate(cri)
			if err == nil {
				presented.Store(c)
			}
			return c, err
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			ids, err := id.VerifyPeer(raw)
			if err != nil {
				return fmt.Errorf("meshwork: server certificate refused: %w", err)
			}
			for _, x := range ids {
				if x == want {
					return nil
				}
			}
			return fmt.Errorf("meshwork: server certificate is not %s (has %v)", want, ids)
		},
	}
	conn, err := t.qt.Dial(ctx, net.UDPAddrFromAddrPort(addr), conf, t.cfg.QUIC)
	if err != nil {
		return nil, fmt.Errorf("%w: node %s at %s: %v", ErrPeerUnreachable, node, addr, err)
	}
	local, err := t.infoOf(presented.Load())
	if err != nil {
		conn.CloseWithError(codeShutdown, "no client certificate")
		return nil, err
	}
	expires := local.notAfter
	var services []string
	if pcs := conn.ConnectionState().TLS.PeerCertificates; len(pcs) > 0 {
		if pcs[0].NotAfter.Before(expires) {
			expires = pcs[0].NotAfter
		}
		services = serviceIdentities(t.cfg.TrustDomain, pcs[0])
	}
	if !t.track(quicCloser{conn}) {
		return nil, ErrClosed
	}
	t.m.peerConns.WithLabelValues("dialed").Inc()
	t.noteGSO(conn)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		<-conn.Context().Done()
		t.untrack(quicCloser{conn})
		t.m.peerConns.WithLabelValues("dialed").Dec()
		cause := context.Cause(conn.Context())
		var appErr *quic.ApplicationError
		if !errors.As(cause, &appErr) || appErr.Remote {
			t.log.Debug("peer connection closed", "node", node, "cause", cause)
		}
	}()
	t.log.Debug("peer connected", "node", node, "addr", addr.String(), "expires", expires, "services", services)
	return &peerConn{conn: conn, local: local, services: services, dialed: time.Now(), expires: expires}, nil
}

// serviceIdentities returns the names of the services whose identities in
// trust domain td the certificate holds.
func serviceIdentities(td string, leaf *x509.Certificate) []string {
	var out []string
	for _, u := range leaf.URIs {
		if id, err := spiffeid.FromURL(td, u); err == nil && id.Kind == spiffeid.KindService {
			out = append(out, id.Name)
		}
	}
	return out
}

// DropPeers closes the connections to nodes for which keep is false: gossip
// declared them failed or they left. Their instances are already out of the
// pool (they are no longer passing); this stops their connections from
// hanging on until the QUIC idle timeout.
func (t *Tunnel) DropPeers(keep func(node string) bool) {
	t.peersMu.Lock()
	var gone []*peer
	for k, p := range t.peers {
		if !keep(p.node) {
			gone = append(gone, p)
			delete(t.peers, k)
		}
	}
	t.peersMu.Unlock()
	for _, p := range gone {
		t.log.Info("peer removed, closing its connections", "node", p.node)
		p.shutdown("node failed")
	}
}

// ConnInfo is a peer connection, as diagnostics and tests see it.
type ConnInfo struct {
	// Conn is the QUIC connection; nil when there is none.
	Conn *quic.Conn
	// Local is the certificate this agent presented on it.
	Local *tls.Certificate
}

// PeerConn returns the connection new streams to node go on now, and
// whether node is in the peer table at all. For diagnostics and tests.
func (t *Tunnel) PeerConn(node string) (ci ConnInfo, known bool) {
	t.peersMu.Lock()
	p := t.peers[strings.ToLower(node)]
	t.peersMu.Unlock()
	if p == nil {
		return ConnInfo{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil {
		ci = ConnInfo{Conn: p.cur.conn, Local: p.cur.local.cert}
	}
	return ci, true
}

// Retire stops new streams on node's current connection, as its
// certificate's expiry would: the next stream dials afresh, and the
// streams on the old connection carry on until they end.
func (t *Tunnel) Retire(node string) {
	t.peersMu.Lock()
	p := t.peers[strings.ToLower(node)]
	t.peersMu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil {
		p.retireLocked(p.cur)
	}
}
