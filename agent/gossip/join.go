package gossip

// Joining: Join, the retry of RetryJoin at start, and the reconnection of
// failed members.

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshwork/meshwork/catalog"
)

// Join contacts addrs (host or host:port) and merges state with them. It
// returns the number of addresses that answered. An error wraps
// ErrKeyMismatch when the agents answered but do not share this node's
// gossip key, else ErrJoin. Either way the log says what happened.
func (g *Gossip) Join(addrs []string) (int, error) {
	ml := g.ml.Load()
	if ml == nil {
		return 0, fmt.Errorf("gossip: join: %w", ErrNotStarted)
	}
	norm := make([]string, 0, len(addrs))
	for _, a := range addrs {
		n, err := joinAddr(a)
		if err != nil {
			return 0, fmt.Errorf("gossip: join: %w: address %q: %v", ErrJoin, a, err)
		}
		norm = append(norm, n)
	}
	n, err := ml.Join(norm)
	if err == nil {
		g.log.Info("gossip joined the cluster", "contacted", n, "addrs", norm)
		// Announce this node's record to its new cluster by gossip: the
		// push/pull of the join gave it only to the contacted members.
		g.mu.Lock()
		self := g.localWireLocked()
		g.mu.Unlock()
		g.disseminate(self, "")
		return n, nil
	}
	if isKeyMismatch(err.Error()) {
		g.log.Error("gossip join refused: this node's gossip encryption key does not match the cluster's",
			"addrs", norm, "error", err.Error(),
			"hint", "give this agent the cluster's keyring (see `meshwork keyring list` on a member)")
		return 0, fmt.Errorf("gossip: join %v: %w: %v", norm, ErrKeyMismatch, err)
	}
	g.log.Warn("gossip join failed",
		"addrs", norm, "error", err.Error(),
		"hint", "check that the agents run and are reachable on the gossip port (UDP and TCP); if they are, the gossip encryption key may not match")
	return 0, fmt.Errorf("gossip: join %v: %w: %v", norm, ErrJoin, err)
}

func (g *Gossip) retryJoin() {
	defer g.wg.Done()
	wait := g.cfg.RetryJoinInterval
	for attempt := 1; ; attempt++ {
		if _, err := g.Join(g.cfg.RetryJoin); err == nil {
			return
		}
		g.log.Info("gossip will retry joining", "attempt", attempt, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-g.ctx.Done():
			t.Stop()
			return
		}
		wait = min(wait*2, g.cfg.RetryJoinMax)
	}
}

// reconnectLoop periodically joins one failed member, so that the two sides
// of a healed partition merge again.
func (g *Gossip) reconnectLoop() {
	defer g.wg.Done()
	tick := time.NewTicker(g.cfg.ReconnectInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-g.ctx.Done():
			return
		}
		now := time.Now()
		g.mu.Lock()
		var cands []memberlist.Node
		for _, p := range g.peers {
			if p.known && !p.alive && p.status(now) == catalog.StatusFailed {
				cands = append(cands, p.node)
			}
		}
		g.mu.Unlock()
		if len(cands) == 0 {
			continue
		}
		n := cands[rand.IntN(len(cands))]
		addr := n.Name + "/" + net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
		if _, err := g.ml.Load().Join([]string{addr}); err != nil {
			g.log.Debug("gossip reconnect failed", "node", n.Name, "error", err)
		} else {
			g.log.Info("gossip reconnected to failed member", "node", n.Name)
		}
	}
}
