package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/meshwork/meshwork/acl"
)

// How the CLI and tools find the ACL token to send, besides a flag.
const (
	// TokenEnv holds a token's secret.
	TokenEnv = acl.EnvToken
	// TokenFileEnv names a file that holds a token's secret.
	TokenFileEnv = "MESHWORK_HTTP_TOKEN_FILE"
)

// ACLToken is an ACL token as the API shows it: never the hash of its
// secret, and the secret itself only in the answers of a creation and of
// the bootstrap, once.
type ACLToken struct {
	// AccessorID is the token's public ID.
	AccessorID string `json:"accessor_id"`
	// SecretID is the secret, in the answers of create and bootstrap only.
	SecretID    string `json:"secret_id,omitempty"`
	Description string `json:"description,omitempty"`
	// Type is "client" or "management".
	Type     string          `json:"type"`
	Policies []ACLPolicyLink `json:"policies,omitempty"`
	// ExpirationTime is when the token stops working; nil for never.
	ExpirationTime *time.Time `json:"expiration_time,omitempty"`
	CreateTime     time.Time  `json:"create_time,omitzero"`
	CreateIndex    uint64     `json:"create_index"`
	ModifyIndex    uint64     `json:"modify_index"`
}

// ACLPolicyLink names one policy of a token, by ID or by name.
type ACLPolicyLink struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// ACLTokenRequest is the body of PUT /v1/acl/token (create) and PUT
// /v1/acl/token/<accessor> (update). An update replaces the description
// and the policies; the secret, type and expiry of a token never change.
type ACLTokenRequest struct {
	// AccessorID, on create, is a given accessor ID (a UUID); default a
	// new one.
	AccessorID string `json:"accessor_id,omitempty"`
	// SecretID, on create, is a given secret (automation that makes its
	// tokens' secrets itself: `mwt_` and 43 characters of base64url);
	// default a new random one.
	SecretID    string `json:"secret_id,omitempty"`
	Description string `json:"description,omitempty"`
	// Type, on create, is "client" (the default) or "management".
	Type     string          `json:"type,omitempty"`
	Policies []ACLPolicyLink `json:"policies,omitempty"`
	// TTL, on create, is the token's lifetime (at least 1m); 0 never
	// expires.
	TTL Duration `json:"ttl,omitempty"`
}

// ACLPolicy is an ACL policy: a name, and rules.
type ACLPolicy struct {
	// ID is assigned at creation; it is ignored in a request body (the
	// path names the policy to update).
	ID          string    `json:"id,omitempty"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Rules       acl.Rules `json:"rules"`
	CreateIndex uint64    `json:"create_index,omitempty"`
	ModifyIndex uint64    `json:"modify_index,omitempty"`
}

// ACLWriteOptions are the optional parameters of the ACL writes.
type ACLWriteOptions struct {
	// CAS, when not 0, is the modify index the token or policy must still
	// have: the write is refused (409) if it changed since it was read.
	CAS uint64
}

func (o *ACLWriteOptions) values() url.Values {
	if o == nil || o.CAS == 0 {
		return nil
	}
	return url.Values{"cas": {strconv.FormatUint(o.CAS, 10)}}
}

// ACLBootstrap makes the first management token, once: later calls are
// refused with HTTP 409 (code "acl_bootstrap_done"). The answer holds the
// token's secret, which exists nowhere else.
func (c *Client) ACLBootstrap(ctx context.Context) (*ACLToken, error) {
	var out ACLToken
	if _, err := c.Do(ctx, http.MethodPut, "/v1/acl/bootstrap", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ACLTokenCreate creates a token; the answer holds its secret, once.
func (c *Client) ACLTokenCreate(ctx context.Context, req ACLTokenRequest) (*ACLToken, error) {
	var out ACLToken
	if _, err := c.Do(ctx, http.MethodPut, "/v1/acl/token", nil, &req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ACLTokenRead returns the token with accessorID.
func (c *Client) ACLTokenRead(ctx context.Context, accessorID string) (*ACLToken, error) {
	var out ACLToken
	if _, err := c.Do(ctx, http.MethodGet, "/v1/acl/token/"+url.PathEscape(accessorID), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ACLTokenSelf returns the token the client sends (the anonymous token when
// it sends none).
func (c *Client) ACLTokenSelf(ctx context.Context) (*ACLToken, error) {
	var out ACLToken
	if _, err := c.Do(ctx, http.MethodGet, "/v1/acl/token/self", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ACLTokenList returns every token, in the order they were created.
func (c *Client) ACLTokenList(ctx context.Context) ([]ACLToken, error) {
	var out []ACLToken
	_, err := c.Do(ctx, http.MethodGet, "/v1/acl/tokens", nil, nil, &out)
	return out, err
}

// ACLTokenUpdate replaces the description and policies of a token.
func (c *Client) ACLTokenUpdate(ctx context.Context, accessorID string, req ACLTokenRequest, opts *ACLWriteOptions) (*ACLToken, error) {
	var out ACLToken
	if _, err := c.Do(ctx, http.MethodPut, "/v1/acl/token/"+url.PathEscape(accessorID), opts.values(), &req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ACLTokenDelete deletes a token.
func (c *Client) ACLTokenDelete(ctx context.Context, accessorID string, opts *ACLWriteOptions) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/acl/token/"+url.PathEscape(accessorID), opts.values(), nil, nil)
	return err
}

// ACLPolicyCreate creates a policy.
func (c *Client) ACLPolicyCreate(ctx context.Context, p ACLPolicy) (*ACLPolicy, error) {
	var out ACLPolicy
	if _, err := c.Do(ctx, http.MethodPut, "/v1/acl/policy", nil, &p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ACLPolicyRead returns a policy by ID or by name.
func (c *Client) ACLPolicyRead(ctx context.Context, idOrName string) (*ACLPolicy, error) {
	var out ACLPolicy
	if _, err := c.Do(ctx, http.MethodGet, "/v1/acl/policy/"+url.PathEscape(idOrName), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ACLPolicyList returns every policy, by name.
func (c *Client) ACLPolicyList(ctx context.Context) ([]ACLPolicy, error) {
	var out []ACLPolicy
	_, err := c.Do(ctx, http.MethodGet, "/v1/acl/policies", nil, nil, &out)
	return out, err
}

// ACLPolicyUpdate replaces the policy named by idOrName with p (its name,
// description and rules).
func (c *Client) ACLPolicyUpdate(ctx context.Context, idOrName string, p ACLPolicy, opts *ACLWriteOptions) (*ACLPolicy, error) {
	var out ACLPolicy
	if _, err := c.Do(ctx, http.MethodPut, "/v1/acl/policy/"+url.PathEscape(idOrName), opts.values(), &p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ACLPolicyDelete deletes a policy, by ID or name. A policy that tokens
// still link is kept (409, naming them).
func (c *Client) ACLPolicyDelete(ctx context.Context, idOrName string, opts *ACLWriteOptions) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/acl/policy/"+url.PathEscape(idOrName), opts.values(), nil, nil)
	return err
}
