package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// keyed returns txn started by the write id of key.
func keyed(t *testing.T, key string, txn Txn) Txn {
	t.Helper()
	out, err := withWriteID(txn, key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kvCreate(key, val string) Txn {
	zero := uint64(0)
	return Txn{{Type: OpKVSet, KVKey: key, Value: []byte(val), CAS: &zero}}
}

// applyAt applies txns as one log entry at index and returns their results.
func applyAt(t *testing.T, f *FSM, index uint64, txns ...Txn) []TxnResult {
	t.Helper()
	data, err := encodeEntry(txns)
	if err != nil {
		t.Fatal(err)
	}
	return f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: data}})[0].([]TxnResult)
}

func TestDedupAnswersFirstResult(t *testing.T) {
	f := NewFSM()
	create := keyed(t, "k1", kvCreate("a", "1"))
	if r := applyAt(t, f, 10, create); r[0].Err != nil || r[0].Index != 10 {
		t.Fatalf("first apply = %+v", r[0])
	}
	// The same write again, later in the log: the first answer, nothing
	// applied (a second cas=0 create would conflict).
	if r := applyAt(t, f, 11, create); r[0].Err != nil || r[0].Index != 10 {
		t.Fatalf("duplicate = %+v, want the first answer (index 10)", r[0])
	}
	if e, _ := f.state().kvGet("a"); e.ModifyIndex != 10 {
		t.Fatalf("key modified at %d, want 10", e.ModifyIndex)
	}
	// A refusal is remembered too.
	conflict := keyed(t, "k2", kvCreate("a", "2"))
	first := applyAt(t, f, 12, conflict)[0]
	if first.Err == nil || first.Err.Code != "cas_conflict" {
		t.Fatalf("conflicting create = %+v", first)
	}
	if again := applyAt(t, f, 13, conflict)[0]; again.Err == nil || *again.Err != *first.Err {
		t.Fatalf("duplicate of a refused write = %+v, want %+v", again, first)
	}
	// The same key with other operations is refused, and changes nothing.
	other := keyed(t, "k1", kvCreate("b", "1"))
	r := applyAt(t, f, 14, other)[0]
	if r.Err == nil || r.Err.Code != "invalid" || !strings.Contains(r.Err.Message, "different write") {
		t.Fatalf("key reused for another write = %+v", r)
	}
	if _, ok := f.state().kvGet("b"); ok {
		t.Fatal("a write under a reused key was applied")
	}
	// Two copies of one write in one entry: the first applies.
	both := applyAt(t, f, 15, keyed(t, "k3", kvCreate("c", "1")), keyed(t, "k3", kvCreate("c", "1")))
	if both[0].Err != nil || both[1].Err != nil || both[0].Index != 15 || both[1].Index != 15 {
		t.Fatalf("two copies in one entry = %+v", both)
	}
	// Writes without a key are never deduplicated.
	set := Txn{{Type: OpKVSet, KVKey: "d", Value: []byte("x")}}
	applyAt(t, f, 16, set)
	if r := applyAt(t, f, 17, set)[0]; r.Index != 17 {
		t.Fatalf("unkeyed write = %+v, want applied at 17", r)
	}
}

// TestDedupRetentionIsByCount checks that the table forgets the oldest
// writes beyond its bound, in log order, the same way on every replica.
func TestDedupRetentionIsByCount(t *testing.T) {
	old := maxDedupRecords
	maxDedupRecords = 3
	t.Cleanup(func() { maxDedupRecords = old })
	replicas := []*FSM{NewFSM(), NewFSM()}
	for _, f := range replicas {
		for i := 1; i <= 5; i++ {
			applyAt(t, f, uint64(i), keyed(t, fmt.Sprintf("k%d", i), kvCreate(fmt.Sprintf("key%d", i), "v")))
		}
	}
	for _, f := range replicas {
		var keys []string
		for _, r := range f.state().dedup.records() {
			keys = append(keys, r.Key)
		}
		if got := strings.Join(keys, ","); got != "k3,k4,k5" {
			t.Fatalf("remembered %s, want k3,k4,k5", got)
		}
	}
	// A forgotten key is a new write again: cas=0 on an existing key conflicts.
	r := applyAt(t, replicas[0], 6, keyed(t, "k1", kvCreate("key1", "v")))[0]
	if r.Err == nil || r.Err.Code != "cas_conflict" {
		t.Fatalf("forgotten key = %+v, want a conflict", r)
	}
}

// TestDedupInSnapshots checks that Raft snapshots carry the table, and that
// damaged records are refused.
func TestDedupInSnapshots(t *testing.T) {
	f := NewFSM()
	create := keyed(t, "k1", kvCreate("a", "1"))
	applyAt(t, f, 7, create)
	b, err := f.state().marshal()
	if err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if r := applyAt(t, g, 9, create)[0]; r.Err != nil || r.Index != 7 {
		t.Fatalf("duplicate after a restore = %+v, want the first answer (index 7)", r)
	}
	// Older snapshots have no table.
	if _, err := decodeState(strings.NewReader(`{"version":1,"policy_index":1,"kv_index":1,"docs":[],"kv":[]}`)); err != nil {
		t.Fatalf("snapshot without a table: %v", err)
	}
	for name, body := range map[string]string{
		"empty key":   `{"version":1,"docs":[],"kv":[],"dedup_seq":1,"dedup":[{"key":"","sum":"x","seq":1}]}`,
		"seq too big": `{"version":1,"docs":[],"kv":[],"dedup_seq":1,"dedup":[{"key":"a","sum":"x","seq":2}]}`,
		"twice":       `{"version":1,"docs":[],"kv":[],"dedup_seq":2,"dedup":[{"key":"a","sum":"x","seq":1},{"key":"a","sum":"x","seq":2}]}`,
	} {
		if _, err := decodeState(strings.NewReader(body)); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: decode = %v, want ErrBadSnapshot", name, err)
		}
	}
}

