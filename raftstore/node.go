package raftstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/keytls"
	"github.com/meshwork/meshwork/policy"
)

// Deps are what a Node is given rather than makes.
type Deps struct {
	// Logger receives the node's logs (and Raft's). Default: discard.
	Logger *slog.Logger
	// Registerer receives the metrics. Default: none registered.
	Registerer prometheus.Registerer
	// Discovery lists the server agents, from gossip. Required.
	Discovery Discovery
	// Listener is the server port, for a server. Default: bound at Start
	// on Config.BindAddr.
	Listener net.Listener
	// Dial opens connections to servers. Default: net.Dialer.
	Dial DialFunc
	// TLS is the mutual TLS authority. Default: derived from
	// Config.ClusterKey (and Config.ServerKey). Pass one to share it with
	// other components (the CA adds its trust bundle to it); with
	// Config.ServerKey, it must have been made with that key.
	TLS *keytls.Authority
	// RaftTransport replaces the Raft stream layer on the server port, as
	// raft.InmemTransport does in tests. Its addresses must equal the
	// servers' discovery addresses. Default: the server port.
	RaftTransport raft.Transport
	// LogStore opens the Raft log and stable store. Default: boltlog in
	// <data_dir>/raft/raft.db, migrated from raft-wal on first start
	// (docs/design.md); bench/raft passes other stores here to compare.
	LogStore LogOpener
}

// Node is this agent's part of the policy plane: on every agent a Replica
// of the policy and an RPCClient to the servers; on a server agent also the
// Raft peer and the RPC routes of the server port.
type Node struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	m    *metrics
	auth *keytls.Authority
	rpc  *RPCClient

	replica *Replica
	aclRep  *aclReplica // client agents only: the ACL state (acl_replica.go)
	// aclRes decides the RPCs of agents that are not servers, on a server
	// with ACLs enabled (rpcauth.go); nil otherwise.
	aclRes  atomic.Pointer[acl.Resolver]
	fsm     *FSM         // servers only
	srv     *server      // servers only, set by Start
	leaders *leaderWatch // servers only: the leader as Raft sees it
	mux     *mux
	rpcMux  *http.ServeMux
	httpSrv *http.Server

	// fwd groups the writes this agent forwards to the leader; its loop
	// starts with the first forwarded write.
	fwd       *batcher
	fwdCtx    context.Context
	fwdCancel context.CancelFunc

	mu         sync.Mutex
	fwdRunning bool
	started    bool
	closed     bool
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// New validates cfg and allocates a node. It opens no socket and starts no
// goroutine.
func New(cfg Config, deps Deps) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Discovery == nil {
		return nil, errors.New("raftstore: deps: Discovery: required")
	}
	cfg = cfg.withDefaults()
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, deps: deps, log: deps.Logger}
	auth := deps.TLS
	if auth == nil {
		var err error
		if auth, err = keytls.New(keytls.Config{
			Key: cfg.ClusterKey, AcceptKeys: cfg.AcceptClusterKeys,
			ServerKey: cfg.ServerKey, AcceptServerKeys: cfg.AcceptServerKeys,
			NodeName: cfg.NodeName,
		}); err != nil {
			return nil, fmt.Errorf("raftstore: %w", err)
		}
	} else if cfg.ServerKey != nil && !auth.HasServerKey() {
		return nil, errors.New("raftstore: deps: TLS: made without the server key that Config.ServerKey gives")
	}
	n.auth = auth
	n.m = newMetrics(deps.Registerer, func() float64 {
		if s := n.replica.Staleness(); s >= 0 {
			return s.Seconds()
		}
		return -1
	})
	n.replica = newReplica(cfg.DataDir, n.log, n.m)
	if !cfg.Server {
		n.aclRep = newACLReplica(cfg.DataDir, n.log)
	}
	n.rpc = NewRPCClient(auth, deps.Discovery, deps.Dial, cfg.RPCTimeout)
	n.rpc.SetTiming(cfg.Timing)
	n.fwd = newBatcher(cfg.MaxBatch, n.forward, nil)
	n.fwdCtx, n.fwdCancel = context.WithCancel(context.Background())
	if cfg.Server {
		n.leaders = newLeaderWatch()
		n.rpc.leaderView = n.leaders.view
		n.fsm = NewFSM()
		n.fsm.onApply = n.m.setFSMDocs
		n.rpcMux = http.NewServeMux()
		n.routes()
		n.httpSrv = &http.Server{Handler: n.rpcMux, ReadHeaderTimeout: 10 * time.Second, ConnContext: connContext,
			ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	}
	return n, nil
}

