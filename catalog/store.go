package catalog

import (
	"context"
	"sync"
	"sync/atomic"
)

// Store publishes catalog snapshots. Readers call Current on their hot path
// with no lock; writers call Publish, which is serialised.
type Store struct {
	cur atomic.Pointer[Snapshot]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every Publish
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
// wakes every waiter. It takes ownership of members.
func (s *Store) Publish(members []Member) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := NewSnapshot(s.cur.Load().Index()+1, members)
	s.cur.Store(snap)
	close(s.changed)
	s.changed = make(chan struct{})
	return snap
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
