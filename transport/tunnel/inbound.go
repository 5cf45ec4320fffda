package tunnel

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/transport/wire"
)

// PeerCert is what an accepted connection's certificate proves about the
// peer agent.
type PeerCert struct {
	// Node is the node of the certificate's node SAN; "" if it has none.
	Node string
	// IDs are the certificate's URI SANs.
	IDs []string
	// NotAfter is the leaf's expiry; zero when unknown.
	NotAfter time.Time
}

// PeerCertOf reads what leaf proves in trust domain td.
func PeerCertOf(td string, leaf *x509.Certificate) PeerCert {
	ci := leafInfo(leaf)
	pc := PeerCert{IDs: ci.ids, NotAfter: ci.notAfter}
	for _, id := range pc.IDs {
		if sid, err := spiffeid.Parse(td, id); err == nil && sid.Kind == spiffeid.KindNode {
			pc.Node = sid.Name
			break
		}
	}
	return pc
}

func (pc PeerCert) has(id string) bool {
	for _, x := range pc.IDs {
		if x == id {
			return true
		}
	}
	return false
}

// peerInfo is an accepted connection's peer.
type peerInfo struct {
	cert    PeerCert
	remote  string
	streams *atomic.Int64 // streams the node holds now, over all its connections
}

// Refusal is the answer to an inbound stream that is not carried: the
// status code the caller gets (and the refused metric counts) and a reason
// for both ends' logs.
type Refusal struct {
	Code   wire.Code
	Reason string
}

// Target is where an admitted stream goes on this node.
type Target struct {
	// Service is the service's name as defined locally.
	Service string
	// Addr is the local address to reach it at.
	Addr netip.AddrPort
	// Source is the caller, as proven and authorized.
	Source Source
}

func (t *Tunnel) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept(t.ctx)
		if err != nil {
			if t.ctx.Err() == nil {
				t.log.Error("tunnel accept failed", "err", err)
			}
			return
		}
		if !t.track(quicCloser{c}) {
			return
		}
		t.noteGSO(c)
		t.wg.Add(1)
		go t.serveConn(c)
	}
}

// serveConn accepts the streams of one peer connection.
func (t *Tunnel) serveConn(c *quic.Conn) {
	defer t.wg.Done()
	defer t.untrack(quicCloser{c})
	t.m.peerConns.WithLabelValues("accepted").Inc()
	defer t.m.peerConns.WithLabelValues("accepted").Dec()

	pi := &peerInfo{remote: c.RemoteAddr().String()}
	if pcs := c.ConnectionState().TLS.PeerCertificates; len(pcs) > 0 {
		pi.cert = PeerCertOf(t.cfg.TrustDomain, pcs[0])
	}
	key := pi.cert.Node
	if key == "" {
		key = "addr:" + pi.remote
	}
	v, _ := t.inboundPerNode.LoadOrStore(key, new(atomic.Int64))
	pi.streams = v.(*atomic.Int64)
	t.log.Debug("peer connection accepted", "node", pi.cert.Node, "remote", pi.remote)

	for {
		s, err := c.AcceptStream(t.ctx)
		if err != nil {
			if c.Context().Err() == nil {
				// The agent is closing: tell the peer, so that it redials at
				// once instead of waiting for its idle timeout.
				c.CloseWithError(codeShutdown, "agent shutting down")
			}
			return
		}
		t.wg.Add(1)
		t.workers.run(func() { t.handleStream(s, pi) })
	}
}

// handleStream serves one inbound stream: admission, header, the identity
// and authorization decision, then Deps.Serve.
func (t *Tunnel) handleStream(s *quic.Stream, pi *peerInfo) {
	defer t.wg.Done()
	t.flight.Add()
	defer t.flight.Done()
	n := pi.streams.Add(1)
	defer pi.streams.Add(-1)

	in := &Inbound{t: t, pi: pi, s: s}
	if r := admission(t.closed.Load() || t.draining.Load(), n, t.cfg.MaxStreamsPerPeer); r != nil {
		in.Refuse(*r)
		return
	}
	s.SetReadDeadline(time.Now().Add(t.cfg.HeaderTimeout))
	bp := t.hdrPool.Get().(*[]byte)
	h, err := wire.ReadHeader(s, *bp)
	t.hdrPool.Put(bp)
	s.SetReadDeadline(time.Time{})
	if err != nil {
		in.Refuse(headerRefusal(err))
		return
	}
	in.Header = h
	in.Start = time.Now()
	if IsControl(h) {
		t.serveControl(in)
		return
	}
	target, r := t.Admit(h, pi.cert, in.Start)
	if r != nil {
		in.Refuse(*r)
		return
	}
	in.Target = target
	t.deps.Serve(t.ctx, in)
}