// Start loads the persisted policy, and on a server binds the server port
// and starts Raft. It returns once the node serves: reads of the policy
// work at once (from disk), writes once a leader exists.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started || n.closed {
		return fmt.Errorf("raftstore: start: %w", ErrClosed)
	}
	n.started = true
	if err := n.replica.load(); err != nil {
		n.log.Warn("persisted policy not loaded", "err", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel

	if n.cfg.Server {
		if err := n.startServer(ctx); err != nil {
			cancel()
			return err
		}
		n.replica.contactFn = func() time.Time {
			if n.srv.raft.State() == raft.Leader {
				return time.Now()
			}
			return n.srv.raft.LastContact()
		}
		n.goRun(func() { n.replica.followLocal(runCtx, n.fsm) })
		n.goRun(func() { n.leaders.follow(runCtx, n.srv.raft, n.deps.Discovery) })
	} else {
		n.goRun(func() { n.replica.follow(runCtx, n.rpc, n.cfg.WatchHeartbeat) })
	}
	n.goRun(func() { n.replica.persistLoop(runCtx) })
	n.startACL(runCtx)
	// The keys by fingerprint, never the keys: a rotation's progress can
	// be read in every agent's log (docs/operations.md).
	n.log.Info("raftstore started", "node", n.cfg.NodeName, "server", n.cfg.Server, "policy_index", n.replica.Current().Index(),
		"cluster_key", n.auth.Fingerprint(), "accept_cluster_keys", n.auth.AcceptedFingerprints())
	return nil
}

func (n *Node) startServer(ctx context.Context) error {
	ln := n.deps.Listener
	if ln == nil {
		var err error
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", n.cfg.BindAddr); err != nil {
			return fmt.Errorf("raftstore: listen on %s: %w", n.cfg.BindAddr, err)
		}
	}
	if !n.auth.HasServerKey() {
		n.log.Warn("server port cannot tell a server from any agent holding cluster_key: set server_key on every server (docs/security.md)")
	}
	protos := []string{ALPNRaft, ALPNRPC}
	if n.deps.RaftTransport != nil {
		protos = []string{ALPNRPC}
	}
	n.mux = newMux(ln, n.auth, tcpAddr(n.cfg.AdvertiseAddr), n.log, protos...)
	n.mux.start()
	rpcLn := n.mux.listener(ALPNRPC)

	trans := n.deps.RaftTransport
	if trans == nil {
		dial := n.deps.Dial
		if dial == nil {
			dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext
		}
		stream := &streamLayer{chanListener: n.mux.listener(ALPNRaft), dial: dial, tlsCfg: n.auth.PeerClientConfig(ALPNRaft)}
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  stream,
			MaxPool: 4,
			Timeout: 10 * time.Second,
			Logger:  newHCLog(n.log.With("module", "raft-net")),
		})
	}
	srv, err := openServer(n.cfg, n.log, n.m, n.fsm, n.deps.Discovery, n.rpc, trans, n.deps.LogStore)
	if err != nil {
		_ = n.httpSrv.Close()
		n.mux.close()
		return err
	}
	n.srv = srv
	// RPC is served only now: its handlers read n.srv. A call that came in
	// earlier waits in rpcLn.
	n.goRun(func() { _ = n.httpSrv.Serve(rpcLn) })
	return nil
}

func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Close stops the node: Raft first (without leaving the cluster), then the
// RPC server and the port, then the replica, which saves the policy a last
// time. It is idempotent and waits for every goroutine.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	started := n.started
	n.mu.Unlock()
	if !started {
		n.fwdCancel()
		n.wg.Wait()
		return nil
	}
	var err error
	if n.srv != nil {
		err = n.srv.close()
	}
	if n.httpSrv != nil {
		_ = n.httpSrv.Close()
	}
	if n.mux != nil {
		n.mux.close()
	}
	n.cancel()
	n.fwdCancel()
	n.wg.Wait()
	if serr := n.replica.save(); serr != nil && err == nil {
		err = serr
	}
	if serr := n.closeACL(); serr != nil && err == nil {
		err = serr
	}
	n.rpc.Close()
	return err
}

