package acl

import (
	"errors"
	"net/http"

	"github.com/meshwork/meshwork/internal/httpjson"
)

// The codes of the answers to refused requests, in the "code" field of the
// JSON error body (httpjson.ErrorBody, the shape of every error answer).
const (
	// CodePermissionDenied answers a token that lacks the permission
	// (HTTP 403).
	CodePermissionDenied = httpjson.CodePermissionDenied
	// CodeTokenNotFound answers a secret that no token has, or the secret
	// of an expired token (HTTP 403).
	CodeTokenNotFound = httpjson.CodeTokenNotFound
	// CodeMalformedToken answers a token passed wrongly (HTTP 400).
	CodeMalformedToken = httpjson.CodeMalformedToken
)

// ErrorBody is the JSON answer to a refused request, the API's one error
// shape:
//
//	{"error": "permission denied: token lacks service:write on \"web\"", "code": "permission_denied"}
type ErrorBody = httpjson.ErrorBody

// HTTPStatus returns the status and code that answer an error of resolving
// or checking a token; ok is false for any other error.
func HTTPStatus(err error) (status int, code string, ok bool) {
	switch {
	case errors.Is(err, ErrPermissionDenied):
		return http.StatusForbidden, CodePermissionDenied, true
	case errors.Is(err, ErrTokenNotFound), errors.Is(err, ErrTokenExpired):
		return http.StatusForbidden, CodeTokenNotFound, true
	case errors.Is(err, ErrMalformedToken):
		return http.StatusBadRequest, CodeMalformedToken, true
	}
	return 0, "", false
}

// WriteError answers err when HTTPStatus knows it, tells the request's
// context of the denial (NewContext), and reports whether it answered.
// Handlers call it first with any error they are about to answer.
func WriteError(w http.ResponseWriter, r *http.Request, err error) bool {
	status, code, ok := HTTPStatus(err)
	if !ok {
		return false
	}
	reportDenied(r.Context(), err)
	httpjson.CodedError(w, status, code, err)
	return true
}
