package gossip

// The peer state: what this node knows about every other node, and the
// status it derives from that.

import (
	"math"
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
	deadAt   time.Time // when memberlist reported it gone
	refused  time.Time // last refused TCP connection to it
	want     uint64    // a record version announced by meta and not yet held
	pullAt   time.Time // when to ask its owner for it
	lastSeen catalog.MemberStatus

	suspect      bool
	suspectEpoch uint64
	suspectUntil time.Time
	down         bool
	downEpoch    uint64
	lifeSent     time.Time // last notice sent straight to it, see onLife
}

func (g *Gossip) peerLocked(name string) *peer {
	p := g.peers[name]
	if p == nil {
		p = &peer{name: name}
		g.peers[name] = p
	}
	return p
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

// maxSuspicion bounds how long memberlist may keep a node suspect before it
// declares it dead; a suspect notice older than that is stale.
func (g *Gossip) maxSuspicion() time.Duration {
	n := float64(g.numAlive.Load() + 1)
	scale := math.Max(1, math.Log10(math.Max(1, n)))
	min := time.Duration(float64(g.cfg.SuspicionMult) * scale * float64(g.cfg.ProbeInterval))
	return time.Duration(g.cfg.SuspicionMaxTimeoutMult)*min + 2*g.cfg.ProbeInterval
}

// applyRecord stores w when it is newer than what this node holds. It
// reports whether it did, and whether w was an old copy of this node's own
// record that had to be outrun.
func (g *Gossip) applyRecordLocked(w *wireRecord, now time.Time) (applied, outrun bool) {
	if w.Record.Node == g.cfg.NodeName {
		// Our own record, back from the network. If it is newer than ours,
		// a previous run of this node published it (a restart with a clock
		// that went back): jump past it so that the current one wins.
		if w.Record.Version > g.local.rec.Version {
			g.local.rec.Version = w.Record.Version + 1
			return false, true
		}
		return false, false
	}
	p := g.peerLocked(w.Record.Node)
	if p.rec != nil && w.Record.Version <= p.rec.Version {
		return false, false
	}
	rec := w.Record
	p.rec = &rec
	p.leaving = w.Leaving
	p.recvAt = now
	if p.want <= rec.Version {
		p.want = 0
	}
	return true, false
}

func (g *Gossip) markDownLocked(p *peer, now time.Time) *notice {
	p.down = true
	p.downEpoch = p.meta.Epoch
	g.metrics.down.Inc()
	g.log.Warn("gossip member failed: probe failed and its gossip port refused connections", "node", p.name)
	g.changedLocked()
	return &notice{Node: p.name, Epoch: p.meta.Epoch, From: g.cfg.NodeName}
}

// reapLocked forgets failed members after ReconnectTimeout, left members
// after TombstoneTimeout, and records of nodes memberlist never reported.
func (g *Gossip) reapLocked(now time.Time) bool {
	changed := false
	unknownTTL := 5 * g.cfg.PushPullInterval
	for name, p := range g.peers {
		switch {
		case !p.known:
			if now.Sub(p.recvAt) > unknownTTL {
				delete(g.peers, name)
			}
		case !p.alive:
			limit := g.cfg.ReconnectTimeout
			if p.status(now) == catalog.StatusLeft {
				limit = g.cfg.TombstoneTimeout
			}
			if now.Sub(p.deadAt) > limit {
				g.log.Info("gossip forgets member", "node", name, "status", string(p.status(now)), "since", p.deadAt)
				delete(g.peers, name)
				changed = true
			}
		}
	}
	return changed
}
