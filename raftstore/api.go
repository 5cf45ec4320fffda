package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/httpjson"
	"github.com/meshwork/meshwork/policy"
)

// ApplyResponse answers PUT /v1/policy and DELETE /v1/policy/<kind>/<name>.
type ApplyResponse struct {
	// Index is the Raft index the change was committed at.
	Index     uint64       `json:"index"`
	Documents []policy.Key `json:"documents,omitempty"`
}

// PolicyList answers GET /v1/policy.
type PolicyList struct {
	Index     uint64         `json:"index"`
	Documents []policy.Entry `json:"documents"`
}

// HeaderIdempotencyKey names the write a PUT or DELETE of the policy API
// makes: a retry with the same key is applied at most once and answered
// with the first result. The answer carries the key used, the caller's or
// one the agent made.
const HeaderIdempotencyKey = "Idempotency-Key"

// APIError is the JSON body of an error answer of the policy, snapshot,
// operator and ACL APIs: the API's one error shape, whose Code is one of
// httpjson.Codes and whose IdempotencyKey is the key of the write, on the
// answers to writes.
type APIError = httpjson.ErrorBody

// RegisterAPI mounts the policy, operator and snapshot endpoints of the
// agent's local HTTP API with mount (the HTTP API's Mount), each with what
// it requires of the caller's ACL token. Patterns carry their method, as
// net/http.ServeMux reads them. Writes take an Idempotency-Key header;
// errors are APIError, or the acl package's for refusals.
//
//	PUT    /v1/policy                    apply documents (YAML or JSON body); ?cas=INDEX   write on each document's kind (intention:write on an Intention's destination)
//	GET    /v1/policy                    list; ?kind=KIND; blocking with ?index=N&wait=30s; ?consistent   filtered to what the token may read
//	GET    /v1/policy/status             index, digest, staleness, last contact            agent:read
//	GET    /v1/policy/{kind}/{name}      one document; ?consistent                         read on the document
//	DELETE /v1/policy/{kind}/{name}      delete; ?cas=INDEX                                write on the document
//	GET    /v1/operator/raft/peers       the Raft configuration                            operator:read on raft
//	DELETE /v1/operator/raft/peers/{id}  remove a server                                   operator:write on raft
//	GET    /v1/snapshot                  save a backup (gzip)                              operator:read on snapshot
//	PUT    /v1/snapshot                  restore a backup                                  operator:write on snapshot
func (n *Node) RegisterAPI(mount acl.MountFunc) error {
	var errs []error
	h := func(pattern string, need acl.Requirement, f func(w http.ResponseWriter, r *http.Request) error) {
		errs = append(errs, mount(pattern, need, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := f(w, r); err != nil && !acl.WriteError(w, r, err) {
				writeAPIError(w, err)
			}
		})))
	}
	h("PUT /v1/policy", acl.CheckedInHandler("write on the kind of each document of the body (intention:write on an Intention's destination)"), n.apiApply)
	h("GET /v1/policy", acl.CheckedInHandler("read on each document: the list is filtered"), n.apiList)
	h("GET /v1/policy/status", acl.Require(acl.ResourceAgent, "", acl.Read), func(w http.ResponseWriter, r *http.Request) error {
		st := n.Status()
		w.Header().Set(HeaderIndex, strconv.FormatUint(st.Index, 10))
		httpjson.Write(w, http.StatusOK, st)
		return nil
	})
	h("GET /v1/policy/{kind}/{name}", acl.CheckedInHandler("read on the document's kind (intention:read on an Intention's destination)"), n.apiGet)
	h("DELETE /v1/policy/{kind}/{name}", acl.CheckedInHandler("write on the document's kind (intention:write on an Intention's destination)"), n.apiDelete)
	h("GET /v1/operator/raft/peers", acl.Require(acl.ResourceOperator, acl.OperatorRaft, acl.Read), func(w http.ResponseWriter, r *http.Request) error {
		p, err := n.Peers(r.Context())
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, p)
		return nil
	})
	h("DELETE /v1/operator/raft/peers/{id}", acl.Require(acl.ResourceOperator, acl.OperatorRaft, acl.Write), func(w http.ResponseWriter, r *http.Request) error {
		if err := n.RemovePeer(r.Context(), r.PathValue("id")); err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, map[string]string{"removed": r.PathValue("id")})
		return nil
	})
	h("GET /v1/snapshot", acl.Require(acl.ResourceOperator, acl.OperatorSnapshot, acl.Read), func(w http.ResponseWriter, r *http.Request) error {
		pr, pw := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			err := n.SaveSnapshot(r.Context(), pw)
			pw.CloseWithError(err)
			errc <- err
		}()
		// Read the first bytes before answering, so a failure is an error
		// answer rather than a cut stream.
		first := make([]byte, 32<<10)
		k, rerr := io.ReadAtLeast(pr, first, 1)
		if rerr != nil {
			pr.Close()
			if err := <-errc; err != nil {
				return err
			}
			return rerr
		}
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Content-Disposition", `attachment; filename="meshwork.snap"`)
		_, _ = w.Write(first[:k])
		_, _ = io.Copy(w, pr)
		<-errc
		return nil
	})
	h("PUT /v1/snapshot", acl.Require(acl.ResourceOperator, acl.OperatorSnapshot, acl.Write), func(w http.ResponseWriter, r *http.Request) error {
		idx, err := n.RestoreSnapshot(r.Context(), r.Body)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, ApplyResponse{Index: idx})
		return nil
	})
	return errors.Join(errs...)
}

