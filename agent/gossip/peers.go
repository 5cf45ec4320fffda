package gossip

// The peer state machine: what this node knows about every other node, and
// the status it derives from that.

import (
	"net"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshwork/meshwork/catalog"
)

// peer is what this node knows about another.
type peer struct {
	name    string
	rec     *catalog.Record // latest record, nil until one arrived
	leaving bool            // the latest record carries the leaving flag
	recvAt  time.Time       // when rec arrived (to forget records of unknown nodes)

	known    bool            // memberlist reported the node at least once
	node     memberlist.Node // address as memberlist knows it (Name, Addr, Port)
	meta     nodeMeta
	alive    bool      // in memberlist's view: alive or suspect
	deadAt   time.Time // when memberlist reported it gone, or, remembered, when it was lost
	refused  time.Time // last refused TCP connection to it
	want     uint64    // a record version announced by meta and not yet held
	pullAt   time.Time // when to ask its owner for it
	lastSeen catalog.MemberStatus

	suspect      bool
	suspectEpoch uint64
	suspectUntil time.Time
	down         bool
	downEpoch    uint64
	lifeSent     time.Time // last notice sent straight to it, see signOfLife

	// remembered is set for a peer read from the peers file that memberlist
	// has not reported in this run: node holds its address, and it is a
	// reconnect candidate until its window, counted from deadAt, ends. It is
	// not shown in the catalog, since nothing says whether it is alive.
	remembered       bool
	rememberedServer bool
	rememberedLeft   bool
}

// status derives what the catalog shows for p; see the package comment.
func (p *peer) status(now time.Time) catalog.MemberStatus {
	leaving := p.leaving
	if p.rec == nil || p.meta.Version > p.rec.Version {
		leaving = p.meta.Leaving
	}
	switch {
	case !p.alive && leaving:
		return catalog.StatusLeft
	case !p.alive:
		return catalog.StatusFailed
	case leaving:
		return catalog.StatusLeft
	case p.down:
		return catalog.StatusFailed
	case p.suspect && now.Before(p.suspectUntil):
		return catalog.StatusSuspect
	}
	return catalog.StatusAlive
}

// live reports whether p is a member that takes traffic: known, alive in
// memberlist's view and not held down.
func (p *peer) live() bool { return p.known && p.alive && !p.down }

// server reports whether p is a server agent, as far as this node knows.
func (p *peer) server() bool {
	if !p.known {
		return p.rememberedServer
	}
	if p.rec != nil && p.meta.Version <= p.rec.Version {
		return p.rec.Server
	}
	return p.meta.Server
}

// left reports whether p is gone after a graceful leave (as opposed to a
// failure).
func (p *peer) left(now time.Time) bool {
	if !p.known {
		return p.rememberedLeft
	}
	return !p.alive && p.status(now) == catalog.StatusLeft
}

// addr is p's gossip address, host:port, "" when unknown.
func (p *peer) addr() string {
	if p.node.Addr == nil {
		return ""
	}
	return net.JoinHostPort(p.node.Addr.String(), strconv.Itoa(int(p.node.Port)))
}

// peerTimeouts are the windows of the peer state machine, from Config.
type peerTimeouts struct {
	// reconnect: a failed member is tried again, and kept, this long
	// (Config.ReconnectTimeout).
	reconnect time.Duration
	// leftReconnect: a member that left is tried again this long
	// (Config.LeftReconnectTimeout).
	leftReconnect time.Duration
	// tombstone: a member that left is kept this long
	// (Config.TombstoneTimeout).
	tombstone time.Duration
	// unknownRecord: a record of a node memberlist never reported is kept
	// this long, waiting for memberlist to report it.
	unknownRecord time.Duration
}

func timeoutsOf(c *Config) peerTimeouts {
	return peerTimeouts{
		reconnect:     c.ReconnectTimeout,
		leftReconnect: c.LeftReconnectTimeout,
		tombstone:     c.TombstoneTimeout,
		unknownRecord: 5 * c.PushPullInterval,
	}
}

