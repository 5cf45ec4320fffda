package raftstore

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// ACLAPIDeps are what the ACL API needs besides the node.
type ACLAPIDeps struct {
	// Resolver is the agent's resolver: token/self resolves with it, and
	// with ACLs disabled (Resolver.Enabled false) the API answers 501.
	// Required.
	Resolver *acl.Resolver
	// Now is the clock of new tokens' creation and expiry. Default
	// time.Now.
	Now func() time.Time
}

// RegisterACLAPI mounts the ACL endpoints of the agent's local HTTP API,
// each with what it requires of the caller's token. Bodies and answers are
// JSON (package api's ACL types). No answer holds a secret's hash; the
// secret of a token is in the answer of its creation (and of the
// bootstrap) only. Errors are APIError, or the acl package's for refusals.
//
//	PUT    /v1/acl/bootstrap            the first management token, once    open (one time)
//	PUT    /v1/acl/token                create a token                      acl:write
//	GET    /v1/acl/tokens               every token                         acl:read
//	GET    /v1/acl/token/self           the caller's token                  any token
//	GET    /v1/acl/token/{accessor}     one token                           acl:read
//	PUT    /v1/acl/token/{accessor}     update; ?cas=INDEX                  acl:write
//	DELETE /v1/acl/token/{accessor}     delete; ?cas=INDEX                  acl:write
//	PUT    /v1/acl/policy               create a policy                     acl:write
//	GET    /v1/acl/policies             every policy                        acl:read
//	GET    /v1/acl/policy/{id}          one policy, by ID or name           acl:read
//	PUT    /v1/acl/policy/{id}          update; ?cas=INDEX                  acl:write
//	DELETE /v1/acl/policy/{id}          delete; ?cas=INDEX                  acl:write
func (n *Node) RegisterACLAPI(mount acl.MountFunc, deps ACLAPIDeps) error {
	if deps.Resolver == nil {
		return errors.New("raftstore: acl api: Resolver is required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	a := &aclAPI{n: n, store: n.ACL(), res: deps.Resolver, now: deps.Now}
	read := acl.Require(acl.ResourceACL, "", acl.Read)
	write := acl.Require(acl.ResourceACL, "", acl.Write)
	var errs []error
	h := func(pattern string, need acl.Requirement, f func(w http.ResponseWriter, r *http.Request) error) {
		errs = append(errs, mount(pattern, need, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !a.res.Enabled() {
				httpjson.CodedError(w, http.StatusNotImplemented, httpjson.CodeACLDisabled, errors.New("ACLs are disabled on this agent (acl.enabled: false)"))
				return
			}
			if err := f(w, r); err != nil && !acl.WriteError(w, r, err) {
				writeACLError(w, err)
			}
		})))
	}
	h("PUT /v1/acl/bootstrap", acl.Open("the one-time bootstrap; refused once done"), a.bootstrap)
	h("PUT /v1/acl/token", write, a.createToken)
	h("GET /v1/acl/tokens", read, a.listTokens)
	h("GET /v1/acl/token/self", acl.AnyToken("the caller's own token"), a.selfToken)
	h("GET /v1/acl/token/{accessor}", read, a.readToken)
	h("PUT /v1/acl/token/{accessor}", write, a.updateToken)
	h("DELETE /v1/acl/token/{accessor}", write, a.deleteToken)
	h("PUT /v1/acl/policy", write, a.createPolicy)
	h("GET /v1/acl/policies", read, a.listPolicies)
	h("GET /v1/acl/policy/{id}", read, a.readPolicy)
	h("PUT /v1/acl/policy/{id}", write, a.updatePolicy)
	h("DELETE /v1/acl/policy/{id}", write, a.deletePolicy)
	return errors.Join(errs...)
}

type aclAPI struct {
	n     *Node
	store *ACLStore
	res   *acl.Resolver
	now   func() time.Time
}

// writeACLError answers an error of the ACL store: the ACL sentinels by
// their own codes, the rest as the policy API does.
func writeACLError(w http.ResponseWriter, err error) {
	status, code := apiStatus(err)
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
	case errors.Is(err, acl.ErrBootstrapDone):
		status, code = http.StatusConflict, httpjson.CodeBootstrapDone
	case errors.Is(err, acl.ErrConflict):
		status, code = http.StatusConflict, httpjson.CodeConflict
	case errors.Is(err, acl.ErrInvalidPolicy):
		status, code = http.StatusBadRequest, httpjson.CodeInvalid
	case errors.Is(err, acl.ErrNotFound):
		status, code = http.StatusNotFound, httpjson.CodeNotFound
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	httpjson.WriteError(w, status, APIError{Error: err.Error(), Code: code, IdempotencyKey: w.Header().Get(HeaderIdempotencyKey)})
}

