package gossip

// Push/pull: the user state of memberlist's full state exchanges.

// localState is the user part of a push/pull: the records of this node and
// of every live member.
func (g *Gossip) localState() []byte {
	g.mu.Lock()
	s := pushState{Records: make([]wireRecord, 0, len(g.peers.peers)+1)}
	s.Records = append(s.Records, g.localWireLocked())
	for _, p := range g.peers.peers {
		if p.rec != nil && p.known && p.alive {
			s.Records = append(s.Records, wireRecord{Record: *p.rec, Leaving: p.leaving})
		}
	}
	g.mu.Unlock()
	return mustEncode(msgState, &s)
}

// mergeState applies the records of a push/pull exchange.
func (g *Gossip) mergeState(s *pushState) {
	now := g.clock.Now()
	var outrun bool
	var self wireRecord
	g.mu.Lock()
	if g.state == stateClosed {
		g.mu.Unlock()
		return
	}
	changed := false
	for i := range s.Records {
		w := &s.Records[i]
		if err := w.check(); err != nil {
			g.metrics.refused.WithLabelValues(refusedInvalid).Inc()
			g.log.Warn("gossip record refused", "node", w.Record.Node, "err", err)
			continue
		}
		a, o := g.applyRecordLocked(w, now)
		if a && g.peers.get(w.Record.Node).known {
			changed = true
		}
		if o {
			outrun = true
		}
	}
	if outrun {
		g.metrics.refused.WithLabelValues(refusedSelf).Inc()
		self = g.localWireLocked()
	}
	if g.syncStep == syncNone {
		// The first full state of another member: the next snapshot is
		// this member's view of the cluster, not of itself alone.
		g.syncStep = syncPending
		changed = true
	}
	if changed {
		g.changedLocked()
	}
	g.mu.Unlock()
	if outrun {
		g.disseminate(self, "")
		g.kickMeta()
	}
}