// private reports whether key stays inside server agents.
func (n *Node) private(key string) bool {
	for _, p := range n.cfg.PrivateKV {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Config returns the node's configuration with defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// Policy returns the policy this agent enforces, lock-free. Never nil.
func (n *Node) Policy() *policy.Set { return n.replica.Current() }

// Replica is this agent's policy copy: Current, Watch, Wait, staleness.
func (n *Node) Replica() *Replica { return n.replica }

// RPC is the client every agent uses to call the servers.
func (n *Node) RPC() *RPCClient { return n.rpc }

// TLS is the mutual TLS authority of the server port. The CA adds its trust
// bundle with AddTrust and its certificates with SetCertificate.
func (n *Node) TLS() *keytls.Authority { return n.auth }

// IsServer reports whether this agent runs a Raft peer.
func (n *Node) IsServer() bool { return n.cfg.Server }

// MemberMeta is the gossip meta this agent publishes (see MemberMeta).
func (n *Node) MemberMeta() map[string]string { return MemberMeta(n.cfg) }

// MountRPC adds a route to the RPC server of the server port (for example
// the CA's /rpc/v1/ca/...). Handlers see the verified peer in r.TLS. On a
// client agent the route is never served.
func (n *Node) MountRPC(pattern string, h http.Handler) {
	if n.rpcMux != nil {
		n.rpcMux.Handle(pattern, h)
	}
}

// Leadership reports whether this server leads the cluster, with a channel
// closed at the next change. On a client agent it is always false and the
// channel never closes.
func (n *Node) Leadership() (bool, <-chan struct{}) {
	if n.srv == nil {
		return false, nil
	}
	return n.srv.leadership()
}

// Apply commits one transaction through the leader and returns its index.
// Any agent may call it: a server leader applies it itself, every other
// agent forwards it.
//
// Every write carries an idempotency key: the one ctx carries
// (WithIdempotencyKey), else a new one. Under it the write is retried on a
// new leader after a timeout or a lost leader, and applied at most once.
// The answer is definite, the index the write was applied at or an error
// that wraps ErrCASConflict, ErrNotFound, ErrInvalid (and
// policy.ErrInvalid), ErrNoLeader, ErrNoServers or ErrClosed (none of them
// applied anything), or else it is ErrOutcomeUnknown: the write may or may
// not have been applied, and a retry with the same key settles it.
func (n *Node) Apply(ctx context.Context, txn Txn) (uint64, error) {
	idx, err := n.applyKeyed(ctx, txn)
	switch {
	case err == nil:
		n.m.applies.WithLabelValues("ok").Inc()
	case errors.Is(err, ErrCASConflict):
		n.m.applies.WithLabelValues("conflict").Inc()
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrNotFound):
		n.m.applies.WithLabelValues("invalid").Inc()
	case errors.Is(err, ErrOutcomeUnknown):
		n.m.applies.WithLabelValues("unknown").Inc()
	default:
		n.m.applies.WithLabelValues("error").Inc()
	}
	return idx, opError("apply", err)
}

func (n *Node) applyKeyed(ctx context.Context, txn Txn) (uint64, error) {
	if err := validateTxn(txn); err != nil {
		return 0, err
	}
	key := IdempotencyKey(ctx)
	if key == "" {
		key = NewIdempotencyKey()
	} else if err := ValidateIdempotencyKey(key); err != nil {
		return 0, err
	}
	txn, err := withWriteID(txn, key)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	defer func() { n.m.applyDuration.Observe(time.Since(start).Seconds()) }()
	return n.apply(ctx, txn)
}

// apply commits txn, which starts with its write id: on this server when
// it leads, else through the leader. A leader that loses its leadership
// with the write in flight hands it to the new one, under the same key.
func (n *Node) apply(ctx context.Context, txn Txn) (uint64, error) {
	var maybe error // the local attempt may have been applied
	if n.srv != nil && n.srv.raft.State() == raft.Leader {
		idx, err := n.srv.apply(ctx, txn)
		switch {
		case err == nil || definite(err):
			return idx, err
		case errors.Is(err, ErrOutcomeUnknown) && ctx.Err() == nil && !n.isClosed():
			maybe = err
		case !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoLeader):
			return idx, err
		}
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return 0, orUnknown(maybe, ErrClosed)
	}
	if !n.fwdRunning {
		n.fwdRunning = true
		n.goRun(func() { n.fwd.run(n.fwdCtx) })
	}
	n.mu.Unlock()
	idx, err := n.fwd.submit(ctx, txn)
	if err != nil {
		return 0, orUnknown(maybe, err)
	}
	return idx, nil
}

