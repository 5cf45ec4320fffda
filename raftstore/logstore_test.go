package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	bolt "go.etcd.io/bbolt"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/raftstore/boltlog"
	"github.com/meshwork/meshwork/raftstore/walmigrate"
)

// openRaftWAL opens the log as releases before boltlog did: raft-wal in
// <dir>/wal with its bolt meta store.
func openRaftWAL(dir string, log *slog.Logger) (raft.LogStore, raft.StableStore, io.Closer, error) {
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, nil, nil, err
	}
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(walDir, raftwal.WithMetaStore(meta), raftwal.WithLogger(newHCLog(log)))
	if err != nil {
		meta.Close()
		return nil, nil, nil, err
	}
	return w, w, closerFunc(func() error { w.Close(); return meta.Close() }), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// TestDeposedLeaderClearsSuffixAndRestarts is issue 23, item 1, made
// deterministic: a leader cut off from the others appends writes it cannot
// commit; the others elect a leader and commit other entries at the same
// indexes; on heal the old leader clears its log suffix (the entry at the
// first conflicting index changes); then it restarts from its data dir and
// rejoins with the same policy as the others. With raft-wal as the store
// the restart is where it failed; that run shows raft-wal broken and the
// migration recovering it.
func TestDeposedLeaderClearsSuffixAndRestarts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opener LogOpener
	}{
		{"boltlog", nil},
		{"raft-wal migrated on restart", openRaftWAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := MakeTestCluster(t, 3, TestOptions{LogStore: tc.opener})
			ctx := ctxT(t, 60*time.Second)
			old := c.Leader()
			if _, err := ApplyDoc(ctx, old.Node, "kind: ServiceDefaults\nname: before\nprotocol: http\n"); err != nil {
				t.Fatal(err)
			}
			oi := c.Index(old)
			var others []int
			for i := range c.Servers() {
				if i != oi {
					others = append(others, i)
				}
			}

			c.Partition([]int{oi}, others)
			conflict := old.Node.srv.raft.LastIndex() + 1
			// Writes the old leader appends but cannot commit: straight to
			// its Raft, never forwarded.
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					defer cancel()
					if _, err := old.Node.srv.apply(wctx, Txn{{Type: OpKVSet, KVKey: fmt.Sprintf("lost/%d", w), Value: []byte("x")}}); err == nil {
						t.Errorf("write %d on the cut-off leader was acknowledged", w)
					}
				}()
			}
			testnet.Eventually(t, 10*time.Second, "the cut-off leader to append", testnet.Holds(func() bool { return old.Node.srv.raft.LastIndex() >= conflict }))
			var stale raft.Log
			if err := old.Node.srv.logs.GetLog(conflict, &stale); err != nil {
				t.Fatal(err)
			}

			var newLeader *TestNode
			testnet.Eventually(t, 30*time.Second, "a leader of the majority", testnet.Holds(func() bool {
				for _, i := range others {
					if s := c.Server(i); s.Node.srv.raft.State() == raft.Leader {
						newLeader = s
						return true
					}
				}
				return false
			}))
			want, err := ApplyDoc(ctx, newLeader.Node, "kind: ServiceDefaults\nname: during\nprotocol: grpc\n")
			if err != nil {
				t.Fatal(err)
			}
			if want < conflict {
				t.Fatalf("the majority's log ends at %d, before the conflicting index %d", want, conflict)
			}
			wg.Wait()

			c.Heal()
			var fresh raft.Log
			testnet.Eventually(t, 30*time.Second, "the old leader to replace its suffix", testnet.Holds(func() bool {
				return old.Node.srv.logs.GetLog(conflict, &fresh) == nil && fresh.Term != stale.Term
			}))
			var theirs raft.Log
			if err := newLeader.Node.srv.logs.GetLog(conflict, &theirs); err != nil {
				t.Fatal(err)
			}
			if fresh.Term != theirs.Term || string(fresh.Data) != string(theirs.Data) {
				t.Fatalf("entry %d on the old leader: term %d, want the leader's term %d", conflict, fresh.Term, theirs.Term)
			}

			c.Kill(oi)
			if tc.opener != nil {
				requireRaftWALBroken(t, old.DataDir)
				old.LogStore = nil // the release with boltlog
			}
			c.Restart(oi)
			if _, err := ApplyDoc(ctx, c.Leader().Node, "kind: ServiceDefaults\nname: after\nprotocol: http\n"); err != nil {
				t.Fatal(err)
			}
			requireSamePolicy(t, c)
			if tc.opener != nil {
				if _, err := os.Stat(filepath.Join(old.DataDir, "raft", "wal"+".migrated")); err != nil {
					t.Fatalf("old raft-wal directory not moved aside: %v", err)
				}
			}
			for _, s := range c.Servers() {
				for w := 0; w < 4; w++ {
					if _, ok := s.Node.fsm.state().kvGet(fmt.Sprintf("lost/%d", w)); ok {
						t.Fatalf("%s holds lost/%d, a write that was never committed", s.Name, w)
					}
				}
			}
		})
	}
}