// apiStatus maps an error to its HTTP status and code. An unknown outcome
// is checked first: whatever else it wraps, it was no refusal.
func apiStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
		return http.StatusServiceUnavailable, httpjson.CodeOutcomeUnknown
	case errors.Is(err, policy.ErrCapExceeded):
		// Not 400: the documents are valid, and a policy with fewer or
		// smaller ones would take them. 413 says the content is more than
		// the server accepts; the message names the cap and the figures.
		return http.StatusRequestEntityTooLarge, httpjson.CodePolicyCap
	case errors.Is(err, policy.ErrInvalid), errors.Is(err, ErrInvalid), errors.Is(err, httpjson.ErrBadBody):
		return http.StatusBadRequest, httpjson.CodeInvalid
	case errors.Is(err, ErrBadSnapshot):
		return http.StatusBadRequest, httpjson.CodeBadSnapshot
	case errors.Is(err, ErrCASConflict):
		return http.StatusConflict, httpjson.CodeCASConflict
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, httpjson.CodeNotFound
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, httpjson.CodeForbidden
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrNotLeader):
		return http.StatusServiceUnavailable, httpjson.CodeNoLeader
	case errors.Is(err, ErrNoServers):
		return http.StatusServiceUnavailable, httpjson.CodeNoServers
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable, httpjson.CodeClosed
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, httpjson.CodeTimeout
	}
	return http.StatusInternalServerError, httpjson.CodeInternal
}

// writeAPIError answers err as an APIError. A 503 carries Retry-After.
func writeAPIError(w http.ResponseWriter, err error) {
	status, code := apiStatus(err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	httpjson.WriteError(w, status, APIError{Error: err.Error(), Code: code, IdempotencyKey: w.Header().Get(HeaderIdempotencyKey)})
}

// writeContext returns the request's context carrying the write's
// idempotency key, the caller's Idempotency-Key or a new one, and sets the
// key on the answer.
func writeContext(w http.ResponseWriter, r *http.Request) (context.Context, error) {
	key := r.Header.Get(HeaderIdempotencyKey)
	if key == "" {
		key = NewIdempotencyKey()
	} else if err := ValidateIdempotencyKey(key); err != nil {
		return nil, fmt.Errorf("header %s: %w", HeaderIdempotencyKey, err)
	}
	w.Header().Set(HeaderIdempotencyKey, key)
	return WithIdempotencyKey(r.Context(), key), nil
}

func casParam(r *http.Request) (*uint64, error) {
	v := r.URL.Query().Get("cas")
	if v == "" {
		return nil, nil
	}
	c, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: cas %q: want a modify index", ErrInvalid, v)
	}
	return &c, nil
}