// peerTable is the peer state machine: it turns memberlist's reports, this
// node's probes, other nodes' notices and records into a status per peer,
// and decides who is suspected, held down, tried again or forgotten. It
// reads no clock: every method that depends on time takes now, so that
// table tests drive it with a manual clock.
//
// It is not safe for concurrent use: Gossip.mu guards it. Only numAlive may
// be read without the lock.
type peerTable struct {
	self     string
	timeouts peerTimeouts
	peers    map[string]*peer
	// numAlive counts the peers alive in memberlist's view; the broadcast
	// queue reads it without the lock to size retransmissions.
	numAlive atomic.Int32
}

func newPeerTable(self string, t peerTimeouts) *peerTable {
	return &peerTable{self: self, timeouts: t, peers: make(map[string]*peer)}
}

// get returns the peer called name, nil when unknown.
func (t *peerTable) get(name string) *peer { return t.peers[name] }

// add returns the peer called name, creating it when unknown.
func (t *peerTable) add(name string) *peer {
	p := t.peers[name]
	if p == nil {
		p = &peer{name: name}
		t.peers[name] = p
	}
	return p
}

// nodeEventKind is the kind of a memberlist notification.
type nodeEventKind int

const (
	evJoin nodeEventKind = iota
	evUpdate
	evLeave
)

// observe applies memberlist's report that n joined, was updated or left.
// meta is n's decoded node meta, nil when it had none or could not be
// decoded. pullDelay says how long to wait for an announced record before
// pulling it.
func (t *peerTable) observe(n *memberlist.Node, meta *nodeMeta, kind nodeEventKind, now time.Time, pullDelay func(big bool) time.Duration) *peer {
	p := t.add(n.Name)
	p.known = true
	p.remembered = false
	p.node = *n
	p.node.Addr = append(net.IP(nil), n.Addr...)
	p.node.Meta = nil
	if meta != nil {
		if meta.Epoch > p.meta.Epoch {
			// A newer epoch refutes every notice about older ones.
			if p.suspect && p.suspectEpoch < meta.Epoch {
				p.suspect = false
			}
			if p.down && p.downEpoch < meta.Epoch {
				p.down = false
			}
			p.refused = time.Time{}
		}
		p.meta = *meta
	}
	switch kind {
	case evJoin, evUpdate:
		if kind == evJoin {
			// memberlist saw it come (back) to life: every notice is stale.
			p.suspect, p.down = false, false
			p.refused = time.Time{}
		}
		if !p.alive {
			p.alive = true
			t.numAlive.Add(1)
		}
		have := uint64(0)
		if p.rec != nil {
			have = p.rec.Version
		}
		if p.meta.Version > have && p.meta.Version > p.want {
			p.want = p.meta.Version
			p.pullAt = now.Add(pullDelay(p.meta.Big))
		}
	case evLeave:
		if p.alive {
			p.alive = false
			t.numAlive.Add(-1)
		}
		p.deadAt = now
		p.suspect, p.down = false, false
		p.want = 0
	}
	return p
}

// probeFailed applies this node's failed probe of name. When name's gossip
// port refused a TCP connection within refusalWindow before, the agent is
// gone: name is held down. Otherwise it is suspected until suspicion has
// passed. It returns the notice to gossip (msgDown or msgSuspect), or nil
// when there is nothing new to tell.
func (t *peerTable) probeFailed(name string, now time.Time, refusalWindow, suspicion time.Duration) (msgType, *notice) {
	p := t.peers[name]
	if p == nil || !p.known || !p.alive {
		return 0, nil
	}
	if !p.refused.IsZero() && now.Sub(p.refused) <= refusalWindow {
		if p.down {
			return 0, nil
		}
		return msgDown, t.markDown(p)
	}
	p.suspect = true
	p.suspectEpoch = p.meta.Epoch
	p.suspectUntil = now.Add(suspicion)
	return msgSuspect, &notice{Node: name, Epoch: p.meta.Epoch, From: t.self}
}

