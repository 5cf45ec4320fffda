package httpapi

import (
	"errors"
	"net/http"

	"github.com/meshwork/meshwork/acl"
)

// guard wraps the handler of route pattern with its access control: it
// resolves the request's token, refuses what need does not allow, and
// hands the handler the token's authorizer in the request's context.
func (s *Server) guard(pattern string, need acl.Requirement, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		denied := func(err error) { s.recordDenial(pattern, r, err) }
		if need.Kind == acl.NeedNothing {
			h.ServeHTTP(w, r)
			return
		}
		authz, secret, err := s.resolve(r)
		if err != nil {
			acl.WriteError(w, r.WithContext(acl.NewContext(r.Context(), nil, denied)), err)
			return
		}
		r = r.WithContext(acl.WithSecret(acl.NewContext(r.Context(), authz, denied), secret))
		if err := need.Check(authz, r.PathValue); err != nil {
			acl.WriteError(w, r, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// resolve returns the authorizer of the request's token, and the secret
// it presented. With ACLs disabled the request's headers are not looked at.
func (s *Server) resolve(r *http.Request) (*acl.Authorizer, string, error) {
	res := s.deps.ACL
	if !res.Enabled() {
		a, err := res.Resolve("")
		return a, "", err
	}
	secret, err := acl.TokenFromRequest(r)
	if err != nil {
		return nil, "", err
	}
	a, err := res.Resolve(secret)
	return a, secret, err
}

// recordDenial counts a refusal and logs it with the token's accessor ID
// (never its secret).
func (s *Server) recordDenial(route string, r *http.Request, err error) {
	_, code, _ := acl.HTTPStatus(err)
	s.metrics.denials.WithLabelValues(route, code).Inc()
	var pe *acl.PermissionError
	if errors.As(err, &pe) {
		s.log.Info("acl denied a request", "route", route, "path", r.URL.Path, "accessor", pe.AccessorID,
			"permission", pe.Permission.String(), "reason", pe.Reason, "remote", r.RemoteAddr)
		return
	}
	s.log.Info("acl refused a request's token", "route", route, "path", r.URL.Path, "code", code, "err", err, "remote", r.RemoteAddr)
}

// authorizer is the authorizer the guard put in r's context.
func authorizer(r *http.Request) *acl.Authorizer { return acl.FromContext(r.Context()) }

// deny answers a refusal from a handler.
func deny(w http.ResponseWriter, r *http.Request, err error) { acl.WriteError(w, r, err) }
