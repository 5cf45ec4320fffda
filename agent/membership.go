package agent

import (
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
)

// defaultLeaveTimeout bounds a graceful leave when the caller gives no
// deadline: long enough for the leave message to reach most members.
const defaultLeaveTimeout = 5 * time.Second

func timeUntil(t time.Time) time.Duration {
	if d := time.Until(t); d > 0 {
		return d
	}
	return 0
}

// buildMembership makes the gossip layer and the local-state manager, which
// publishes this node's record through gossip.
func (a *Agent) buildMembership() error {
	gc := gossip.DefaultLANConfig()
	if a.deps.GossipProfile != nil {
		gc = *a.deps.GossipProfile
	}
	gc.NodeName = a.cfg.Node
	gc.BindAddr = a.cfg.Bind
	gc.BindPort = a.cfg.Ports.Gossip
	gc.AdvertiseAddr = a.cfg.Advertise
	if a.cfg.Encrypt != "" {
		gc.Keyring = []string{a.cfg.Encrypt}
	}
	gc.KeyringFile = filepath.Join(a.cfg.DataDir, "gossip", "keyring.json")
	// The agents this one has seen: it rejoins through them after a restart
	// when every retry_join address is down, and a server finds the
	// clients again after every server restarted.
	gc.PeersFile = filepath.Join(a.cfg.DataDir, "gossip", "peers.json")
	gc.RetryJoin = a.cfg.RetryJoin
	if a.deps.GossipProfile == nil {
		gc.RetryJoinInterval = a.cfg.Gossip.RetryJoinInterval.D()
		gc.RetryJoinMax = max(gc.RetryJoinMax, gc.RetryJoinInterval)
		gc.ReconnectTimeout = a.cfg.Gossip.ReconnectTimeout.D()
		gc.TombstoneTimeout = a.cfg.Gossip.TombstoneTimeout.D()
		gc.LeftReconnectTimeout = a.cfg.Gossip.LeftReconnectTimeout.D()
	}
	g, err := gossip.New(gc, gossip.Deps{
		Logger:     a.logger("gossip"),
		Registerer: a.reg,
		Store:      a.store,
		Transport:  a.deps.GossipTransport,
	})
	if err != nil {
		return err
	}
	a.gossip = g

	// The tunnel port is published once the tunnel serves (tunnel.go),
	// or at once by an agent that resumes its predecessor's tunnel.
	info := local.NodeInfo{Addr: a.cfg.Advertise, Server: a.cfg.Server}
	if a.resumesTunnel() {
		info.TunnelPort = a.cfg.Ports.Tunnel
	}
	lm, err := local.New(local.Config{
		Node:     a.cfg.Node,
		DataDir:  a.cfg.DataDir,
		NodeInfo: info,
		Services: a.cfg.AllServices(),
		// The catalog state starts before the local services: checks of
		// services that were passing when the file was saved resume so.
		Previous: a.catalogState.ownHealth,
	}, local.Deps{
		Publisher:  local.PublisherFunc(a.publishLocal),
		Logger:     a.logger("local"),
		Registerer: a.reg,
	})
	if err != nil {
		return err
	}
	a.local = lm

	// Local services load before gossip starts, so that the node's first
	// record already carries them: a record without them, gossiped by an
	// agent that replaces its predecessor, made peers drop the node's
	// instances until the next record reached them (docs/restart.md).
	a.add("local", lm.Start, lm.Close)
	a.add("gossip", g.Start, func() error {
		err := g.Close()
		// Gossip's view is final: saved now, also when the agent hands
		// over to a successor, which reads it at its start (handoff.go).
		a.catalogState.flush()
		return err
	})
	return nil
}

// resumesTunnel reports whether this agent takes over the tunnel of the
// agent it replaces: it inherited the tunnel's socket (a restart under
// systemd, or an upgrade in place) and holds a certificate on disk, so its
// tunnel serves within milliseconds of its start, and packets wait in the
// socket until then. Its first record then carries the tunnel port: one
// without it would make peers drop the node's instances until the next
// record reached them, and fail their calls meanwhile (docs/restart.md).
func (a *Agent) resumesTunnel() bool {
	if a.cfg.Ports.Tunnel <= 0 || a.deps.TunnelConn != nil || !slices.Contains(a.deps.Sockets.Inherited(), "tunnel-udp") {
		return false
	}
	_, err := os.Stat(filepath.Join(a.cfg.DataDir, "ca", "leaf.pem"))
	return err == nil
}

// publishLocal hands this node's record to gossip. A refusal is a bug in the
// local manager's validation, so it is logged loudly rather than lost.
func (a *Agent) publishLocal(rec catalog.Record) {
	if _, err := a.gossip.SetLocal(rec); err != nil {
		a.log.Error("gossip refused the local record", "err", err)
	}
}

// members adapts gossip's member list to the API's, with what the
// catalog's records add (the tunnel port, the services).
func (a *Agent) members() []api.Member {
	ms := a.gossip.Members()
	recs := map[string]*catalog.Member{}
	for _, m := range a.store.Current().Members() {
		recs[m.Node] = m
	}
	out := make([]api.Member, len(ms))
	for i, m := range ms {
		out[i] = api.Member{Name: m.Name, Addr: m.Addr, Port: m.Port, Status: string(m.Status), Server: m.Server, Meta: m.Meta,
			RecordVersion: m.Version}
		if r := recs[m.Name]; r != nil {
			out[i].TunnelPort, out[i].Services = r.TunnelPort, len(r.Services)
		}
	}
	return out
}
