package raftstore

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/policy"
)

// PolicyFile is the name of the persisted policy in the data directory.
const PolicyFile = "policy.json"

// Replica is this agent's copy of the policy. The data plane reads it on
// its hot path with Current (an atomic load, no lock) and learns of changes
// with Watch. It follows a server's stream, installs each newer set whole
// (never a partial change), and persists it so that an agent restarted
// while every server is down still enforces the last policy it had.
type Replica struct {
	copy *localCopy[*policy.Set]

	lastContact atomic.Int64 // unix nanoseconds; 0 = never
	contactFn   func() time.Time

	log *slog.Logger
}

func newReplica(dataDir string, log *slog.Logger, m *metrics) *Replica {
	r := &Replica{log: log}
	r.copy = newLocalCopy(policy.Empty(), "policy", filepath.Join(dataDir, PolicyFile), log)
	r.copy.encode = func() ([]byte, error) {
		return json.Marshal(persisted{Set: r.Current(), LastContact: r.LastContact(), SavedAt: time.Now()})
	}
	if m != nil {
		r.copy.onInstall = m.setPolicy
	}
	return r
}

// persisted is the file format of policy.json.
type persisted struct {
	Set         *policy.Set `json:"set"`
	LastContact time.Time   `json:"last_contact"`
	SavedAt     time.Time   `json:"saved_at"`
}

// load reads the persisted policy. A missing file is not an error; a
// damaged one is reported and ignored (the servers will send the policy).
func (r *Replica) load() error {
	b, err := r.copy.readFile()
	if b == nil {
		return err
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil || p.Set == nil {
		return fmt.Errorf("raftstore: load %s: damaged, ignored: %v", r.copy.path, err)
	}
	r.install(p.Set, false)
	if !p.LastContact.IsZero() {
		r.lastContact.Store(p.LastContact.UnixNano())
	}
	return nil
}

func (r *Replica) save() error                            { return r.copy.save() }
func (r *Replica) persistLoop(ctx context.Context)        { r.copy.persistLoop(ctx) }
func (r *Replica) install(s *policy.Set, force bool) bool { return r.copy.install(s, force) }

// Current returns the policy in force. It never returns nil.
func (r *Replica) Current() *policy.Set { return r.copy.current() }

// Watch returns the current set and a channel closed when a newer one is
// installed.
func (r *Replica) Watch() (*policy.Set, <-chan struct{}) { return r.copy.watch() }

// Wait blocks until the index is above index or ctx ends, and returns the
// set current then (with ctx's error if it ended first).
func (r *Replica) Wait(ctx context.Context, index uint64) (*policy.Set, error) {
	for {
		s, ch := r.Watch()
		if s.Index() > index {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return r.Current(), ctx.Err()
		}
	}
}

func (r *Replica) touch() { r.lastContact.Store(time.Now().UnixNano()) }

// LastContact is when this agent last heard from a server about policy;
// the zero time when never.
func (r *Replica) LastContact() time.Time {
	if r.contactFn != nil {
		if t := r.contactFn(); !t.IsZero() {
			return t
		}
	}
	n := r.lastContact.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Staleness is how long ago LastContact was; -1 when never.
func (r *Replica) Staleness() time.Duration {
	lc := r.LastContact()
	if lc.IsZero() {
		return -1
	}
	return time.Since(lc)
}

// streamMsg is one line of the policy stream.
type streamMsg struct {
	Index     uint64      `json:"index"`
	Set       *policy.Set `json:"set,omitempty"`
	Heartbeat bool        `json:"heartbeat,omitempty"`
}

// follow streams the policy from the servers until ctx ends, reconnecting
// with backoff (and to another server) when a stream breaks or goes quiet.
func (r *Replica) follow(ctx context.Context, rpc *RPCClient, heartbeat time.Duration) {
	followLoop(ctx, r.log, "policy stream", func() (bool, error) { return r.streamOnce(ctx, rpc, heartbeat) })
}

// streamOnce runs one stream. got is true when anything was received.
func (r *Replica) streamOnce(ctx context.Context, rpc *RPCClient, heartbeat time.Duration) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	path := "/rpc/v1/policy/stream?index=" + strconv.FormatUint(r.Current().Index(), 10)
	// The request's context is the stream's for as long as it lasts, so the
	// wait for the first answer is bounded by a timer, not a deadline.
	slow := time.AfterFunc(3*heartbeat+5*time.Second, cancel)
	resp, err := rpc.Do(ctx, http.MethodGet, path, nil, CallOptions{Stream: true})
	slow.Stop()
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	// A watchdog drops a stream that stays silent for three heartbeats: the
	// server may be gone without closing the connection.
	quiet := time.AfterFunc(3*heartbeat, cancel)
	defer quiet.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		quiet.Reset(3 * heartbeat)
		got = true
		var msg streamMsg
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			return got, fmt.Errorf("bad stream line: %w", err)
		}
		r.touch()
		if msg.Set == nil {
			continue
		}
		cur := r.Current().Index()
		switch {
		case msg.Set.Index() > cur:
			r.install(msg.Set, false)
		case msg.Set.Index() < cur:
			// A lagging server, or a cluster restored with lower
			// indexes: only the leader can tell.
			if r.checkReset(ctx, rpc, cur) {
				continue
			}
			return got, fmt.Errorf("server is behind (index %d < %d)", msg.Set.Index(), cur)
		}
	}
	if err := sc.Err(); err != nil {
		return got, err
	}
	return got, errors.New("stream closed")
}

// checkReset asks the leader for its policy. When the leader's index is
// also below ours, the cluster's state was replaced (a restore onto new
// servers): take the leader's set.
func (r *Replica) checkReset(ctx context.Context, rpc *RPCClient, cur uint64) bool {
	var s policy.Set
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rpc.CallJSON(ctx, http.MethodGet, "/rpc/v1/policy?consistent=1", nil, &s, CallOptions{Leader: true, Retry: true}); err != nil {
		return false
	}
	if s.Index() < cur {
		r.log.Warn("policy index went backwards on the leader; the cluster was restored or rebuilt", "had", cur, "now", s.Index())
		r.install(&s, true)
		return true
	}
	return false
}

// followLocal installs every policy change of a server's own state machine.
func (r *Replica) followLocal(ctx context.Context, f *FSM) {
	for {
		s, ch := f.watch()
		set := s.policySet()
		if set.Index() > r.Current().Index() {
			r.install(set, false)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}
