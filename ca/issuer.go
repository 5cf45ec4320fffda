package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
)

// Issuer turns a CSR into a signed leaf. Implementations: *RPCClient (the
// servers, over the network), the Issuer of Server.LocalIssuer (in process,
// on a server agent or in --dev) and *StepCA (an external step-ca).
//
// Issue may block on the network until ctx ends. It is safe for concurrent
// use. Errors wrap the package's sentinels (ErrBadToken, ErrTokenUsed,
// ErrUnauthorized, ErrNotReady, ...) so that the Manager can tell a refusal
// from an outage.
type Issuer interface {
	Issue(ctx context.Context, req IssueRequest) (*Issued, error)
}

// IssueRequest is what a Manager sends to its Issuer.
type IssueRequest struct {
	// CSR is the DER certificate request, signed by the new key.
	CSR []byte
	// Token is the bootstrap token, for the first certificate only.
	Token string
	// Current is the certificate in use, presented over mTLS to authenticate
	// a renewal; nil at bootstrap.
	Current *tls.Certificate
	// Bundle is the trust bundle the Manager holds, to verify the server
	// with; nil at bootstrap (the token then pins the root).
	Bundle *Bundle
	// AgentToken is the secret of the agent's ACL token, sent with sign and
	// renew requests so that servers decide by it which services the leaf
	// may name; "" sends none. The RPC client sends it; the local issuer
	// (a server's own leaf) and step-ca have no use for it.
	AgentToken string
}

// Issued is a signed leaf.
type Issued struct {
	// Chain is the leaf followed by its intermediates (not the root).
	Chain []*x509.Certificate
	// Bundle is the issuing CA's trust bundle, or nil when it sent none.
	Bundle *Bundle
}

// selfAuthorizing is implemented by issuers that need neither a token nor a
// current certificate (the local issuer, step-ca with a provisioner
// password), so that a Manager without either can still start.
type selfAuthorizing interface {
	selfAuthorizing() bool
}
