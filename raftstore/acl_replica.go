package raftstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/atomicfile"
)

// ACLFile is where a client agent keeps the last ACL state it had, in its
// data directory (mode 0600): an agent restarted while every server is
// down still enforces the last ACLs it knew. It holds the hashes of the
// tokens' secrets, never secrets.
const ACLFile = "acl.json"

// aclReplica is a client agent's copy of the ACL state. It follows the
// servers with a blocking watch, installs each newer state whole, and
// persists it. Reads are lock-free.
type aclReplica struct {
	cur atomic.Pointer[aclTable]

	mu      sync.Mutex
	changed chan struct{}

	path      string
	log       *slog.Logger
	persistCh chan struct{}
}

func newACLReplica(dataDir string, log *slog.Logger) *aclReplica {
	r := &aclReplica{changed: make(chan struct{}), path: filepath.Join(dataDir, ACLFile), log: log, persistCh: make(chan struct{}, 1)}
	r.cur.Store(emptyACLTable())
	return r
}

// aclPersisted is the format of ACLFile.
type aclPersisted struct {
	State   acl.Dump  `json:"state"`
	SavedAt time.Time `json:"saved_at"`
}

// load reads the persisted state. A missing file is not an error; a
// damaged one is reported and ignored (the servers will send the state).
func (r *aclReplica) load() error {
	b, err := os.ReadFile(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftstore: load %s: %w", r.path, err)
	}
	var p aclPersisted
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("raftstore: load %s: damaged, ignored: %w", r.path, err)
	}
	st, err := acl.LoadState(p.State)
	if err != nil {
		return fmt.Errorf("raftstore: load %s: ignored: %w", r.path, err)
	}
	r.install(newACLTable(st), false)
	return nil
}

// save writes the current state atomically, mode 0600.
func (r *aclReplica) save() error {
	b, err := json.Marshal(aclPersisted{State: r.current().st.Dump(), SavedAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	return atomicfile.Write(r.path, b, 0o600)
}

func (r *aclReplica) persistLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.persistCh:
			if err := r.save(); err != nil {
				r.log.Warn("acl persist failed", "path", r.path, "err", err)
			}
		}
	}
}

func (r *aclReplica) current() *aclTable { return r.cur.Load() }

// watch returns the current table and a channel closed on the next change.
func (r *aclReplica) watch() (*aclTable, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur.Load(), r.changed
}

// install makes t current when its index is newer (or differs, when
// force: a cluster restored with lower indexes).
func (r *aclReplica) install(t *aclTable, force bool) bool {
	r.mu.Lock()
	cur := r.cur.Load()
	if t.st.Index() == cur.st.Index() || (t.st.Index() < cur.st.Index() && !force) {
		r.mu.Unlock()
		return false
	}
	r.cur.Store(t)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	select {
	case r.persistCh <- struct{}{}:
	default:
	}
	return true
}

// follow watches the servers' ACL state until ctx ends, reconnecting with
// backoff when a watch fails.
func (r *aclReplica) follow(ctx context.Context, rpc *RPCClient, wait time.Duration) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.watchOnce(ctx, rpc, wait)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		r.log.Debug("acl watch failed", "err", err)
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

// watchOnce makes one blocking query and installs its answer.
func (r *aclReplica) watchOnce(ctx context.Context, rpc *RPCClient, wait time.Duration) error {
	cur := r.current().st.Index()
	q := url.Values{"index": {strconv.FormatUint(cur, 10)}, "wait": {wait.String()}}
	cctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	var ans aclWatchAnswer
	if err := rpc.CallJSON(cctx, http.MethodGet, "/rpc/v1/acl?"+q.Encode(), nil, &ans, CallOptions{}); err != nil {
		return err
	}
	if ans.State == nil {
		return nil // nothing changed
	}
	t, err := loadACLTable(ans.State)
	if err != nil {
		return err
	}
	switch idx := t.st.Index(); {
	case idx > cur:
		r.install(t, false)
	case idx < cur:
		// A lagging server, or a cluster restored onto new servers: only
		// the leader can tell.
		return r.checkReset(ctx, rpc, cur)
	}
	return nil
}

// checkReset asks the leader for its state; when the leader's index is
// also below ours, the cluster's state was replaced: take it.
func (r *aclReplica) checkReset(ctx context.Context, rpc *RPCClient, cur uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var ans aclWatchAnswer
	if err := rpc.CallJSON(ctx, http.MethodGet, "/rpc/v1/acl?consistent=1", nil, &ans, CallOptions{Leader: true, Retry: true}); err != nil {
		return err
	}
	t, err := loadACLTable(ans.State)
	if err != nil {
		return err
	}
	if idx := t.st.Index(); idx < cur {
		r.log.Warn("acl index went backwards on the leader; the cluster was restored or rebuilt", "had", cur, "now", idx)
		r.install(t, true)
		return nil
	}
	return fmt.Errorf("a server is behind (acl index below %d)", cur)
}
