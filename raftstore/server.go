package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// server is the Raft peer of a server agent.
type server struct {
	cfg  Config
	log  *slog.Logger
	m    *metrics
	fsm  *FSM
	disc Discovery
	rpc  *RPCClient

	raft    *raft.Raft
	trans   raft.Transport
	logs    raft.LogStore
	stable  raft.StableStore
	gate    *storeGate // between Raft and logs, stable
	snaps   raft.SnapshotStore
	batcher *batcher
	dir     string

	// restoreGate keeps writes from Raft while a restore merges the
	// current state into the backup and installs it (snapshot.go).
	restoreGate sync.RWMutex

	hadState bool // the data dir held Raft state when we started

	leaderMu  sync.Mutex
	isLeader  bool
	leaderChg chan struct{} // closed and replaced on every change

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	stop   chan struct{} // closed when close starts
}

// errShutdown answers a Raft future still pending when the server closes.
// The operation may or may not have taken effect.
var errShutdown = fmt.Errorf("%w (the server is shutting down)", ErrLeadershipLost)

// wait returns the future's error, or errShutdown once the server closes.
// Raft never answers some futures queued when it shuts down (a committed
// entry not yet handed to the state machine), so no goroutine may block on
// one unconditionally. The helper goroutine then stays blocked on the
// future: one per write in flight at shutdown.
func (s *server) wait(f raft.Future) error {
	select {
	case <-s.stop:
		return errShutdown
	default:
	}
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-s.stop:
		return errShutdown
	}
}

// openServer opens the stores in cfg.DataDir/raft and starts the Raft peer
// over trans.
func openServer(cfg Config, log *slog.Logger, m *metrics, fsm *FSM, disc Discovery, rpc *RPCClient, trans raft.Transport, openLogs LogOpener) (*server, error) {
	s := &server{cfg: cfg, log: log, m: m, fsm: fsm, disc: disc, rpc: rpc, trans: trans, leaderChg: make(chan struct{}), stop: make(chan struct{})}
	s.dir = filepath.Join(cfg.DataDir, "raft")
	// 0700: the log and snapshots hold the CA's key material.
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore: data dir: %w", err)
	}
	_ = os.Chmod(s.dir, 0o700)
	open := OpenLog
	if openLogs != nil {
		open = openLogs
	}
	logs, stable, closer, err := open(s.dir, log)
	if err != nil {
		return nil, fmt.Errorf("raftstore: open log in %s: %w", s.dir, err)
	}
	s.gate = newStoreGate(logs, stable, closer)
	s.logs, s.stable = s.gate.logStore(), s.gate.stableStore()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.dir, cfg.SnapshotRetain, newHCLog(log.With("module", "snapshots")))
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raftstore: open snapshots in %s: %w", s.dir, err)
	}
	s.snaps = &secureSnapshots{SnapshotStore: snaps, dir: s.dir}
	s.hadState, err = raft.HasExistingState(s.logs, s.stable, s.snaps)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raftstore: read state: %w", err)
	}
	tighten(s.dir)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeName)
	rc.HeartbeatTimeout = cfg.Timing.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Timing.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Timing.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Timing.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	// BatchApplyCh stays off: a future queued in its buffer is never
	// answered once Raft shuts down. Group commit still happens: the
	// batcher keeps several entries in flight, each blocked in Apply, and
	// the leader loop takes all that are ready into one disk write.
	rc.MaxAppendEntries = 128
	rc.ShutdownOnRemove = false // a removed server may be added again
	rc.Logger = newHCLog(log.With("module", "raft"))
	notify := make(chan bool, 8)
	rc.NotifyCh = notify
	r, err := newRaft(rc, fsm, s.logs, s.stable, s.snaps, trans)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raftstore: start raft: %w", err)
	}
	s.raft = r
	s.batcher = newBatcher(cfg.MaxBatch, s.applyEntry, func(n int) { m.applyBatch.Observe(float64(n)) })

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.goRun(func() { s.batcher.run(ctx) })
	s.goRun(func() { s.watchLeadership(ctx, notify) })
	s.goRun(func() { s.statsLoop(ctx) })
	s.goRun(func() { s.autopilot(ctx) })
	if !s.hadState && cfg.BootstrapExpect > 0 {
		s.goRun(func() { s.bootstrapLoop(ctx) })
	}
	return s, nil
}

// newRaft is raft.NewRaft with its panic on an unreadable log entry (it
// reads the log for configuration changes before it starts any goroutine)
// turned into an error: a damaged file must not crash the agent.
func newRaft(rc *raft.Config, fsm raft.FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("reading the log: %v", p)
		}
	}()
	return raft.NewRaft(rc, fsm, logs, stable, snaps, trans)
}

func (s *server) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *server) closeStores() {
	_ = s.gate.close(time.Now().Add(time.Second))
}

