package gossip

// Dissemination: broadcasts, streams to a few members, and the send queue.

import (
	"math"
	"math/rand/v2"

	"github.com/hashicorp/memberlist"
)

// disseminate spreads a record this node holds as new: by broadcast when it
// fits in a packet, else by pushing it over streams to a few members.
func (g *Gossip) disseminate(w wireRecord, from string) {
	w.From = ""
	w.Fwd = false
	msg := mustEncode(msgRecord, &w)
	big := len(msg) > g.maxBroadcast()
	if w.Record.Node == g.cfg.NodeName {
		g.mu.Lock()
		if w.Record.Version == g.local.rec.Version {
			g.local.big = big
		}
		g.mu.Unlock()
	}
	if !big {
		g.queue.QueueBroadcast(&namedBroadcast{name: "r/" + w.Record.Node, msg: msg})
		return
	}
	w.From = g.cfg.NodeName
	w.Fwd = true
	msg = mustEncode(msgRecord, &w)
	for _, to := range g.randomLive(g.cfg.StreamFanout, w.Record.Node, from) {
		g.sendAsync(to, msgRecord, msg)
	}
}

// tellEveryLive sends w straight to every live member: in one UDP packet
// when it fits, else over a stream. A record that arrives after memberlist
// removed its node still counts, so the order against the leave message
// does not matter.
func (g *Gossip) tellEveryLive(w wireRecord) {
	w.From, w.Fwd = "", false
	msg := mustEncode(msgRecord, &w)
	fits := len(msg) <= g.maxBroadcast()
	ml := g.ml.Load()
	for _, to := range g.randomLive(math.MaxInt, w.Record.Node) {
		if fits {
			if err := ml.SendBestEffort(&to, msg); err == nil {
				continue
			}
		}
		g.sendAsync(to, msgRecord, msg)
	}
}

// randomLive picks up to n live members other than the excluded names.
func (g *Gossip) randomLive(n int, exclude ...string) []memberlist.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peers.randomLive(n, rand.Shuffle, exclude...)
}

// maxBroadcast is the largest message that rides in gossip packets: the
// packet size less memberlist's framing, label and encryption overhead.
func (g *Gossip) maxBroadcast() int { return g.cfg.PacketSize - 128 }

// namedBroadcast replaces any queued broadcast of the same name: a newer
// record of a node supersedes the older one still waiting.
type namedBroadcast struct {
	name string
	msg  []byte
}

func (b *namedBroadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(*namedBroadcast)
	return ok && nb.name == b.name
}

func (b *namedBroadcast) Name() string    { return b.name }
func (b *namedBroadcast) Message() []byte { return b.msg }
func (b *namedBroadcast) Finished()       {}

func (g *Gossip) queueNotice(t msgType, n *notice) {
	prefix := "s/"
	if t == msgDown {
		prefix = "d/"
	}
	g.queue.QueueBroadcast(&namedBroadcast{name: prefix + n.Node, msg: mustEncode(t, n)})
}

// sendAsync queues a stream message; a full queue drops it (gossip and
// push/pull repair what is lost).
func (g *Gossip) sendAsync(to memberlist.Node, t msgType, msg []byte) {
	select {
	case g.sendQ <- outMsg{to: to, t: t, msg: msg}:
	default:
		g.metrics.streams.WithLabelValues(t.String(), "dropped").Inc()
		g.log.Debug("gossip stream queue full, message dropped", "to", to.Name, "type", t.String())
	}
}

func (g *Gossip) sender() {
	defer g.wg.Done()
	for {
		select {
		case m := <-g.sendQ:
			if g.ctx.Err() != nil {
				return
			}
			node := m.to
			send := g.ml.Load().SendReliable
			if m.bestEffort {
				send = g.ml.Load().SendBestEffort
			}
			if err := send(&node, m.msg); err != nil {
				g.metrics.streams.WithLabelValues(m.t.String(), "error").Inc()
				g.log.Debug("gossip stream send failed", "to", m.to.Name, "type", m.t.String(), "err", err)
				continue
			}
			g.metrics.streams.WithLabelValues(m.t.String(), "ok").Inc()
		case <-g.ctx.Done():
			return
		}
	}
}
