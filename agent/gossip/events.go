package gossip

// Events from memberlist: joins, updates and departures, the log lines that
// carry suspicions and refutations, refused connections and signs of life.

import (
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// nodeEvent handles memberlist's join, update and leave notifications.
func (g *Gossip) nodeEvent(n *memberlist.Node, kind int) {
	if n.Name == g.cfg.NodeName {
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == stateClosed {
		return
	}
	p := g.peerLocked(n.Name)
	p.known = true
	p.node = *n
	p.node.Addr = append(net.IP(nil), n.Addr...)
	p.node.Meta = nil
	if len(n.Meta) > 0 {
		m, err := decodeMeta(n.Meta)
		if err != nil {
			g.metrics.refused.WithLabelValues(refusedDecode).Inc()
			g.log.Warn("gossip node meta refused", "node", n.Name, "error", err)
		} else {
			if m.Epoch > p.meta.Epoch {
				// A newer epoch refutes every notice about older ones.
				if p.suspect && p.suspectEpoch < m.Epoch {
					p.suspect = false
				}
				if p.down && p.downEpoch < m.Epoch {
					p.down = false
				}
				p.refused = time.Time{}
			}
			p.meta = m
		}
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
			g.numAlive.Add(1)
		}
		have := uint64(0)
		if p.rec != nil {
			have = p.rec.Version
		}
		if p.meta.Version > have && p.meta.Version > p.want {
			p.want = p.meta.Version
			p.pullAt = now.Add(g.pullDelay(p.meta.Big))
		}
	case evLeave:
		if p.alive {
			p.alive = false
			g.numAlive.Add(-1)
		}
		p.deadAt = now
		p.suspect, p.down = false, false
		p.want = 0
		g.log.Info("gossip member gone", "node", n.Name, "status", string(p.status(now)))
	}
	g.changedLocked()
}

const (
	evJoin = iota
	evUpdate
	evLeave
)

func (g *Gossip) onMemberlistEvent(ev mlEvent) {
	switch ev.kind {
	case evSuspect:
		g.onLocalSuspect(ev.node)
	case evRefute:
		g.mu.Lock()
		g.bumpEpochLocked()
		g.mu.Unlock()
		g.kickMeta()
	case evDecrypt:
		g.metrics.refused.WithLabelValues(refusedDecrypt).Inc()
	}
}

// onLocalSuspect runs when this node's probe of node failed.
func (g *Gossip) onLocalSuspect(node string) {
	now := time.Now()
	g.mu.Lock()
	p := g.peers[node]
	if p == nil || !p.known || !p.alive {
		g.mu.Unlock()
		return
	}
	var n *notice
	t := msgSuspect
	// The refusal comes from the TCP fallback of the same probe, at most one
	// (awareness-stretched) probe interval before the probe gives up.
	window := g.cfg.ProbeInterval * time.Duration(g.cfg.AwarenessMaxMultiplier+1)
	if !p.refused.IsZero() && now.Sub(p.refused) <= window {
		if !p.down {
			n = g.markDownLocked(p, now)
			t = msgDown
		}
	} else {
		p.suspect = true
		p.suspectEpoch = p.meta.Epoch
		p.suspectUntil = now.Add(g.maxSuspicion())
		n = &notice{Node: node, Epoch: p.meta.Epoch, From: g.cfg.NodeName}
		g.log.Info("gossip member suspected: probe failed", "node", node)
		g.changedLocked()
	}
	g.mu.Unlock()
	if n != nil {
		g.queueNotice(t, n)
	}
}

// onRefused records that a TCP connection to node was refused.
func (g *Gossip) onRefused(node string) {
	if g.cfg.DisableRefusalEvidence {
		return
	}
	now := time.Now()
	g.mu.Lock()
	p := g.peers[node]
	if p == nil || !p.known || !p.alive {
		g.mu.Unlock()
		return
	}
	p.refused = now
	// Someone's probe already failed: together with the refusal, that is
	// the evidence of a dead agent.
	var n *notice
	if p.suspect && now.Before(p.suspectUntil) && !p.down {
		n = g.markDownLocked(p, now)
	}
	g.mu.Unlock()
	if n != nil {
		g.queueNotice(msgDown, n)
	}
}

// onLife runs when a packet arrives from a member this node suspects: it is
// running after all, but may not know that it is suspected (the suspect
// messages gossiped while a link was down are lost, and memberlist does not
// resend them). Telling it directly lets it refute at once, with a meta
// update whose higher incarnation also ends memberlist's suspicion timer
// here, instead of waiting for this node's next probe of it, which
// Lifeguard may have slowed down. At most once per probe interval.
func (g *Gossip) onLife(node string) {
	now := time.Now()
	g.mu.Lock()
	p := g.peers[node]
	if p == nil || !p.alive || !(p.down || p.suspect) || now.Sub(p.lifeSent) < g.cfg.ProbeInterval {
		g.mu.Unlock()
		return
	}
	p.lifeSent = now
	t := msgSuspect
	if p.down {
		t = msgDown
	}
	n := notice{Node: node, Epoch: p.meta.Epoch, From: g.cfg.NodeName}
	to := p.node
	g.mu.Unlock()
	select {
	case g.sendQ <- outMsg{to: to, t: t, msg: mustEncode(t, &n), bestEffort: true}:
	default:
	}
}
