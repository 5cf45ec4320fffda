package ca

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// Local HTTP API paths (served by the agent on 127.0.0.1:8500).
const (
	APIPathRoots  = "/v1/ca/roots"
	APIPathLeaf   = "/v1/ca/leaf"
	APIPathToken  = "/v1/ca/token"
	APIPathRotate = "/v1/ca/rotate"
)

// RootInfo describes one trusted root.
type RootInfo struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	// Active is true for the root new leaves chain to.
	Active bool `json:"active"`
	// PEM is the root certificate.
	PEM string `json:"pem"`
}

// RootsResponse answers GET /v1/ca/roots.
type RootsResponse struct {
	TrustDomain string     `json:"trust_domain"`
	Generation  uint64     `json:"generation"`
	Roots       []RootInfo `json:"roots"`
	// Rotation is the rotation status; servers only.
	Rotation *RotationStatus `json:"rotation,omitempty"`
}

// TokenRequest is the body of PUT /v1/ca/token.
type TokenRequest struct {
	Node string `json:"node"`
	// TTL is a Go duration such as "10m"; empty means the default.
	TTL string `json:"ttl,omitempty"`
}

// TokenResponse answers PUT /v1/ca/token.
type TokenResponse struct {
	Node    string    `json:"node"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// APIDeps are what the local API handlers read.
type APIDeps struct {
	// Manager is the agent's certificate manager. Required.
	Manager *Manager
	// Server is the embedded CA; nil on client agents and with provider
	// step-ca (token and rotate then answer 501).
	Server *Server
	// ReadyWait bounds how long token and rotate wait for a server that
	// is still loading the CA state (just started, or its Raft not caught
	// up yet) before they answer 503 not_ready. Default: DefaultReadyWait.
	ReadyWait time.Duration
}

// DefaultReadyWait is APIDeps.ReadyWait's default: long enough for a
// server that has just started to load the CA state, well inside the
// CLI's default timeout.
const DefaultReadyWait = 10 * time.Second

// waitReady waits, within the request and APIDeps.ReadyWait, until the
// embedded CA can sign: a script that asks a freshly started server for a
// token gets one rather than a 503 it must retry.
func (h *apiHandler) waitReady(r *http.Request, op string) error {
	ctx, cancel := context.WithTimeout(r.Context(), cmp.Or(h.deps.ReadyWait, DefaultReadyWait))
	defer cancel()
	if err := h.deps.Server.WaitReady(ctx); err != nil {
		return fmt.Errorf("ca: %s: %w", op, err)
	}
	return nil
}

// RegisterAPI mounts the CA's local API with mount (the agent's HTTP API),
// each route with what it requires of the caller's ACL token. Errors are
// the API's one shape (httpjson.ErrorBody).
//
//	GET  /v1/ca/roots    the trust bundle and, on servers, the rotation    open: every client needs it first
//	GET  /v1/ca/leaf     the agent's leaf, its SANs and expiry, never its key  ca:read on leaf
//	PUT  /v1/ca/token    a node's one-time bootstrap token (servers)     ca:write on token
//	PUT  /v1/ca/rotate   start a root rotation (servers)                ca:write on rotate
//
// POST on token and rotate, their methods before PUT, are kept for one
// release as deprecated aliases (httpjson.Deprecated).
func RegisterAPI(deps APIDeps, mount acl.MountFunc) error {
	h := &apiHandler{deps: deps}
	tokenNeed := acl.Require(acl.ResourceCA, acl.CAToken, acl.Write)
	rotateNeed := acl.Require(acl.ResourceCA, acl.CARotate, acl.Write)
	return errors.Join(
		mount("GET "+APIPathRoots, acl.Open("the trust bundle, which every agent and workload needs before it holds anything"), http.HandlerFunc(h.roots)),
		mount("GET "+APIPathLeaf, acl.Require(acl.ResourceCA, acl.CALeaf, acl.Read), http.HandlerFunc(h.leaf)),
		mount("PUT "+APIPathToken, tokenNeed, http.HandlerFunc(h.token)),
		mount("PUT "+APIPathRotate, rotateNeed, http.HandlerFunc(h.rotate)),
		mount("POST "+APIPathToken, tokenNeed, httpjson.Deprecated{Successor: "PUT " + APIPathToken, Handler: http.HandlerFunc(h.token)}),
		mount("POST "+APIPathRotate, rotateNeed, httpjson.Deprecated{Successor: "PUT " + APIPathRotate, Handler: http.HandlerFunc(h.rotate)}),
	)
}

// NewAPIHandler serves the routes of RegisterAPI on a handler of its own,
// with no access control: for tests and tools. The agent mounts
// RegisterAPI on its HTTP API, which enforces the ACLs.
func NewAPIHandler(deps APIDeps) http.Handler {
	mux := http.NewServeMux()
	if err := RegisterAPI(deps, acl.MountAllowAll(mux)); err != nil {
		panic(err) // fixed routes on an empty mux
	}
	return httpjson.Mux(mux)
}

type apiHandler struct{ deps APIDeps }

func (h *apiHandler) roots(w http.ResponseWriter, r *http.Request) {
	b := h.deps.Manager.Bundle()
	if s := h.deps.Server; s != nil {
		if sb := s.Bundle(); sb != nil && (b == nil || sb.Generation > b.Generation) {
			b = sb
		}
	}
	if b == nil {
		writeAPIError(w, fmt.Errorf("ca: roots: %w: no trust bundle yet", ErrNotReady))
		return
	}
	resp := RootsResponse{TrustDomain: b.TrustDomain, Generation: b.Generation}
	for _, c := range b.Roots {
		fp := Fingerprint(c)
		resp.Roots = append(resp.Roots, RootInfo{
			Fingerprint: fp, Subject: c.Subject.String(), NotBefore: c.NotBefore, NotAfter: c.NotAfter,
			Active: fp == b.ActiveRoot || len(b.Roots) == 1, PEM: string(EncodeCertificatesPEM(c)),
		})
	}
	if s := h.deps.Server; s != nil {
		if st, err := s.RotationStatus(r.Context()); err == nil {
			resp.Rotation = &st
		}
	}
	httpjson.Write(w, http.StatusOK, resp)
}

func (h *apiHandler) leaf(w http.ResponseWriter, _ *http.Request) {
	li, err := h.deps.Manager.Leaf()
	if err != nil {
		writeAPIError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, li)
}

func (h *apiHandler) token(w http.ResponseWriter, r *http.Request) {
	if h.deps.Server == nil {
		writeAPIError(w, fmt.Errorf("ca: token: %w: tokens are made by the embedded CA on server agents", ErrNotServer))
		return
	}
	var req TokenRequest
	if err := httpjson.Decode(r, &req); err != nil {
		writeAPIError(w, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeAPIError(w, fmt.Errorf("ca: token: %w: ttl %q: %v", ErrBadRequest, req.TTL, err))
			return
		}
		ttl = d
	}
	if err := h.waitReady(r, "token"); err != nil {
		writeAPIError(w, err)
		return
	}
	tok, exp, err := h.deps.Server.Token(r.Context(), req.Node, ttl)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, TokenResponse{Node: req.Node, Token: tok, Expires: exp})
}

func (h *apiHandler) rotate(w http.ResponseWriter, r *http.Request) {
	if h.deps.Server == nil {
		writeAPIError(w, fmt.Errorf("ca: rotate: %w: run it on a server agent", ErrNotServer))
		return
	}
	if err := h.waitReady(r, "rotate"); err != nil {
		writeAPIError(w, err)
		return
	}
	st, err := h.deps.Server.Rotate(r.Context())
	if err != nil {
		if errors.Is(err, ErrRotationInProgress) {
			if cur, serr := h.deps.Server.RotationStatus(r.Context()); serr == nil {
				err = fmt.Errorf("%w (from %s to %s, waiting for %d nodes)", err, cur.From, cur.To, len(cur.Pending))
			}
		}
		writeAPIError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, st)
}

// writeAPIError answers err with the status and code of its sentinel, as
// the RPC port does, but for a bad request, whose code is "invalid" as on
// every endpoint of the API (the RPC port keeps "bad_request", which agents
// of earlier releases read).
func writeAPIError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrBadRequest) || errors.Is(err, httpjson.ErrBadBody) {
		httpjson.CodedError(w, http.StatusBadRequest, httpjson.CodeInvalid, err)
		return
	}
	writeError(w, err)
}
