package raftstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	iradix "github.com/hashicorp/go-immutable-radix"
	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/policy"
)

// KVEntry is one key of the internal namespace.
type KVEntry struct {
	Key         string `json:"key"`
	Value       []byte `json:"value"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// fsmState is the whole replicated state at one point. It is immutable;
// every applied batch makes a new one that shares structure with the old.
type fsmState struct {
	policyIndex uint64       // Raft index of the last policy change
	kvIndex     uint64       // Raft index of the last KV change
	docs        *iradix.Tree // "Kind/lowercase-name" -> *policy.Entry
	kv          *iradix.Tree // key -> *KVEntry
	dedup       dedupTable   // answers to keyed writes (dedup.go)
	acl         *aclTable    // ACL tokens and policies (acl_fsm.go)
	docBytes    int64        // the documents' total policy.EncodedSize, for the caps

	setOnce sync.Once
	set     *policy.Set

	lineOnce sync.Once
	line     []byte // the policy stream line of this state
}

// streamLine is the JSON line that carries this state's policy on the
// stream, encoded once however many agents watch.
func (s *fsmState) streamLine() []byte {
	s.lineOnce.Do(func() {
		b, err := json.Marshal(streamMsg{Index: s.policyIndex, Set: s.policySet()})
		if err == nil {
			s.line = append(b, '\n')
		}
	})
	return s.line
}

func emptyState() *fsmState {
	return &fsmState{docs: iradix.New(), kv: iradix.New(), dedup: emptyDedup(), acl: emptyACLTable()}
}

// derive returns a copy of s to change, sharing its trees, and its
// materialised policy when the documents stay the same.
func (s *fsmState) derive(sameDocs bool) *fsmState {
	ns := &fsmState{policyIndex: s.policyIndex, kvIndex: s.kvIndex, docs: s.docs, kv: s.kv, dedup: s.dedup, acl: s.acl, docBytes: s.docBytes}
	if sameDocs {
		ns.setOnce.Do(func() { ns.set = s.policySet() })
	}
	return ns
}

func docKey(k policy.Key) []byte {
	n := k.Normal()
	return []byte(string(n.Kind) + "/" + n.Name)
}

// policySet materialises the policy once per state.
func (s *fsmState) policySet() *policy.Set {
	s.setOnce.Do(func() {
		entries := make([]policy.Entry, 0, s.docs.Len())
		s.docs.Root().Walk(func(_ []byte, v any) bool {
			entries = append(entries, *v.(*policy.Entry))
			return false
		})
		s.set = policy.NewSet(s.policyIndex, entries)
	})
	return s.set
}

func (s *fsmState) kvGet(key string) (*KVEntry, bool) {
	v, ok := s.kv.Get([]byte(key))
	if !ok {
		return nil, false
	}
	return v.(*KVEntry), true
}

// kvList returns the keys under prefix that hidden (when not nil) does not
// hide.
func (s *fsmState) kvList(prefix string, hidden func(string) bool) []KVEntry {
	var out []KVEntry
	s.kv.Root().WalkPrefix([]byte(prefix), func(k []byte, v any) bool {
		if hidden == nil || !hidden(string(k)) {
			out = append(out, *v.(*KVEntry))
		}
		return false
	})
	return out
}

// FSM is the Raft state machine: policy documents and the KV namespace. Its
// reads are lock-free (an atomic pointer to an immutable state); Apply,
// ApplyBatch and Restore are called by Raft from one goroutine.
type FSM struct {
	cur atomic.Pointer[fsmState]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change

	// needReindex is set when a restore moved an index backwards; the
	// leader then commits a reindex entry.
	needReindex atomic.Bool

	onApply func(kind map[policy.Kind]int) // metrics hook, may be nil
}

// NewFSM returns an empty state machine.
func NewFSM() *FSM {
	f := &FSM{changed: make(chan struct{})}
	f.cur.Store(emptyState())
	return f
}

func (f *FSM) state() *fsmState { return f.cur.Load() }

// watch returns the current state and a channel closed on the next change.
func (f *FSM) watch() (*fsmState, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur.Load(), f.changed
}

func (f *FSM) publish(s *fsmState) {
	f.mu.Lock()
	f.cur.Store(s)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	if f.onApply != nil {
		f.onApply(s.policySet().Counts())
	}
}

// waitState blocks until cond holds for the current state or ctx ends, and
// returns the state current then.
func (f *FSM) waitState(ctx context.Context, cond func(*fsmState) bool) (*fsmState, error) {
	for {
		s, ch := f.watch()
		if cond(s) {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return f.state(), ctx.Err()
		}
	}
}

// Policy returns the current policy set.
func (f *FSM) Policy() *policy.Set { return f.state().policySet() }

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM: it applies the batch to one new
// state and publishes it once. Each result is a []TxnResult. A transaction
// whose idempotency key was applied before gets that first answer and
// changes nothing.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	s := f.state()
	changed := false
	dd := s.dedup.txn()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		txns, err := decodeEntry(l.Data)
		if err != nil {
			// Written by a newer or broken server: refuse, do not panic.
			out[i] = []TxnResult{{Err: &RemoteError{Code: "internal", Message: "undecodable log entry: " + err.Error()}}}
			continue
		}
		res := make([]TxnResult, len(txns))
		for j, txn := range txns {
			id, ops := splitWriteID(txn)
			if id != nil {
				if first, ok := dd.lookup(id); ok {
					res[j] = first
					continue
				}
			}
			ns, err := applyTxn(s, ops, l.Index)
			switch {
			case err != nil:
				res[j] = TxnResult{Err: &RemoteError{Code: errCode(err), Message: err.Error()}}
			default:
				if ns != s {
					s, changed = ns, true
				}
				if len(ops) == 1 && ops[0].Type == opReindex {
					f.needReindex.Store(false)
				}
				res[j] = TxnResult{Index: l.Index}
			}
			if id != nil {
				dd.record(id, res[j])
			}
		}
		out[i] = res
	}
	if dd.changed {
		if !changed {
			s = s.derive(true)
		}
		s.dedup, changed = dd.commit(), true
	}
	if changed {
		f.publish(s)
	}
	return out
}

// applyTxn applies txn at index to s and returns the new state, or s and an
// error when any operation fails (then nothing of txn is applied).
func applyTxn(s *fsmState, txn Txn, index uint64) (*fsmState, error) {
	if op, ok := aclOnly(txn); ok {
		return applyACL(s, op, index)
	}
	dt, kt := s.docs.Txn(), s.kv.Txn()
	var policyChanged, kvChanged, refs, reindex bool
	count, size := int64(s.docs.Len()), s.docBytes // the policy's figures for its caps
	for _, op := range txn {
		switch op.Type {
		case OpPolicySet:
			if op.Doc == nil {
				return s, fmt.Errorf("%w: document missing", ErrInvalid)
			}
			k := docKey(op.Doc.Key())
			var old *policy.Entry
			if v, ok := dt.Get(k); ok {
				old = v.(*policy.Entry)
			}
			if err := checkCAS(op.CAS, old != nil, modIndex(old), op.Doc.Key().String()); err != nil {
				return s, err
			}
			e := &policy.Entry{Document: *op.Doc, CreateIndex: index, ModifyIndex: index}
			size += policy.EncodedSize(op.Doc)
			if old != nil {
				e.CreateIndex = old.CreateIndex
				size -= policy.EncodedSize(&old.Document)
			} else {
				count++
			}
			dt.Insert(k, e)
			policyChanged = true
			refs = refs || op.Doc.Kind == policy.KindRoute
		case OpPolicyDelete:
			if op.Key == nil {
				return s, fmt.Errorf("%w: key missing", ErrInvalid)
			}
			k := docKey(*op.Key)
			v, ok := dt.Get(k)
			if !ok {
				return s, fmt.Errorf("%w: %s", ErrNotFound, op.Key)
			}
			if err := checkCAS(op.CAS, true, v.(*policy.Entry).ModifyIndex, op.Key.String()); err != nil {
				return s, err
			}
			dt.Delete(k)
			count, size = count-1, size-policy.EncodedSize(&v.(*policy.Entry).Document)
			policyChanged = true
			refs = refs || op.Key.Kind == policy.KindSplit
		case OpKVSet:
			var old *KVEntry
			if v, ok := kt.Get([]byte(op.KVKey)); ok {
				old = v.(*KVEntry)
			}
			var oldIdx uint64
			if old != nil {
				oldIdx = old.ModifyIndex
			}
			if err := checkCAS(op.CAS, old != nil, oldIdx, "key "+op.KVKey); err != nil {
				return s, err
			}
			e := &KVEntry{Key: op.KVKey, Value: op.Value, CreateIndex: index, ModifyIndex: index}
			if old != nil {
				e.CreateIndex = old.CreateIndex
			}
			kt.Insert([]byte(op.KVKey), e)
			kvChanged = true
		case OpKVDelete:
			v, ok := kt.Get([]byte(op.KVKey))
			if op.CAS != nil {
				var idx uint64
				if ok {
					idx = v.(*KVEntry).ModifyIndex
				}
				if err := checkCAS(op.CAS, ok, idx, "key "+op.KVKey); err != nil {
					return s, err
				}
			}
			if ok {
				kt.Delete([]byte(op.KVKey))
				kvChanged = true
			}
		case opReindex:
			policyChanged, kvChanged, reindex = true, true, true
		case opWriteID:
			return s, fmt.Errorf("%w: a write id may only start a transaction", ErrInvalid)
		default:
			return s, fmt.Errorf("%w: operation %q is unknown", ErrInvalid, op.Type)
		}
	}
	if policyChanged {
		if err := policy.CheckCaps(int64(s.docs.Len()), s.docBytes, count, size); err != nil {
			return s, err
		}
	}
	if refs {
		var routes []*policy.Document
		dt.Root().WalkPrefix([]byte(string(policy.KindRoute)+"/"), func(_ []byte, v any) bool {
			routes = append(routes, &v.(*policy.Entry).Document)
			return false
		})
		lookup := func(kind policy.Kind, name string) (*policy.Document, bool) {
			v, ok := dt.Get(docKey(policy.Key{Kind: kind, Name: name}))
			if !ok {
				return nil, false
			}
			return &v.(*policy.Entry).Document, true
		}
		if err := policy.CheckReferences(routes, lookup); err != nil {
			return s, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if !policyChanged && !kvChanged {
		return s, nil
	}
	ns := s.derive(!policyChanged)
	if policyChanged {
		ns.docs, ns.policyIndex, ns.docBytes = dt.Commit(), index, size
	}
	if kvChanged {
		ns.kv, ns.kvIndex = kt.Commit(), index
	}
	if reindex {
		ns.acl = s.acl.touched(index)
	}
	return ns, nil
}

func modIndex(e *policy.Entry) uint64 {
	if e == nil {
		return 0
	}
	return e.ModifyIndex
}

func checkCAS(cas *uint64, exists bool, cur uint64, what string) error {
	if cas == nil {
		return nil
	}
	switch {
	case *cas == 0 && exists:
		return fmt.Errorf("%w: %s already exists (modify index %d), cas=0 requires it not to", ErrCASConflict, what, cur)
	case *cas != 0 && !exists:
		return fmt.Errorf("%w: %s does not exist, cas=%d requires modify index %d", ErrCASConflict, what, *cas, *cas)
	case *cas != 0 && cur != *cas:
		return fmt.Errorf("%w: %s is at modify index %d, not %d", ErrCASConflict, what, cur, *cas)
	}
	return nil
}

// snapshotData is the serialised state, in FSM snapshots and backups.
// Dedup and DedupSeq came later within version 1: a state without them
// has no remembered writes.
type snapshotData struct {
	Version     int            `json:"version"`
	PolicyIndex uint64         `json:"policy_index"`
	KVIndex     uint64         `json:"kv_index"`
	Docs        []policy.Entry `json:"docs"`
	KV          []KVEntry      `json:"kv"`
	// Dedup holds the answers to the last keyed writes, oldest first.
	DedupSeq uint64        `json:"dedup_seq,omitempty"`
	Dedup    []dedupRecord `json:"dedup,omitempty"`
	// ACL is the ACL state (acl_fsm.go); absent in states from before it.
	ACL *acl.Dump `json:"acl,omitempty"`
}

func (s *fsmState) marshal() ([]byte, error) {
	d := snapshotData{Version: 1, PolicyIndex: s.policyIndex, KVIndex: s.kvIndex,
		Docs: s.policySet().Entries(), KV: s.kvList("", nil),
		DedupSeq: s.dedup.seq, Dedup: s.dedup.records(), ACL: s.acl.dump()}
	return json.Marshal(d)
}

// decodeState reads a serialised state and checks it, so that a damaged
// snapshot is refused before Raft is asked to install it.
func decodeState(r io.Reader) (*fsmState, error) {
	var d snapshotData
	dec := json.NewDecoder(r)
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if d.Version != 1 {
		return nil, fmt.Errorf("%w: state version %d is unknown", ErrBadSnapshot, d.Version)
	}
	dt, kt := iradix.New().Txn(), iradix.New().Txn()
	var docBytes int64
	for i := range d.Docs {
		e := d.Docs[i]
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%w: document %s: %v", ErrBadSnapshot, e.Key(), err)
		}
		// A later entry of the same key replaces an earlier one.
		if old, ok := dt.Insert(docKey(e.Key()), &e); ok {
			docBytes -= policy.EncodedSize(&old.(*policy.Entry).Document)
		}
		docBytes += policy.EncodedSize(&e.Document)
	}
	for i := range d.KV {
		e := d.KV[i]
		if err := validKVKey(e.Key); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		kt.Insert([]byte(e.Key), &e)
	}
	dedup, err := dedupFromRecords(d.DedupSeq, d.Dedup)
	if err != nil {
		return nil, err
	}
	aclT, err := loadACLTable(d.ACL)
	if err != nil {
		return nil, err
	}
	return &fsmState{policyIndex: d.PolicyIndex, kvIndex: d.KVIndex, docs: dt.Commit(), kv: kt.Commit(), dedup: dedup, acl: aclT, docBytes: docBytes}, nil
}

// Snapshot implements raft.FSM. It only captures the immutable state.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) { return &fsmSnapshot{s: f.state()}, nil }

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	ns, err := decodeState(rc)
	if err != nil {
		return err
	}
	old := f.state()
	if ns.policyIndex < old.policyIndex || ns.kvIndex < old.kvIndex || ns.acl.st.Index() < old.acl.st.Index() {
		f.needReindex.Store(true)
	}
	f.publish(ns)
	return nil
}

type fsmSnapshot struct{ s *fsmState }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := s.s.marshal()
	if err == nil {
		_, err = io.Copy(sink, bytes.NewReader(b))
	}
	if err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

var errTimeout = errors.New("timed out")
