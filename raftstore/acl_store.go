package raftstore

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/acl"
)

// ACLStore is this agent's access to the replicated ACL state: an
// acl.Store. Reads are local and lock-free: the state machine on a server,
// the replica a client agent follows and persists. Writes go through
// Node.Apply (to the leader, under an idempotency key, with its definite
// or ErrOutcomeUnknown answers); a write then answers the stored token or
// policy, read back from the leader, and returns once this agent's own
// copy holds it, so that a read through the same agent sees the write.
type ACLStore struct{ n *Node }

var _ acl.Store = (*ACLStore)(nil)

// ACL returns the agent's ACL store. An acl.Resolver built on it resolves
// tokens on every agent, servers included, from local memory.
func (n *Node) ACL() *ACLStore { return &ACLStore{n: n} }

// table is the ACL state current on this agent.
func (s *ACLStore) table() *aclTable {
	if s.n.fsm != nil {
		return s.n.fsm.state().acl
	}
	return s.n.aclRep.current()
}

// Index changes whenever the state does, a restore included: it is a
// number of this process, not the state's index (see State), so that a
// resolver's cache never outlives a state it was made from.
func (s *ACLStore) Index() uint64 { return s.table().gen }

// State is the ACL state this agent holds now. It must not be modified.
func (s *ACLStore) State() *acl.State { return s.table().st }

// Token implements acl.Reader.
func (s *ACLStore) Token(accessorID string) (*acl.Token, error) { return s.State().Token(accessorID) }

// TokenBySecret implements acl.Reader.
func (s *ACLStore) TokenBySecret(h acl.SecretHash) (*acl.Token, error) {
	return s.State().TokenBySecret(h)
}

// Policy implements acl.Reader.
func (s *ACLStore) Policy(id string) (*acl.Policy, error) { return s.State().Policy(id) }

// PolicyByName implements acl.Reader.
func (s *ACLStore) PolicyByName(name string) (*acl.Policy, error) {
	return s.State().PolicyByName(name)
}

// Tokens implements acl.Store.
func (s *ACLStore) Tokens() []*acl.Token { return s.State().Tokens() }

// Policies implements acl.Store.
func (s *ACLStore) Policies() []*acl.Policy { return s.State().Policies() }

// SetPolicy implements acl.Store.
func (s *ACLStore) SetPolicy(ctx context.Context, p *acl.Policy, cas uint64) (*acl.Policy, error) {
	if _, err := s.n.Apply(ctx, Txn{{Type: OpACLPolicySet, ACL: &ACLOp{Policy: p, CAS: cas}}}); err != nil {
		return nil, err
	}
	var out acl.Policy
	if err := s.readBack(ctx, "policy", p.ID, &out, func(st *acl.State) (uint64, error) {
		got, err := st.Policy(p.ID)
		if err != nil {
			return 0, err
		}
		out = *got
		return got.ModifyIndex, nil
	}); err != nil {
		return nil, opError("acl set policy", err)
	}
	s.waitLocal(ctx, func(st *acl.State) bool {
		got, err := st.Policy(p.ID)
		return err == nil && got.ModifyIndex >= out.ModifyIndex
	})
	return &out, nil
}

// DeletePolicy implements acl.Store.
func (s *ACLStore) DeletePolicy(ctx context.Context, id string, cas uint64) error {
	if _, err := s.n.Apply(ctx, Txn{{Type: OpACLPolicyDelete, ACL: &ACLOp{ID: id, CAS: cas}}}); err != nil {
		return err
	}
	s.waitLocal(ctx, func(st *acl.State) bool { _, err := st.Policy(id); return err != nil })
	return nil
}

// SetToken implements acl.Store.
func (s *ACLStore) SetToken(ctx context.Context, t *acl.Token, cas uint64) (*acl.Token, error) {
	return s.writeToken(ctx, OpACLTokenSet, t, cas)
}

// DeleteToken implements acl.Store.
func (s *ACLStore) DeleteToken(ctx context.Context, accessorID string, cas uint64) error {
	if _, err := s.n.Apply(ctx, Txn{{Type: OpACLTokenDelete, ACL: &ACLOp{ID: accessorID, CAS: cas}}}); err != nil {
		return err
	}
	s.waitLocal(ctx, func(st *acl.State) bool { _, err := st.Token(accessorID); return err != nil })
	return nil
}