// connectionRefused applies a refused TCP connection to name's gossip
// port. When a suspicion of name is running, the two together are the
// evidence of a dead agent: it returns the down notice to gossip.
func (t *peerTable) connectionRefused(name string, now time.Time) *notice {
	p := t.peers[name]
	if p == nil || !p.known || !p.alive {
		return nil
	}
	p.refused = now
	if p.suspect && now.Before(p.suspectUntil) && !p.down {
		return t.markDown(p)
	}
	return nil
}

func (t *peerTable) markDown(p *peer) *notice {
	p.down = true
	p.downEpoch = p.meta.Epoch
	return &notice{Node: p.name, Epoch: p.meta.Epoch, From: t.self}
}

// applyNotice applies a suspect or down notice about another node, received
// from the network. A notice about an older epoch than the one known is
// stale. It reports whether the notice was news, to be passed on.
func (t *peerTable) applyNotice(typ msgType, n *notice, now time.Time, suspicion time.Duration) bool {
	p := t.peers[n.Node]
	if p == nil || !p.known || !p.alive || n.Epoch < p.meta.Epoch {
		return false
	}
	switch typ {
	case msgSuspect:
		if p.down || (p.suspect && p.suspectEpoch >= n.Epoch && now.Before(p.suspectUntil)) {
			return false
		}
		p.suspect = true
		p.suspectEpoch = n.Epoch
		p.suspectUntil = now.Add(suspicion)
		return true
	case msgDown:
		if p.down && p.downEpoch >= n.Epoch {
			return false
		}
		p.down = true
		p.downEpoch = n.Epoch
		return true
	}
	return false
}

// probeSucceeded applies a direct probe of name that was answered: proof
// that it is alive now, which ends a suspicion. It reports a change.
func (t *peerTable) probeSucceeded(name string) bool {
	p := t.peers[name]
	if p == nil || !p.suspect {
		return false
	}
	p.suspect = false
	return true
}

// signOfLife applies a packet received from name. When name is suspected or
// held down here, it returns the notice to send straight to it, so that it
// can refute at once; at most once per minGap.
func (t *peerTable) signOfLife(name string, now time.Time, minGap time.Duration) (msgType, *notice, memberlist.Node) {
	p := t.peers[name]
	if p == nil || !p.alive || !(p.down || p.suspect) || now.Sub(p.lifeSent) < minGap {
		return 0, nil, memberlist.Node{}
	}
	p.lifeSent = now
	typ := msgSuspect
	if p.down {
		typ = msgDown
	}
	return typ, &notice{Node: name, Epoch: p.meta.Epoch, From: t.self}, p.node
}

// applyRecord stores w, a record of another node, when it is newer than the
// one held. It reports whether it did.
func (t *peerTable) applyRecord(w *wireRecord, now time.Time) bool {
	p := t.add(w.Record.Node)
	if p.rec != nil && w.Record.Version <= p.rec.Version {
		return false
	}
	rec := w.Record
	p.rec = &rec
	p.leaving = w.Leaving
	p.recvAt = now
	if p.want <= rec.Version {
		p.want = 0
	}
	return true
}

// statusChanged reports whether a known peer's status differs from the one
// last published (a suspicion expired, for example).
func (t *peerTable) statusChanged(now time.Time) bool {
	for _, p := range t.peers {
		if p.known && p.status(now) != p.lastSeen {
			return true
		}
	}
	return false
}

// pullTarget is a record this node was told of and should ask its owner for.
type pullTarget struct {
	to  memberlist.Node
	req pullRequest
}

// duePulls returns up to max pulls that are due: records announced by a
// live node's meta that have not arrived. Each is rescheduled after delay.
func (t *peerTable) duePulls(now time.Time, max int, delay func() time.Duration) []pullTarget {
	var pulls []pullTarget
	for _, p := range t.peers {
		if p.want == 0 || !p.live() || now.Before(p.pullAt) {
			continue
		}
		have := uint64(0)
		if p.rec != nil {
			have = p.rec.Version
		}
		if have >= p.want {
			p.want = 0
			continue
		}
		if len(pulls) >= max {
			continue // next tick: pulls are a repair path, not a flood
		}
		p.pullAt = now.Add(delay())
		pulls = append(pulls, pullTarget{to: p.node, req: pullRequest{From: t.self, Node: p.name, Have: have}})
	}
	return pulls
}

