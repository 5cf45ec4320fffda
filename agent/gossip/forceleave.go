package gossip

import (
	"errors"
	"fmt"

	"github.com/meshwork/meshwork/catalog"
)

// Errors of ForceLeave.
var (
	// ErrUnknownMember: no member of that name is known.
	ErrUnknownMember = errors.New("no such member")
	// ErrMemberAlive: the member is alive or suspect (or is this node);
	// only a failed member may be forced out.
	ErrMemberAlive = errors.New("member is not failed")
)

// ForceLeave marks a failed member as left, on behalf of a node that died
// without leaving: its instances stop counting as merely unreachable, it
// is tried again only for LeftReconnectTimeout and forgotten after
// TombstoneTimeout, as after a graceful leave. It publishes the member's
// last record again, one version up, with the leaving flag, and spreads it
// as a leave is spread. A member that is alive or suspect is refused with
// ErrMemberAlive: it would refute the leave at once, and leave is what it
// should run itself. One that left already is no error. Should the node
// come back, its own next record, versioned from its clock, takes over.
func (g *Gossip) ForceLeave(node string) error {
	if node == g.cfg.NodeName {
		return fmt.Errorf("gossip: force leave %q: %w: it is this node (leave it with a graceful leave)", node, ErrMemberAlive)
	}
	now := g.clock.Now()
	g.mu.Lock()
	if g.state != stateRunning {
		closed := g.state == stateClosed
		g.mu.Unlock()
		if closed {
			return fmt.Errorf("gossip: force leave: %w", ErrClosed)
		}
		return fmt.Errorf("gossip: force leave: %w", ErrNotStarted)
	}
	p := g.peers.get(node)
	if p == nil || !p.known {
		g.mu.Unlock()
		return fmt.Errorf("gossip: force leave %q: %w", node, ErrUnknownMember)
	}
	switch st := p.status(now); st {
	case catalog.StatusLeft:
		g.mu.Unlock()
		return nil
	case catalog.StatusFailed:
	default:
		g.mu.Unlock()
		return fmt.Errorf("gossip: force leave %q: %w: it is %s", node, ErrMemberAlive, st)
	}
	rec := catalog.Record{Node: node}
	if p.rec != nil {
		rec = cloneRecord(*p.rec)
	} else if p.node.Addr != nil {
		rec.Addr = p.node.Addr.String()
	}
	rec.Version = max(rec.Version, p.meta.Version) + 1
	w := wireRecord{Record: rec, Leaving: true}
	g.peers.applyRecord(&w, now)
	g.changedLocked()
	g.mu.Unlock()

	g.disseminate(w, "")
	// As for a graceful leave: a broadcast reaches each member only with
	// high probability.
	g.tellEveryLive(w)
	g.log.Info("gossip member forced to leave", "node", node)
	return nil
}
