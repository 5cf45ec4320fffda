package raftstore

import (
	"context"
	"errors"
	"fmt"
)

// KVState is the internal namespace seen as one key/value store, with the
// contract the CA's state store asks for:
//   - Get of an absent key is (nil, 0, nil);
//   - CAS writes when the key's modify index is index (0: absent), through
//     the leader, and wraps the given conflict error (and ErrCASConflict)
//     when it is not;
//   - Delete of an absent key is not an error;
//   - Watch blocks until the key's modify index differs from index.
//
// It is safe for concurrent use. Private keys (Config.PrivateKV) are
// readable only on server agents.
type KVState struct {
	n        *Node
	conflict error
}

// KVState returns the namespace as a KVState. conflict, when not nil, is
// wrapped into every compare-and-set conflict, so that a caller can match
// its own sentinel (such as the CA's ErrConflict).
func (n *Node) KVState(conflict error) *KVState { return &KVState{n: n, conflict: conflict} }

// Get returns key's value and modify index.
func (s *KVState) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	v, idx, err := s.n.KVGet(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, nil
	}
	return v, idx, err
}

// CAS writes val when key's modify index is index (0: absent).
func (s *KVState) CAS(ctx context.Context, key string, val []byte, index uint64) error {
	_, err := s.n.KVCAS(ctx, key, val, index)
	if err != nil && s.conflict != nil && errors.Is(err, ErrCASConflict) {
		return fmt.Errorf("%w: %w", s.conflict, err)
	}
	return err
}

// Delete removes key.
func (s *KVState) Delete(ctx context.Context, key string) error {
	return s.n.KVDelete(ctx, key, 0)
}

// Watch blocks until key's modify index differs from index (0: the key is
// absent) or ctx ends, and returns its value and index then.
func (s *KVState) Watch(ctx context.Context, key string, index uint64) ([]byte, uint64, error) {
	var ns uint64
	for {
		entries, next, err := s.n.KVWatch(ctx, key, ns)
		if err != nil {
			return nil, index, err
		}
		var val []byte
		var cur uint64
		for _, e := range entries {
			if e.Key == key {
				val, cur = e.Value, e.ModifyIndex
			}
		}
		if cur != index {
			return val, cur, nil
		}
		if ctx.Err() != nil {
			return nil, index, ctx.Err()
		}
		ns = next
	}
}