func (n *Node) apiApply(w http.ResponseWriter, r *http.Request) error {
	cas, err := casParam(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, policy.MaxInput+1))
	if err != nil {
		return fmt.Errorf("%w: read body: %v", ErrInvalid, err)
	}
	docs, err := policy.Parse(body)
	if err != nil {
		return err
	}
	authz := acl.FromContext(r.Context())
	for i := range docs {
		if err := authz.CheckDocument(docs[i].Kind, docs[i].Name, acl.Write); err != nil {
			return err
		}
	}
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	idx, err := n.ApplyDocuments(ctx, docs, cas)
	if err != nil {
		return err
	}
	keys := make([]policy.Key, len(docs))
	for i := range docs {
		keys[i] = docs[i].Key()
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	httpjson.Write(w, http.StatusOK, ApplyResponse{Index: idx, Documents: keys})
	return nil
}

// readSet returns the set a read is served from: the local replica, waited
// on for a blocking query (?index=N&wait=D), or the leader's (?consistent).
func (n *Node) readSet(r *http.Request) (*policy.Set, error) {
	q := r.URL.Query()
	if _, ok := q["consistent"]; ok {
		return n.ConsistentPolicy(r.Context())
	}
	if q.Get("index") != "" {
		idx, wait, _, err := blockingQuery(r)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		s, _ := n.replica.Wait(ctx, idx)
		return s, nil
	}
	return n.replica.Current(), nil
}

func (n *Node) apiList(w http.ResponseWriter, r *http.Request) error {
	var kind policy.Kind
	if v := r.URL.Query().Get("kind"); v != "" {
		k, err := policy.ParseKind(v)
		if err != nil {
			return err
		}
		kind = k
	}
	s, err := n.readSet(r)
	if err != nil {
		return err
	}
	authz := acl.FromContext(r.Context())
	out := PolicyList{Index: s.Index(), Documents: []policy.Entry{}}
	for _, e := range s.List(kind) {
		if authz.AllowedDocument(e.Kind, e.Name, acl.Read) {
			out.Documents = append(out.Documents, *e)
		}
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(s.Index(), 10))
	httpjson.Write(w, http.StatusOK, out)
	return nil
}

func (n *Node) apiGet(w http.ResponseWriter, r *http.Request) error {
	kind, err := policy.ParseKind(r.PathValue("kind"))
	if err != nil {
		return err
	}
	if err := acl.FromContext(r.Context()).CheckDocument(kind, r.PathValue("name"), acl.Read); err != nil {
		return err
	}
	s, err := n.readSet(r)
	if err != nil {
		return err
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(s.Index(), 10))
	e, ok := s.Get(kind, r.PathValue("name"))
	if !ok {
		return fmt.Errorf("%w: %s %q (policy index %d)", ErrNotFound, kind, r.PathValue("name"), s.Index())
	}
	httpjson.Write(w, http.StatusOK, e)
	return nil
}

func (n *Node) apiDelete(w http.ResponseWriter, r *http.Request) error {
	kind, err := policy.ParseKind(r.PathValue("kind"))
	if err != nil {
		return err
	}
	if err := acl.FromContext(r.Context()).CheckDocument(kind, r.PathValue("name"), acl.Write); err != nil {
		return err
	}
	cas, err := casParam(r)
	if err != nil {
		return err
	}
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	idx, err := n.DeleteDocument(ctx, policy.Key{Kind: kind, Name: r.PathValue("name")}, cas)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, ApplyResponse{Index: idx})
	return nil
}
