package raftstore

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshwork/meshwork/acl"
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
	*localCopy[*aclTable]
	log *slog.Logger
}

func newACLReplica(dataDir string, log *slog.Logger) *aclReplica {
	c := newLocalCopy(emptyACLTable(), "acl", filepath.Join(dataDir, ACLFile), log)
	c.encode = func() ([]byte, error) {
		return json.Marshal(aclPersisted{State: c.current().st.Dump(), SavedAt: time.Now().UTC()})
	}
	return &aclReplica{localCopy: c, log: log}
}

// aclPersisted is the format of ACLFile.
type aclPersisted struct {
	State   acl.Dump  `json:"state"`
	SavedAt time.Time `json:"saved_at"`
}

// load reads the persisted state. A missing file is not an error; a
// damaged one is reported and ignored (the servers will send the state).
func (r *aclReplica) load() error {
	b, err := r.readFile()
	if b == nil {
		return err
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

// follow watches the servers' ACL state until ctx ends, reconnecting with
// backoff when a watch fails.
func (r *aclReplica) follow(ctx context.Context, rpc *RPCClient, wait time.Duration) {
	followLoop(ctx, r.log, "acl watch", func() (bool, error) { return false, r.watchOnce(ctx, rpc, wait) })
}

// watchOnce makes one blocking query and installs its answer.
func (r *aclReplica) watchOnce(ctx context.Context, rpc *RPCClient, wait time.Duration) error {
	cur := r.current().Index()
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
	switch idx := t.Index(); {
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
	if idx := t.Index(); idx < cur {
		r.log.Warn("acl index went backwards on the leader; the cluster was restored or rebuilt", "had", cur, "now", idx)
		r.install(t, true)
		return nil
	}
	return fmt.Errorf("a server is behind (acl index below %d)", cur)
}