// tokenView is what the API shows of a token: never the hash of its
// secret; the secret itself only when given.
func tokenView(t *acl.Token, secret string) api.ACLToken {
	v := api.ACLToken{
		AccessorID:  t.AccessorID,
		SecretID:    secret,
		Description: t.Description,
		Type:        string(t.Type),
		CreateTime:  t.CreateTime,
		CreateIndex: t.CreateIndex,
		ModifyIndex: t.ModifyIndex,
	}
	for _, l := range t.Policies {
		v.Policies = append(v.Policies, api.ACLPolicyLink{ID: l.ID, Name: l.Name})
	}
	if !t.ExpirationTime.IsZero() {
		e := t.ExpirationTime
		v.ExpirationTime = &e
	}
	return v
}

func policyView(p *acl.Policy) api.ACLPolicy {
	return api.ACLPolicy{ID: p.ID, Name: p.Name, Description: p.Description, Rules: p.Rules, CreateIndex: p.CreateIndex, ModifyIndex: p.ModifyIndex}
}

func links(in []api.ACLPolicyLink) []acl.PolicyLink {
	var out []acl.PolicyLink
	for _, l := range in {
		out = append(out, acl.PolicyLink{ID: l.ID, Name: l.Name})
	}
	return out
}

// aclCAS reads ?cas=: the modify index a write requires; 0 for none.
func aclCAS(r *http.Request) (uint64, error) {
	v := r.URL.Query().Get("cas")
	if v == "" {
		return 0, nil
	}
	c, err := strconv.ParseUint(v, 10, 64)
	if err != nil || c == 0 {
		return 0, fmt.Errorf("%w: cas %q: want the modify index the token or policy must have", ErrInvalid, v)
	}
	return c, nil
}

func (a *aclAPI) bootstrap(w http.ResponseWriter, r *http.Request) error {
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	t, secret, err := acl.Bootstrap(ctx, a.store, a.now(), 0)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, tokenView(t, secret))
	return nil
}

func (a *aclAPI) createToken(w http.ResponseWriter, r *http.Request) error {
	var req api.ACLTokenRequest
	if err := httpjson.Decode(r, &req); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	secret := req.SecretID
	if secret == "" {
		var err error
		if secret, err = acl.NewSecret(); err != nil {
			return err
		}
	} else if err := acl.CheckSecret("field \"secret_id\"", secret); err != nil {
		// Not a malformed token of the request: a bad field of its body.
		return fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), acl.ErrMalformedToken.Error()+": "))
	}
	accessor := req.AccessorID
	if accessor == "" {
		var err error
		if accessor, err = acl.NewID(); err != nil {
			return err
		}
	} else if _, err := a.store.Token(accessor); err == nil {
		return fmt.Errorf("%w: token %s exists; update it, or give a new accessor ID", acl.ErrConflict, accessor)
	}
	ttl := req.TTL.D()
	if ttl < 0 || (ttl > 0 && ttl < acl.MinTokenTTL) {
		return fmt.Errorf("%w: field \"ttl\": %s: want 0 (never expires) or at least %s", acl.ErrInvalidPolicy, ttl, acl.MinTokenTTL)
	}
	now := a.now().UTC()
	t := &acl.Token{
		AccessorID:  accessor,
		SecretHash:  acl.HashSecret(secret),
		Description: req.Description,
		Type:        acl.TokenType(req.Type),
		Policies:    links(req.Policies),
		CreateTime:  now,
	}
	if t.Type == "" {
		t.Type = acl.TypeClient
	}
	if ttl > 0 {
		t.ExpirationTime = now.Add(ttl)
	}
	if err := t.Validate(); err != nil {
		return err
	}
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	stored, err := a.store.SetToken(ctx, t, 0)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, tokenView(stored, secret))
	return nil
}

func (a *aclAPI) listTokens(w http.ResponseWriter, _ *http.Request) error {
	out := []api.ACLToken{}
	for _, t := range a.store.Tokens() {
		out = append(out, tokenView(t, ""))
	}
	httpjson.Write(w, http.StatusOK, out)
	return nil
}

func (a *aclAPI) selfToken(w http.ResponseWriter, r *http.Request) error {
	secret, err := acl.TokenFromRequest(r)
	if err != nil {
		return err
	}
	var t *acl.Token
	if secret == "" {
		t, err = a.store.Token(acl.AnonymousAccessorID)
	} else {
		t, err = a.store.TokenBySecret(acl.HashSecret(secret))
		if errors.Is(err, acl.ErrNotFound) {
			err = fmt.Errorf("acl: token self: %w", acl.ErrTokenNotFound)
		}
	}
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, tokenView(t, ""))
	return nil
}

