package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/acl"
)

func testPolicy(t *testing.T, name string, rules acl.Rules) *acl.Policy {
	t.Helper()
	id, err := acl.NewID()
	if err != nil {
		t.Fatal(err)
	}
	return &acl.Policy{ID: id, Name: name, Rules: rules}
}

func testToken(t *testing.T, typ acl.TokenType, links ...acl.PolicyLink) (*acl.Token, string) {
	t.Helper()
	tok, secret, err := acl.NewToken(acl.TokenSpec{Type: typ, Policies: links}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok, secret
}

func aclSet(p *acl.Policy) Txn { return Txn{{Type: OpACLPolicySet, ACL: &ACLOp{Policy: p}}} }
func aclTok(tok *acl.Token) Txn {
	return Txn{{Type: OpACLTokenSet, ACL: &ACLOp{Token: tok}}}
}

// TestACLOpsApplyStateRules applies ACL operations to the state machine:
// State's rules decide, two writes of one log entry get distinct indexes,
// and a refused write changes nothing.
func TestACLOpsApplyStateRules(t *testing.T) {
	f := NewFSM()
	web := testPolicy(t, "web", acl.Rules{Service: map[string]acl.Access{"web": acl.Write}})
	tok, _ := testToken(t, acl.TypeClient, acl.PolicyLink{Name: "web"})
	// One entry, two writes: the token's link resolves against the policy
	// the same entry made.
	res := applyAt(t, f, 10, aclSet(web), aclTok(tok))
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("write %d: %v", i, r.Err)
		}
	}
	st := f.state().acl.st
	p, err := st.Policy(web.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Token(tok.AccessorID)
	if err != nil {
		t.Fatal(err)
	}
	if p.ModifyIndex != 10 || got.ModifyIndex != 11 || st.Index() != 11 {
		t.Fatalf("indexes: policy %d, token %d, state %d; want 10, 11, 11", p.ModifyIndex, got.ModifyIndex, st.Index())
	}
	if got.Policies[0].ID != web.ID {
		t.Fatalf("link %+v not resolved to the policy's ID", got.Policies[0])
	}
	// The next entry comes after the ACL index, not the Raft index.
	gen := f.state().acl.gen
	other := testPolicy(t, "other", acl.Rules{Agent: acl.Read})
	if r := applyAt(t, f, 11, aclSet(other)); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	if st := f.state().acl.st; st.Index() != 12 {
		t.Fatalf("acl index %d, want 12", st.Index())
	}
	if f.state().acl.gen == gen {
		t.Fatal("the table's generation did not change with a write")
	}

	before := f.state().acl
	tests := []struct {
		name string
		txn  Txn
		code string
		is   error
	}{
		{"policy in use", Txn{{Type: OpACLPolicyDelete, ACL: &ACLOp{ID: web.ID}}}, "acl_conflict", acl.ErrConflict},
		{"unknown token", Txn{{Type: OpACLTokenDelete, ACL: &ACLOp{ID: "00000000-0000-4000-8000-000000000009"}}}, "acl_missing", acl.ErrNotFound},
		{"stale cas", Txn{{Type: OpACLPolicySet, ACL: &ACLOp{Policy: web, CAS: 3}}}, "acl_conflict", ErrCASConflict},
		{"client bootstrap", Txn{{Type: OpACLBootstrap, ACL: &ACLOp{Token: tok}}}, "acl_invalid", acl.ErrInvalidPolicy},
		{"anonymous delete", Txn{{Type: OpACLTokenDelete, ACL: &ACLOp{ID: acl.AnonymousAccessorID}}}, "acl_conflict", acl.ErrConflict},
	}
	for i, tc := range tests {
		r := applyAt(t, f, uint64(20+i), tc.txn)[0]
		if r.Err == nil || r.Err.Code != tc.code || !errors.Is(r.Err, tc.is) || !definite(r.Err) {
			t.Errorf("%s: %+v, want code %s matching %v, definite", tc.name, r.Err, tc.code, tc.is)
		}
	}
	if f.state().acl != before {
		t.Fatal("refused writes changed the ACL table")
	}
}

func TestValidateACLOps(t *testing.T) {
	web := testPolicy(t, "web", acl.Rules{Agent: acl.Read})
	tok, _ := testToken(t, acl.TypeClient)
	tests := []struct {
		name string
		txn  Txn
		want string
	}{
		{"not alone", Txn{{Type: OpACLPolicySet, ACL: &ACLOp{Policy: web}}, {Type: OpKVSet, KVKey: "a"}}, "alone in its transaction"},
		{"no operand", Txn{{Type: OpACLTokenSet}}, "operand missing"},
		{"no policy", Txn{{Type: OpACLPolicySet, ACL: &ACLOp{}}}, "policy missing"},
		{"bad policy", Txn{{Type: OpACLPolicySet, ACL: &ACLOp{Policy: &acl.Policy{ID: web.ID, Name: "a b"}}}}, "not allowed"},
		{"no token", Txn{{Type: OpACLBootstrap, ACL: &ACLOp{}}}, "token missing"},
		{"no id", Txn{{Type: OpACLTokenDelete, ACL: &ACLOp{}}}, "ID missing"},
	}
	for _, tc := range tests {
		err := validateTxn(tc.txn)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid with %q", tc.name, err, tc.want)
		}
	}
	if err := validateTxn(aclTok(tok)); err != nil {
		t.Fatalf("valid token write: %v", err)
	}
}

