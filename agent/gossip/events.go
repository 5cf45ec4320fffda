package gossip

// Events from memberlist: joins, updates and departures, the log lines that
// carry suspicions and refutations, refused connections and signs of life.
// Each handler takes g.mu, lets the peer table decide, and acts on its
// answer (logs, notices, metrics) without the lock where it can.

import (
	"math"
	"time"

	"github.com/hashicorp/memberlist"
)

// nodeEvent handles memberlist's join, update and leave notifications.
func (g *Gossip) nodeEvent(n *memberlist.Node, kind nodeEventKind) {
	if n.Name == g.cfg.NodeName {
		return
	}
	var meta *nodeMeta
	if len(n.Meta) > 0 {
		m, err := decodeMeta(n.Meta)
		if err != nil {
			g.metrics.refused.WithLabelValues(refusedDecode).Inc()
			g.log.Warn("gossip node meta refused", "node", n.Name, "err", err)
		} else {
			meta = &m
		}
	}
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == stateClosed {
		return
	}
	p := g.peers.observe(n, meta, kind, now, g.pullDelay)
	if kind == evLeave {
		g.log.Info("gossip member gone", "node", n.Name, "status", string(p.status(now)))
	}
	g.changedLocked()
}

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
	now := g.clock.Now()
	// The refusal comes from the TCP fallback of the same probe, at most one
	// (awareness-stretched) probe interval before the probe gives up.
	window := g.cfg.ProbeInterval * time.Duration(g.cfg.AwarenessMaxMultiplier+1)
	g.mu.Lock()
	t, n := g.peers.probeFailed(node, now, window, g.maxSuspicion())
	switch {
	case n == nil:
	case t == msgDown:
		g.downLocked(node)
	default:
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
	now := g.clock.Now()
	g.mu.Lock()
	n := g.peers.connectionRefused(node, now)
	if n != nil {
		g.downLocked(node)
	}
	g.mu.Unlock()
	if n != nil {
		g.queueNotice(msgDown, n)
	}
}

// downLocked reports a member this node holds down on its own evidence.
func (g *Gossip) downLocked(node string) {
	g.metrics.down.Inc()
	g.log.Warn("gossip member failed: probe failed and its gossip port refused connections", "node", node)
	g.changedLocked()
}

// onLife runs when a packet arrives from a member this node suspects: it is
// running after all, but may not know that it is suspected (the suspect
// messages gossiped while a link was down are lost, and memberlist does not
// resend them). Telling it directly lets it refute at once, with a meta
// update whose higher incarnation also ends memberlist's suspicion timer
// here, instead of waiting for this node's next probe of it, which
// Lifeguard may have slowed down. At most once per probe interval.
func (g *Gossip) onLife(node string) {
	now := g.clock.Now()
	g.mu.Lock()
	t, n, to := g.peers.signOfLife(node, now, g.cfg.ProbeInterval)
	g.mu.Unlock()
	if n == nil {
		return
	}
	select {
	case g.sendQ <- outMsg{to: to, t: t, msg: mustEncode(t, n), bestEffort: true}:
	default:
	}
}

// maxSuspicion bounds how long memberlist may keep a node suspect before it
// declares it dead; a suspect notice older than that is stale.
func (g *Gossip) maxSuspicion() time.Duration {
	n := float64(g.peers.numAlive.Load() + 1)
	scale := math.Max(1, math.Log10(math.Max(1, n)))
	min := time.Duration(float64(g.cfg.SuspicionMult) * scale * float64(g.cfg.ProbeInterval))
	return time.Duration(g.cfg.SuspicionMaxTimeoutMult)*min + 2*g.cfg.ProbeInterval
}
