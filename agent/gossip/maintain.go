package gossip

// Maintenance: the periodic work on the peer state (suspicion expiry,
// pulls, reaping).

import (
	"math/rand/v2"
	"time"

	"github.com/hashicorp/memberlist"
)

// maintain expires suspicions, pulls records announced by meta and not
// received, and forgets members past their timeouts.
func (g *Gossip) maintain() {
	defer g.wg.Done()
	tick := time.NewTicker(g.cfg.GossipInterval)
	defer tick.Stop()
	lastReap := time.Now()
	for {
		select {
		case <-tick.C:
		case <-g.ctx.Done():
			return
		}
		now := time.Now()
		type pull struct {
			to  memberlist.Node
			req pullRequest
		}
		var pulls []pull
		g.mu.Lock()
		changed := false
		for _, p := range g.peers {
			if p.known && p.status(now) != p.lastSeen {
				changed = true
			}
			if p.want > 0 && p.known && p.alive && !p.down && !now.Before(p.pullAt) {
				have := uint64(0)
				if p.rec != nil {
					have = p.rec.Version
				}
				if have >= p.want {
					p.want = 0
					continue
				}
				if len(pulls) >= maxPullsPerTick {
					continue // next tick: pulls are a repair path, not a flood
				}
				p.pullAt = now.Add(g.pullDelay(true))
				pulls = append(pulls, pull{to: p.node, req: pullRequest{From: g.cfg.NodeName, Node: p.name, Have: have}})
			}
		}
		if now.Sub(lastReap) >= time.Second {
			lastReap = now
			if g.reapLocked(now) {
				changed = true
			}
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
