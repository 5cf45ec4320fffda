package raftstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// routes registers the RPC routes of the server port. Every handler runs
// behind the mutual TLS of the port: the caller holds the cluster key (or a
// certificate of an added trust source).
func (n *Node) routes() {
	h := func(pattern string, f func(w http.ResponseWriter, r *http.Request) error) {
		route := pattern
		n.rpcMux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			err := f(w, r)
			code := "ok"
			if err != nil {
				code = errCode(err)
				n.writeRPCError(w, err)
			}
			n.m.rpcRequests.WithLabelValues(route, code).Inc()
		})
	}
	h("POST /rpc/v1/apply", n.rpcApply)
	h("GET /rpc/v1/policy", n.rpcPolicy)
	h("GET /rpc/v1/policy/stream", n.rpcPolicyStream)
	h("GET /rpc/v1/kv/{key...}", n.rpcKVGet)
	h("GET /rpc/v1/kv", n.rpcKVList)
	h("GET /rpc/v1/status", func(w http.ResponseWriter, r *http.Request) error {
		httpjson.Write(w, http.StatusOK, n.srv.status())
		return nil
	})
	h("GET /rpc/v1/peers", func(w http.ResponseWriter, r *http.Request) error {
		if err := n.requireLeader(); err != nil {
			return err
		}
		if err := n.callerMay(r, acl.OperatorRaft, acl.Read); err != nil {
			return err
		}
		p, err := n.srv.peers()
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, p)
		return nil
	})
	h("DELETE /rpc/v1/peers/{id}", func(w http.ResponseWriter, r *http.Request) error {
		if err := n.callerMay(r, acl.OperatorRaft, acl.Write); err != nil {
			return err
		}
		if err := n.srv.removePeer(r.PathValue("id")); err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, map[string]string{"removed": r.PathValue("id")})
		return nil
	})
	h("GET /rpc/v1/snapshot", func(w http.ResponseWriter, r *http.Request) error {
		if err := n.requireLeader(); err != nil {
			return err
		}
		if err := n.callerMay(r, acl.OperatorSnapshot, acl.Read); err != nil {
			return err
		}
		// The private state goes only to a server (snapshot.go).
		caller, private, err := n.callerIsServer(r)
		if err != nil {
			return err
		}
		// Build the backup first, so that a failure is still an error answer.
		var buf strings.Builder
		if err := n.srv.saveBackup(&buf, private); err != nil {
			return err
		}
		n.log.Info("snapshot saved", "caller", caller, "private", private)
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = io.WriteString(w, buf.String())
		return nil
	})
	n.aclRoutes(h)
	h("PUT /rpc/v1/snapshot", func(w http.ResponseWriter, r *http.Request) error {
		if err := n.requireLeader(); err != nil {
			return err
		}
		if err := n.callerMay(r, acl.OperatorSnapshot, acl.Write); err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, maxSnapshot+1))
		if err != nil {
			return fmt.Errorf("%w: read body: %v", ErrInvalid, err)
		}
		idx, err := n.srv.restoreBackup(r.Context(), b)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, TxnResult{Index: idx})
		return nil
	})
}

// requireLeader answers with a redirect (421 with the leader's name) or
// ErrNoLeader unless this server leads.
func (n *Node) requireLeader() error {
	if n.srv.raft.State() == raft.Leader {
		return nil
	}
	return n.srv.notLeaderError()
}

func (n *Node) writeRPCError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotLeader):
		if _, id := n.srv.raft.LeaderWithID(); id != "" {
			w.Header().Set(HeaderLeader, string(id))
		}
		status = http.StatusMisdirectedRequest
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrClosed):
		status = http.StatusServiceUnavailable
	case errors.Is(err, ErrOutcomeUnknown):
		status = http.StatusServiceUnavailable
	case errors.Is(err, ErrCASConflict):
		status = http.StatusConflict
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrBadSnapshot):
		status = http.StatusBadRequest
	case errors.Is(err, ErrForbidden):
		status = http.StatusForbidden
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status = http.StatusGatewayTimeout
	}
	httpjson.Write(w, status, RemoteError{Code: errCode(err), Message: err.Error()})
}

// applyRequest is the body of POST /rpc/v1/apply: transactions that an
// agent's forwarder grouped, each applied (or refused) on its own.
type applyRequest struct {
	Txns []Txn `json:"txns"`
	// Tokens are the ACL secrets the writes' callers presented, one per
	// transaction ("" for none; the field is left out when all are). A
	// leader with ACLs enabled decides each write from an agent that is not
	// a server by its token. They never reach the log.
	Tokens []string `json:"tokens,omitempty"`
}

type applyAnswer struct {
	Results []TxnResult `json:"results"`
}