// requireRaftWALBroken shows the bug on the data dir a raft-wal server
// left after clearing its log suffix: raft-wal, reopened, cannot read it.
func requireRaftWALBroken(t *testing.T, dataDir string) {
	t.Helper()
	logs, _, closer, err := openRaftWAL(filepath.Join(dataDir, "raft"), discardLogger())
	if err != nil {
		t.Fatalf("reopen raft-wal: %v", err)
	}
	defer closer.Close()
	first, _ := logs.FirstIndex()
	last, _ := logs.LastIndex()
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil && strings.Contains(err.Error(), "sealed segment has no index block") {
			return
		}
	}
	t.Fatalf("raft-wal reads every entry %d-%d after the suffix was cleared: the bug did not show", first, last)
}

// requireSamePolicy waits until every server has applied the leader's
// last entry and holds the same policy.
func requireSamePolicy(t *testing.T, c *TestCluster) {
	t.Helper()
	leader := c.Leader()
	if err := leader.Node.srv.barrier(); err != nil {
		t.Fatal(err)
	}
	want := leader.Node.fsm.Policy()
	target := leader.Node.srv.raft.AppliedIndex()
	for _, s := range c.Servers() {
		testnet.Eventually(t, 30*time.Second, s.Name+" to apply index "+fmt.Sprint(target), testnet.Holds(func() bool {
			return s.Node.srv.raft.AppliedIndex() >= target
		}))
		if got := s.Node.fsm.Policy(); got.Digest() != want.Digest() || got.Len() != want.Len() {
			t.Fatalf("%s holds %d documents (digest %s), the leader %d (%s)", s.Name, got.Len(), got.Digest(), want.Len(), want.Digest())
		}
	}
}

// TestCloseReturnsWhenPeersAreGone closes a leader with writes in flight
// after its peers were killed, or cut off: close returns, without error.
func TestCloseReturnsWhenPeersAreGone(t *testing.T) {
	for _, peers := range []string{"killed", "unreachable"} {
		t.Run(peers, func(t *testing.T) {
			c := MakeTestCluster(t, 3)
			leader := c.Leader()
			li := c.Index(leader)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ctx.Err() == nil && i < 10000; i++ {
						wctx, wcancel := context.WithTimeout(ctx, time.Second)
						_, _ = leader.Node.srv.apply(wctx, Txn{{Type: OpKVSet, KVKey: fmt.Sprintf("w%d", w), Value: make([]byte, 256)}})
						wcancel()
					}
				}()
			}
			defer func() { cancel(); wg.Wait() }()
			testnet.Eventually(t, 10*time.Second, "writes in flight", testnet.Holds(func() bool { return leader.Node.srv.raft.AppliedIndex() > 50 }))
			for i := range c.Servers() {
				if i == li {
					continue
				}
				if peers == "killed" {
					c.Kill(i)
				} else {
					c.Partition([]int{li})
				}
			}
			requireCloseReturns(t, leader.Node, leader.Config.withDefaults().ShutdownTimeout, false)
		})
	}
}

// requireCloseReturns closes n and waits for Close to return; it fails the
// test when Close is still running well after its own bound, or when its
// error is not the expected one.
func requireCloseReturns(t *testing.T, n *Node, bound time.Duration, wantTimeout bool) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	wait := time.NewTimer(bound + 10*time.Second)
	defer wait.Stop()
	select {
	case err := <-done:
		if wantTimeout != errors.Is(err, ErrCloseTimeout) {
			t.Fatalf("close: %v (want a timeout: %v)", err, wantTimeout)
		}
		if !wantTimeout && err != nil {
			t.Fatalf("close: %v", err)
		}
		return err
	case <-wait.C:
		t.Fatalf("close did not return (its bound is %s)", bound)
	}
	return nil
}

// stallingStore is a log store whose disk stops answering writes once
// stalled: StoreLogs blocks until released.
type stallingStore struct {
	raft.LogStore
	stalled  chan struct{} // closed when stalled
	entered  chan struct{} // closed when a write is blocked
	release  chan struct{}
	once     sync.Once
	stalling sync.Once
}

