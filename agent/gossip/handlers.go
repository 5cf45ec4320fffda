package gossip

// The handlers of this package's messages.

import (
	"errors"
	"time"

	"github.com/hashicorp/memberlist"
)

func (g *Gossip) handleMessage(b []byte) {
	m, err := decodeMessage(b)
	if err != nil {
		reason := refusedDecode
		if errors.Is(err, errInvalid) {
			reason = refusedInvalid
		}
		g.metrics.refused.WithLabelValues(reason).Inc()
		g.log.Warn("gossip message refused", "err", err)
		return
	}
	g.metrics.received.WithLabelValues(m.Type.String()).Inc()
	switch m.Type {
	case msgRecord:
		g.onRecord(m.Record)
	case msgPull:
		g.onPull(m.Pull)
	case msgSuspect, msgDown:
		g.onNotice(m.Type, m.Notice)
	case msgQuery:
		g.onQuery(m.Query, b)
	case msgQueryResp:
		g.onQueryResp(m.Resp)
	case msgState:
		g.mergeState(m.State)
	}
}

func (g *Gossip) onRecord(w *wireRecord) {
	now := g.clock.Now()
	g.mu.Lock()
	if g.state == stateClosed {
		g.mu.Unlock()
		return
	}
	applied, outrun := g.applyRecordLocked(w, now)
	var self wireRecord
	if outrun {
		g.metrics.refused.WithLabelValues(refusedSelf).Inc()
		self = g.localWireLocked()
	}
	if applied && g.peers.get(w.Record.Node).known {
		g.changedLocked()
	}
	g.mu.Unlock()
	switch {
	case outrun:
		g.disseminate(self, "")
		g.kickMeta()
	case applied && w.Fwd:
		// Pushed over a stream: forward once to a few more members.
		fw := *w
		fw.From = g.cfg.NodeName
		msg := mustEncode(msgRecord, &fw)
		for _, to := range g.randomLive(g.cfg.StreamFanout, w.Record.Node, w.From) {
			g.sendAsync(to, msgRecord, msg)
		}
	case applied && w.From == "":
		// Received by broadcast: re-broadcast, so that news spreads from
		// every node that learns it, not only from its origin.
		g.queue.QueueBroadcast(&namedBroadcast{name: "r/" + w.Record.Node, msg: mustEncode(msgRecord, w)})
	}
}

func (g *Gossip) onPull(req *pullRequest) {
	g.mu.Lock()
	var w *wireRecord
	if req.Node == g.cfg.NodeName {
		if g.local.rec.Version > req.Have {
			lw := g.localWireLocked()
			w = &lw
		}
	} else if p := g.peers.get(req.Node); p != nil && p.rec != nil && p.rec.Version > req.Have {
		w = &wireRecord{Record: *p.rec, Leaving: p.leaving}
	}
	to := g.peers.get(req.From)
	var node memberlist.Node
	if to != nil && to.known {
		node = to.node
	}
	g.mu.Unlock()
	if w == nil || node.Name == "" {
		g.log.Debug("gossip pull not answered", "from", req.From, "node", req.Node, "have", req.Have, "known_requester", node.Name != "", "newer", w != nil)
		return
	}
	w.From = g.cfg.NodeName
	g.sendAsync(node, msgRecord, mustEncode(msgRecord, w))
}

func (g *Gossip) onNotice(t msgType, n *notice) {
	now := g.clock.Now()
	g.mu.Lock()
	if n.Node == g.cfg.NodeName {
		// A notice about this node: refute it with a newer epoch.
		refute := n.Epoch >= g.local.epoch && !g.local.leaving
		if refute {
			g.bumpEpochLocked()
			g.log.Info("gossip refuting a notice about this node", "type", t.String(), "from", n.From)
		}
		g.mu.Unlock()
		if refute {
			g.kickMeta()
		}
		return
	}
	fresh := g.peers.applyNotice(t, n, now, g.maxSuspicion())
	if fresh && t == msgDown {
		g.log.Info("gossip member failed, as reported", "node", n.Node, "by", n.From)
	}
	if fresh {
		g.changedLocked()
	}
	g.mu.Unlock()
	if fresh {
		g.queueNotice(t, n)
	}
}

// applyRecordLocked stores w when it is newer than what this node holds. It
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
	return g.peers.applyRecord(w, now), false
}
