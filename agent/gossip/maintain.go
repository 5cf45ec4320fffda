package gossip

// Maintenance: the periodic work on the peer state (suspicion expiry,
// pulls, reaping).

import (
	"math/rand/v2"
	"time"
)

// maintain expires suspicions, pulls records announced by meta and not
// received, and forgets members past their timeouts.
func (g *Gossip) maintain() {
	defer g.wg.Done()
	lastReap := g.clock.Now()
	for g.sleep(g.cfg.GossipInterval) {
		now := g.clock.Now()
		g.mu.Lock()
		changed := g.peers.statusChanged(now)
		pulls := g.peers.duePulls(now, maxPullsPerTick, func() time.Duration { return g.pullDelay(true) })
		if now.Sub(lastReap) >= time.Second {
			lastReap = now
			before := len(g.peers.peers)
			for _, f := range g.peers.reap(now) {
				g.log.Info("gossip forgets member", "node", f.name, "status", string(f.status), "since", f.since)
				changed = true
			}
			// Remembered peers that ran out of their window are not shown,
			// but the peers file must drop them.
			changed = changed || len(g.peers.peers) != before
			for id, at := range g.seenQueries {
				if now.Sub(at) > 10*g.cfg.QueryTimeout {
					delete(g.seenQueries, id)
				}
			}
		}
		if changed {
			g.changedLocked()
		}
		g.mu.Unlock()
		for _, p := range pulls {
			g.sendAsync(p.to, msgPull, mustEncode(msgPull, &p.req))
		}
	}
}

// maxPullsPerTick bounds the pulls one node sends per maintenance tick, so
// that a node that fell behind on many records (after a partition, or while
// many nodes join at once) does not open dozens of streams at once; push/pull
// repairs the rest.
const maxPullsPerTick = 2

// pullDelay is how long to wait for an announced record before pulling it: a
// record that travels by broadcast normally arrives well within 4 PullDelay,
// a large one is pushed over streams and should arrive within PullDelay.
// Jitter spreads the pulls of many nodes.
func (g *Gossip) pullDelay(big bool) time.Duration {
	d := g.cfg.PullDelay
	if !big {
		d *= 4
	}
	return d + rand.N(d)
}
