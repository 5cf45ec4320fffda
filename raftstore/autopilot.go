package raftstore

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/catalog"
)

// bootstrapLoop bootstraps the cluster once exactly BootstrapExpect servers
// agree on who they are, and none of them has Raft state. See tryBootstrap
// for why this makes one cluster and never two.
func (s *server) bootstrapLoop(ctx context.Context) {
	last := ""
	for {
		servers, changed := s.disc.Watch()
		done, reason := s.tryBootstrap(ctx, servers)
		if done {
			return
		}
		if reason != last {
			s.log.Info("raft bootstrap waiting", "reason", reason, "expect", s.cfg.BootstrapExpect)
			last = reason
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// tryBootstrap is one attempt. It returns done when the cluster exists
// (bootstrapped here, by a peer, or joined), else the reason it waits.
//
// Why this bootstraps exactly once:
//   - A server with Raft state on disk never bootstraps (checked at start
//     with raft.HasExistingState), and neither does one that has heard from
//     a leader or holds a configuration.
//   - A server bootstraps only when gossip lists exactly BootstrapExpect
//     live servers, itself included, all started with the same
//     BootstrapExpect; and when every one of them answers over RPC that it
//     has no Raft state and sees exactly the same servers at the same
//     addresses.
//   - Every server that passes these checks proposes the same
//     configuration: all expected servers as voters. Raft allows identical
//     bootstraps on every member; they form one cluster. A server whose
//     check fails (a peer already has state) waits and is added by the
//     leader's autopilot as a non-voter.
//   - Two clusters would need two disjoint groups of BootstrapExpect
//     servers, each seeing only itself in gossip while confirming the same
//     view from all its members. Gossip joins through seeds converge on one
//     member list, and a server seeing more than BootstrapExpect servers
//     never bootstraps; so two clusters can only come from deploying more
//     servers than BootstrapExpect into separate gossip pools, which is a
//     misconfiguration that the logs name.
func (s *server) tryBootstrap(ctx context.Context, list []ServerInfo) (bool, string) {
	if f := s.raft.GetConfiguration(); s.wait(f) == nil && len(f.Configuration().Servers) > 0 {
		return true, ""
	}
	if addr, _ := s.raft.LeaderWithID(); addr != "" {
		return true, ""
	}
	peers := alive(list)
	self := false
	for _, p := range peers {
		if p.Expect != 0 && p.Expect != s.cfg.BootstrapExpect {
			return false, "server " + p.ID + " runs with another bootstrap_expect; all servers must agree"
		}
		if p.ID == s.cfg.NodeName {
			self = p.Addr == s.cfg.AdvertiseAddr
		}
	}
	if !self {
		return false, "gossip does not list this server at its advertised address yet"
	}
	// Ask every peer. Any peer with state means a cluster exists.
	for _, p := range peers {
		if p.ID == s.cfg.NodeName {
			continue
		}
		st, err := s.peerStatus(ctx, p.Addr)
		if err != nil {
			return false, "cannot reach server " + p.ID + ": " + err.Error()
		}
		if st.HasState {
			s.log.Info("raft bootstrap skipped: a cluster exists", "peer", p.ID)
			return true, ""
		}
		if len(peers) == s.cfg.BootstrapExpect && !sameView(peers, alive(st.Servers)) {
			return false, "server " + p.ID + " sees other servers than this one does"
		}
	}
	if len(peers) != s.cfg.BootstrapExpect {
		if len(peers) > s.cfg.BootstrapExpect {
			return false, "gossip lists more servers than bootstrap_expect and none has state: refusing to guess which to bootstrap"
		}
		return false, "waiting for more servers"
	}
	var conf raft.Configuration
	for _, p := range peers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
	}
	sort.Slice(conf.Servers, func(i, j int) bool { return conf.Servers[i].ID < conf.Servers[j].ID })
	err := s.wait(s.raft.BootstrapCluster(conf))
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return false, "bootstrap failed: " + err.Error()
	}
	if err == nil {
		s.log.Info("raft cluster bootstrapped", "servers", len(conf.Servers))
	}
	return true, ""
}

func sameView(a, b []ServerInfo) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]string{}
	for _, s := range a {
		m[s.ID] = s.Addr
	}
	for _, s := range b {
		if addr, ok := m[s.ID]; !ok || addr != s.Addr {
			return false
		}
	}
	return true
}

func (s *server) peerStatus(ctx context.Context, addr string) (ServerStatus, error) {
	var st ServerStatus
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := s.rpc.CallJSON(ctx, "GET", "/rpc/v1/status", nil, &st, CallOptions{Server: addr})
	return st, err
}

// autopilot keeps the configuration in line with gossip while this server
// leads: it adds new servers as non-voters, promotes them once caught up for
// StabilizationTime, and removes servers that left, or stayed failed for
// DeadServerThreshold, never removing so many voters that the rest would
// not be a majority of the voters before (then it removes none).
func (s *server) autopilot(ctx context.Context) {
	ap := &autopilotState{failedSince: map[string]time.Time{}, healthySince: map[string]time.Time{}}
	t := time.NewTicker(s.cfg.AutopilotInterval)
	defer t.Stop()
	// Ticks only: the catalog changes with every health update, far more
	// often than the server set does.
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.raft.State() != raft.Leader {
			ap.failedSince = map[string]time.Time{}
			ap.healthySince = map[string]time.Time{}
			continue
		}
		s.reconcile(ctx, ap, time.Now())
	}
}