// ErrCloseTimeout means a stage of a server's close did not finish within
// Config.ShutdownTimeout; the error names the stage.
var ErrCloseTimeout = errors.New("raftstore: close timed out")

// close shuts Raft down (without leaving the cluster: a restarted server
// takes its place again), then its goroutines, the transport and the
// stores, all within cfg.ShutdownTimeout. Raft gets the first four fifths
// of it; the last fifth is kept for the other stages, which need it when
// Raft did not stop. A stage that does not finish is left running and
// named in the error; the stores are then closed only if no call to them
// is in progress (storeGate).
func (s *server) close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.stop)
	start := time.Now()
	raftDeadline := start.Add(s.cfg.ShutdownTimeout * 4 / 5)
	deadline := start.Add(s.cfg.ShutdownTimeout)
	var errs []error
	stage := func(name string, by time.Time, f func() error) {
		if err := runUntil(by, by.Sub(start), f); err != nil {
			errs = append(errs, fmt.Errorf("raftstore: close: %s: %w", name, err))
		}
	}
	if s.raft != nil {
		stage("raft shutdown", raftDeadline, func() error { return s.raft.Shutdown().Error() })
	}
	s.cancel()
	stage("server goroutines", deadline, func() error { s.wg.Wait(); return nil })
	if c, ok := s.trans.(interface{ Close() error }); ok {
		stage("raft transport", deadline, c.Close)
	}
	if err := s.gate.close(deadline); err != nil {
		errs = append(errs, fmt.Errorf("raftstore: close: log store: %w", err))
	}
	if len(errs) > 0 {
		s.log.Error("raft server close incomplete", "node", s.cfg.NodeName, "after", time.Since(start).Round(time.Millisecond), "err", errors.Join(errs...))
	}
	return errors.Join(errs...)
}

// runUntil runs f and waits for it until deadline, which is within after
// close began. When the deadline passes first, f is left running and the
// error wraps ErrCloseTimeout.
func runUntil(deadline time.Time, within time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w: not finished %s after close began", ErrCloseTimeout, within.Round(time.Millisecond))
	}
}

// leadership returns whether this server leads and a channel closed on the
// next change.
func (s *server) leadership() (bool, <-chan struct{}) {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.isLeader, s.leaderChg
}

func (s *server) watchLeadership(ctx context.Context, notify <-chan bool) {
	for {
		select {
		case <-ctx.Done():
			return
		case lead := <-notify:
			s.leaderMu.Lock()
			s.isLeader = lead
			close(s.leaderChg)
			s.leaderChg = make(chan struct{})
			s.leaderMu.Unlock()
			s.m.leaderChanges.Inc()
			if lead {
				s.m.isLeader.Set(1)
				s.log.Info("raft leadership gained", "node", s.cfg.NodeName)
				s.goRun(func() { s.afterElection(ctx) })
			} else {
				s.m.isLeader.Set(0)
				s.log.Info("raft leadership lost", "node", s.cfg.NodeName)
			}
		}
	}
}

// afterElection commits a reindex entry when a restore moved the state's
// indexes backwards, so that every watcher sees the restored state as new.
func (s *server) afterElection(ctx context.Context) {
	if err := s.wait(s.raft.Barrier(s.cfg.ApplyTimeout)); err != nil {
		return
	}
	if s.fsm.needReindex.Load() {
		if _, err := s.apply(ctx, Txn{{Type: opReindex}}); err == nil {
			s.fsm.needReindex.Store(false)
		}
	}
	s.bootstrapInitialManagement(ctx)
}

func (s *server) statsLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.raft.State() == raft.Leader {
			s.m.lastContact.Set(0)
		} else if lc := s.raft.LastContact(); !lc.IsZero() {
			s.m.lastContact.Set(time.Since(lc).Seconds())
		}
		if f := s.raft.GetConfiguration(); s.wait(f) == nil {
			v, nv := 0, 0
			for _, srv := range f.Configuration().Servers {
				if srv.Suffrage == raft.Voter {
					v++
				} else {
					nv++
				}
			}
			s.m.peers.WithLabelValues("voter").Set(float64(v))
			s.m.peers.WithLabelValues("nonvoter").Set(float64(nv))
		}
		if time.Since(last) > time.Minute {
			tighten(s.dir)
			last = time.Now()
		}
	}
}

// apply proposes txn on this server, which must be the leader.
func (s *server) apply(ctx context.Context, txn Txn) (uint64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	if s.raft.State() != raft.Leader {
		return 0, s.notLeaderError()
	}
	txn, err := s.prepareACL(txn)
	if err != nil {
		return 0, err
	}
	return s.batcher.submit(ctx, txn)
}

