package boltlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func entry(i uint64) *raft.Log {
	return &raft.Log{
		Index:      i,
		Term:       i/10 + 1,
		Type:       raft.LogCommand,
		Data:       []byte(fmt.Sprintf("data-%d", i)),
		Extensions: []byte{byte(i)},
		AppendedAt: time.Unix(1700000000, int64(i)).UTC(),
	}
}

func storeRange(t *testing.T, s *Store, lo, hi uint64) {
	t.Helper()
	var batch []*raft.Log
	for i := lo; i <= hi; i++ {
		batch = append(batch, entry(i))
	}
	if err := s.StoreLogs(batch); err != nil {
		t.Fatalf("store %d-%d: %v", lo, hi, err)
	}
}

func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && bytes.Equal(a.Data, b.Data) &&
		bytes.Equal(a.Extensions, b.Extensions) && a.AppendedAt.Equal(b.AppendedAt)
}

// checkLog asserts the store holds exactly lo..hi (0, 0: empty), each entry
// as written.
func checkLog(t *testing.T, s *Store, lo, hi uint64) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first != lo || last != hi {
		t.Fatalf("first, last = %d, %d; want %d, %d", first, last, lo, hi)
	}
	for i := max(lo, 1) - 1; i <= hi+1; i++ {
		var l raft.Log
		err := s.GetLog(i, &l)
		in := lo != 0 && i >= lo && i <= hi
		switch {
		case in && err != nil:
			t.Fatalf("get %d: %v", i, err)
		case in && !sameLog(&l, entry(i)):
			t.Fatalf("get %d: got %+v, want %+v", i, l, *entry(i))
		case !in && !errors.Is(err, raft.ErrLogNotFound):
			t.Fatalf("get %d outside %d-%d: err = %v, want raft.ErrLogNotFound", i, lo, hi, err)
		}
	}
}

func TestLogStore(t *testing.T) {
	s, _ := openTemp(t)
	checkLog(t, s, 0, 0)

	storeRange(t, s, 1, 10)
	if err := s.StoreLog(entry(11)); err != nil {
		t.Fatal(err)
	}
	checkLog(t, s, 1, 11)

	// Raft deletes a prefix after a snapshot...
	if err := s.DeleteRange(1, 4); err != nil {
		t.Fatal(err)
	}
	checkLog(t, s, 5, 11)
	// ...and a suffix when the leader's log conflicts with ours.
	if err := s.DeleteRange(9, 11); err != nil {
		t.Fatal(err)
	}
	checkLog(t, s, 5, 8)
	// A suffix rewritten with other terms replaces what was there.
	conflicting := entry(9)
	conflicting.Term = 99
	if err := s.StoreLogs([]*raft.Log{conflicting}); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := s.GetLog(9, &got); err != nil || got.Term != 99 {
		t.Fatalf("get 9 after rewrite: %+v, %v; want term 99", got, err)
	}
	// An empty range and a range beyond the log change nothing.
	for _, r := range [][2]uint64{{7, 6}, {100, 200}} {
		if err := s.DeleteRange(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(9, 9); err != nil {
		t.Fatal(err)
	}
	checkLog(t, s, 5, 8)
	// Deleting everything leaves an empty log that takes any next index
	// (as after a snapshot restore).
	if err := s.DeleteRange(0, 1<<63); err != nil {
		t.Fatal(err)
	}
	checkLog(t, s, 0, 0)
	storeRange(t, s, 500, 510)
	checkLog(t, s, 500, 510)
}

// TestDeleteRangeManyPages deletes ranges that span many bolt pages: a
// delete under a moving cursor must not skip keys.
func TestDeleteRangeManyPages(t *testing.T) {
	s, _ := openTemp(t)
	for lo := uint64(1); lo <= 20000; lo += 1000 {
		storeRange(t, s, lo, lo+999)
	}
	if err := s.DeleteRange(1, 12345); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(17001, 20000); err != nil {
		t.Fatal(err)
	}
	checkLog(t, s, 12346, 17000)
}

func TestStableStore(t *testing.T) {
	s, _ := openTemp(t)
	// Raft reads its term and vote before any is set and tells a fresh
	// server by the text "not found".
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != 0 || err == nil || err.Error() != "not found" {
		t.Fatalf("GetUint64 of a missing key = %d, %v; want 0, \"not found\"", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); v != nil || err == nil || err.Error() != "not found" {
		t.Fatalf("Get of a missing key = %q, %v; want nil, \"not found\"", v, err)
	}
	if !raftSeesFresh(t, s) {
		t.Fatal("raft.HasExistingState on an empty store: true")
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("s2")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != 42 || err != nil {
		t.Fatalf("GetUint64 = %d, %v; want 42", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); string(v) != "s2" || err != nil {
		t.Fatalf("Get = %q, %v; want s2", v, err)
	}
	if raftSeesFresh(t, s) {
		t.Fatal("raft.HasExistingState with a term: false")
	}
	// A value that is not 8 bytes is not a number.
	if _, err := s.GetUint64([]byte("LastVoteCand")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of a 2-byte value: %v, want ErrCorrupt", err)
	}
}

func raftSeesFresh(t *testing.T, s *Store) bool {
	t.Helper()
	has, err := raft.HasExistingState(s, s, raft.NewInmemSnapshotStore())
	if err != nil {
		t.Fatalf("HasExistingState: %v", err)
	}
	return !has
}

func TestReopenKeepsEverything(t *testing.T) {
	s, path := openTemp(t)
	storeRange(t, s, 1, 300)
	if err := s.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(251, 300); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("LastVoteTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := s.StoreLog(entry(251)); err == nil {
		t.Fatal("store after close: no error")
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	checkLog(t, s2, 101, 250)
	if v, err := s2.GetUint64([]byte("LastVoteTerm")); v != 7 || err != nil {
		t.Fatalf("LastVoteTerm after reopen = %d, %v", v, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	_, path := openTemp(t)
	_, err := Open(path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open of a held file: %v, want ErrLocked", err)
	}
}

func TestRaftOnTheStore(t *testing.T) {
	// A single-server Raft bootstraps, commits and restarts on the store.
	dir := t.TempDir()
	path := filepath.Join(dir, "raft.db")
	start := func() (*raft.Raft, *Store) {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		conf := raft.DefaultConfig()
		conf.LocalID = "a"
		conf.HeartbeatTimeout = 50 * time.Millisecond
		conf.ElectionTimeout = 50 * time.Millisecond
		conf.LeaderLeaseTimeout = 50 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.LogLevel = "ERROR"
		_, trans := raft.NewInmemTransport("a")
		r, err := raft.NewRaft(conf, &countFSM{}, s, s, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		return r, s
	}
	r, s := start()
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "a", Address: "a"}}}).Error(); err != nil {
		t.Fatal(err)
	}
	<-r.LeaderCh()
	for i := 0; i < 20; i++ {
		if err := r.Apply([]byte("x"), time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	last := r.LastIndex()
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	r, s = start()
	defer func() { r.Shutdown().Error(); s.Close() }()
	if got := r.LastIndex(); got != last {
		t.Fatalf("last index after restart = %d, want %d", got, last)
	}
	<-r.LeaderCh()
	if err := r.Apply([]byte("y"), time.Second).Error(); err != nil {
		t.Fatal(err)
	}
}

type countFSM struct{ n int }

func (f *countFSM) Apply(*raft.Log) any                 { f.n++; return nil }
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (f *countFSM) Restore(r io.ReadCloser) error       { return r.Close() }