// orUnknown is err, or ErrOutcomeUnknown when an earlier attempt (maybe)
// may have applied the write and err is no definite answer.
func orUnknown(maybe, err error) error {
	if maybe == nil || definite(err) || errors.Is(err, ErrOutcomeUnknown) {
		return err
	}
	return fmt.Errorf("%w: %v; then %v", ErrOutcomeUnknown, maybe, err)
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// forward sends a batch of transactions to the leader in one RPC, and
// again (under the same keys) those a leader answered with a leadership
// error, until each has a definite answer or the deadline passes.
func (n *Node) forward(ctx context.Context, txns []Txn, secrets []string) ([]TxnResult, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.RPCTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(n.fwdCtx, func() { cancel(ErrClosed) }) // closing the node ends the call too
	defer stop()

	out := make([]TxnResult, len(txns))
	todo := make([]int, len(txns)) // positions still without a definite answer
	for i := range todo {
		todo[i] = i
	}
	maybe := make([]error, len(txns)) // a leader lost with the write in flight
	backoff := 25 * time.Millisecond
	for {
		req := applyRequest{Txns: make([]Txn, len(todo))}
		for j, i := range todo {
			req.Txns[j] = txns[i]
			if secrets[i] != "" {
				if req.Tokens == nil {
					req.Tokens = make([]string, len(todo))
				}
				req.Tokens[j] = secrets[i]
			}
		}
		var ans applyAnswer
		err := n.rpc.CallJSON(ctx, http.MethodPost, "/rpc/v1/apply", req, &ans, CallOptions{Leader: true, Retry: true})
		if err == nil && len(ans.Results) != len(todo) {
			err = fmt.Errorf("%w: the leader answered %d results for %d transactions", ErrOutcomeUnknown, len(ans.Results), len(todo))
		}
		var again []int
		switch {
		case err != nil && errors.Is(err, ErrOutcomeUnknown) && ctx.Err() == nil:
			// A leader took the batch but its answer was lost: ask
			// again, the keys make that safe.
			for _, i := range todo {
				maybe[i] = cmp.Or(maybe[i], err)
			}
			again = todo
		case err != nil:
			if cause := context.Cause(ctx); errors.Is(cause, ErrClosed) && !errors.Is(err, ErrOutcomeUnknown) {
				err = cause
			}
			for _, i := range todo {
				out[i].Err = remoteErr(orUnknown(maybe[i], err))
			}
			return out, nil
		}
		for j, i := range todo {
			if err != nil {
				break
			}
			r := ans.Results[j]
			if r.Err != nil && leadershipCode(r.Err.Code) {
				if r.Err.Code == "lost_leader" && maybe[i] == nil {
					maybe[i] = r.Err
				}
				again = append(again, i)
				continue
			}
			out[i] = r
		}
		if len(again) == 0 {
			return out, nil
		}
		todo = again
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			for _, i := range todo {
				out[i].Err = remoteErr(orUnknown(maybe[i], fmt.Errorf("%w: %v", ErrNoLeader, context.Cause(ctx))))
			}
			return out, nil
		case <-t.C:
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// remoteErr carries err in a TxnResult, keeping its sentinel.
func remoteErr(err error) *RemoteError {
	var re *RemoteError
	if errors.As(err, &re) && re.Error() == err.Error() {
		return re
	}
	return &RemoteError{Code: errCode(err), Message: err.Error()}
}

// ApplyDocuments writes docs in one transaction. With cas set, every
// document's modify index must equal *cas (0: none may exist yet).
func (n *Node) ApplyDocuments(ctx context.Context, docs []policy.Document, cas *uint64) (uint64, error) {
	txn := make(Txn, len(docs))
	for i := range docs {
		txn[i] = Op{Type: OpPolicySet, Doc: &docs[i], CAS: cas}
	}
	return n.Apply(ctx, txn)
}

// DeleteDocument deletes one document; with cas set, only at that index.
func (n *Node) DeleteDocument(ctx context.Context, key policy.Key, cas *uint64) (uint64, error) {
	return n.Apply(ctx, Txn{{Type: OpPolicyDelete, Key: &key, CAS: cas}})
}

// ConsistentPolicy reads the policy through the leader, after a barrier:
// it includes every write acknowledged before the call.
func (n *Node) ConsistentPolicy(ctx context.Context) (*policy.Set, error) {
	if n.srv != nil && n.srv.raft.State() == raft.Leader {
		if err := n.srv.barrier(); err == nil {
			return n.fsm.Policy(), nil
		}
	}
	var s policy.Set
	if err := n.rpc.CallJSON(ctx, http.MethodGet, "/rpc/v1/policy?consistent=1", nil, &s, CallOptions{Leader: true, Retry: true}); err != nil {
		return nil, opError("consistent read", err)
	}
	return &s, nil
}

// KVGet reads a key of the internal namespace: from the local state
// machine on a server (secret keys included), else from any server (stale
// by at most the replication lag; secret keys are ErrForbidden). A missing
// key is ErrNotFound.
func (n *Node) KVGet(ctx context.Context, key string) ([]byte, uint64, error) {
	return n.kvGet(ctx, key, false)
}

// KVGetConsistent reads a key through the leader after a barrier.
func (n *Node) KVGetConsistent(ctx context.Context, key string) ([]byte, uint64, error) {
	return n.kvGet(ctx, key, true)
}

func (n *Node) kvGet(ctx context.Context, key string, consistent bool) ([]byte, uint64, error) {
	if n.fsm != nil && (!consistent || n.srv.barrier() == nil) {
		e, ok := n.fsm.state().kvGet(key)
		if !ok {
			return nil, 0, opError("kv get", fmt.Errorf("%w: key %q", ErrNotFound, key))
		}
		return e.Value, e.ModifyIndex, nil
	}
	if n.private(key) {
		return nil, 0, opError("kv get", fmt.Errorf("%w: key %q is readable only on server agents", ErrForbidden, key))
	}
	var e KVEntry
	path := "/rpc/v1/kv/" + url.PathEscape(key)
	if consistent {
		path += "?consistent=1"
	}
	if err := n.rpc.CallJSON(ctx, http.MethodGet, path, nil, &e, CallOptions{Leader: consistent, Retry: consistent}); err != nil {
		return nil, 0, opError("kv get", err)
	}
	return e.Value, e.ModifyIndex, nil
}

// KVCAS writes key when its modify index is index (0: when it does not
// exist yet), and returns the new index. A one-time token is consumed with
// KVCAS(ctx, "ca/tokens/<id>", ..., 0): a second use is ErrCASConflict.
func (n *Node) KVCAS(ctx context.Context, key string, val []byte, index uint64) (uint64, error) {
	return n.Apply(ctx, Txn{{Type: OpKVSet, KVKey: key, Value: val, CAS: &index}})
}

// KVSet writes key unconditionally.
func (n *Node) KVSet(ctx context.Context, key string, val []byte) (uint64, error) {
	return n.Apply(ctx, Txn{{Type: OpKVSet, KVKey: key, Value: val}})
}

// KVDelete deletes key; with index > 0 only when that is its modify index.
// A missing key is not an error.
func (n *Node) KVDelete(ctx context.Context, key string, index uint64) error {
	op := Op{Type: OpKVDelete, KVKey: key}
	if index > 0 {
		op.CAS = &index
	}
	_, err := n.Apply(ctx, Txn{op})
	return err
}

// KVList returns the keys under prefix and the namespace's index. Private
// keys (Config.PrivateKV) are included only on a server agent.
func (n *Node) KVList(ctx context.Context, prefix string) ([]KVEntry, uint64, error) {
	return n.KVWatch(ctx, prefix, 0)
}

// KVWatch blocks until the namespace's index is above index (or about five
// minutes pass, or ctx ends), then returns the keys under prefix and the
// index to pass next time. Private keys are returned only on a server
// agent, from its own state. Every agent can watch: the CA's trust bundle
// reaches all agents this way.
func (n *Node) KVWatch(ctx context.Context, prefix string, index uint64) ([]KVEntry, uint64, error) {
	if n.fsm != nil {
		wctx, cancel := context.WithTimeout(ctx, maxWait)
		defer cancel()
		s, err := n.fsm.waitState(wctx, func(s *fsmState) bool { return s.kvIndex > index })
		if err != nil && ctx.Err() != nil {
			return nil, index, opError("kv watch", ctx.Err())
		}
		return s.kvList(prefix, nil), s.kvIndex, nil
	}
	// Ask the server to answer before our own deadline does.
	wait := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)-500*time.Millisecond)
	}
	if wait <= 0 || index == 0 {
		wait = time.Millisecond
	}
	cctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	var out kvListAnswer
	q := url.Values{"prefix": {prefix}, "index": {strconv.FormatUint(index, 10)}, "wait": {wait.String()}}
	if err := n.rpc.CallJSON(cctx, http.MethodGet, "/rpc/v1/kv?"+q.Encode(), nil, &out, CallOptions{}); err != nil {
		return nil, index, opError("kv watch", err)
	}
	return out.Entries, out.Index, nil
}