// admission decides whether a new stream may be served at all, before its
// header is read: not while the agent stops, and not beyond the peer's
// stream limit (held counts the peer's streams, this one included).
func admission(stopping bool, held int64, limit int) *Refusal {
	switch {
	case stopping:
		return &Refusal{wire.CodeShuttingDown, "agent shutting down"}
	case held > int64(limit):
		return &Refusal{wire.CodeOverloaded, fmt.Sprintf("peer holds %d streams, limit %d", held-1, limit)}
	}
	return nil
}

// headerRefusal is the answer to a header that could not be read.
func headerRefusal(err error) Refusal {
	code := wire.CodeBadHeader
	if errors.Is(err, wire.ErrVersion) {
		code = wire.CodeUnsupportedVersion
	}
	return Refusal{code, err.Error()}
}

// Admit decides an inbound stream from its header and what the peer's
// certificate proves: the claimed identity must be among the certificate's
// URI SANs (and the certificate unexpired at now), the service must run on
// this node and declare the port, and the Authorizer must allow the
// caller. A service identity's Source carries the certificate's node, so
// that the Authorizer can check the node may hold it. It only reads
// memory; it is safe for concurrent use.
func (t *Tunnel) Admit(h wire.Header, peer PeerCert, now time.Time) (Target, *Refusal) {
	if !peer.has(h.Source) {
		return Target{}, &Refusal{wire.CodeIdentityMismatch, fmt.Sprintf("claimed identity %s is not in the peer certificate", h.Source)}
	}
	if !peer.NotAfter.IsZero() && now.After(peer.NotAfter) {
		return Target{}, &Refusal{wire.CodeIdentityMismatch, "peer certificate expired; reconnect"}
	}
	src, err := ParseID(t.cfg.TrustDomain, h.Source)
	if err != nil {
		return Target{}, &Refusal{wire.CodeIdentityMismatch, err.Error()}
	}
	if src.Service != "" {
		src.Node = peer.Node
	}
	svc, ok := t.deps.Services(h.Service)
	if !ok {
		return Target{}, &Refusal{wire.CodeNoSuchService, fmt.Sprintf("service %s does not run on node %s", h.Service, t.cfg.Node)}
	}
	addr, ok := svc.Ports[int(h.Port)]
	if !ok {
		return Target{}, &Refusal{wire.CodeNoSuchPort, fmt.Sprintf("service %s does not declare port %d on node %s", h.Service, h.Port, t.cfg.Node)}
	}
	if allowed, why := t.authorize(src, svc.Name, h); !allowed {
		return Target{}, &Refusal{wire.CodeUnauthorized, fmt.Sprintf("%s may not call %s: %s", h.Source, svc.Name, why)}
	}
	return Target{Service: svc.Name, Addr: netip.AddrPortFrom(addr, h.Port), Source: src}, nil
}

// IsControl reports whether h opens a control stream, which holds or
// resumes a session (wire.ExtHold, wire.ExtResume) instead of reaching a
// service.
func IsControl(h wire.Header) bool {
	for _, e := range h.Extensions {
		if e.Type == wire.ExtHold || e.Type == wire.ExtResume {
			return true
		}
	}
	return false
}

// serveControl admits a control stream and hands it to Deps.Control. Its
// claimed source must be the node identity of the peer's certificate:
// only the agent of a node may hold or resume the sessions it took part
// in, and Deps.Control checks that the session is that node's.
func (t *Tunnel) serveControl(in *Inbound) {
	h, peer := in.Header, in.pi.cert
	switch {
	case !peer.has(h.Source):
		in.Refuse(Refusal{wire.CodeIdentityMismatch, fmt.Sprintf("claimed identity %s is not in the peer certificate", h.Source)})
		return
	case !peer.NotAfter.IsZero() && in.Start.After(peer.NotAfter):
		in.Refuse(Refusal{wire.CodeIdentityMismatch, "peer certificate expired; reconnect"})
		return
	}
	src, err := ParseID(t.cfg.TrustDomain, h.Source)
	if err != nil || src.Service != "" || src.Node == "" || !strings.EqualFold(src.Node, peer.Node) {
		in.Refuse(Refusal{wire.CodeIdentityMismatch, fmt.Sprintf("a hold or resume must claim the node identity of its agent, not %s", h.Source)})
		return
	}
	if t.deps.Control == nil {
		in.Refuse(Refusal{wire.CodeBadHeader, "this agent does not hold sessions"})
		return
	}
	in.Target = Target{Service: h.Service, Source: src}
	t.deps.Control(t.ctx, in)
}

