package raftstore

import (
	"fmt"

	"github.com/google/btree"
)

// The state machine remembers the answer to every write that carried an
// idempotency key (an opWriteID), so that a write retried with the same
// key (after a timeout, or a lost leader) is answered with its first result
// instead of being applied twice. A retried compare-and-set whose first
// attempt applied thus gets its success, not a conflict.
//
// Every server must decide the same way, so retention is counted in
// writes, never in time: the table keeps the last maxDedupRecords keyed
// writes in log order and forgets the oldest beyond that. It is part of the
// state, so Raft snapshots and backups carry it. Changing the bound changes
// what the state machine does: it is a constant, not a setting, so that
// servers of one version always agree. A full table holds about 10 MiB
// (BenchmarkFSMApplyKeyed); at the 17,000 writes/s a leader sustains in
// bench/raft it covers about 4 s of writes, at everyday rates hours.
var maxDedupRecords = 1 << 16

// dedupRecord is the first answer to one keyed write.
type dedupRecord struct {
	Key string `json:"key"`
	// Sum is the digest of the write's operations: the same key with
	// other operations is refused.
	Sum string `json:"sum"`
	// Seq orders the records by the time they were applied (log order).
	Seq uint64 `json:"seq"`
	// Index and Err are the answer: the index the write was applied at, or
	// why it was refused.
	Index uint64       `json:"index,omitempty"`
	Err   *RemoteError `json:"err,omitempty"`
}

func (r *dedupRecord) result() TxnResult { return TxnResult{Index: r.Index, Err: r.Err} }

// dedupTable is the table inside an fsmState. It is never changed once
// published: each batch of log entries changes a lazy copy-on-write clone
// (google/btree), which costs a few node copies per batch, not per record.
type dedupTable struct {
	byKey *btree.BTreeG[*dedupRecord] // ordered by Key
	bySeq *btree.BTreeG[*dedupRecord] // ordered by Seq: oldest first
	seq   uint64                      // the last seq given out
}

func emptyDedup() dedupTable {
	return dedupTable{
		byKey: btree.NewG(32, func(a, b *dedupRecord) bool { return a.Key < b.Key }),
		bySeq: btree.NewG(32, func(a, b *dedupRecord) bool { return a.Seq < b.Seq }),
	}
}

// dedupTxn changes a table: the writes of one batch of log entries. Only
// the state machine's apply goroutine uses it.
type dedupTxn struct {
	base    dedupTable
	next    dedupTable // clones of base, made at the first change
	changed bool
}

func (d dedupTable) txn() *dedupTxn { return &dedupTxn{base: d, next: d} }

// lookup returns the answer to an earlier write under id's key: its
// result, or ErrInvalid when that write had other operations. ok is false
// when the key is unknown.
func (t *dedupTxn) lookup(id *Op) (TxnResult, bool) {
	r, ok := t.next.byKey.Get(&dedupRecord{Key: id.ID})
	if !ok {
		return TxnResult{}, false
	}
	if r.Sum != id.Sum {
		err := fmt.Errorf("%w: idempotency key %q was used for a different write (first answered at index %d); use a new key for a new write", ErrInvalid, id.ID, r.Index)
		return TxnResult{Err: &RemoteError{Code: errCode(err), Message: err.Error()}}, true
	}
	return r.result(), true
}

// record remembers res as the answer to the write id names, and forgets the
// oldest records beyond maxDedupRecords.
func (t *dedupTxn) record(id *Op, res TxnResult) {
	t.insert(&dedupRecord{Key: id.ID, Sum: id.Sum, Seq: t.next.seq + 1, Index: res.Index, Err: res.Err})
	for t.next.byKey.Len() > maxDedupRecords {
		oldest, ok := t.next.bySeq.DeleteMin()
		if !ok {
			break
		}
		t.next.byKey.Delete(oldest)
	}
}

func (t *dedupTxn) insert(r *dedupRecord) {
	if !t.changed {
		t.next = dedupTable{byKey: t.base.byKey.Clone(), bySeq: t.base.bySeq.Clone(), seq: t.base.seq}
		t.changed = true
	}
	if old, ok := t.next.byKey.ReplaceOrInsert(r); ok {
		t.next.bySeq.Delete(old)
	}
	t.next.bySeq.ReplaceOrInsert(r)
	t.next.seq = max(t.next.seq, r.Seq)
}

func (t *dedupTxn) commit() dedupTable { return t.next }

// records lists the table oldest first, for snapshots.
func (d dedupTable) records() []dedupRecord {
	out := make([]dedupRecord, 0, d.byKey.Len())
	d.bySeq.Ascend(func(r *dedupRecord) bool {
		out = append(out, *r)
		return true
	})
	return out
}

// dedupFromRecords rebuilds a table from a snapshot, checking each record.
func dedupFromRecords(seq uint64, recs []dedupRecord) (dedupTable, error) {
	t := emptyDedup().txn()
	for i := range recs {
		r := recs[i]
		if err := ValidateIdempotencyKey(r.Key); err != nil {
			return dedupTable{}, fmt.Errorf("%w: dedup record %d: %v", ErrBadSnapshot, i, err)
		}
		if r.Seq == 0 || r.Seq > seq {
			return dedupTable{}, fmt.Errorf("%w: dedup record %q: seq %d is outside 1..%d", ErrBadSnapshot, r.Key, r.Seq, seq)
		}
		if _, dup := t.next.byKey.Get(&r); dup {
			return dedupTable{}, fmt.Errorf("%w: dedup record %q appears twice", ErrBadSnapshot, r.Key)
		}
		t.insert(&r)
	}
	t.next.seq = seq
	return t.commit(), nil
}