// forgotten is a peer reap removed.
type forgotten struct {
	name   string
	status catalog.MemberStatus
	since  time.Time
}

// reap forgets failed members after ReconnectTimeout and left members after
// TombstoneTimeout, both counted from their departure; remembered peers
// never seen in this run once their reconnect window ends; and records of
// nodes memberlist never reported. It returns the members that had been
// shown (known), which changes the catalog.
func (t *peerTable) reap(now time.Time) []forgotten {
	var out []forgotten
	for name, p := range t.peers {
		switch {
		case p.remembered:
			if !t.reconnectable(p, now) {
				delete(t.peers, name)
			}
		case !p.known:
			if now.Sub(p.recvAt) > t.timeouts.unknownRecord {
				delete(t.peers, name)
			}
		case !p.alive:
			limit := t.timeouts.reconnect
			st := p.status(now)
			if st == catalog.StatusLeft {
				limit = t.timeouts.tombstone
			}
			if now.Sub(p.deadAt) > limit {
				delete(t.peers, name)
				out = append(out, forgotten{name: name, status: st, since: p.deadAt})
			}
		}
	}
	return out
}

// reconnectable reports whether p is gone and still within the window in
// which it is tried again: ReconnectTimeout after a failure,
// LeftReconnectTimeout after a graceful leave.
func (t *peerTable) reconnectable(p *peer, now time.Time) bool {
	if p.node.Addr == nil || (p.known && p.alive) || (!p.known && !p.remembered) {
		return false
	}
	window := t.timeouts.reconnect
	if p.left(now) {
		window = t.timeouts.leftReconnect
	}
	return now.Sub(p.deadAt) < window
}

// reconnectCandidates returns the peers to try to join again: failed and
// left members within their windows, and remembered peers not seen yet.
func (t *peerTable) reconnectCandidates(now time.Time) []memberlist.Node {
	var out []memberlist.Node
	for _, p := range t.peers {
		if t.reconnectable(p, now) {
			out = append(out, p.node)
		}
	}
	// Map order is random already; sorting makes a caller's random pick the
	// only randomness, which tests can reason about.
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// inContact reports whether this node is in contact with the cluster: it
// sees at least one live peer, and, when it knows servers other than
// itself, at least one of them is live. The servers it knows are the live
// ones and those still within their reconnect window (members that failed
// or left, and servers remembered from the peers file), so that servers
// gone for good stop counting when their window ends, and only one live
// server is needed, not a majority of all ever seen. A group of clients
// that lost every server (a full server outage or restart) is therefore
// not in contact, and keeps looking for them.
func (t *peerTable) inContact(now time.Time) bool {
	live, servers, liveServers := 0, 0, 0
	for _, p := range t.peers {
		isLive := p.known && p.alive && p.status(now).Reachable()
		if isLive {
			live++
		}
		if !p.server() {
			continue
		}
		switch {
		case isLive:
			servers++
			liveServers++
		case t.reconnectable(p, now):
			servers++
		}
	}
	return live > 0 && (servers == 0 || liveServers > 0)
}

// randomLive returns up to n live peers other than the excluded names, in
// random order (shuffle shuffles a slice of that length).
func (t *peerTable) randomLive(n int, shuffle func(n int, swap func(i, j int)), exclude ...string) []memberlist.Node {
	cands := make([]memberlist.Node, 0, len(t.peers))
	for _, p := range t.peers {
		if !p.live() {
			continue
		}
		skip := false
		for _, e := range exclude {
			if p.name == e {
				skip = true
			}
		}
		if !skip {
			cands = append(cands, p.node)
		}
	}
	shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	if len(cands) > n {
		cands = cands[:n]
	}
	return cands
}