// maxWait bounds one blocking query.
const maxWait = 5 * time.Minute

type kvListAnswer struct {
	Index   uint64    `json:"index"`
	Entries []KVEntry `json:"entries"`
}

// Peers lists the Raft configuration, from the leader.
func (n *Node) Peers(ctx context.Context) ([]Peer, error) {
	var out []Peer
	if err := n.rpc.CallJSON(ctx, http.MethodGet, "/rpc/v1/peers", nil, &out, CallOptions{Leader: true, Retry: true}); err != nil {
		return nil, opError("list peers", err)
	}
	return out, nil
}

// RemovePeer removes a server from the Raft configuration, on the leader.
func (n *Node) RemovePeer(ctx context.Context, id string) error {
	err := n.rpc.CallJSON(ctx, http.MethodDelete, "/rpc/v1/peers/"+url.PathEscape(id), nil, nil, CallOptions{Leader: true})
	return opError("remove peer", err)
}

// SaveSnapshot writes a backup of the state, taken on the leader, to w. Its
// format is described in docs/policy.md. The leader includes the servers'
// private state (Config.PrivateKV) only when this agent is a server of the
// Raft configuration; any other agent gets a backup without it, marked as
// such, whose restore keeps the cluster's current private state.
func (n *Node) SaveSnapshot(ctx context.Context, w io.Writer) error {
	resp, err := n.rpc.Do(ctx, http.MethodGet, "/rpc/v1/snapshot", nil, CallOptions{Leader: true, Stream: true})
	if err != nil {
		return opError("snapshot save", err)
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return opError("snapshot save", err)
}

// RestoreSnapshot replaces the cluster's state with a backup, on the
// leader. The backup is checked whole before anything is replaced. Keys
// under Config.KeepOnRestore, and the private state when the backup has
// none, keep their current values.
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader) (uint64, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSnapshot+1))
	if err != nil {
		return 0, opError("snapshot restore", err)
	}
	if len(b) > maxSnapshot {
		return 0, opError("snapshot restore", fmt.Errorf("%w: larger than %d bytes", ErrBadSnapshot, maxSnapshot))
	}
	if _, _, err := readBackup(b); err != nil {
		return 0, opError("snapshot restore", err)
	}
	resp, err := n.rpc.Do(ctx, http.MethodPut, "/rpc/v1/snapshot", b, CallOptions{Leader: true})
	if err != nil {
		return 0, opError("snapshot restore", err)
	}
	defer resp.Body.Close()
	var res TxnResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return 0, opError("snapshot restore", err)
	}
	return res.Index, nil
}