// Bootstrap implements acl.Store. resetIndex is ignored: the leader takes
// the reset index from the reset file in its data directory
// (ACLBootstrapResetFile), never from the request.
func (s *ACLStore) Bootstrap(ctx context.Context, t *acl.Token, _ uint64) (*acl.Token, error) {
	return s.writeToken(ctx, OpACLBootstrap, t, 0)
}

func (s *ACLStore) writeToken(ctx context.Context, op OpType, t *acl.Token, cas uint64) (*acl.Token, error) {
	if _, err := s.n.Apply(ctx, Txn{{Type: op, ACL: &ACLOp{Token: t, CAS: cas}}}); err != nil {
		return nil, err
	}
	var out acl.Token
	if err := s.readBack(ctx, "token", t.AccessorID, &out, func(st *acl.State) (uint64, error) {
		got, err := st.Token(t.AccessorID)
		if err != nil {
			return 0, err
		}
		out = *got
		return got.ModifyIndex, nil
	}); err != nil {
		return nil, opError("acl "+string(op), err)
	}
	s.waitLocal(ctx, func(st *acl.State) bool {
		got, err := st.Token(t.AccessorID)
		return err == nil && got.ModifyIndex >= out.ModifyIndex
	})
	return &out, nil
}

// readBack reads what a write stored, through the leader after a barrier:
// on a leading server from its own state machine (local), else over RPC
// into out.
func (s *ACLStore) readBack(ctx context.Context, kind, id string, out any, local func(*acl.State) (uint64, error)) error {
	n := s.n
	if n.srv != nil && n.srv.raft.State() == raft.Leader && n.srv.barrier() == nil {
		_, err := local(n.fsm.state().acl.st)
		return err
	}
	return n.rpc.CallJSON(ctx, http.MethodGet, "/rpc/v1/acl/"+kind+"/"+url.PathEscape(id)+"?consistent=1", nil, out, CallOptions{Leader: true, Retry: true})
}

// aclLocalWait bounds how long a write waits for this agent's own copy.
const aclLocalWait = 5 * time.Second

// waitLocal waits, briefly, until this agent's copy of the state satisfies
// cond. A copy that lags longer (a client cut off from the servers) is not
// an error of the write, which is done.
func (s *ACLStore) waitLocal(ctx context.Context, cond func(*acl.State) bool) {
	ctx, cancel := context.WithTimeout(ctx, aclLocalWait)
	defer cancel()
	if s.n.fsm != nil {
		_, _ = s.n.fsm.waitState(ctx, func(st *fsmState) bool { return cond(st.acl.st) })
		return
	}
	for {
		t, ch := s.n.aclRep.watch()
		if cond(t.st) {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// Wait blocks until this agent's ACL state satisfies cond, or ctx ends.
func (s *ACLStore) Wait(ctx context.Context, cond func(*acl.State) bool) error {
	if s.n.fsm != nil {
		_, err := s.n.fsm.waitState(ctx, func(st *fsmState) bool { return cond(st.acl.st) })
		return err
	}
	for {
		t, ch := s.n.aclRep.watch()
		if cond(t.st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// startACL loads a client agent's persisted ACL state and starts following
// the servers'. A server reads its state machine and needs neither.
func (n *Node) startACL(ctx context.Context) {
	if n.cfg.Server {
		return
	}
	if err := n.aclRep.load(); err != nil {
		n.log.Warn("persisted acl state not loaded", "err", err)
	}
	wait := min(30*time.Second, 10*n.cfg.WatchHeartbeat)
	n.goRun(func() { n.aclRep.follow(ctx, n.rpc, wait) })
	n.goRun(func() { n.aclRep.persistLoop(ctx) })
}

// closeACL saves a client agent's ACL state a last time.
func (n *Node) closeACL() error {
	if n.cfg.Server {
		return nil
	}
	if err := n.aclRep.save(); err != nil {
		return fmt.Errorf("raftstore: save acl state: %w", err)
	}
	return nil
}
