package l4

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// Holding a connection across a restart (docs/restart.md, "Connections
// carried over"). Each carried connection is a session that both agents
// know by the ID the caller drew (wire.ExtSession). The agent that
// restarts, the initiator, holds each session before it stops:
//
//	initiator                                responder
//	holding: a FIN from the stream is a pause
//	control stream, ExtHold(id) ───────────▶ holding; stops reading its TCP
//	                                         side, sends what it read, FIN
//	            ◀─────────────── accepted
//	stops reading its TCP side, sends
//	what it read, FIN
//	reads to the responder's FIN             reads to the initiator's FIN
//	            ◀─────────────── 'H' on the control stream: all received
//	hands the TCP connection over            parks it for holdTimeout
//
// The last message lets the initiator stop: its QUIC connection may close
// at once, which would drop stream data still unacknowledged.
//
// No byte is in flight then: each side wrote everything it read to its TCP
// connection, and the TCP connections hold the rest in the kernel. The
// successor takes the socket and opens a control stream with
// ExtResume(id); the responder accepts it and both splice again on it.
// A refusal of the hold leaves the connection as it was; any other failure
// cuts it with a reset, as a stop without a hold would.

// holdTimeout bounds how long a responder keeps a held connection for the
// initiator's successor, and how long that successor tries to resume it.
// A restart takes a second or two; a successor that never comes costs the
// application a reset after this.
const holdTimeout = 30 * time.Second

// SessionID names a carried connection on both agents.
type SessionID [wire.SessionIDLen]byte

func (id SessionID) String() string { return hex.EncodeToString(id[:]) }

// ParseSessionID reads the hex form String writes.
func ParseSessionID(s string) (SessionID, error) {
	var id SessionID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("session %q is not %d hex bytes", s, len(id))
	}
	copy(id[:], b)
	return id, nil
}

// newSessionID draws an ID. It need not be secret: a hold or resume is
// honoured only from the node the session runs with.
func newSessionID() SessionID {
	var id SessionID
	a, b := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		id[i], id[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
	}
	return id
}

// Session is the calling side's view of a connection that can be held.
// ServeConn draws the ID and hands the Session to its Connector in the
// context (SessionFrom); a Connector that puts the ID in its stream's
// header (wire.ExtSession) fills in the service and port it reached.
type Session struct {
	ID      SessionID
	Service string
	Port    uint16
}

type sessionKey struct{}

