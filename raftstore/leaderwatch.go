package raftstore

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// leaderWatch follows the leader as a server's Raft sees it, so that the
// server's RPC client abandons a forwarded write the moment its Raft stops
// following the server the write went to, instead of waiting for an answer
// that a dead or cut-off leader will never send.
type leaderWatch struct {
	mu      sync.Mutex
	addr    string
	since   time.Time
	changed chan struct{} // closed and replaced on every change
}

func newLeaderWatch() *leaderWatch { return &leaderWatch{changed: make(chan struct{})} }

// view returns the leader's address ("" for none), since when that holds,
// and a channel closed at the next change. Before follow runs it reports no
// leader since the zero time.
func (w *leaderWatch) view() leaderInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	return leaderInfo{addr: w.addr, since: w.since, changed: w.changed}
}

func (w *leaderWatch) set(addr string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if addr == w.addr && !w.since.IsZero() {
		return
	}
	w.addr, w.since = addr, time.Now()
	close(w.changed)
	w.changed = make(chan struct{})
}

// follow keeps the view up to date with r's leader observations until ctx
// ends. The leader is named by its server address from disc (Raft's
// address is the same, but gossip is what the RPC client dials).
func (w *leaderWatch) follow(ctx context.Context, r *raft.Raft, disc Discovery) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(obs)
	defer r.DeregisterObserver(obs)
	current := func() string {
		// Read Raft's own state rather than the observation: observations
		// are dropped when this loop falls behind.
		addr, id := r.LeaderWithID()
		if id == "" {
			return ""
		}
		list, _ := disc.Watch()
		for _, s := range list {
			if s.ID == string(id) {
				return s.Addr
			}
		}
		return string(addr)
	}
	w.set(current())
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			w.set(current())
		}
	}
}
