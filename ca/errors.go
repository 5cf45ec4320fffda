package ca

import "errors"

// Sentinel errors. Every error the package returns wraps one of these (or a
// caller's context error) behind an operation prefix such as "ca: sign: ";
// compare them with errors.Is.
var (
	// ErrInvalidConfig is wrapped by every Validate error.
	ErrInvalidConfig = errors.New("invalid configuration")
	// ErrNotReady means the CA state has not been created or loaded yet.
	ErrNotReady = errors.New("the CA is not ready")
	// ErrBadRequest is wrapped by errors about a malformed request body, CSR,
	// PEM bundle or name.
	ErrBadRequest = errors.New("bad request")
	// ErrBadToken means a bootstrap token is malformed, forged, expired or
	// meant for another node or trust domain.
	ErrBadToken = errors.New("bootstrap token refused")
	// ErrTokenUsed means a bootstrap token was already traded for a
	// certificate; tokens are one-time.
	ErrTokenUsed = errors.New("bootstrap token already used")
	// ErrUnauthorized means a renewal was not authenticated by a valid mesh
	// certificate for the node it asks about.
	ErrUnauthorized = errors.New("not authorized")
	// ErrUntrusted means a certificate chain does not lead to a root of the
	// current trust bundle.
	ErrUntrusted = errors.New("certificate not trusted")
	// ErrTrustDomain means a certificate carries no SPIFFE ID of the trust
	// domain, or one of another trust domain.
	ErrTrustDomain = errors.New("certificate outside the trust domain")
	// ErrNoCertificate means the Manager holds no valid certificate yet.
	ErrNoCertificate = errors.New("no certificate yet")
	// ErrNoCredentials means an agent has neither a valid certificate nor a
	// bootstrap token, so it cannot obtain an identity.
	ErrNoCredentials = errors.New("no bootstrap token and no valid certificate")
	// ErrRotationInProgress means a root rotation is already under way.
	ErrRotationInProgress = errors.New("a root rotation is already in progress")
	// ErrStateKey means the state key does not open the sealed CA keys.
	ErrStateKey = errors.New("the CA state key does not match the CA state")
	// ErrConflict is what a StateStore returns when a compare-and-set finds
	// another index than the one given.
	ErrConflict = errors.New("state changed concurrently")
	// ErrNotServer means an operation needs the embedded CA of a server agent.
	ErrNotServer = errors.New("only a server agent can do this")
	// ErrClosed means the component was closed.
	ErrClosed = errors.New("closed")
)
