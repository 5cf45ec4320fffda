package raftstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/raftstore/boltlog"
	"github.com/meshwork/meshwork/raftstore/walmigrate"
)

// LogOpener opens the Raft log and stable store in dir (<data_dir>/raft,
// which exists); closing the Closer closes both.
type LogOpener func(dir string, log *slog.Logger) (raft.LogStore, raft.StableStore, io.Closer, error)

// Names under <data_dir>/raft.
const (
	logFile   = "raft.db" // boltlog: the Raft log and stable store
	oldWALDir = "wal"     // raft-wal, before boltlog; migrated on start
)

// OpenLog is the default LogOpener: it opens the boltlog store in dir
// (raft.db), first migrating the raft-wal directory an earlier release
// left there.
func OpenLog(dir string, log *slog.Logger) (raft.LogStore, raft.StableStore, io.Closer, error) {
	walDir, dbPath := filepath.Join(dir, oldWALDir), filepath.Join(dir, logFile)
	if _, err := walmigrate.Migrate(walDir, dbPath, log.With("module", "walmigrate")); err != nil {
		if errors.Is(err, walmigrate.ErrUnreadable) {
			err = fmt.Errorf("%w. Nothing was changed. Restore %s from a backup, or, while the other servers keep a quorum, "+
				"move %s aside: this server then starts empty and copies the state from the leader", err, walDir, dir)
		}
		return nil, nil, nil, err
	}
	s, err := boltlog.Open(dbPath)
	if err != nil {
		return nil, nil, nil, err
	}
	return s, s, s, nil
}

// storeGate stands between Raft and its stores so that close can shut
// them safely even when Raft did not stop in time: once shut, a new call
// is parked for good (a Raft that outlived its shutdown neither writes to
// a closed file nor panics on the error it would get), and the stores are
// closed once the calls in progress have returned.
type storeGate struct {
	logs   raft.LogStore
	stable raft.StableStore
	closer io.Closer

	mu     sync.Mutex
	shut   bool
	active int
	idle   chan struct{} // closed when active reaches 0 after shut
}

func newStoreGate(logs raft.LogStore, stable raft.StableStore, closer io.Closer) *storeGate {
	return &storeGate{logs: logs, stable: stable, closer: closer}
}

func (g *storeGate) enter() {
	g.mu.Lock()
	if g.shut {
		g.mu.Unlock()
		select {} // parked: see storeGate
	}
	g.active++
	g.mu.Unlock()
}

func (g *storeGate) leave() {
	g.mu.Lock()
	g.active--
	if g.shut && g.active == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
	g.mu.Unlock()
}

// close admits no more calls, waits until deadline for those in progress,
// then closes the stores. When calls are still in progress it leaves the
// stores open (they are crash-safe; the process exit releases them) and
// says so.
func (g *storeGate) close(deadline time.Time) error {
	g.mu.Lock()
	if g.shut {
		g.mu.Unlock()
		return nil
	}
	g.shut = true
	idle := make(chan struct{})
	if g.active == 0 {
		close(idle)
	} else {
		g.idle = idle
	}
	g.mu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		return errors.New("a call to the log store did not return (a stalled disk?); the store was left open")
	}
	return g.closer.Close()
}

// logStore is the gated raft.LogStore; monotonicLogStore keeps the
// raft.MonotonicLogStore promise of a store that makes it.
func (g *storeGate) logStore() raft.LogStore {
	l := &gatedLogs{g}
	if m, ok := g.logs.(raft.MonotonicLogStore); ok && m.IsMonotonic() {
		return monotonicLogs{l}
	}
	return l
}

func (g *storeGate) stableStore() raft.StableStore { return &gatedStable{g} }

type gatedLogs struct{ g *storeGate }

type monotonicLogs struct{ *gatedLogs }

func (monotonicLogs) IsMonotonic() bool { return true }

func (l *gatedLogs) FirstIndex() (uint64, error) {
	l.g.enter()
	defer l.g.leave()
	return l.g.logs.FirstIndex()
}

func (l *gatedLogs) LastIndex() (uint64, error) {
	l.g.enter()
	defer l.g.leave()
	return l.g.logs.LastIndex()
}

func (l *gatedLogs) GetLog(index uint64, log *raft.Log) error {
	l.g.enter()
	defer l.g.leave()
	return l.g.logs.GetLog(index, log)
}

func (l *gatedLogs) StoreLog(log *raft.Log) error {
	l.g.enter()
	defer l.g.leave()
	return l.g.logs.StoreLog(log)
}

func (l *gatedLogs) StoreLogs(logs []*raft.Log) error {
	l.g.enter()
	defer l.g.leave()
	return l.g.logs.StoreLogs(logs)
}

func (l *gatedLogs) DeleteRange(min, max uint64) error {
	l.g.enter()
	defer l.g.leave()
	return l.g.logs.DeleteRange(min, max)
}

type gatedStable struct{ g *storeGate }

func (s *gatedStable) Set(key, val []byte) error {
	s.g.enter()
	defer s.g.leave()
	return s.g.stable.Set(key, val)
}

func (s *gatedStable) Get(key []byte) ([]byte, error) {
	s.g.enter()
	defer s.g.leave()
	return s.g.stable.Get(key)
}

func (s *gatedStable) SetUint64(key []byte, val uint64) error {
	s.g.enter()
	defer s.g.leave()
	return s.g.stable.SetUint64(key, val)
}

func (s *gatedStable) GetUint64(key []byte) (uint64, error) {
	s.g.enter()
	defer s.g.leave()
	return s.g.stable.GetUint64(key)
}