// WithSession returns ctx carrying s.
func WithSession(ctx context.Context, s *Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// SessionFrom returns the Session ctx carries, or nil.
func SessionFrom(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}

// HeldState is what a successor needs to resume a held connection. It
// travels beside the socket (internal/sockets), as JSON.
type HeldState struct {
	// Session is the session's ID in hex.
	Session string `json:"session"`
	// Callee is true when this node's side is the service's: the TCP
	// connection goes to the local service.
	Callee bool `json:"callee"`
	// PeerNode and PeerAddr name the other agent and its tunnel address.
	PeerNode string `json:"peer_node"`
	PeerAddr string `json:"peer_addr"`
	// Service and Port are the destination, for the logs and the header.
	Service string `json:"service"`
	Port    uint16 `json:"port"`
}

// parse checks h and returns its ID and peer.
func (h HeldState) parse() (SessionID, tunnel.Peer, error) {
	id, err := ParseSessionID(h.Session)
	if err != nil {
		return id, tunnel.Peer{}, err
	}
	addr, err := netip.ParseAddrPort(h.PeerAddr)
	if err != nil {
		return id, tunnel.Peer{}, fmt.Errorf("peer_addr %q: %v", h.PeerAddr, err)
	}
	if h.PeerNode == "" || h.Service == "" || h.Port == 0 {
		return id, tunnel.Peer{}, errors.New("peer_node, service and port are required")
	}
	return id, tunnel.Peer{Node: h.PeerNode, Addr: addr}, nil
}

// HeldConn is a connection held for this agent's successor.
type HeldConn struct {
	Conn  *net.TCPConn
	State HeldState
}

type sessionRef struct {
	id     SessionID
	callee bool
}

// session is one carried connection that can be held.
type session struct {
	id      SessionID
	callee  bool
	peer    tunnel.Peer
	service string
	port    uint16
	tcp     *net.TCPConn

	mu        sync.Mutex
	sp        *splicer            // the current splice; nil between two
	initiator bool                // this agent holds it for a successor
	resuming  bool                // a resume claimed it
	ack       *tunnel.Stream      // a responder's hold stream, answered once paused
	handed    chan bool           // to the initiator: held and handed over, or not
	resume    chan *tunnel.Stream // to the parked responder: the resumed stream
}

// register makes a carried connection holdable. A connection to this
// node itself is not: both its sides stop together.
func (p *Proxy) register(id SessionID, callee bool, peer tunnel.Peer, service string, port uint16, tcp *net.TCPConn) *session {
	if p.nodeID == "" || tcp == nil || peer.Node == "" || strings.EqualFold(peer.Node, p.cfg.Node) || !peer.Addr.IsValid() {
		return nil
	}
	se := &session{id: id, callee: callee, peer: peer, service: service, port: port, tcp: tcp,
		handed: make(chan bool, 1), resume: make(chan *tunnel.Stream, 1)}
	p.sessMu.Lock()
	p.sessions[sessionRef{id, callee}] = se
	p.sessMu.Unlock()
	return se
}

func (p *Proxy) forget(se *session) {
	if se == nil {
		return
	}
	p.sessMu.Lock()
	if p.sessions[sessionRef{se.id, se.callee}] == se {
		delete(p.sessions, sessionRef{se.id, se.callee})
	}
	p.sessMu.Unlock()
}

// lookup finds the session id that node takes part in.
func (p *Proxy) lookup(id SessionID, node string) *session {
	p.sessMu.Lock()
	defer p.sessMu.Unlock()
	for _, callee := range []bool{false, true} {
		if se := p.sessions[sessionRef{id, callee}]; se != nil && strings.EqualFold(se.peer.Node, node) {
			return se
		}
	}
	return nil
}

// dropResume cancels a resume's stream that came for a hold that then
// failed.
func (se *session) dropResume() {
	select {
	case s := <-se.resume:
		if s != nil {
			s.Abort(tunnel.AbortFailed)
		}
	default:
	}
}

func (se *session) setSplicer(sp *splicer) {
	se.mu.Lock()
	se.sp = sp
	se.mu.Unlock()
}

// state is the HeldState of se.
func (se *session) state() HeldState {
	return HeldState{Session: se.id.String(), Callee: se.callee, PeerNode: se.peer.Node,
		PeerAddr: se.peer.Addr.String(), Service: se.service, Port: se.port}
}

// carry splices c and s, and carries the connection on across holds: a
// responder parks it until the resume's stream comes; an initiator hands
// it over (its Hold owns c then). release ends the use of the current
// stream. It returns the bytes moved each way, whether the idle timeout
// cut the connection, and whether it was handed over (c is not closed).
func (p *Proxy) carry(ctx context.Context, c net.Conn, tcp *net.TCPConn, s *tunnel.Stream, release func(), se *session) (toStream, fromStream int64, idle, handed bool) {
	defer p.forget(se)
	for {
		r := p.splice(c, tcp, s, se)
		release()
		toStream += r.toStream
		fromStream += r.fromStream
		if se == nil {
			return toStream, fromStream, r.idle, false
		}
		se.mu.Lock()
		se.sp = nil
		initiator, ack := se.initiator, se.ack
		se.ack = nil
		se.mu.Unlock()
		if ack != nil {
			answerHold(ack, r.held)
		}
		if initiator {
			if r.held {
				p.untrack(c)
			}
			se.handed <- r.held
			return toStream, fromStream, false, r.held
		}
		if !r.held {
			se.dropResume()
			return toStream, fromStream, r.idle, false
		}
		s = p.park(ctx, se)
		if s == nil {
			tcp.SetLinger(0) // the application must see a failure, not an end
			tcp.Close()
			return toStream, fromStream, false, false
		}
		se.mu.Lock()
		se.resuming = false // the next restart may hold it again
		se.mu.Unlock()
		release = s.Release
		tcp.SetReadDeadline(time.Time{}) // the hold's interruption
		p.m.resumed.WithLabelValues("resumed").Inc()
	}
}

// holdAck is the responder's last word on a hold: it has everything the
// initiator sent, up to its FIN.
const holdAck = 'H'

// answerHold tells the initiator whether the hold completed, and ends the
// hold's control stream.
func answerHold(cs *tunnel.Stream, held bool) {
	if held {
		cs.Write([]byte{holdAck})
		cs.CloseWrite()
		return
	}
	cs.Abort(tunnel.AbortFailed)
}

// awaitHoldAck reads the responder's holdAck, within ctx.
func awaitHoldAck(ctx context.Context, cs *tunnel.Stream) error {
	if dl, ok := ctx.Deadline(); ok {
		cs.SetReadDeadline(dl)
	}
	var b [1]byte
	_, err := io.ReadFull(cs, b[:])
	switch {
	case err != nil:
		return fmt.Errorf("the peer did not confirm the hold: %w", err)
	case b[0] != holdAck:
		return fmt.Errorf("the peer confirmed the hold with %q", b[0])
	}
	return nil
}

// park waits for the resume of a held session, up to holdTimeout, or
// until ctx ends or the proxy closes.
func (p *Proxy) park(ctx context.Context, se *session) *tunnel.Stream {
	p.m.parked.Inc()
	defer p.m.parked.Dec()
	t := time.NewTimer(holdTimeout)
	defer t.Stop()
	select {
	case s := <-se.resume:
		return s
	case <-p.done:
	case <-ctx.Done():
	case <-t.C:
	}
	se.mu.Lock()
	claimed := se.resuming
	se.mu.Unlock()
	if claimed {
		// A resume took it as the wait ended: its stream is on the way,
		// one write away.
		select {
		case s := <-se.resume:
			return s
		case <-p.done:
		case <-ctx.Done():
		}
	}
	p.forget(se)
	p.m.resumed.WithLabelValues("expired").Inc()
	p.log.Warn("held connection not resumed; resetting it", "session", se.id, "peer_node", se.peer.Node, "service", se.service, "waited", holdTimeout)
	return nil
}

// Hold holds every carried connection it can for this agent's successor:
// it asks each peer to pause, within ctx, and returns the connections
// paused on both sides. A connection whose peer refused carries on, for
// Drain and Close to end as before; one whose hold failed half-way is cut.
// It is safe to call once, as the agent stops.
func (p *Proxy) Hold(ctx context.Context) []HeldConn {
	p.sessMu.Lock()
	all := make([]*session, 0, len(p.sessions))
	for _, se := range p.sessions {
		all = append(all, se)
	}
	p.sessMu.Unlock()
	if len(all) == 0 {
		return nil
	}
	start := time.Now()
	results := make(chan *HeldConn, len(all))
	sem := make(chan struct{}, 64) // peers answer quickly; bound the goroutines
	for _, se := range all {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			results <- p.holdOne(ctx, se)
		}()
	}
	var held []HeldConn
	for range all {
		if h := <-results; h != nil {
			held = append(held, *h)
		}
	}
	p.log.Info("connections held for the successor", "held", len(held), "of", len(all), "took", time.Since(start))
	return held
}

