package acl

import (
	"fmt"
	"net/http"
)

// MountFunc adds an endpoint to the agent's HTTP API together with what it
// requires of the request's token (httpapi.Server.Mount). Components that
// serve endpoints take one, so that no endpoint is mounted without saying
// who may call it. pattern is a net/http pattern with its method.
type MountFunc func(pattern string, need Requirement, h http.Handler) error

// RequirementKind says how an endpoint's requirement is checked.
type RequirementKind uint8

// The kinds of requirement.
const (
	// NeedPermission is a fixed permission, checked before the handler
	// runs.
	NeedPermission RequirementKind = iota + 1
	// NeedPathPermission is a permission on the name in a wildcard of the
	// path (Permission.Name names the wildcard), checked before the
	// handler runs.
	NeedPathPermission
	// NeedInHandler means the handler checks, because the name depends on
	// the body or on what is found (a service's registration), or because
	// it filters a list to what the token may read. The token must still
	// resolve; the handler finds its authorizer with FromContext.
	NeedInHandler
	// NeedToken is any token that resolves, the anonymous one included
	// (the ACL API's token/self).
	NeedToken
	// NeedNothing looks at no token at all: the CA roots, which every
	// client needs before it has anything, and the one-time ACL bootstrap.
	NeedNothing
)

// Requirement is what one endpoint requires of the token of a request. It
// is declared where the endpoint is mounted; the API enforces it.
type Requirement struct {
	Kind RequirementKind
	// Permission is the permission of NeedPermission, and of
	// NeedPathPermission with Name holding the wildcard's name.
	Permission Permission
	// Note says, for the requirements checked by the handler or not at
	// all, what is checked or why nothing is.
	Note string
}

// Require is a fixed permission: level on resource r's name.
func Require(r Resource, name string, level Access) Requirement {
	return Requirement{Kind: NeedPermission, Permission: Permission{Resource: r, Name: name, Access: level}}
}

// RequireOnPath is level on resource r's name in the path's wildcard.
func RequireOnPath(r Resource, wildcard string, level Access) Requirement {
	return Requirement{Kind: NeedPathPermission, Permission: Permission{Resource: r, Name: wildcard, Access: level}}
}

// CheckedInHandler says that the handler checks what note describes.
func CheckedInHandler(note string) Requirement {
	return Requirement{Kind: NeedInHandler, Note: note}
}

// AnyToken admits any token that resolves.
func AnyToken(note string) Requirement { return Requirement{Kind: NeedToken, Note: note} }

// Open admits every request without looking at its token; note says why.
func Open(note string) Requirement { return Requirement{Kind: NeedNothing, Note: note} }

// Validate checks that the requirement is complete.
func (q Requirement) Validate() error {
	switch q.Kind {
	case NeedPermission, NeedPathPermission:
		p := q.Permission
		if p.Resource == 0 || int(p.Resource) >= numResources || (p.Access != Read && p.Access != Write) {
			return fmt.Errorf("acl: requirement %s: not a valid permission", q)
		}
		if q.Kind == NeedPathPermission && p.Name == "" {
			return fmt.Errorf("acl: requirement %s: no path wildcard named", q)
		}
	case NeedInHandler, NeedToken, NeedNothing:
		if q.Note == "" {
			return fmt.Errorf("acl: requirement %s: say what is checked, or why nothing is", q)
		}
	default:
		return fmt.Errorf("acl: requirement of kind %d is unknown", q.Kind)
	}
	return nil
}

// Check decides a request whose path wildcards PathValue reads, for the
// kinds checked before the handler; the others pass.
func (q Requirement) Check(a *Authorizer, pathValue func(string) string) error {
	switch q.Kind {
	case NeedPermission:
		return a.Check(q.Permission.Resource, q.Permission.Name, q.Permission.Access)
	case NeedPathPermission:
		return a.Check(q.Permission.Resource, pathValue(q.Permission.Name), q.Permission.Access)
	}
	return nil
}

// String reads `agent:read`, `service:read on {name}`, `in handler: ...`,
// `any token: ...` or `open: ...`.
func (q Requirement) String() string {
	switch q.Kind {
	case NeedPermission:
		if q.Permission.Resource.named() {
			return fmt.Sprintf("%s:%s on %s", q.Permission.Resource, q.Permission.Access, q.Permission.Name)
		}
		return q.Permission.String()
	case NeedPathPermission:
		return fmt.Sprintf("%s:%s on {%s}", q.Permission.Resource, q.Permission.Access, q.Permission.Name)
	case NeedInHandler:
		return "in handler: " + q.Note
	case NeedToken:
		return "any token: " + q.Note
	case NeedNothing:
		return "open: " + q.Note
	}
	return fmt.Sprintf("requirement(%d)", q.Kind)
}

// MountAllowAll mounts on a plain ServeMux, ignoring the requirements:
// every request is allowed, as with ACLs disabled. It is for tests and
// tools that serve a component's endpoints without the agent's HTTP API,
// which is what enforces the requirements.
func MountAllowAll(mux *http.ServeMux) MountFunc {
	return func(pattern string, need Requirement, h http.Handler) error {
		if err := need.Validate(); err != nil {
			return err
		}
		mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(NewContext(r.Context(), allowAll, nil)))
		}))
		return nil
	}
}