type autopilotState struct {
	failedSince  map[string]time.Time
	healthySince map[string]time.Time
}

func (s *server) reconcile(ctx context.Context, ap *autopilotState, now time.Time) {
	servers, _ := s.disc.Watch()
	f := s.raft.GetConfiguration()
	if s.wait(f) != nil {
		return
	}
	conf := f.Configuration()
	byID := map[string]ServerInfo{}
	for _, si := range servers {
		byID[si.ID] = si
	}
	inConf := map[string]raft.Server{}
	voters := 0
	for _, srv := range conf.Servers {
		inConf[string(srv.ID)] = srv
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	timeout := s.cfg.ApplyTimeout

	// Add new servers, and follow address changes.
	for _, si := range alive(servers) {
		srv, ok := inConf[si.ID]
		switch {
		case !ok:
			if err := s.wait(s.raft.AddNonvoter(raft.ServerID(si.ID), raft.ServerAddress(si.Addr), 0, timeout)); err != nil {
				s.log.Warn("autopilot add failed", "server", si.ID, "err", err)
				continue
			}
			s.m.autopilotChanges.WithLabelValues("add").Inc()
			s.log.Info("autopilot added server as non-voter", "server", si.ID, "addr", si.Addr)
		case string(srv.Address) != si.Addr:
			var err error
			if srv.Suffrage == raft.Voter {
				err = s.wait(s.raft.AddVoter(srv.ID, raft.ServerAddress(si.Addr), 0, timeout))
			} else {
				err = s.wait(s.raft.AddNonvoter(srv.ID, raft.ServerAddress(si.Addr), 0, timeout))
			}
			if err == nil {
				s.log.Info("autopilot updated server address", "server", si.ID, "addr", si.Addr)
			}
		}
	}

	// Remove servers that left or stayed failed. Skip while discovery does
	// not even list this server: it is not ready, not proof of failures.
	if self, ok := byID[s.cfg.NodeName]; ok && self.Status.Reachable() {
		var deadVoters, deadOthers []string
		for id, srv := range inConf {
			if id == s.cfg.NodeName {
				continue
			}
			si, known := byID[id]
			if known && si.Status.Reachable() {
				delete(ap.failedSince, id)
				continue
			}
			dead := known && si.Status == catalog.StatusLeft
			if !dead {
				first, seen := ap.failedSince[id]
				if !seen {
					ap.failedSince[id] = now
					first = now
				}
				dead = now.Sub(first) >= s.cfg.DeadServerThreshold
			}
			if !dead {
				continue
			}
			if srv.Suffrage == raft.Voter {
				deadVoters = append(deadVoters, id)
			} else {
				deadOthers = append(deadOthers, id)
			}
		}
		// The floor: the voters that stay must be a majority of the voters
		// now, so removals never take the cluster below quorum. When more
		// voters look failed than that allows, gossip is more likely wrong
		// (a partition of its own) than the servers dead: remove none.
		removable := voters - (voters/2 + 1)
		if len(deadVoters) > removable {
			s.log.Warn("autopilot keeps failed voters: removing them would lose quorum",
				"failed", len(deadVoters), "voters", voters, "removable", removable)
			deadVoters = nil
		}
		for _, id := range append(deadOthers, deadVoters...) {
			if err := s.wait(s.raft.RemoveServer(raft.ServerID(id), 0, timeout)); err != nil {
				s.log.Warn("autopilot remove failed", "server", id, "err", err)
				continue
			}
			delete(ap.failedSince, id)
			s.m.autopilotChanges.WithLabelValues("remove").Inc()
			s.log.Info("autopilot removed server", "server", id)
		}
	}

	// Promote non-voters that kept up for StabilizationTime.
	leaderLast := s.raft.LastIndex()
	term := s.raft.CurrentTerm()
	for id, srv := range inConf {
		if srv.Suffrage == raft.Voter {
			delete(ap.healthySince, id)
			continue
		}
		si, ok := byID[id]
		healthy := false
		if ok && si.Status == catalog.StatusAlive {
			st, err := s.peerStatus(ctx, si.Addr)
			healthy = err == nil && st.Term == term && st.LastIndex+maxLag >= leaderLast
		}
		if !healthy {
			delete(ap.healthySince, id)
			continue
		}
		since, seen := ap.healthySince[id]
		if !seen {
			ap.healthySince[id] = now
			continue
		}
		if now.Sub(since) < s.cfg.StabilizationTime {
			continue
		}
		if err := s.wait(s.raft.AddVoter(srv.ID, srv.Address, 0, timeout)); err != nil {
			s.log.Warn("autopilot promote failed", "server", id, "err", err)
			continue
		}
		delete(ap.healthySince, id)
		s.m.autopilotChanges.WithLabelValues("promote").Inc()
		s.log.Info("autopilot promoted server to voter", "server", id)
	}
}

// maxLag is how many log entries a non-voter may trail the leader and still
// count as caught up.
const maxLag = 256