func (s *stallingStore) StoreLogs(logs []*raft.Log) error {
	select {
	case <-s.stalled:
		s.once.Do(func() { close(s.entered) })
		<-s.release
	default:
	}
	return s.LogStore.StoreLogs(logs)
}

func (s *stallingStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// TestCloseBoundedWhenRaftHangs stalls the disk under a single-server
// leader's write, so that Raft's shutdown cannot finish: close returns
// after ShutdownTimeout with an error that names the stage, and leaves the
// store, still in use, open.
func TestCloseBoundedWhenRaftHangs(t *testing.T) {
	stall := &stallingStore{stalled: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { close(stall.release) })
	opener := func(d string, log *slog.Logger) (raft.LogStore, raft.StableStore, io.Closer, error) {
		logs, stable, closer, err := OpenLog(d, log)
		stall.LogStore = logs
		return stall, stable, closer, err
	}
	n, cfg, err := startSingle(t, t.TempDir(), opener)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, "leadership", testnet.Holds(func() bool { lead, _ := n.Leadership(); return lead }))
	ctx := ctxT(t, 30*time.Second)
	if _, err := n.KVSet(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	close(stall.stalled)
	go func() { _, _ = n.KVSet(ctx, "stuck", []byte("v")) }()
	<-stall.entered
	err = requireCloseReturns(t, n, cfg.ShutdownTimeout, true)
	for _, stage := range []string{"raft shutdown", "log store"} {
		if !strings.Contains(err.Error(), stage) {
			t.Errorf("close error does not name the stage %q: %v", stage, err)
		}
	}
}

// TestOpenLogRefusesUnreadableWAL damages the raft-wal directory of an
// earlier release: the server does not start, says what is wrong and what
// the operator can do, and leaves the directory for another attempt.
func TestOpenLogRefusesUnreadableWAL(t *testing.T) {
	dir := t.TempDir()
	logs, _, closer, err := openRaftWAL(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 20; i++ {
		if err := logs.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	closer.Close()
	meta := filepath.Join(dir, "wal", metadb.FileName)
	if err := os.WriteFile(meta, bytes.Repeat([]byte("damaged "), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = OpenLog(dir, discardLogger())
	if !errors.Is(err, walmigrate.ErrUnreadable) {
		t.Fatalf("open of a damaged raft-wal directory: %v, want walmigrate.ErrUnreadable", err)
	}
	for _, want := range []string{meta, "Nothing was changed", "move " + dir + " aside"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if _, err := os.Stat(meta); err != nil {
		t.Fatalf("damaged directory moved: %v", err)
	}
}

// startSingle starts a one-server cluster on loopback in dir.
func startSingle(t *testing.T, dir string, opener LogOpener) (*Node, Config, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	disc := NewStaticDiscovery()
	disc.Set([]ServerInfo{{ID: "s1", Addr: addr, Status: catalog.StatusAlive, Expect: 1}})
	cfg := Config{NodeName: "s1", DataDir: dir, ClusterKey: make([]byte, 32), Server: true, BootstrapExpect: 1,
		BindAddr: addr, AdvertiseAddr: addr, Timing: FastTiming, ShutdownTimeout: time.Second}
	n, err := New(cfg, Deps{Logger: discardLogger(), Discovery: disc, Listener: ln, LogStore: opener})
	if err != nil {
		ln.Close()
		return nil, cfg, err
	}
	if err := n.Start(context.Background()); err != nil {
		n.Close()
		return nil, cfg, err
	}
	return n, cfg, nil
}

// TestDamagedLogEntryIsAnErrorNotAPanic damages an entry of a stopped
// server's log: Raft would panic reading it at start; the server reports
// it instead.
func TestDamagedLogEntryIsAnErrorNotAPanic(t *testing.T) {
	dir := t.TempDir()
	n, _, err := startSingle(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, "leadership", testnet.Holds(func() bool { lead, _ := n.Leadership(); return lead }))
	if _, err := n.KVSet(ctxT(t, 10*time.Second), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "raft", logFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("logs")).Put([]byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte("damaged"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = startSingle(t, dir, nil)
	// The panic's value comes through as text: raft formats it.
	if err == nil || !strings.Contains(err.Error(), "entry 1") || !strings.Contains(err.Error(), boltlog.ErrCorrupt.Error()) {
		t.Fatalf("start on a damaged log: %v; want an error naming entry 1 as corrupt", err)
	}
}