// holdOne holds se as its initiator.
func (p *Proxy) holdOne(ctx context.Context, se *session) *HeldConn {
	se.mu.Lock()
	sp := se.sp
	ok := sp != nil && !se.initiator && sp.beginHold()
	if ok {
		se.initiator = true
	}
	se.mu.Unlock()
	if !ok {
		p.m.held.WithLabelValues("not_holdable").Inc()
		return nil
	}
	hdr := wire.Header{Service: se.service, Port: se.port, Source: p.nodeID,
		Extensions: []wire.Extension{{Type: wire.ExtHold, Value: se.id[:]}}}
	cs, err := p.deps.OpenControl(ctx, se.peer, &hdr)
	if err != nil {
		var re *tunnel.RefusedError
		if errors.As(err, &re) {
			// The peer did not pause: carry on as if nothing happened.
			se.mu.Lock()
			se.initiator = false
			se.mu.Unlock()
			sp.cancelHold()
			p.m.held.WithLabelValues("refused").Inc()
			p.log.Debug("peer refused to hold a connection", "session", se.id, "peer_node", se.peer.Node, "err", err)
			return nil
		}
		// Whether the peer paused is unknown: cut, as a stop would.
		sp.abort(tunnel.AbortFailed)
		<-se.handed
		p.m.held.WithLabelValues("failed").Inc()
		p.log.Info("holding a connection failed; cut", "session", se.id, "peer_node", se.peer.Node, "err", err)
		return nil
	}
	defer cs.Release()
	cs.CloseWrite()
	sp.interruptUp()
	select {
	case ok = <-se.handed:
	case <-ctx.Done():
		sp.abort(tunnel.AbortFailed)
		ok = <-se.handed
	}
	if ok {
		if err := awaitHoldAck(ctx, cs); err != nil {
			// Some bytes may not have reached the peer: cut.
			p.log.Info("holding a connection failed; cut", "session", se.id, "peer_node", se.peer.Node, "err", err)
			se.tcp.SetLinger(0)
			se.tcp.Close()
			ok = false
		}
	}
	cs.CancelRead(tunnel.AbortDone)
	if !ok {
		cs.Abort(tunnel.AbortFailed)
		p.m.held.WithLabelValues("failed").Inc()
		return nil
	}
	p.m.held.WithLabelValues("held").Inc()
	return &HeldConn{Conn: se.tcp, State: se.state()}
}

