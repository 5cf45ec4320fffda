package raftstore

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/internal/atomicfile"
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
	cur atomic.Pointer[policy.Set]

	mu      sync.Mutex
	changed chan struct{}

	lastContact atomic.Int64 // unix nanoseconds; 0 = never
	contactFn   func() time.Time

	path string
	log  *slog.Logger
	m    *metrics

	persistCh chan struct{}
}

func newReplica(dataDir string, log *slog.Logger, m *metrics) *Replica {
	r := &Replica{changed: make(chan struct{}), path: filepath.Join(dataDir, PolicyFile), log: log, m: m, persistCh: make(chan struct{}, 1)}
	r.cur.Store(policy.Empty())
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
	b, err := os.ReadFile(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftstore: load %s: %w", r.path, err)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil || p.Set == nil {
		return fmt.Errorf("raftstore: load %s: damaged, ignored: %v", r.path, err)
	}
	r.install(p.Set, false)
	if !p.LastContact.IsZero() {
		r.lastContact.Store(p.LastContact.UnixNano())
	}
	return nil
}

// save writes the current policy atomically: a temporary file, fsync, then
// rename, mode 0600.
func (r *Replica) save() error {
	p := persisted{Set: r.Current(), LastContact: r.LastContact(), SavedAt: time.Now()}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return atomicfile.Write(r.path, b, 0o600)
}

// persistLoop saves after each change, coalescing bursts into one write.
func (r *Replica) persistLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.persistCh:
			if err := r.save(); err != nil {
				r.log.Warn("policy persist failed", "path", r.path, "err", err)
			}
		}
	}
}

// Current returns the policy in force. It never returns nil.
func (r *Replica) Current() *policy.Set { return r.cur.Load() }

// Watch returns the current set and a channel closed when a newer one is
// installed.
func (r *Replica) Watch() (*policy.Set, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur.Load(), r.changed
}

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

// install makes s current when it is newer (or when force, for a cluster
// that was restored or rebuilt with lower indexes).
func (r *Replica) install(s *policy.Set, force bool) bool {
	r.mu.Lock()
	cur := r.cur.Load()
	if s.Index() == cur.Index() || (s.Index() < cur.Index() && !force) {
		r.mu.Unlock()
		return false
	}
	r.cur.Store(s)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if r.m != nil {
		r.m.setPolicy(s)
	}
	select {
	case r.persistCh <- struct{}{}:
	default:
	}
	return true
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
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		got, err := r.streamOnce(ctx, rpc, heartbeat)
		if ctx.Err() != nil {
			return
		}
		if got {
			backoff = 100 * time.Millisecond
		}
		r.log.Debug("policy stream ended", "err", err)
		d := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, 5*time.Second)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
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
