package catalog

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Store publishes catalog snapshots. Readers call Current on their hot path
// with no lock; writers call Publish, which is serialised.
//
// A store may also hold a catalog restored from disk (Restore), which the
// snapshots include until the publisher says that its own view is complete
// (EndRestore): an agent that restarts answers from the last catalog it
// knew while gossip is not yet in sync with the cluster.
type Store struct {
	cur atomic.Pointer[Snapshot]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every Publish

	// published is the members of the last Publish, the publisher's own
	// view; restored and restoredAt the overlay of Restore, nil and zero
	// when none.
	published  []Member
	restored   []Member
	restoredAt time.Time
}

// NewStore returns a store holding an empty snapshot at index 1, so that a
// blocking query with index 0 returns at once.
func NewStore() *Store {
	s := &Store{changed: make(chan struct{})}
	s.cur.Store(NewSnapshot(1, nil))
	return s
}

// Current returns the latest snapshot. It never returns nil.
func (s *Store) Current() *Snapshot { return s.cur.Load() }

// Publish makes a snapshot of members the current one, at the next index, and
// wakes every waiter. It takes ownership of members. While a restored
// catalog is in force, the snapshot holds members merged with it (see
// Restore).
func (s *Store) Publish(members []Member) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.published = members
	return s.publishLocked(true)
}

// Restore publishes members, a catalog saved at savedAt and read back from
// disk, merged with the publisher's view, and keeps merging them into
// every Publish until EndRestore. The publisher's view wins for each node
// it holds a record of (a record version above 0); for a node it knows
// only by name, the restored record is kept with the publisher's status;
// a node it does not know is kept as restored. So a restored node never
// outlives what the publisher says of it, and EndRestore leaves the
// publisher's view alone. It takes ownership of members.
func (s *Store) Restore(members []Member, savedAt time.Time) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restored, s.restoredAt = members, savedAt
	return s.publishLocked(false)
}

// EndRestore drops the restored catalog: from now on, and at once, the
// snapshot is the last one published, at the next index. It reports
// whether a restored catalog was in force.
func (s *Store) EndRestore() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.restoredAt.IsZero() {
		return false
	}
	s.restored, s.restoredAt = nil, time.Time{}
	s.publishLocked(false)
	return true
}

// publishLocked makes the current snapshot of the published members,
// merged with the restored ones while a restore is in force. NewSnapshot
// takes ownership of the slice it is given, and published may be used
// again (by Restore and EndRestore), so it gets published itself only from
// Publish; the other paths give it a copy.
func (s *Store) publishLocked(owned bool) *Snapshot {
	members := s.published
	switch {
	case !s.restoredAt.IsZero():
		members = overlay(s.published, s.restored)
	case !owned:
		members = slices.Clone(members)
	}
	snap := NewSnapshot(s.cur.Load().Index()+1, members)
	snap.restoredAt = s.restoredAt
	s.cur.Store(snap)
	close(s.changed)
	s.changed = make(chan struct{})
	return snap
}

// overlay merges the publisher's members with the restored ones, by the
// rules of Restore, into a new slice; neither input is modified.
func overlay(published, restored []Member) []Member {
	byNode := make(map[string]int, len(restored))
	for i := range restored {
		byNode[strings.ToLower(restored[i].Node)] = i
	}
	out := make([]Member, 0, len(published)+len(restored))
	for _, m := range published {
		key := strings.ToLower(m.Node)
		if i, ok := byNode[key]; ok {
			if m.Version == 0 && restored[i].Version > 0 {
				status := m.Status
				m = restored[i]
				m.Status = status
			}
			delete(byNode, key)
		}
		out = append(out, m)
	}
	for i := range restored {
		if _, ok := byNode[strings.ToLower(restored[i].Node)]; ok {
			out = append(out, restored[i])
		}
	}
	return out
}

// Watch returns the current snapshot and a channel that is closed when a newer
// one is published.
func (s *Store) Watch() (*Snapshot, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Load(), s.changed
}

// Wait blocks until the index is above index or ctx is done, and returns the
// snapshot current at that moment. Its error is ctx's when ctx ended first;
// the snapshot is still valid then, as blocking queries answer on timeout.
func (s *Store) Wait(ctx context.Context, index uint64) (*Snapshot, error) {
	for {
		snap, ch := s.Watch()
		if snap.Index() > index {
			return snap, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Current(), ctx.Err()
		}
	}
}