func TestValidateWriteID(t *testing.T) {
	tests := []struct {
		name string
		txn  Txn
		want string
	}{
		{"key too long", Txn{{Type: opWriteID, ID: strings.Repeat("k", MaxIdempotencyKey+1), Sum: strings.Repeat("0", sumLen)}, kvCreate("a", "1")[0]}, "idempotency key must be 1 to 128"},
		{"space in key", Txn{{Type: opWriteID, ID: "a b", Sum: strings.Repeat("0", sumLen)}, kvCreate("a", "1")[0]}, "printable ASCII"},
		{"bad digest", Txn{{Type: opWriteID, ID: "k", Sum: "xyz"}, kvCreate("a", "1")[0]}, "digest"},
		{"id alone", Txn{{Type: opWriteID, ID: "k", Sum: strings.Repeat("0", sumLen)}}, "empty transaction"},
		{"id not first", Txn{kvCreate("a", "1")[0], {Type: opWriteID, ID: "k", Sum: strings.Repeat("0", sumLen)}}, `type "write.id" is unknown`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateTxn(tc.txn)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

// TestDedupAcrossServerRestoreAndBackup checks the key semantics on a real
// cluster: a write retried after every server restarted from a snapshot
// gets its first answer, and so does one in a backup restored later; a
// write made after the backup was taken is not in the restored table, nor
// in the restored state, so its retry applies it again.
func TestDedupAcrossServerRestoreAndBackup(t *testing.T) {
	c := MakeTestCluster(t, 3)
	client := c.AddClient("client")
	ctx := ctxT(t, 90*time.Second)
	kctx := WithIdempotencyKey(ctx, "before-backup")
	first, err := client.Node.KVCAS(kctx, "token", []byte("v"), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Every server snapshots (the write is then only in the snapshots'
	// tables, not in the logs they replay), and all restart.
	for _, s := range c.Servers() {
		if err := s.Node.srv.raft.Snapshot().Error(); err != nil {
			t.Fatalf("snapshot on %s: %v", s.Name, err)
		}
	}
	for i := range c.Servers() {
		c.Kill(i)
	}
	for i := range c.Servers() {
		c.Restart(i)
	}
	c.Leader()
	if idx, err := client.Node.KVCAS(kctx, "token", []byte("v"), 0); err != nil || idx != first {
		t.Fatalf("retry after the restart = %d, %v; want %d", idx, err, first)
	}

	var backup bytes.Buffer
	if err := client.Node.SaveSnapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	actx := WithIdempotencyKey(ctx, "after-backup")
	after, err := client.Node.KVCAS(actx, "later", []byte("v"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Node.RestoreSnapshot(ctx, bytes.NewReader(backup.Bytes())); err != nil {
		t.Fatal(err)
	}
	if idx, err := client.Node.KVCAS(kctx, "token", []byte("v"), 0); err != nil || idx != first {
		t.Fatalf("retry of a write in the backup = %d, %v; want %d", idx, err, first)
	}
	again, err := client.Node.KVCAS(actx, "later", []byte("v"), 0)
	if err != nil || again <= after {
		t.Fatalf("retry of a write the restore undid = %d, %v; want it applied again after %d", again, err, after)
	}
}

func TestApplyRefusesBadKey(t *testing.T) {
	c := MakeTestCluster(t, 1)
	ctx := WithIdempotencyKey(context.Background(), "has space")
	if _, err := c.Leader().Node.KVSet(ctx, "a", []byte("x")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("write with a bad key = %v, want ErrInvalid", err)
	}
}

// BenchmarkFSMApplyKeyed measures what remembering answers costs the state
// machine: unkeyed writes against keyed ones, one write per log entry and
// 64 (a leader under load groups writes), with the table full (every keyed
// write then also forgets the oldest record). Each op is one write. It
// reports the heap a full table holds.
func BenchmarkFSMApplyKeyed(b *testing.B) {
	for _, perEntry := range []int{1, 64} {
		for _, withKey := range []bool{false, true} {
			name := fmt.Sprintf("unkeyed/per-entry=%d", perEntry)
			if withKey {
				name = fmt.Sprintf("keyed/per-entry=%d", perEntry)
			}
			b.Run(name, func(b *testing.B) {
				benchApply(b, withKey, perEntry)
			})
		}
	}
}

func benchApply(b *testing.B, withKey bool, perEntry int) {
	f := NewFSM()
	next := 0
	entry := func() []byte {
		txns := make([]Txn, perEntry)
		for j := range txns {
			next++
			txns[j] = Txn{{Type: OpKVSet, KVKey: fmt.Sprintf("bench/%d", next%1000), Value: []byte("value")}}
			if withKey {
				txns[j], _ = withWriteID(txns[j], NewIdempotencyKey())
			}
		}
		data, _ := encodeEntry(txns)
		return data
	}
	var index uint64
	apply := func(data []byte) {
		index++
		f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: data}})
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < maxDedupRecords/perEntry; i++ {
		apply(entry())
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	datas := make([][]byte, b.N/perEntry+1) // each write once: no duplicates
	for i := range datas {
		datas[i] = entry()
	}
	b.ResetTimer()
	for _, d := range datas[:b.N/perEntry] {
		apply(d)
	}
	b.StopTimer()
	b.ReportMetric(heap, "MiB-held-after-65536-writes")
}
