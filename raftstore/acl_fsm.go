package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/meshwork/meshwork/acl"
)

// The ACL tokens and policies are a table of the replicated state of their
// own (not keys of the KV namespace): each ACL operation calls the method
// of acl.State that holds its rules, at apply time and at the entry's
// index, so that every server makes the same decision. The table is part
// of Raft snapshots and backups; a restore never moves its bootstrap index
// backwards (restoreACLFloor).

// The ACL operation types. Each is alone in its transaction.
const (
	// OpACLPolicySet creates or replaces ACL.Policy (acl.State.SetPolicy).
	OpACLPolicySet OpType = "acl.policy.set"
	// OpACLPolicyDelete deletes the policy ACL.ID (acl.State.DeletePolicy).
	OpACLPolicyDelete OpType = "acl.policy.delete"
	// OpACLTokenSet creates or replaces ACL.Token (acl.State.SetToken).
	OpACLTokenSet OpType = "acl.token.set"
	// OpACLTokenDelete deletes the token ACL.ID (acl.State.DeleteToken).
	OpACLTokenDelete OpType = "acl.token.delete"
	// OpACLBootstrap stores ACL.Token, the first management token, if no
	// bootstrap happened yet or ACL.ResetIndex is the last one's index
	// (acl.State.Bootstrap).
	OpACLBootstrap OpType = "acl.bootstrap"
)

// ACLOp is the operand of an ACL operation. Tokens carry the hash of their
// secret only: secrets never reach the log.
type ACLOp struct {
	// Policy is the policy of OpACLPolicySet.
	Policy *acl.Policy `json:"policy,omitempty"`
	// Token is the token of OpACLTokenSet and OpACLBootstrap.
	Token *acl.Token `json:"token,omitempty"`
	// ID is the policy ID or token accessor ID of a delete.
	ID string `json:"id,omitempty"`
	// CAS, when not 0, is the modify index the policy or token must have.
	CAS uint64 `json:"cas,omitempty"`
	// ResetIndex is a bootstrap's reset index. The leader sets it from
	// its reset file (ACLBootstrapResetFile), whatever the caller sent.
	ResetIndex uint64 `json:"reset_index,omitempty"`
}

func isACLOp(t OpType) bool {
	switch t {
	case OpACLPolicySet, OpACLPolicyDelete, OpACLTokenSet, OpACLTokenDelete, OpACLBootstrap:
		return true
	}
	return false
}

// validateACLOp checks an ACL operation before it is proposed. n is the
// number of operations of its transaction.
func validateACLOp(i int, op Op, n int) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: op %d (%s): %s", ErrInvalid, i, op.Type, fmt.Sprintf(format, args...))
	}
	if n != 1 {
		return fail("an ACL operation must be alone in its transaction, not one of %d", n)
	}
	a := op.ACL
	if a == nil {
		return fail("operand missing")
	}
	switch op.Type {
	case OpACLPolicySet:
		if a.Policy == nil {
			return fail("policy missing")
		}
		if err := a.Policy.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	case OpACLTokenSet, OpACLBootstrap:
		if a.Token == nil {
			return fail("token missing")
		}
		if err := a.Token.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	case OpACLPolicyDelete, OpACLTokenDelete:
		if a.ID == "" {
			return fail("ID missing")
		}
	}
	return nil
}

// aclOnly returns the operation of a transaction that is one ACL
// operation.
func aclOnly(txn Txn) (Op, bool) {
	if len(txn) == 1 && isACLOp(txn[0].Type) {
		return txn[0], true
	}
	return Op{}, false
}

// aclIndex is the ACL index a write of the log entry at index gets. The
// transactions of one entry share its Raft index, and the ACL state wants
// a new index for each change, so a second ACL write in one entry takes
// the next one: the same on every server, since they apply the same log.
func aclIndex(st *acl.State, index uint64) uint64 { return max(index, st.Index()+1) }

// applyACL applies one ACL operation at the log entry's index, on a copy
// of the table.
func applyACL(s *fsmState, op Op, index uint64) (*fsmState, error) {
	a := op.ACL
	if a == nil {
		return s, fmt.Errorf("%w: %s: operand missing", ErrInvalid, op.Type)
	}
	st := s.acl.st.Clone()
	idx := aclIndex(st, index)
	var err error
	switch op.Type {
	case OpACLPolicySet:
		if a.Policy == nil {
			return s, fmt.Errorf("%w: %s: policy missing", ErrInvalid, op.Type)
		}
		_, err = st.SetPolicy(a.Policy, a.CAS, idx)
	case OpACLPolicyDelete:
		err = st.DeletePolicy(a.ID, a.CAS, idx)
	case OpACLTokenSet:
		if a.Token == nil {
			return s, fmt.Errorf("%w: %s: token missing", ErrInvalid, op.Type)
		}
		_, err = st.SetToken(a.Token, a.CAS, idx)
	case OpACLTokenDelete:
		err = st.DeleteToken(a.ID, a.CAS, idx)
	case OpACLBootstrap:
		if a.Token == nil {
			return s, fmt.Errorf("%w: %s: token missing", ErrInvalid, op.Type)
		}
		_, err = st.Bootstrap(a.Token, a.ResetIndex, idx)
	}
	if err != nil {
		return s, err
	}
	ns := s.derive(true)
	ns.acl = newACLTable(st)
	return ns, nil
}

