package raftstore

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/meshwork/meshwork/internal/httpjson"
)

// aclRoutes registers the ACL routes of the server port:
//
//	GET /rpc/v1/acl?index=N&wait=D    blocking watch: the whole state once its index differs from N
//	GET /rpc/v1/acl/token/{id}        one token, by accessor ID; ?consistent
//	GET /rpc/v1/acl/policy/{id}       one policy, by ID; ?consistent
//
// The answers carry the hashes of the tokens' secrets, never secrets: the
// servers know no secret. Only holders of the cluster key reach this port.
func (n *Node) aclRoutes(h func(string, func(http.ResponseWriter, *http.Request) error)) {
	h("GET /rpc/v1/acl", n.rpcACLWatch)
	h("GET /rpc/v1/acl/token/{id}", func(w http.ResponseWriter, r *http.Request) error {
		t, err := n.rpcACLState(r)
		if err != nil {
			return err
		}
		tok, err := t.st.Token(r.PathValue("id"))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		httpjson.Write(w, http.StatusOK, tok)
		return nil
	})
	h("GET /rpc/v1/acl/policy/{id}", func(w http.ResponseWriter, r *http.Request) error {
		t, err := n.rpcACLState(r)
		if err != nil {
			return err
		}
		p, err := t.st.Policy(r.PathValue("id"))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		httpjson.Write(w, http.StatusOK, p)
		return nil
	})
}

// rpcACLState is the table a read answers from: after a barrier with
// ?consistent.
func (n *Node) rpcACLState(r *http.Request) (*aclTable, error) {
	if consistent(r) {
		if err := n.srv.barrier(); err != nil {
			return nil, err
		}
	}
	return n.fsm.state().acl, nil
}

// rpcACLWatch is the blocking watch client agents follow the ACL state
// with. With ?index=N it waits until the state's index differs from N (at
// most ?wait=, default and limit 5m), then answers the whole state, or
// only the index when nothing changed; N may be 0, the index of a state
// nobody wrote yet. An index that differs at once (a newer agent, a
// restored cluster) is answered at once. Without ?index the whole state
// is answered at once.
func (n *Node) rpcACLWatch(w http.ResponseWriter, r *http.Request) error {
	index, wait, blocking, err := blockingQuery(r)
	if err != nil {
		return err
	}
	t, err := n.rpcACLState(r)
	if err != nil {
		return err
	}
	if blocking && t.st.Index() == index {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		st, _ := n.fsm.waitState(ctx, func(s *fsmState) bool { return s.acl.st.Index() != index })
		cancel()
		t = st.acl
	}
	cur := t.st.Index()
	w.Header().Set(HeaderIndex, strconv.FormatUint(cur, 10))
	if blocking && cur == index {
		httpjson.Write(w, http.StatusOK, aclWatchAnswer{Index: cur})
		return nil
	}
	b := t.encoded()
	if b == nil {
		return fmt.Errorf("acl watch: the state at index %d could not be encoded", cur)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
	return nil
}
