package gossip

// This node's own record, its versions and liveness epoch, and the node
// meta that carries them.

import (
	"fmt"

	"github.com/meshwork/meshwork/catalog"
)

type localState struct {
	rec     catalog.Record
	leaving bool   // Leave started: the record and meta carry the flag
	left    bool   // Leave finished
	epoch   uint64 // liveness epoch, see nodeMeta
	big     bool   // the record does not fit in a packet
}

// SetLocal publishes this node's record. The owner (the agent's local state)
// calls it on every change; rec.Node may be empty or must be this node's
// name, rec.Addr defaults to the advertised address, and rec.Version is
// ignored: the layer assigns a version above every earlier one, also across
// restarts (it is seeded from the clock). It returns that version.
func (g *Gossip) SetLocal(rec catalog.Record) (uint64, error) {
	rec = cloneRecord(rec)
	if rec.Node == "" {
		rec.Node = g.cfg.NodeName
	}
	if rec.Node != g.cfg.NodeName {
		return 0, fmt.Errorf("gossip: set local: %w: %q is not %q", ErrNotOwner, rec.Node, g.cfg.NodeName)
	}
	g.mu.Lock()
	if g.state == stateClosed {
		g.mu.Unlock()
		return 0, fmt.Errorf("gossip: set local: %w", ErrClosed)
	}
	if rec.Addr == "" {
		rec.Addr = g.local.rec.Addr
		if rec.Addr == "" {
			rec.Addr = g.cfg.AdvertiseAddr
		}
	}
	check := rec
	check.Version = 1
	if check.Addr == "" {
		check.Addr = "0.0.0.0" // filled in by Start
	}
	if err := check.Validate(); err != nil {
		g.mu.Unlock()
		return 0, fmt.Errorf("gossip: set local: %w", err)
	}
	rec.Version = g.nextVersionLocked()
	g.local.rec = rec
	running := g.state == stateRunning
	w := g.localWireLocked()
	g.publishLocked()
	g.mu.Unlock()
	if running {
		g.disseminate(w, "")
		g.kickMeta()
	}
	return rec.Version, nil
}

// Local returns this node's current record.
func (g *Gossip) Local() catalog.Record {
	g.mu.Lock()
	defer g.mu.Unlock()
	return cloneRecord(g.local.rec)
}

func (g *Gossip) nextVersionLocked() uint64 {
	v := uint64(g.clock.Now().UnixNano())
	if v <= g.local.rec.Version {
		v = g.local.rec.Version + 1
	}
	return v
}

func (g *Gossip) localWireLocked() wireRecord {
	return wireRecord{Record: g.local.rec, Leaving: g.local.leaving}
}

func (g *Gossip) selfStatusLocked() catalog.MemberStatus {
	if g.local.leaving || g.local.left {
		return catalog.StatusLeft
	}
	return catalog.StatusAlive
}

func (g *Gossip) bumpEpochLocked() {
	e := uint64(g.clock.Now().UnixNano())
	if e <= g.local.epoch {
		e = g.local.epoch + 1
	}
	g.local.epoch = e
}

func (g *Gossip) kickMeta() { kick(g.metaKick) }

// metaLoop pushes this node's meta (version, epoch, flags) into memberlist's
// alive message whenever it changes. Kicks during an update coalesce.
func (g *Gossip) metaLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.metaKick:
		case <-g.ctx.Done():
			return
		}
		g.mu.Lock()
		leaving := g.local.leaving
		g.mu.Unlock()
		if leaving {
			continue // Leave sends the last update itself
		}
		// UpdateNode waits until the alive message was sent out; the timeout
		// only bounds the wait, the message stays queued.
		if err := g.ml.Load().UpdateNode(10 * g.cfg.GossipInterval); err != nil {
			g.log.Debug("gossip meta update still being sent", "err", err)
		}
	}
}

func (g *Gossip) nodeMeta() []byte {
	g.mu.Lock()
	m := nodeMeta{
		Version: g.local.rec.Version,
		Epoch:   g.local.epoch,
		Server:  g.local.rec.Server,
		Leaving: g.local.leaving,
		Big:     g.local.big,
	}
	g.mu.Unlock()
	return encodeMeta(&m)
}

func cloneRecord(r catalog.Record) catalog.Record {
	r.Meta = cloneMap(r.Meta)
	if r.Services != nil {
		svcs := make([]catalog.Service, len(r.Services))
		for i, s := range r.Services {
			s.Ports = append([]catalog.Port(nil), s.Ports...)
			s.Tags = append([]string(nil), s.Tags...)
			s.Meta = cloneMap(s.Meta)
			svcs[i] = s
		}
		r.Services = svcs
	}
	return r
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