// PolicyStatus is what GET /v1/policy/status answers.
type PolicyStatus struct {
	Index uint64 `json:"index"`
	// Digest is a hash of the policy; equal on agents that hold the same.
	Digest    string              `json:"digest"`
	Documents map[policy.Kind]int `json:"documents"`
	// LastContact is when a server last confirmed the policy; zero if never.
	LastContact time.Time `json:"last_contact"`
	// StalenessSeconds is the time since LastContact (-1 when never).
	StalenessSeconds float64 `json:"staleness_seconds"`
	// Stale is true past Config.StaleAfter, or when never in contact.
	Stale  bool   `json:"stale"`
	Server bool   `json:"server"`
	Leader string `json:"leader,omitempty"`
}

// Status reports the policy this agent enforces and how fresh it is.
func (n *Node) Status() PolicyStatus {
	s := n.replica.Current()
	st := PolicyStatus{Index: s.Index(), Digest: s.Digest(), Documents: s.Counts(), LastContact: n.replica.LastContact(), Server: n.cfg.Server}
	stale := n.replica.Staleness()
	st.StalenessSeconds = stale.Seconds()
	if stale < 0 {
		st.StalenessSeconds = -1
	}
	st.Stale = stale < 0 || stale > n.cfg.StaleAfter
	if n.srv != nil {
		_, id := n.srv.raft.LeaderWithID()
		st.Leader = string(id)
	} else if l := n.rpc.Leader(); l != "" {
		st.Leader = l
	}
	return st
}