// ServeControl serves a control stream the tunnel admitted: a hold or a
// resume of a session this agent carries with the stream's node.
func (p *Proxy) ServeControl(ctx context.Context, in *tunnel.Inbound) {
	value, hold := in.Header.Extension(wire.ExtHold)
	if !hold {
		value, _ = in.Header.Extension(wire.ExtResume)
	}
	var id SessionID
	copy(id[:], value)
	se := p.lookup(id, in.Target.Source.Node)
	if se == nil {
		in.Refuse(tunnel.Refusal{Code: wire.CodeNoSession, Reason: fmt.Sprintf("no session %s with node %s", id, in.Target.Source.Node)})
		return
	}
	if hold {
		p.serveHold(se, in)
		return
	}
	p.serveResume(se, in)
}

// serveHold pauses se as the responder.
func (p *Proxy) serveHold(se *session, in *tunnel.Inbound) {
	se.mu.Lock()
	sp := se.sp
	ok := sp != nil && !se.initiator && se.ack == nil && sp.beginHold()
	se.mu.Unlock()
	if !ok {
		in.Refuse(tunnel.Refusal{Code: wire.CodeNoSession, Reason: fmt.Sprintf("session %s cannot be held now", se.id)})
		return
	}
	cs, err := in.Accept()
	if err != nil {
		sp.abort(tunnel.AbortFailed)
		return
	}
	cs.CancelRead(tunnel.AbortDone)
	// carry answers on cs once the splice has paused both ways.
	se.mu.Lock()
	se.ack = cs
	se.mu.Unlock()
	sp.interruptUp()
	p.log.Debug("holding a connection for the peer's successor", "session", se.id, "peer_node", se.peer.Node)
}

// serveResume gives a held session the resume's stream.
func (p *Proxy) serveResume(se *session, in *tunnel.Inbound) {
	se.mu.Lock()
	ok := !se.initiator && !se.resuming && (se.sp == nil || se.sp.isHolding())
	if ok {
		se.resuming = true
	}
	se.mu.Unlock()
	if !ok {
		in.Refuse(tunnel.Refusal{Code: wire.CodeNoSession, Reason: fmt.Sprintf("session %s is not held", se.id)})
		return
	}
	s, err := in.Accept()
	if err != nil {
		se.resume <- nil
		return
	}
	// The peer's node may have moved (a restart on a new address): holds
	// of the resumed connection go where the resume came from.
	if peer := in.Peer(); peer.Addr.IsValid() {
		se.mu.Lock()
		se.peer.Addr = peer.Addr
		se.mu.Unlock()
	}
	se.resume <- s
}

// Resume carries on a connection that a previous agent of this node held:
// it asks the peer named in st to resume the session, retrying while the
// peer's connection comes up, for up to holdTimeout, then splices c as
// before. It returns once the connection ends; c is reset when the
// session cannot be resumed. It is safe for concurrent use.
func (p *Proxy) Resume(ctx context.Context, st HeldState, c *net.TCPConn) error {
	id, peer, err := st.parse()
	if err != nil {
		c.SetLinger(0)
		c.Close()
		return fmt.Errorf("l4: resume: %w", err)
	}
	if !p.track(c) {
		return errors.New("l4: resume: the proxy is closed")
	}
	defer p.untrack(c)
	c.SetReadDeadline(time.Time{})
	hdr := wire.Header{Service: st.Service, Port: st.Port, Source: p.nodeID,
		Extensions: []wire.Extension{{Type: wire.ExtResume, Value: id[:]}}}
	rctx, cancel := context.WithTimeout(ctx, holdTimeout)
	s, err := p.openRetrying(rctx, peer, &hdr)
	cancel()
	if err != nil {
		p.m.resumed.WithLabelValues("failed").Inc()
		c.SetLinger(0)
		c.Close()
		return fmt.Errorf("l4: resume session %s with node %s: %w", id, peer.Node, err)
	}
	p.m.resumed.WithLabelValues("resumed").Inc()
	p.log.Debug("held connection resumed", "session", id, "peer_node", peer.Node, "service", st.Service)
	active := p.m.activeOut
	if st.Callee {
		active = p.m.activeIn
	}
	active.Inc()
	defer active.Dec()
	se := p.register(id, st.Callee, peer, st.Service, st.Port, c)
	p.carry(ctx, c, c, s, s.Release, se)
	return nil
}

// openRetrying opens a resume's control stream, trying again while the
// failure may pass (the peer's connection is being dialled, or its agent
// restarts too), until ctx ends. A refusal is final.
func (p *Proxy) openRetrying(ctx context.Context, peer tunnel.Peer, hdr *wire.Header) (*tunnel.Stream, error) {
	backoff := 50 * time.Millisecond
	for {
		s, err := p.deps.OpenControl(ctx, peer, hdr)
		if err == nil {
			return s, nil
		}
		var re *tunnel.RefusedError
		if errors.As(err, &re) && re.Code != wire.CodeShuttingDown && re.Code != wire.CodeOverloaded {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 400*time.Millisecond)
	}
}
