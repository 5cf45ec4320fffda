package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/transport/wire"
)

// peerInfo is what an accepted connection's certificate proves.
type peerInfo struct {
	node     string   // from the node SAN; "" if the certificate has none
	ids      []string // URI SANs
	notAfter time.Time
	remote   string
	streams  *atomic.Int64 // streams the node holds now, over all its connections
}

func (pi *peerInfo) has(id string) bool {
	for _, x := range pi.ids {
		if x == id {
			return true
		}
	}
	return false
}

func (t *Transport) acceptLoop() {
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
func (t *Transport) serveConn(c *quic.Conn) {
	defer t.wg.Done()
	defer t.untrack(quicCloser{c})
	t.m.peerConns.WithLabelValues("accepted").Inc()
	defer t.m.peerConns.WithLabelValues("accepted").Dec()

	pi := &peerInfo{remote: c.RemoteAddr().String()}
	if pcs := c.ConnectionState().TLS.PeerCertificates; len(pcs) > 0 {
		ci := leafInfo(pcs[0])
		pi.ids, pi.notAfter = ci.ids, ci.notAfter
		for _, id := range pi.ids {
			if sid, err := spiffeid.Parse(t.cfg.TrustDomain, id); err == nil && sid.Kind == spiffeid.KindNode {
				pi.node = sid.Name
				break
			}
		}
	}
	key := pi.node
	if key == "" {
		key = "addr:" + pi.remote
	}
	v, _ := t.inboundPerNode.LoadOrStore(key, new(atomic.Int64))
	pi.streams = v.(*atomic.Int64)
	t.log.Debug("peer connection accepted", "node", pi.node, "remote", pi.remote)

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
		go t.handleStream(s, pi)
	}
}

// refusal is an inbound refusal on its way to the caller and the logs.
type refusal struct {
	code   wire.Code
	reason string
}

// handleStream serves one inbound stream: admission, header, the
// identity and authorization decision, then the local dial and splice.
func (t *Transport) handleStream(s *quic.Stream, pi *peerInfo) {
	defer t.wg.Done()
	t.flight.add()
	defer t.flight.done()
	n := pi.streams.Add(1)
	defer pi.streams.Add(-1)

	var hdr wire.Header
	if r := admission(t.closed.Load() || t.draining.Load(), n, t.cfg.MaxStreamsPerPeer); r != nil {
		t.refuse(s, pi, &hdr, *r)
		return
	}
	s.SetReadDeadline(time.Now().Add(t.cfg.HeaderTimeout))
	bp := t.bufPool.Get().(*[]byte)
	h, err := wire.ReadHeader(s, *bp)
	t.bufPool.Put(bp)
	s.SetReadDeadline(time.Time{})
	if err != nil {
		t.refuse(s, pi, &hdr, headerRefusal(err))
		return
	}
	hdr = h
	start := time.Now()
	target, r := t.admit(h, pi, start)
	if r != nil {
		t.refuse(s, pi, &hdr, *r)
		return
	}
	lc, r := t.dialLocal(h, target, start)
	if r != nil {
		t.refuse(s, pi, &hdr, *r)
		return
	}
	t.spliceInbound(s, lc)
}

// admission decides whether a new stream may be served at all, before its
// header is read: not while the agent stops, and not beyond the peer's
// stream limit (held counts the peer's streams, this one included).
func admission(stopping bool, held int64, limit int) *refusal {
	switch {
	case stopping:
		return &refusal{wire.CodeShuttingDown, "agent shutting down"}
	case held > int64(limit):
		return &refusal{wire.CodeOverloaded, fmt.Sprintf("peer holds %d streams, limit %d", held-1, limit)}
	}
	return nil
}

// headerRefusal is the answer to a header that could not be read.
func headerRefusal(err error) refusal {
	code := wire.CodeBadHeader
	if errors.Is(err, wire.ErrVersion) {
		code = wire.CodeUnsupportedVersion
	}
	return refusal{code, err.Error()}
}

// target is where an admitted stream goes on this node.
type target struct {
	service string // the service's name as defined locally
	addr    netip.AddrPort
	source  Source // the caller, as proven and authorized
}

// admit decides an inbound stream from its header and the peer's
// certificate: the claimed identity must be among the certificate's URI
// SANs (and the certificate unexpired at now), the service must run here
// and declare the port, and the Authorizer must allow the caller.
func (t *Transport) admit(h wire.Header, pi *peerInfo, now time.Time) (target, *refusal) {
	if !pi.has(h.Source) {
		return target{}, &refusal{wire.CodeIdentityMismatch, fmt.Sprintf("claimed identity %s is not in the peer certificate", h.Source)}
	}
	if !pi.notAfter.IsZero() && now.After(pi.notAfter) {
		return target{}, &refusal{wire.CodeIdentityMismatch, "peer certificate expired; reconnect"}
	}
	src, err := ParseID(t.cfg.TrustDomain, h.Source)
	if err != nil {
		return target{}, &refusal{wire.CodeIdentityMismatch, err.Error()}
	}
	if src.Service != "" {
		src.Node = pi.node
	}
	inst := t.local.Load().services[strings.ToLower(h.Service)]
	if inst == nil {
		return target{}, &refusal{wire.CodeNoSuchService, fmt.Sprintf("service %s does not run on node %s", h.Service, t.cfg.Node)}
	}
	addr, ok := inst.ports[int(h.Port)]
	if !ok {
		return target{}, &refusal{wire.CodeNoSuchPort, fmt.Sprintf("service %s does not declare port %d on node %s", h.Service, h.Port, t.cfg.Node)}
	}
	if allowed, why := t.deps.Authorizer.Allowed(src, inst.name); !allowed {
		return target{}, &refusal{wire.CodeUnauthorized, fmt.Sprintf("%s may not call %s: %s", h.Source, inst.name, why)}
	}
	return target{service: inst.name, addr: netip.AddrPortFrom(addr, h.Port), source: src}, nil
}