// aclTable is the ACL state of one fsmState (or of a client's replica).
// Its State is never changed once in a table: a write clones it. The
// encoded answer to watchers is made once, however many agents watch.
// Index is the ACL state's index: an agent's copy orders states by it.
func (t *aclTable) Index() uint64 { return t.st.Index() }

type aclTable struct {
	st *acl.State
	// gen is unique to this table in the process, and grows with each new
	// one: a resolver's cache is valid while it stays the same. The
	// State's index does not serve, since a restore may bring other
	// content at the same index.
	gen uint64

	encOnce sync.Once
	enc     []byte
}

var aclGeneration atomic.Uint64

func newACLTable(st *acl.State) *aclTable {
	return &aclTable{st: st, gen: aclGeneration.Add(1)}
}

func emptyACLTable() *aclTable { return newACLTable(acl.NewState()) }

// touched returns the table moved to a reindex entry's index.
func (t *aclTable) touched(index uint64) *aclTable {
	st := t.st.Clone()
	if err := st.Touch(aclIndex(st, index)); err != nil {
		return t // cannot happen: aclIndex is past the state's index
	}
	return newACLTable(st)
}

// dump returns the table for a snapshot.
func (t *aclTable) dump() *acl.Dump {
	d := t.st.Dump()
	return &d
}

// aclWatchAnswer answers GET /rpc/v1/acl/watch: the whole state when it
// differs from the caller's, else only the index.
type aclWatchAnswer struct {
	Index uint64    `json:"index"`
	State *acl.Dump `json:"state,omitempty"`
}

// encoded is the watch answer that carries this table's state.
func (t *aclTable) encoded() []byte {
	t.encOnce.Do(func() {
		b, err := json.Marshal(aclWatchAnswer{Index: t.st.Index(), State: t.dump()})
		if err == nil {
			t.enc = b
		}
	})
	return t.enc
}

// loadACLTable rebuilds a table from a snapshot's dump; nil (a state from
// before ACLs) is the empty table.
func loadACLTable(d *acl.Dump) (*aclTable, error) {
	if d == nil {
		return emptyACLTable(), nil
	}
	st, err := acl.LoadState(*d)
	if err != nil {
		return nil, fmt.Errorf("%w: acl: %v", ErrBadSnapshot, err)
	}
	return newACLTable(st), nil
}

// restoreACLFloor rewrites the ACL part of a backup's state before the
// leader hands it to Raft, so that a restore never moves the bootstrap
// index, nor the ACL index, backwards: a restore must not re-open the
// bootstrap, and agents that follow the ACL state by its index must see
// the restored state as newer. The rewrite travels with the snapshot to
// every server, so that all of them load the same state. Other fields of
// the state pass through untouched.
func restoreACLFloor(data []byte, cur *acl.State) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	var d acl.Dump
	if raw, ok := fields["acl"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("%w: acl: %v", ErrBadSnapshot, err)
		}
	}
	if d.BootstrapIndex >= cur.BootstrapIndex() && d.Index >= cur.Index() {
		return data, nil
	}
	d.BootstrapIndex = max(d.BootstrapIndex, cur.BootstrapIndex())
	d.Index = max(d.Index, cur.Index(), d.BootstrapIndex)
	if _, err := acl.LoadState(d); err != nil {
		return nil, fmt.Errorf("%w: acl: %v", ErrBadSnapshot, err)
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	fields["acl"] = raw
	return json.Marshal(fields)
}

// The ACL errors keep their sentinel across the RPC port, and each also
// matches the raftstore sentinel that makes it a definite answer (applied
// nothing; a retry is refused the same way).
var aclErrCodes = []struct {
	code string
	errs []error
}{
	{"acl_bootstrap_done", []error{acl.ErrBootstrapDone, ErrCASConflict}},
	{"acl_conflict", []error{acl.ErrConflict, ErrCASConflict}},
	{"acl_invalid", []error{acl.ErrInvalidPolicy, ErrInvalid}},
	{"acl_missing", []error{acl.ErrNotFound, ErrNotFound}},
}

// aclErrCode returns the wire code of an ACL error, or "".
func aclErrCode(err error) string {
	for _, c := range aclErrCodes {
		if errors.Is(err, c.errs[0]) {
			return c.code
		}
	}
	return ""
}

// aclSentinels returns the sentinels an ACL wire code stands for, or nil.
func aclSentinels(code string) []error {
	for _, c := range aclErrCodes {
		if c.code == code {
			return c.errs
		}
	}
	return nil
}
