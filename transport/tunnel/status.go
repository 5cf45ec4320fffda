package tunnel

import (
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

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
	// StreamsInLimit is how many streams the peer may hold here
	// (tunnel.max_streams_per_peer): StreamsIn against it shows how close
	// the peer is to refusals.
	StreamsInLimit int `json:"streams_in_limit"`
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

// Peers reports every peer agent: the connection this agent dials to it
// and the streams it holds open here, sorted by node. It takes each lock
// briefly and never blocks on the network.
func (t *Tunnel) Peers() []PeerStatus {
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
	out := make([]PeerStatus, 0, len(byNode))
	for _, ps := range byNode {
		ps.StreamsInLimit = t.cfg.MaxStreamsPerPeer
		out = append(out, *ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// peerStreamsMax is the most inbound streams one peer node holds now.
func (t *Tunnel) peerStreamsMax() int64 {
	var most int64
	t.inboundPerNode.Range(func(_, v any) bool {
		most = max(most, v.(*atomic.Int64).Load())
		return true
	})
	return most
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
