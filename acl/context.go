package acl

import "context"

type ctxKey struct{}

// secretKey holds the presented secret in a context.
type secretKey struct{}

// WithSecret returns ctx carrying the secret a request presented, so that
// a call the agent makes on the request's behalf to the servers (a
// forwarded write, a snapshot) presents it too, and is decided again there.
func WithSecret(ctx context.Context, secret string) context.Context {
	if secret == "" {
		return ctx
	}
	return context.WithValue(ctx, secretKey{}, secret)
}

// SecretFromContext returns the secret WithSecret put in ctx, "" for none
// (the anonymous token).
func SecretFromContext(ctx context.Context) string {
	s, _ := ctx.Value(secretKey{}).(string)
	return s
}

// requestACL is what the API's middleware leaves in a request's context.
type requestACL struct {
	authz  *Authorizer
	denied func(error)
}

// denyAll decides for a context that carries no authorizer: no rule and
// the default policy deny.
var denyAll = &Authorizer{}

// NewContext returns ctx carrying a, the authorizer of the request's token,
// as the HTTP API's middleware puts it there for the handlers. denied, when
// not nil, is told of each denial that WriteError answers, so that the API
// logs and counts every denial in one place, whichever handler refused.
func NewContext(ctx context.Context, a *Authorizer, denied func(error)) context.Context {
	return context.WithValue(ctx, ctxKey{}, &requestACL{authz: a, denied: denied})
}

// FromContext returns the authorizer NewContext put in ctx. A context
// without one gets an authorizer that denies everything: a handler reached
// around the API's middleware grants nothing.
func FromContext(ctx context.Context) *Authorizer {
	if r, ok := ctx.Value(ctxKey{}).(*requestACL); ok && r.authz != nil {
		return r.authz
	}
	return denyAll
}

// AllowAll is the authorizer of every request when ACLs are disabled. Tools
// and tests that serve a component's handlers without the agent's API put
// it in the context with NewContext.
func AllowAll() *Authorizer { return allowAll }

// reportDenied tells the context's hook of a denial.
func reportDenied(ctx context.Context, err error) {
	if r, ok := ctx.Value(ctxKey{}).(*requestACL); ok && r.denied != nil {
		r.denied(err)
	}
}
