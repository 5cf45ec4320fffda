package ca

import (
	"errors"
	"fmt"

	"github.com/meshwork/meshwork/acl"
)

// TokenAuthorizer decides what the agent token that comes with a sign or
// renew request lets the requesting node hold, whatever the node gossips
// (docs/pki.md, "Who may hold a service identity"). secret is the token's
// secret as the request carries it, or "" when it carries none: the
// anonymous token then decides.
//
// It returns an error when the token is malformed, unknown or expired, or
// may not act for node: the server then refuses the whole request
// (ErrUnauthorized), and the node gets no leaf. Otherwise the grant names
// the services, among those asked, that the token may not hold: they are
// withheld from the leaf, which still names the node and its other
// services. The error's text goes back to the requesting agent; it must
// never hold the secret.
//
// It is called on every sign and renew request from another agent (not for
// a server's own leaf, signed in process), concurrently, and must not block
// on the network: resolve from an in-memory copy of the ACLs.
type TokenAuthorizer func(node string, services []string, secret string) (TokenGrant, error)

// TokenGrant is the verdict of a TokenAuthorizer on a token that may act for
// its node.
type TokenGrant struct {
	// AccessorID names the token in logs; never its secret.
	AccessorID string
	// Refused maps each service asked for that the token may not hold to
	// why, in words for the server's log.
	Refused map[string]string
}

// none reports whether g (nil without a TokenAuthorizer) refuses nothing.
func (g *TokenGrant) none() bool { return g == nil || len(g.Refused) == 0 }

// refused returns why g refuses svc, if it does.
func (g *TokenGrant) refused(svc string) (string, bool) {
	if g == nil {
		return "", false
	}
	why, ok := g.Refused[svc]
	return why, ok
}

// ACLTokens is the TokenAuthorizer of the mesh's ACLs; resolve is
// acl.Resolver.Resolve. A token may act for a node with node:write on it,
// and hold the identity of each service it has service:write on: the same
// rights with which the agent registers the node and its services
// (acl-design.md, point 7). With ACLs disabled the resolver allows
// everything, so nothing is refused or withheld.
func ACLTokens(resolve func(secret string) (*acl.Authorizer, error)) TokenAuthorizer {
	return func(node string, services []string, secret string) (TokenGrant, error) {
		authz, err := resolve(secret)
		if err != nil {
			return TokenGrant{}, fmt.Errorf("agent token: %w%s", err, noTokenHint(secret))
		}
		g := TokenGrant{AccessorID: authz.AccessorID()}
		if err := authz.Check(acl.ResourceNode, node, acl.Write); err != nil {
			return g, fmt.Errorf("agent token %s may not act for node %q: %w%s", g.AccessorID, node, err, noTokenHint(secret))
		}
		for _, svc := range services {
			err := authz.Check(acl.ResourceService, svc, acl.Write)
			if err == nil {
				continue
			}
			why := err.Error()
			if pe, ok := errors.AsType[*acl.PermissionError](err); ok && pe.Reason != "" {
				why += " (" + pe.Reason + ")"
			}
			if g.Refused == nil {
				g.Refused = make(map[string]string)
			}
			g.Refused[svc] = why
		}
		return g, nil
	}
}

// noTokenHint tells an operator whose agent sent no token where one goes.
func noTokenHint(secret string) string {
	if secret != "" {
		return ""
	}
	return " (the request carries no agent token: set acl.tokens.agent)"
}