func (a *aclAPI) readToken(w http.ResponseWriter, r *http.Request) error {
	t, err := a.store.Token(r.PathValue("accessor"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, tokenView(t, ""))
	return nil
}

func (a *aclAPI) updateToken(w http.ResponseWriter, r *http.Request) error {
	cas, err := aclCAS(r)
	if err != nil {
		return err
	}
	var req api.ACLTokenRequest
	if err := httpjson.Decode(r, &req); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	accessor := r.PathValue("accessor")
	switch {
	case req.SecretID != "":
		return fmt.Errorf("%w: field \"secret_id\": a token's secret never changes; make a new token", acl.ErrInvalidPolicy)
	case req.AccessorID != "" && req.AccessorID != accessor:
		return fmt.Errorf("%w: field \"accessor_id\" %q is not the token of the path, %q", acl.ErrInvalidPolicy, req.AccessorID, accessor)
	case req.TTL != 0:
		return fmt.Errorf("%w: field \"ttl\": a token's expiry never changes; make a new token", acl.ErrInvalidPolicy)
	}
	cur, err := a.store.Token(accessor)
	if err != nil {
		return err
	}
	if req.Type != "" && acl.TokenType(req.Type) != cur.Type {
		return fmt.Errorf("%w: field \"type\": token %s is a %s token, and a type never changes", acl.ErrInvalidPolicy, accessor, cur.Type)
	}
	t := *cur
	t.Description = req.Description
	t.Policies = links(req.Policies)
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	stored, err := a.store.SetToken(ctx, &t, cas)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, tokenView(stored, ""))
	return nil
}

func (a *aclAPI) deleteToken(w http.ResponseWriter, r *http.Request) error {
	cas, err := aclCAS(r)
	if err != nil {
		return err
	}
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	accessor := r.PathValue("accessor")
	if err := a.store.DeleteToken(ctx, accessor, cas); err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, map[string]string{"deleted": accessor})
	return nil
}

// policyOf finds a policy by ID, else by name.
func (a *aclAPI) policyOf(idOrName string) (*acl.Policy, error) {
	p, err := a.store.Policy(idOrName)
	if errors.Is(err, acl.ErrNotFound) {
		if byName, nerr := a.store.PolicyByName(idOrName); nerr == nil {
			return byName, nil
		}
	}
	return p, err
}

func (a *aclAPI) createPolicy(w http.ResponseWriter, r *http.Request) error {
	var req api.ACLPolicy
	if err := httpjson.Decode(r, &req); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if req.ID != "" {
		return fmt.Errorf("%w: field \"id\": a new policy gets its ID from the store", acl.ErrInvalidPolicy)
	}
	id, err := acl.NewID()
	if err != nil {
		return err
	}
	p := &acl.Policy{ID: id, Name: req.Name, Description: req.Description, Rules: req.Rules}
	if err := p.Validate(); err != nil {
		return err
	}
	if other, err := a.store.PolicyByName(p.Name); err == nil {
		return fmt.Errorf("%w: a policy named %q exists (%s); update it instead", acl.ErrConflict, other.Name, other.ID)
	}
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	stored, err := a.store.SetPolicy(ctx, p, 0)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, policyView(stored))
	return nil
}

func (a *aclAPI) listPolicies(w http.ResponseWriter, _ *http.Request) error {
	out := []api.ACLPolicy{}
	for _, p := range a.store.Policies() {
		out = append(out, policyView(p))
	}
	httpjson.Write(w, http.StatusOK, out)
	return nil
}

func (a *aclAPI) readPolicy(w http.ResponseWriter, r *http.Request) error {
	p, err := a.policyOf(r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, policyView(p))
	return nil
}

func (a *aclAPI) updatePolicy(w http.ResponseWriter, r *http.Request) error {
	cas, err := aclCAS(r)
	if err != nil {
		return err
	}
	var req api.ACLPolicy
	if err := httpjson.Decode(r, &req); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	cur, err := a.policyOf(r.PathValue("id"))
	if err != nil {
		return err
	}
	if req.ID != "" && req.ID != cur.ID {
		return fmt.Errorf("%w: field \"id\" %q is not the policy of the path, %s", acl.ErrInvalidPolicy, req.ID, cur.ID)
	}
	p := &acl.Policy{ID: cur.ID, Name: req.Name, Description: req.Description, Rules: req.Rules}
	if p.Name == "" {
		p.Name = cur.Name
	}
	if err := p.Validate(); err != nil {
		return err
	}
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	stored, err := a.store.SetPolicy(ctx, p, cas)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, policyView(stored))
	return nil
}

func (a *aclAPI) deletePolicy(w http.ResponseWriter, r *http.Request) error {
	cas, err := aclCAS(r)
	if err != nil {
		return err
	}
	cur, err := a.policyOf(r.PathValue("id"))
	if err != nil {
		return err
	}
	ctx, err := writeContext(w, r)
	if err != nil {
		return err
	}
	if err := a.store.DeletePolicy(ctx, cur.ID, cas); err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, map[string]string{"deleted": cur.ID})
	return nil
}