func (n *Node) rpcApply(w http.ResponseWriter, r *http.Request) error {
	var req applyRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&req); err != nil {
		return fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	if len(req.Txns) == 0 || len(req.Txns) > 4096 {
		return fmt.Errorf("%w: %d transactions in one request", ErrInvalid, len(req.Txns))
	}
	if len(req.Tokens) != 0 && len(req.Tokens) != len(req.Txns) {
		return fmt.Errorf("%w: %d tokens for %d transactions", ErrInvalid, len(req.Tokens), len(req.Txns))
	}
	if err := n.requireLeader(); err != nil {
		return err
	}
	authorize, err := n.callerWrites(r)
	if err != nil {
		return err
	}
	// Each transaction goes through the leader's batcher like a local write,
	// so forwarded and local writes share log entries.
	res := make([]TxnResult, len(req.Txns))
	var wg sync.WaitGroup
	for i, txn := range req.Txns {
		err := validateTxn(txn)
		if err == nil && authorize != nil {
			var secret string
			if len(req.Tokens) > 0 {
				secret = req.Tokens[i]
			}
			err = authorize(txn, secret)
		}
		if err != nil {
			res[i].Err = &RemoteError{Code: errCode(err), Message: err.Error()}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			idx, err := n.srv.apply(r.Context(), txn)
			if err != nil {
				res[i].Err = &RemoteError{Code: errCode(err), Message: err.Error()}
				return
			}
			res[i].Index = idx
		}()
	}
	wg.Wait()
	// All refused for leadership: answer like a non-leader, so the client
	// follows the redirect or waits for an election, or, when leadership
	// was lost with a write in flight, with that (the client retries
	// under the same keys).
	var lost error
	for i := range res {
		if res[i].Err == nil || !leadershipCode(res[i].Err.Code) {
			httpjson.Write(w, http.StatusOK, applyAnswer{Results: res})
			return nil
		}
		if res[i].Err.Code == "lost_leader" {
			lost = res[i].Err
		}
	}
	return cmp.Or(lost, error(res[0].Err))
}

// leadershipCode reports whether an error code says the server was not
// (or stopped being) the leader, rather than anything about the write.
func leadershipCode(code string) bool {
	return code == "not_leader" || code == "no_leader" || code == "lost_leader" || code == "closed"
}

func consistent(r *http.Request) bool {
	_, ok := r.URL.Query()["consistent"]
	return ok
}

func (n *Node) rpcPolicy(w http.ResponseWriter, r *http.Request) error {
	if consistent(r) {
		if err := n.srv.barrier(); err != nil {
			return err
		}
	}
	s := n.fsm.Policy()
	w.Header().Set(HeaderIndex, strconv.FormatUint(s.Index(), 10))
	httpjson.Write(w, http.StatusOK, s)
	return nil
}

// rpcPolicyStream streams the policy as JSON lines: the whole set whenever
// its index differs from the last one sent (the first time: from the
// client's ?index=), and a heartbeat every WatchHeartbeat so the client can
// tell a live stream from a dead one.
func (n *Node) rpcPolicyStream(w http.ResponseWriter, r *http.Request) error {
	last, err := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	if err != nil && r.URL.Query().Get("index") != "" {
		return fmt.Errorf("%w: index %q: %v", ErrInvalid, r.URL.Query().Get("index"), err)
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		return errors.New("streaming unsupported")
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	hb := time.NewTicker(n.cfg.WatchHeartbeat)
	defer hb.Stop()
	// First line at once, so the client knows the stream is up.
	if err := enc.Encode(streamMsg{Index: n.fsm.state().policyIndex, Heartbeat: true}); err != nil {
		return nil
	}
	fl.Flush()
	for {
		st, ch := n.fsm.watch()
		if st.policyIndex != last {
			if _, err := w.Write(st.streamLine()); err != nil {
				return nil // client gone
			}
			fl.Flush()
			last = st.policyIndex
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-ch:
		case <-hb.C:
			if err := enc.Encode(streamMsg{Index: last, Heartbeat: true}); err != nil {
				return nil
			}
			fl.Flush()
		}
	}
}

func (n *Node) rpcKVGet(w http.ResponseWriter, r *http.Request) error {
	key := r.PathValue("key")
	if n.private(key) {
		return fmt.Errorf("%w: key %q is not served over the network", ErrForbidden, key)
	}
	if consistent(r) {
		if err := n.srv.barrier(); err != nil {
			return err
		}
	}
	e, ok := n.fsm.state().kvGet(key)
	if !ok {
		return fmt.Errorf("%w: key %q", ErrNotFound, key)
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(e.ModifyIndex, 10))
	httpjson.Write(w, http.StatusOK, e)
	return nil
}

// blockingQuery reads the parameters of a blocking query: ?index=N (0 when
// absent) and ?wait=D (default and limit maxWait). blocking reports whether
// ?index was given.
func blockingQuery(r *http.Request) (index uint64, wait time.Duration, blocking bool, err error) {
	q := r.URL.Query()
	_, blocking = q["index"]
	if v := q.Get("index"); v != "" {
		if index, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, 0, false, fmt.Errorf("%w: index %q: want a number", ErrInvalid, v)
		}
	}
	wait = maxWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, 0, false, fmt.Errorf("%w: wait %q: want a duration such as 30s", ErrInvalid, v)
		}
		wait = min(d, maxWait)
	}
	return index, wait, blocking, nil
}

// rpcKVList is a blocking query: with ?index=N it waits until the
// namespace's index is above N (at most ?wait=, default and limit 5m).
func (n *Node) rpcKVList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	index, wait, _, err := blockingQuery(r)
	if err != nil {
		return err
	}
	if consistent(r) {
		if err := n.srv.barrier(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	st, _ := n.fsm.waitState(ctx, func(s *fsmState) bool { return s.kvIndex > index })
	w.Header().Set(HeaderIndex, strconv.FormatUint(st.kvIndex, 10))
	httpjson.Write(w, http.StatusOK, kvListAnswer{Index: st.kvIndex, Entries: st.kvList(q.Get("prefix"), n.private)})
	return nil
}
