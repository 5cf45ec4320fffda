package acl

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Reader is what resolving a token reads. Its methods are called on every
// API request: they are safe for concurrent use, read local memory (the
// Raft-backed store reads its FSM's replica, never a server), never block
// on the network, and Index is a single atomic load. The tokens and
// policies returned are shared and must not be modified.
type Reader interface {
	// Index is the index of the last change to any token or policy, or of
	// the last snapshot restore (which, as in Raft, takes an index past
	// the current one). Resolvers drop their cache when it changes.
	Index() uint64
	// Token returns the token with accessorID, or an error wrapping
	// ErrNotFound.
	Token(accessorID string) (*Token, error)
	// TokenBySecret returns the token whose secret hashes to h, or an
	// error wrapping ErrNotFound.
	TokenBySecret(h SecretHash) (*Token, error)
	// Policy returns the policy with id, or an error wrapping ErrNotFound.
	Policy(id string) (*Policy, error)
	// PolicyByName returns the policy called name, case-insensitively, or
	// an error wrapping ErrNotFound.
	PolicyByName(name string) (*Policy, error)
}

// Store holds the ACL state: a MemStore in tests, the Raft-replicated
// state in the agent. Reads are local, as Reader's. Writes block until the
// change is committed (or ctx ends) and apply State's rules, so that every
// store refuses the same writes with the same errors; the store assigns the
// index.
type Store interface {
	Reader
	// Tokens returns every token, in the order they were created.
	Tokens() []*Token
	// Policies returns every policy, by name.
	Policies() []*Policy
	// SetPolicy creates or replaces p (State.SetPolicy); cas, when not 0,
	// must be its ModifyIndex.
	SetPolicy(ctx context.Context, p *Policy, cas uint64) (*Policy, error)
	// DeletePolicy deletes the policy with id (State.DeletePolicy).
	DeletePolicy(ctx context.Context, id string, cas uint64) error
	// SetToken creates or replaces t (State.SetToken).
	SetToken(ctx context.Context, t *Token, cas uint64) (*Token, error)
	// DeleteToken deletes the token with accessorID (State.DeleteToken).
	DeleteToken(ctx context.Context, accessorID string, cas uint64) error
	// Bootstrap stores the first management token t if
	// State.CheckBootstrap(resetIndex) allows it, atomically with that
	// check (State.Bootstrap).
	Bootstrap(ctx context.Context, t *Token, resetIndex uint64) (*Token, error)
}

// Bootstrap mints the first management token at now and stores it in s. It
// returns the token and its secret, which exists nowhere else: the caller
// shows it once. Once done, it is refused with ErrBootstrapDone unless
// resetIndex is the index of the last bootstrap (see State.CheckBootstrap
// for where that index may come from).
func Bootstrap(ctx context.Context, s Store, now time.Time, resetIndex uint64) (*Token, string, error) {
	t, secret, err := NewToken(TokenSpec{
		Type:        TypeManagement,
		Description: "Bootstrap token: manages everything; keep it for emergencies and make narrower tokens.",
	}, now)
	if err != nil {
		return nil, "", fmt.Errorf("acl: bootstrap: %w", err)
	}
	stored, err := s.Bootstrap(ctx, t, resetIndex)
	if err != nil {
		return nil, "", err
	}
	return stored, secret, nil
}

// MemStore is a Store in memory, for tests and for tools: a State behind a
// lock, whose index counts its writes.
type MemStore struct {
	mu    sync.RWMutex
	state *State
	index atomic.Uint64
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns a store holding only the builtins.
func NewMemStore() *MemStore { return &MemStore{state: NewState()} }

// Index implements Reader.
func (m *MemStore) Index() uint64 { return m.index.Load() }

// Token implements Reader.
func (m *MemStore) Token(accessorID string) (*Token, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.Token(accessorID)
}

// TokenBySecret implements Reader.
func (m *MemStore) TokenBySecret(h SecretHash) (*Token, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.TokenBySecret(h)
}

// Policy implements Reader.
func (m *MemStore) Policy(id string) (*Policy, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.Policy(id)
}

// PolicyByName implements Reader.
func (m *MemStore) PolicyByName(name string) (*Policy, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.PolicyByName(name)
}

// Tokens implements Store.
func (m *MemStore) Tokens() []*Token {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.Tokens()
}

// Policies implements Store.
func (m *MemStore) Policies() []*Policy {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.Policies()
}

// write applies one change at the next index.
func (m *MemStore) write(ctx context.Context, f func(index uint64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := f(m.state.Index() + 1); err != nil {
		return err
	}
	m.index.Store(m.state.Index())
	return nil
}

// SetPolicy implements Store.
func (m *MemStore) SetPolicy(ctx context.Context, p *Policy, cas uint64) (out *Policy, err error) {
	err = m.write(ctx, func(index uint64) error {
		out, err = m.state.SetPolicy(p, cas, index)
		return err
	})
	return out, err
}

// DeletePolicy implements Store.
func (m *MemStore) DeletePolicy(ctx context.Context, id string, cas uint64) error {
	return m.write(ctx, func(index uint64) error { return m.state.DeletePolicy(id, cas, index) })
}

// SetToken implements Store.
func (m *MemStore) SetToken(ctx context.Context, t *Token, cas uint64) (out *Token, err error) {
	err = m.write(ctx, func(index uint64) error {
		out, err = m.state.SetToken(t, cas, index)
		return err
	})
	return out, err
}

// DeleteToken implements Store.
func (m *MemStore) DeleteToken(ctx context.Context, accessorID string, cas uint64) error {
	return m.write(ctx, func(index uint64) error { return m.state.DeleteToken(accessorID, cas, index) })
}

// Bootstrap implements Store.
func (m *MemStore) Bootstrap(ctx context.Context, t *Token, resetIndex uint64) (out *Token, err error) {
	err = m.write(ctx, func(index uint64) error {
		out, err = m.state.Bootstrap(t, resetIndex, index)
		return err
	})
	return out, err
}

// Restore replaces the whole state with d, as a Raft snapshot restore
// does. As in Raft, the restore itself takes an index past the current
// one, so that the index changes even when the dump is older.
func (m *MemStore) Restore(d Dump) error {
	s, err := LoadState(d)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s.index = max(s.index, m.state.Index()) + 1
	m.state = s
	m.index.Store(s.Index())
	return nil
}

// Dump returns the whole state, as a Raft snapshot takes it.
func (m *MemStore) Dump() Dump {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.Dump()
}
