package ca

import (
	"context"
	"errors"
	"sync"
)

// StateStore is the replicated key/value state the CA lives in. In the agent
// it is backed by the Raft store's internal KV namespace; MemStore is its
// in-memory twin.
//
// Contract:
//   - Get returns a key's value and modify index; an absent key gives
//     (nil, 0, nil). Reads may be slightly stale on a follower or a client
//     agent; every decision that matters is made by CAS.
//   - CAS stores val only if the key's modify index is still index (0 means
//     the key must be absent), and returns an error wrapping ErrConflict
//     otherwise. It is linearizable (it goes through the Raft leader) and
//     blocks until the write is committed or ctx ends.
//   - Delete removes a key; deleting an absent key is not an error.
//   - Watch blocks until the key's modify index differs from index, or ctx
//     ends (then it returns ctx's error). It may return early with the
//     value unchanged; callers compare indexes.
//
// All methods are safe for concurrent use.
type StateStore interface {
	Get(ctx context.Context, key string) (val []byte, index uint64, err error)
	CAS(ctx context.Context, key string, val []byte, index uint64) error
	Delete(ctx context.Context, key string) error
	Watch(ctx context.Context, key string, index uint64) (val []byte, newIndex uint64, err error)
}

// Keys of the CA in the state store. Everything lives under "ca/".
// KeyAuthority holds sealed private keys: the Raft store should serve it to
// servers only. Client agents read KeyBundle.
const (
	// KeyAuthority holds the roots, the active intermediate, the bootstrap
	// provisioner and the rotation status; private keys are sealed.
	KeyAuthority = "ca/authority"
	// KeyBundle holds the public trust bundle every agent watches.
	KeyBundle = "ca/bundle"
	// KeyTokens + "/<shard>" hold the IDs of used bootstrap tokens until
	// they expire, in 64 shards. The ledger only grows, but for IDs past
	// their expiry: a restore of the state must keep the current one
	// (raftca.KeepOnRestore).
	KeyTokens = "ca/tokens"
	// KeyNodes + "/<shard>" list the nodes the CA has issued a leaf to, in
	// 64 shards.
	KeyNodes = "ca/nodes"
	// KeyLeafPrefix + node holds the record of that node's latest leaf.
	KeyLeafPrefix = "ca/leaf/"
)

// MemStore is an in-memory StateStore for tests and single-process use. Every
// write bumps one global index, as Raft's does. The zero value is not usable;
// call NewMemStore.
type MemStore struct {
	mu      sync.Mutex
	index   uint64
	data    map[string]memEntry
	changed chan struct{}
	down    bool
}

type memEntry struct {
	val   []byte
	index uint64
}

// ErrUnavailable is what MemStore returns while SetDown(true) is in effect,
// standing in for a Raft store without a leader.
var ErrUnavailable = errors.New("state store unavailable")

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{data: map[string]memEntry{}, changed: make(chan struct{})}
}

// SetDown makes every call fail with ErrUnavailable while down is true.
func (s *MemStore) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Get implements StateStore.
func (s *MemStore) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, 0, ErrUnavailable
	}
	e := s.data[key]
	return clone(e.val), e.index, nil
}

// CAS implements StateStore.
func (s *MemStore) CAS(ctx context.Context, key string, val []byte, index uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return ErrUnavailable
	}
	if e := s.data[key]; e.index != index {
		return ErrConflict
	}
	s.index++
	s.data[key] = memEntry{val: clone(val), index: s.index}
	s.wake()
	return nil
}

// Delete implements StateStore.
func (s *MemStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return ErrUnavailable
	}
	if _, ok := s.data[key]; ok {
		delete(s.data, key)
		s.index++
		s.wake()
	}
	return nil
}

func (s *MemStore) wake() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Watch implements StateStore.
func (s *MemStore) Watch(ctx context.Context, key string, index uint64) ([]byte, uint64, error) {
	for {
		s.mu.Lock()
		if s.down {
			s.mu.Unlock()
			return nil, 0, ErrUnavailable
		}
		e := s.data[key]
		ch := s.changed
		s.mu.Unlock()
		if e.index != index {
			return clone(e.val), e.index, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
