package gossip

// Publication: the catalog snapshots and the member list this node shows.

import (
	"sort"
	"time"

	"github.com/meshwork/meshwork/catalog"
)

// MemberInfo is one member as the API shows it.
type MemberInfo struct {
	Name string `json:"name"`
	// Addr and Port are the member's gossip address.
	Addr    string               `json:"addr"`
	Port    int                  `json:"port"`
	Status  catalog.MemberStatus `json:"status"`
	Server  bool                 `json:"server"`
	Version uint64               `json:"version"`
	// Meta is the record's node meta (for example the Raft port).
	Meta map[string]string `json:"meta,omitempty"`
}

// Members returns every member this node knows, itself included, sorted by
// name.
func (g *Gossip) Members() []MemberInfo {
	var selfAddr string
	var selfPort int
	if g.ml.Load() != nil {
		selfAddr, selfPort = g.selfIP.String(), g.selfPort
	}
	now := g.clock.Now()
	g.mu.Lock()
	out := make([]MemberInfo, 0, len(g.peers.peers)+1)
	out = append(out, MemberInfo{
		Name: g.cfg.NodeName, Addr: selfAddr, Port: selfPort,
		Status: g.selfStatusLocked(), Server: g.local.rec.Server,
		Version: g.local.rec.Version, Meta: cloneMap(g.local.rec.Meta),
	})
	for _, p := range g.peers.peers {
		if !p.known {
			continue
		}
		mi := MemberInfo{
			Name: p.name, Addr: p.node.Addr.String(), Port: int(p.node.Port),
			Status: p.status(now), Server: p.meta.Server,
		}
		if p.rec != nil {
			mi.Server = p.rec.Server
			mi.Version = p.rec.Version
			mi.Meta = cloneMap(p.rec.Meta)
		}
		out = append(out, mi)
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// changedLocked notes a change that came from the network, published by
// the publisher goroutine: a burst of events (a join, a partition healing,
// 50 members refuting at once) then costs one snapshot, not one per event.
// Before Start it publishes at once. It also wakes the loops that watch
// membership: rejoin (contact may be lost or made) and the peers file
// writer; each looks at most once per its own interval.
func (g *Gossip) changedLocked() {
	kick(g.contactKick)
	kick(g.peersKick)
	if g.state != stateRunning {
		g.publishLocked()
		return
	}
	g.dirty = true
	kick(g.publishKick)
}

// kick wakes the loop that waits on ch, unless it was woken already.
func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Steps of Gossip.syncStep.
const (
	syncNone = iota
	syncPending
	syncDone
)

// Synced returns a channel that is closed once this member has merged the
// full state of another member (a push/pull, which every join makes, from
// either side) and published the catalog built from it: from then on the
// catalog is gossip's view of the cluster, not of this node alone. It is
// closed at most once in the member's life, and never for a member that
// meets no other.
func (g *Gossip) Synced() <-chan struct{} { return g.synced }

// publishInterval is the shortest time between two snapshots built for
// network events: short next to any propagation delay.
const publishInterval = 5 * time.Millisecond

func (g *Gossip) publisher() {
	defer g.wg.Done()
	for {
		select {
		case <-g.publishKick:
		case <-g.ctx.Done():
			return
		}
		g.mu.Lock()
		if g.dirty {
			g.publishLocked()
		}
		g.mu.Unlock()
		if !g.sleep(publishInterval) {
			return
		}
	}
}

// publishLocked hands the catalog a snapshot of every member.
func (g *Gossip) publishLocked() {
	g.dirty = false
	now := g.clock.Now()
	members := make([]catalog.Member, 0, len(g.peers.peers)+1)
	counts := map[catalog.MemberStatus]int{}
	self := g.selfStatusLocked()
	members = append(members, catalog.Member{Record: g.local.rec, Status: self})
	counts[self]++
	for _, p := range g.peers.peers {
		if !p.known {
			continue
		}
		st := p.status(now)
		p.lastSeen = st
		counts[st]++
		rec := catalog.Record{Node: p.name, Addr: p.node.Addr.String(), Server: p.meta.Server}
		if p.rec != nil {
			rec = *p.rec
		}
		members = append(members, catalog.Member{Record: rec, Status: st})
	}
	g.store.Publish(members)
	if g.syncStep == syncPending {
		g.syncStep = syncDone
		close(g.synced)
	}
	g.updateWatchedLocked(now)
	for _, s := range []catalog.MemberStatus{catalog.StatusAlive, catalog.StatusSuspect, catalog.StatusFailed, catalog.StatusLeft} {
		g.metrics.members.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}

// updateWatchedLocked tells the transport which addresses belong to members
// this node suspects or holds down, so that a packet from one of them, a
// sign of life, reaches onLife.
func (g *Gossip) updateWatchedLocked(now time.Time) {
	if g.trans == nil {
		return
	}
	var w map[string]string
	for _, p := range g.peers.peers {
		if p.known && p.alive && (p.down || (p.suspect && now.Before(p.suspectUntil))) {
			if w == nil {
				w = make(map[string]string)
			}
			w[p.addr()] = p.name
		}
	}
	if w == nil {
		g.trans.watched.Store(nil)
	} else {
		g.trans.watched.Store(&w)
	}
}