// TestACLInSnapshots: Raft snapshots carry the table and a restore loads
// it whole; a damaged table is refused; a reindex moves its index on.
func TestACLInSnapshots(t *testing.T) {
	f := NewFSM()
	web := testPolicy(t, "web", acl.Rules{Service: map[string]acl.Access{"web": acl.Write}})
	tok, secret := testToken(t, acl.TypeClient, acl.PolicyLink{ID: web.ID})
	applyAt(t, f, 5, aclSet(web))
	applyAt(t, f, 6, aclTok(tok))
	b, err := f.state().marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(secret)) {
		t.Fatal("a snapshot holds a token's secret")
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if _, err := g.state().acl.st.TokenBySecret(acl.HashSecret(secret)); err != nil {
		t.Fatalf("token after restore: %v", err)
	}
	if g.state().acl.st.Index() != 6 {
		t.Fatalf("restored index %d, want 6", g.state().acl.st.Index())
	}
	// A reindex entry moves the ACL index on, as it does the others.
	applyAt(t, g, 50, Txn{{Type: opReindex}})
	if idx := g.state().acl.st.Index(); idx != 50 {
		t.Fatalf("acl index after reindex %d, want 50", idx)
	}
	// A state from before ACLs has the builtins only.
	old, err := decodeState(strings.NewReader(`{"version":1,"policy_index":1,"kv_index":1,"docs":[],"kv":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.acl.st.Token(acl.AnonymousAccessorID); err != nil {
		t.Fatalf("state without acl: %v", err)
	}
	// Damaged tables are refused before anything is replaced.
	for name, body := range map[string]string{
		"bootstrap after index": `{"version":1,"docs":[],"kv":[],"acl":{"index":1,"bootstrap_index":5,"tokens":[],"policies":[]}}`,
		"bad policy":            `{"version":1,"docs":[],"kv":[],"acl":{"index":1,"tokens":[],"policies":[{"id":"x","name":"p","rules":{}}]}}`,
		"not an object":         `{"version":1,"docs":[],"kv":[],"acl":[1,2]}`,
	} {
		if _, err := decodeState(strings.NewReader(body)); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v, want ErrBadSnapshot", name, err)
		}
	}
}

// TestRestoreACLFloor: the state a restore installs keeps the current
// bootstrap index and ACL index when the backup's are older, and other
// fields pass through.
func TestRestoreACLFloor(t *testing.T) {
	f := NewFSM()
	backup, err := f.state().marshal() // before any bootstrap
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := testToken(t, acl.TypeManagement)
	if r := applyAt(t, f, 40, Txn{{Type: OpACLBootstrap, ACL: &ACLOp{Token: boot}}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	cur := f.state().acl.st
	out, err := restoreACLFloor(backup, cur)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := decodeState(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if ns.acl.st.BootstrapIndex() != 40 || ns.acl.st.Index() != 40 {
		t.Fatalf("restored: bootstrap index %d, index %d; want 40, 40", ns.acl.st.BootstrapIndex(), ns.acl.st.Index())
	}
	if _, err := ns.acl.st.Token(boot.AccessorID); err == nil {
		t.Fatal("the restore kept a token the backup does not hold")
	}
	if err := ns.acl.st.CheckBootstrap(0); !errors.Is(err, acl.ErrBootstrapDone) {
		t.Fatalf("bootstrap after the restore: %v, want ErrBootstrapDone", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(out, &fields); err != nil || string(fields["version"]) != "1" {
		t.Fatalf("other fields: %v %s", err, fields["version"])
	}
	// A newer backup is installed as it is.
	newer, _ := f.state().marshal()
	if same, err := restoreACLFloor(newer, acl.NewState()); err != nil || !bytes.Equal(same, newer) {
		t.Fatalf("a backup newer than the state was rewritten: %v", err)
	}
	if _, err := restoreACLFloor([]byte("{"), cur); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("damaged backup: %v", err)
	}
}

// BenchmarkFSMApplyACL measures one token write on a state machine that
// holds n tokens: the copy-on-write of the ACL table (State.Clone) is what
// grows with n.
func BenchmarkFSMApplyACL(b *testing.B) {
	for _, n := range []int{100, 10_000, 90_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			f := NewFSM()
			st := acl.NewState()
			now := time.Now()
			for i := range n {
				tok, _, err := acl.NewToken(acl.TokenSpec{}, now)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := st.SetToken(tok, 0, uint64(i+1)); err != nil {
					b.Fatal(err)
				}
			}
			s := f.state().derive(true)
			s.acl = newACLTable(st)
			f.publish(s)
			toks := make([]Txn, b.N)
			for i := range toks {
				tok, _, _ := acl.NewToken(acl.TokenSpec{}, now)
				toks[i] = aclTok(tok)
			}
			base := uint64(n + 10)
			b.ResetTimer()
			for i := range b.N {
				data, _ := encodeEntry([]Txn{toks[i]})
				r := f.ApplyBatch([]*raft.Log{{Index: base + uint64(i), Type: raft.LogCommand, Data: data}})[0].([]TxnResult)
				if r[0].Err != nil {
					b.Fatal(r[0].Err)
				}
			}
		})
	}
}
