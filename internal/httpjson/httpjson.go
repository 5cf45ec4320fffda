// Package httpjson holds the few helpers every JSON HTTP endpoint of the agent
// shares, so that all of them answer errors in one shape (ErrorBody, with a
// code from codes.go), answer unknown routes and wrong methods alike (NoRoute),
// mark deprecated routes alike (Deprecated), and read bodies with the same
// limits.
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// MaxBody is the largest request body an endpoint reads (1 MiB). Policy
// documents and service definitions are far smaller.
const MaxBody = 1 << 20

// ErrorBody is the JSON shape of every error the API returns:
//
//	{"error": "service \"db\" is not registered on this agent", "code": "not_found"}
type ErrorBody struct {
	// Error is a one-line, human-readable message naming what was wrong.
	Error string `json:"error"`
	// Code is the machine-readable reason, one of Codes. Clients branch on
	// it, never on Error.
	Code string `json:"code"`
	// IdempotencyKey is the key of the write the answer is about, on the
	// answers to the writes that take one (the policy, snapshot and ACL
	// APIs): retry with it after an "outcome_unknown".
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// Write answers status with v encoded as JSON.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

// Error answers status with err's message and the generic code of the
// status (GenericCode): for the errors that need no code of their own.
func Error(w http.ResponseWriter, status int, err error) {
	WriteError(w, status, ErrorBody{Error: err.Error()})
}

// CodedError answers status with err's message and code.
func CodedError(w http.ResponseWriter, status int, code string, err error) {
	WriteError(w, status, ErrorBody{Error: err.Error(), Code: code})
}

// WriteError answers status with body; an empty Code is the status's
// generic code, so that no error answer goes without one. A 503 says when to
// retry (Retry-After), unless the caller did.
func WriteError(w http.ResponseWriter, status int, body ErrorBody) {
	if body.Code == "" {
		body.Code = GenericCode(status)
	}
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	Write(w, status, body)
}

// ErrBadBody wraps every error Decode returns.
var ErrBadBody = errors.New("bad request body")

// Decode reads a JSON body into v. It refuses unknown fields, trailing data and
// bodies over MaxBody, and names the problem in its error.
func Decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, MaxBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: body is empty", ErrBadBody)
		case errors.As(err, &se):
			return fmt.Errorf("%w: malformed JSON at byte %d", ErrBadBody, se.Offset)
		case errors.As(err, &te):
			return fmt.Errorf("%w: field %q: want %s, got JSON %s", ErrBadBody, te.Field, te.Type, te.Value)
		default:
			return fmt.Errorf("%w: %v", ErrBadBody, err)
		}
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON value", ErrBadBody)
	}
	return nil
}

// ReadAnswer consumes an answer's body on the client side: into out when it
// is an io.Writer, decoded as JSON into out otherwise, and discarded (so that
// the connection can be reused) when out is nil. A body nobody wants cannot
// fail the call: the status has already answered it.
func ReadAnswer(body io.Reader, out any) error {
	switch o := out.(type) {
	case nil:
		_, _ = io.Copy(io.Discard, body)
		return nil
	case io.Writer:
		_, err := io.Copy(o, body)
		return err
	default:
		return json.NewDecoder(body).Decode(out)
	}
}
