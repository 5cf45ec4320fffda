package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist's callbacks. memberlist calls them from its
// own goroutines, the event callbacks while it holds its node lock: they take
// only Gossip.mu and never call back into memberlist.
type delegate struct{ g *Gossip }

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate     = (*delegate)(nil)
)

func (d *delegate) NodeMeta(limit int) []byte {
	b := d.g.nodeMeta()
	if len(b) > limit {
		// Cannot happen: the meta is a few numbers (about 30 bytes).
		d.g.log.Error("gossip node meta over the limit", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	// memberlist may reuse b after we return.
	d.g.handleMessage(append([]byte(nil), b...))
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	d.g.metrics.pushPull.WithLabelValues("sent").Inc()
	return d.g.localState()
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	m, err := decodeMessage(buf)
	if err == nil && m.Type != msgState {
		err = errUnexpectedState
	}
	if err != nil {
		d.g.metrics.refused.WithLabelValues(refusedDecode).Inc()
		d.g.log.Warn("gossip push/pull state refused", "err", err)
		return
	}
	d.g.metrics.pushPull.WithLabelValues("merged").Inc()
	d.g.mergeState(m.State)
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.g.nodeEvent(n, evJoin) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.g.nodeEvent(n, evUpdate) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.g.nodeEvent(n, evLeave) }

func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.g.log.Error("gossip node name conflict: two agents use the same name",
		"node", existing.Name, "known_addr", existing.Address(), "other_addr", other.Address())
}

func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete runs after this node's direct probe of other succeeded:
// proof that it is alive right now, which ends a suspicion seen here.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	g := d.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.peers.probeSucceeded(other.Name) {
		g.changedLocked()
	}
}
