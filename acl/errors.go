package acl

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error of the package wraps one of them behind an
// operation prefix ("acl: resolve: "); compare them with errors.Is. The HTTP
// layer answers ErrPermissionDenied, ErrTokenNotFound and ErrTokenExpired
// with 403, ErrMalformedToken and ErrInvalidPolicy with 400, ErrNotFound with
// 404 and ErrConflict and ErrBootstrapDone with 409.
var (
	// ErrPermissionDenied means the token's rules (or the default policy)
	// do not grant what the request needs. The error is a *PermissionError.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrTokenNotFound means no token has the secret presented.
	ErrTokenNotFound = errors.New("ACL token not found")
	// ErrTokenExpired means the token's expiration time has passed.
	ErrTokenExpired = errors.New("ACL token expired")
	// ErrMalformedToken means the way a token was passed is wrong: a
	// malformed header, two different tokens, a value that is not a secret.
	ErrMalformedToken = errors.New("malformed ACL token")
	// ErrInvalidPolicy means a policy document, its rules or a token is
	// invalid; *RuleError says where.
	ErrInvalidPolicy = errors.New("invalid ACL policy")
	// ErrNotFound means the token or policy asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a write cannot be applied to the current state: a
	// compare-and-set index that is not the current one, a name already
	// taken, a policy still in use, a builtin that cannot change.
	ErrConflict = errors.New("conflict")
	// ErrBootstrapDone means the ACL system was bootstrapped already and
	// the reset index given is not the current bootstrap index.
	ErrBootstrapDone = errors.New("ACL bootstrap already done")
)

// PermissionError is a denial: the permission the request needed, the token
// that lacked it and why. Its text is safe to show to the caller and to log:
// it names the accessor ID, never the secret.
type PermissionError struct {
	// Permission is what the request needed.
	Permission Permission
	// AccessorID is the token's public ID.
	AccessorID string
	// Reason says which rule decided, or that the default policy did; for
	// logs, not for the caller.
	Reason string
}

// Error reads `permission denied: token lacks service:write on "web"`.
func (e *PermissionError) Error() string {
	return fmt.Sprintf("%v: token lacks %s", ErrPermissionDenied, e.Permission)
}

// Is makes errors.Is(err, ErrPermissionDenied) true.
func (e *PermissionError) Is(target error) bool { return target == ErrPermissionDenied }
