package transport

import (
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// StatusPath is where the agent's local API serves Status.
const StatusPath = "/v1/agent/tunnel"

// The states of Status.State.
const (
	StateNotStarted = "not started"
	StateServing    = "serving"
	StateDraining   = "draining"
	StateClosed     = "closed"
)

// Status is what the data plane is doing now, for operators
// (GET /v1/agent/tunnel, `meshwork tunnel`).
type Status struct {
	Node string `json:"node"`
	// State is one of the State constants.
	State string `json:"state"`
	// Addr is the UDP address QUIC listens on, once started.
	Addr string `json:"addr,omitempty"`
	GSO  bool   `json:"gso"`
	GRO  bool   `json:"gro"`
	// UDPReceiveBuffer and UDPSendBuffer are the socket buffers granted,
	// as Linux reports them (twice what was asked).
	UDPReceiveBuffer int `json:"udp_receive_buffer"`
	UDPSendBuffer    int `json:"udp_send_buffer"`
	// InFlight counts the application connections and inbound streams
	// being carried.
	InFlight  int            `json:"in_flight"`
	Listeners []ListenerInfo `json:"listeners"`
	Peers     []PeerStatus   `json:"peers"`
}

// PeerStatus is one peer agent: the connection this agent dials to it, and
// the streams the peer holds open here.
type PeerStatus struct {
	Node string `json:"node"`
	// Addr is the peer's tunnel address; "" for a peer known only from
	// its inbound streams.
	Addr string `json:"addr,omitempty"`
	// Connected: this agent holds a usable connection to the peer.
	Connected bool `json:"connected"`
	// StreamsOut are open streams on the connections this agent dialled,
	// StreamsIn those the peer holds open to this agent.
	StreamsOut int64 `json:"streams_out"`
	StreamsIn  int64 `json:"streams_in"`
	// Expires is when the connection must be replaced: the earlier
	// NotAfter of the two certificates on it.
	Expires time.Time `json:"expires,omitzero"`
	// Services are the service identities the peer's certificate holds on
	// the current connection: connections for any other service are not
	// sent to the peer.
	Services []string `json:"services,omitempty"`
	// LastError and RetryAt are set while dials to the peer back off.
	LastError string    `json:"last_error,omitempty"`
	RetryAt   time.Time `json:"retry_at,omitzero"`
}

// Status reports the transport's state, listeners and peers. It takes each
// lock briefly and never blocks on the network.
func (t *Transport) Status() Status {
	st := Status{Node: t.cfg.Node, State: StateNotStarted, InFlight: t.flight.count()}
	switch {
	case t.closed.Load():
		st.State = StateClosed
	case t.draining.Load():
		st.State = StateDraining
	case t.started.Load():
		st.State = StateServing
	}
	if t.started.Load() {
		st.Addr = t.deps.PacketConn.LocalAddr().String()
		st.GSO, st.GRO = t.gso.Load(), t.gro
		st.UDPReceiveBuffer, st.UDPSendBuffer = t.rcvBuf, t.sndBuf
	}
	st.Listeners = t.Listeners()

	now := time.Now()
	byNode := map[string]*PeerStatus{}
	t.peersMu.Lock()
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.peersMu.Unlock()
	for _, p := range peers {
		ps := p.status(now)
		byNode[strings.ToLower(ps.Node)] = &ps
	}
	t.inboundPerNode.Range(func(k, v any) bool {
		n := v.(*atomic.Int64).Load()
		if n == 0 {
			return true
		}
		node := k.(string)
		ps := byNode[strings.ToLower(node)]
		if ps == nil {
			ps = &PeerStatus{Node: node}
			byNode[strings.ToLower(node)] = ps
		}
		ps.StreamsIn += n
		return true
	})
	st.Peers = make([]PeerStatus, 0, len(byNode))
	for _, ps := range byNode {
		st.Peers = append(st.Peers, *ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Node < st.Peers[j].Node })
	return st
}

// status describes p's outbound side.
func (p *peer) status(now time.Time) PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := PeerStatus{Node: p.node, Addr: p.addr.String()}
	if pc := p.cur; pc != nil {
		ps.Connected = pc.usable(now)
		ps.StreamsOut += pc.active.Load()
		ps.Expires = pc.expires
		ps.Services = pc.services
	}
	for pc := range p.draining {
		ps.StreamsOut += pc.active.Load()
	}
	if now.Before(p.failUntil) && p.lastErr != nil {
		ps.LastError, ps.RetryAt = p.lastErr.Error(), p.failUntil
	}
	return ps
}