// dialLocal dials the admitted target within LocalDialTimeout and what is
// left of the caller's budget.
func (t *Transport) dialLocal(h wire.Header, tg target, start time.Time) (net.Conn, *refusal) {
	timeout := t.cfg.LocalDialTimeout
	if h.Timeout > 0 {
		// The caller's budget was measured when it wrote the header; the
		// transit since then is small and not known without clocks.
		timeout = min(timeout, h.Timeout)
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	lc, err := t.deps.DialLocal(ctx, "tcp", tg.addr.String())
	cancel()
	if err != nil {
		r := dialRefusal(tg.addr, err, h.Timeout, time.Since(start))
		return nil, &r
	}
	return lc, nil
}

// dialRefusal is the answer to a failed local dial: deadline_exceeded when
// the caller's budget ran out meanwhile, else dial_failed.
func dialRefusal(addr netip.AddrPort, err error, budget, elapsed time.Duration) refusal {
	code := wire.CodeDialFailed
	if budget > 0 && elapsed >= budget {
		code = wire.CodeDeadlineExceeded
	}
	return refusal{code, fmt.Sprintf("dial %s:%d: %v", addr.Addr(), addr.Port(), trimDialErr(err))}
}

// spliceInbound answers accepted and splices the stream to the local
// connection lc until both directions end.
func (t *Transport) spliceInbound(s *quic.Stream, lc net.Conn) {
	if !t.track(lc) {
		s.CancelRead(streamAborted)
		s.CancelWrite(streamAborted)
		return
	}
	defer t.untrack(lc)

	var st [wire.StatusPrefixSize]byte
	if _, err := s.Write(wire.AppendStatus(st[:0], wire.Status{Code: wire.CodeAccepted})); err != nil {
		lc.Close()
		s.CancelRead(streamAborted)
		return
	}
	t.m.inbound.Inc()
	t.m.activeIn.Inc()
	defer t.m.activeIn.Dec()
	tcp, _ := lc.(*net.TCPConn)
	t.splice(lc, tcp, s)
}

// refuse answers the stream with a refusal, logs it and counts it.
func (t *Transport) refuse(s *quic.Stream, pi *peerInfo, h *wire.Header, r refusal) {
	t.m.refused.WithLabelValues(r.code.String()).Inc()
	attrs := []any{"reason", r.code.String(), "detail", r.reason, "peer_node", pi.node, "peer_addr", pi.remote}
	if h.Service != "" {
		attrs = append(attrs, "service", h.Service, "port", h.Port, "source", h.Source)
	}
	if !h.Trace.IsZero() {
		attrs = append(attrs, "trace_id", fmt.Sprintf("%x", h.Trace.TraceID))
	}
	switch r.code {
	case wire.CodeUnauthorized, wire.CodeIdentityMismatch, wire.CodeBadHeader, wire.CodeUnsupportedVersion:
		t.log.Warn("stream refused", attrs...)
	default:
		t.log.Info("stream refused", attrs...)
	}
	// Counted and logged before the answer leaves, so that whoever sees the
	// refusal also finds it in the metrics.
	var buf [64]byte
	s.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.Write(wire.AppendStatus(buf[:0], wire.Status{Code: r.code, Reason: r.reason}))
	s.Close()
	s.CancelRead(streamRefused)
}

// trimDialErr drops the "dial tcp a:p:" prefix net adds to dial errors.
func trimDialErr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// localState indexes the local service definitions for the hot path.
type localState struct {
	services map[string]*localInstance // lower-cased name
	byUID    map[uint32]string         // uid -> service name, unambiguous ones only
	defs     []LocalService
}

// localInstance merges the instances of one service on this node.
type localInstance struct {
	name  string
	ports map[int]netip.Addr // declared port -> address to dial
}

func buildLocal(defs []LocalService, warn func(msg string, args ...any)) *localState {
	ls := &localState{services: map[string]*localInstance{}, byUID: map[uint32]string{}, defs: defs}
	uidOwners := map[uint32]map[string]bool{}
	for _, d := range defs {
		if d.Name == "" {
			continue
		}
		key := strings.ToLower(d.Name)
		li := ls.services[key]
		if li == nil {
			li = &localInstance{name: d.Name, ports: map[int]netip.Addr{}}
			ls.services[key] = li
		}
		for _, p := range d.Ports {
			if p > 0 && p < 65536 {
				li.ports[p] = addrOrLoopback(d.Address)
			}
		}
		if d.User != "" {
			uid, err := LookupUID(d.User)
			if err != nil {
				warn("service user unknown; its callers get the node identity", "service", d.Name, "user", d.User, "err", err)
				continue
			}
			if uidOwners[uid] == nil {
				uidOwners[uid] = map[string]bool{}
			}
			uidOwners[uid][d.Name] = true
		}
	}
	for uid, owners := range uidOwners {
		if len(owners) == 1 {
			for name := range owners {
				ls.byUID[uid] = name
			}
			continue
		}
		// Two services under one uid cannot be told apart: their VIP
		// callers get the node identity, which is never more privileged
		// than guessing wrong.
		names := make([]string, 0, len(owners))
		for n := range owners {
			names = append(names, n)
		}
		warn("services share a unix user; their VIP callers get the node identity", "uid", strconv.Itoa(int(uid)), "services", strings.Join(names, ","))
	}
	return ls
}