// Peer is the agent that opened the stream: the node its certificate
// names and the address its QUIC connection comes from, which is its
// tunnel socket.
func (in *Inbound) Peer() Peer {
	addr, _ := netip.ParseAddrPort(in.pi.remote)
	// A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; the
	// catalog, and so the peer pool's key, has the IPv4 form.
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	return Peer{Node: in.pi.cert.Node, Addr: addr}
}

// authorize asks the Authorizer about a stream: a stream that carries a
// request is asked about as such when the Authorizer tells them apart, so
// that an intention deciding each request admits it (the request is then
// decided on its own) while a per-connection stream, which nobody could
// decide per request, is denied.
func (t *Tunnel) authorize(src Source, dst string, h wire.Header) (bool, string) {
	if sa, ok := t.deps.Authorizer.(StreamAuthorizer); ok {
		_, perRequest := h.Extension(wire.ExtHTTP)
		return sa.AllowedStream(src, dst, perRequest)
	}
	return t.deps.Authorizer.Allowed(src, dst)
}

// Inbound is an admitted inbound stream, handed to Deps.Serve. The handler
// answers it once: Accept, then carry the stream; or Refuse; or Abort.
type Inbound struct {
	t  *Tunnel
	pi *peerInfo
	s  *quic.Stream

	// Header is the stream's header.
	Header wire.Header
	// Start is when the header was read; the caller's Header.Timeout
	// budget runs from about then.
	Start time.Time
	// Target is what Admit decided.
	Target Target
}

// Accept answers the caller that the stream is accepted and returns the
// stream to carry. On error the stream is already cancelled.
func (in *Inbound) Accept() (*Stream, error) {
	var st [wire.StatusPrefixSize]byte
	if _, err := in.s.Write(wire.AppendStatus(st[:0], wire.Status{Code: wire.CodeAccepted})); err != nil {
		in.s.CancelRead(quic.StreamErrorCode(AbortFailed))
		return nil, fmt.Errorf("transport: write accepted status: %w", err)
	}
	return &Stream{s: in.s}, nil
}

// Abort cancels the stream both ways without a status: the agent is
// closing under it.
func (in *Inbound) Abort() {
	in.s.CancelRead(quic.StreamErrorCode(AbortFailed))
	in.s.CancelWrite(quic.StreamErrorCode(AbortFailed))
}

// Refuse answers the stream with r, logs it and counts it.
func (in *Inbound) Refuse(r Refusal) {
	t, h, pi, s := in.t, &in.Header, in.pi, in.s
	t.m.refused.WithLabelValues(r.Code.String()).Inc()
	attrs := []any{"reason", r.Code.String(), "detail", r.Reason, "peer_node", pi.cert.Node, "peer_addr", pi.remote}
	if h.Service != "" {
		attrs = append(attrs, "service", h.Service, "port", h.Port, "source", h.Source)
	}
	if !h.Trace.IsZero() {
		attrs = append(attrs, "trace_id", fmt.Sprintf("%x", h.Trace.TraceID))
	}
	switch r.Code {
	case wire.CodeUnauthorized, wire.CodeIdentityMismatch, wire.CodeBadHeader, wire.CodeUnsupportedVersion:
		t.log.Warn("stream refused", attrs...)
	default:
		t.log.Info("stream refused", attrs...)
	}
	// Counted and logged before the answer leaves, so that whoever sees the
	// refusal also finds it in the metrics.
	var buf [64]byte
	s.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.Write(wire.AppendStatus(buf[:0], wire.Status{Code: r.Code, Reason: r.Reason}))
	s.Close()
	s.CancelRead(streamRefused)
}