// notLeaderError is ErrNotLeader when a leader is known, else ErrNoLeader.
func (s *server) notLeaderError() error {
	if _, id := s.raft.LeaderWithID(); id != "" {
		return fmt.Errorf("%w (the leader is %s)", ErrNotLeader, id)
	}
	return fmt.Errorf("%w (server %s sees no leader; last contact %s)", ErrNoLeader, s.cfg.NodeName, since(s.raft.LastContact()))
}

func since(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Millisecond).String() + " ago"
}

// barrier makes sure this server is the leader and its state machine holds
// every committed entry: the base of a consistent read.
func (s *server) barrier() error {
	if s.raft.State() != raft.Leader {
		return s.notLeaderError()
	}
	if err := s.wait(s.raft.Barrier(s.cfg.ApplyTimeout)); err != nil {
		return raftError(err)
	}
	return nil
}

// raftError maps raft's errors to the package's sentinels.
func raftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrLeadershipLost
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("raft did not take the write in time (overloaded, or leadership changing): %w", err)
	}
	return err
}

// ServerStatus is what a server says about itself over RPC: bootstrap,
// autopilot and the operator read it.
type ServerStatus struct {
	ID           string       `json:"id"`
	Addr         string       `json:"addr"`
	State        string       `json:"state"`
	Leader       string       `json:"leader,omitempty"`
	HasState     bool         `json:"has_state"`
	Term         uint64       `json:"term"`
	LastIndex    uint64       `json:"last_index"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	LastContact  time.Time    `json:"last_contact"`
	Expect       int          `json:"bootstrap_expect"`
	Servers      []ServerInfo `json:"servers"`
}

func (s *server) status() ServerStatus {
	_, leaderID := s.raft.LeaderWithID()
	st := ServerStatus{
		ID:           s.cfg.NodeName,
		Addr:         s.cfg.AdvertiseAddr,
		State:        s.raft.State().String(),
		Leader:       string(leaderID),
		Term:         s.raft.CurrentTerm(),
		LastIndex:    s.raft.LastIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
		LastContact:  s.raft.LastContact(),
		Expect:       s.cfg.BootstrapExpect,
	}
	st.HasState = s.hadState || st.LastIndex > 0 || st.Leader != ""
	if s.disc != nil {
		st.Servers, _ = s.disc.Watch()
	}
	return st
}

// Peer is one server of the Raft configuration.
type Peer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
}

func (s *server) peers() ([]Peer, error) {
	f := s.raft.GetConfiguration()
	if err := s.wait(f); err != nil {
		return nil, raftError(err)
	}
	_, leaderID := s.raft.LeaderWithID()
	var out []Peer
	for _, srv := range f.Configuration().Servers {
		out = append(out, Peer{ID: string(srv.ID), Address: string(srv.Address),
			Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leaderID})
	}
	return out, nil
}

func (s *server) removePeer(id string) error {
	if s.raft.State() != raft.Leader {
		return s.notLeaderError()
	}
	peers, err := s.peers()
	if err != nil {
		return err
	}
	found := false
	for _, p := range peers {
		found = found || p.ID == id
	}
	if !found {
		return fmt.Errorf("%w: no server %q in the configuration", ErrNotFound, id)
	}
	return raftError(s.wait(s.raft.RemoveServer(raft.ServerID(id), 0, s.cfg.ApplyTimeout)))
}

// secureSnapshots makes every snapshot's files 0600 once written.
type secureSnapshots struct {
	raft.SnapshotStore
	dir string
}

func (s *secureSnapshots) Create(version raft.SnapshotVersion, index, term uint64, c raft.Configuration, ci uint64, t raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, c, ci, t)
	if err != nil {
		return nil, err
	}
	return &secureSink{SnapshotSink: sink, dir: s.dir}, nil
}

type secureSink struct {
	raft.SnapshotSink
	dir string
}

func (s *secureSink) Close() error {
	err := s.SnapshotSink.Close()
	tighten(filepath.Join(s.dir, "snapshots"))
	return err
}

// tighten makes the files under dir 0600 and directories 0700. The
// libraries create them 0644 inside our 0700 directory; this is a second
// line of defence for the key material they hold.
func tighten(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			_ = os.Chmod(p, 0o700)
		} else {
			_ = os.Chmod(p, 0o600)
		}
		return nil
	})
}

// applyEntry commits txns as one Raft log entry and returns their results.
// The writes were decided where they arrived; their secrets are not needed.
func (s *server) applyEntry(_ context.Context, txns []Txn, _ []string) ([]TxnResult, error) {
	data, err := encodeEntry(txns)
	if err != nil {
		return nil, err
	}
	s.restoreGate.RLock()
	defer s.restoreGate.RUnlock()
	f := s.raft.Apply(data, s.cfg.ApplyTimeout)
	if err := s.wait(f); err != nil {
		return nil, raftError(err)
	}
	res, _ := f.Response().([]TxnResult)
	return res, nil
}
