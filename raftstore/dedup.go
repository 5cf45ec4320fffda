package raftstore

import (
	"encoding/binary"
	"fmt"

	iradix "github.com/hashicorp/go-immutable-radix"
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
// servers of one version always agree.
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

// dedupTable is the immutable table inside an fsmState.
type dedupTable struct {
	byKey *iradix.Tree // key -> *dedupRecord
	bySeq *iradix.Tree // big-endian seq -> key, oldest first
	seq   uint64       // the last seq given out
}

func emptyDedup() dedupTable { return dedupTable{byKey: iradix.New(), bySeq: iradix.New()} }

func (d dedupTable) len() int { return d.byKey.Len() }

// dedupTxn changes a table: the writes of one batch of log entries.
type dedupTxn struct {
	byKey, bySeq *iradix.Txn
	n            int // records in byKey
	seq          uint64
	changed      bool
}

func (d dedupTable) txn() *dedupTxn {
	return &dedupTxn{byKey: d.byKey.Txn(), bySeq: d.bySeq.Txn(), n: d.byKey.Len(), seq: d.seq}
}

// lookup returns the answer to an earlier write under id's key: its
// result, or ErrInvalid when that write had other operations. ok is false
// when the key is unknown.
func (t *dedupTxn) lookup(id *Op) (TxnResult, bool) {
	v, ok := t.byKey.Get([]byte(id.ID))
	if !ok {
		return TxnResult{}, false
	}
	r := v.(*dedupRecord)
	if r.Sum != id.Sum {
		err := fmt.Errorf("%w: idempotency key %q was used for a different write (first answered at index %d); use a new key for a new write", ErrInvalid, id.ID, r.Index)
		return TxnResult{Err: &RemoteError{Code: errCode(err), Message: err.Error()}}, true
	}
	return r.result(), true
}

// record remembers res as the answer to the write id names, and forgets the
// oldest records beyond maxDedupRecords.
func (t *dedupTxn) record(id *Op, res TxnResult) {
	t.seq++
	r := &dedupRecord{Key: id.ID, Sum: id.Sum, Seq: t.seq, Index: res.Index, Err: res.Err}
	t.insert(r)
	for t.n > maxDedupRecords {
		k, v, ok := t.bySeq.Root().Minimum()
		if !ok {
			break
		}
		t.bySeq.Delete(k)
		if _, ok := t.byKey.Delete([]byte(v.(string))); ok {
			t.n--
		}
	}
}

func (t *dedupTxn) insert(r *dedupRecord) {
	if old, ok := t.byKey.Insert([]byte(r.Key), r); ok {
		t.bySeq.Delete(seqKey(old.(*dedupRecord).Seq))
	} else {
		t.n++
	}
	t.bySeq.Insert(seqKey(r.Seq), r.Key)
	t.changed = true
}

func (t *dedupTxn) commit() dedupTable {
	return dedupTable{byKey: t.byKey.Commit(), bySeq: t.bySeq.Commit(), seq: t.seq}
}

func seqKey(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

// records lists the table oldest first, for snapshots.
func (d dedupTable) records() []dedupRecord {
	out := make([]dedupRecord, 0, d.byKey.Len())
	d.bySeq.Root().Walk(func(_ []byte, v any) bool {
		if r, ok := d.byKey.Get([]byte(v.(string))); ok {
			out = append(out, *r.(*dedupRecord))
		}
		return false
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
		if _, dup := t.byKey.Get([]byte(r.Key)); dup {
			return dedupTable{}, fmt.Errorf("%w: dedup record %q appears twice", ErrBadSnapshot, r.Key)
		}
		t.insert(&r)
	}
	t.seq = seq
	return t.commit(), nil
}
