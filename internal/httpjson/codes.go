package httpjson

import "net/http"

// The codes of ErrorBody: every error answer of the agent's HTTP API
// carries one. Each component maps its own sentinels to them; this is the
// one list, so that docs/api.md and api/openapi.yaml name the same codes
// as the handlers (a test holds them to it). A code, once published, keeps
// its meaning: clients branch on it.
const (
	// Generic: any endpoint.
	CodeInvalid          = "invalid"
	CodeUnknownEndpoint  = "unknown_endpoint"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeNotFound         = "not_found"
	CodeConflict         = "conflict"
	CodeHostNotAllowed   = "host_not_allowed"
	CodeNotReady         = "not_ready"
	CodeTimeout          = "timeout"
	CodeInternal         = "internal"

	// Access control (package acl).
	CodePermissionDenied = "permission_denied"
	CodeTokenNotFound    = "acl_not_found"
	CodeMalformedToken   = "malformed_token"
	CodeACLDisabled      = "acl_disabled"
	CodeBootstrapDone    = "acl_bootstrap_done"

	// The replicated state: policy, snapshots, Raft (package raftstore).
	CodeOutcomeUnknown = "outcome_unknown"
	CodeNoLeader       = "no_leader"
	CodeNoServers      = "no_servers"
	CodeClosed         = "closed"
	CodeCASConflict    = "cas_conflict"
	CodePolicyCap      = "policy_cap"
	CodeBadSnapshot    = "bad_snapshot"
	CodeForbidden      = "forbidden"

	// The CA (package ca).
	CodeNoCertificate      = "no_certificate"
	CodeNotServer          = "not_server"
	CodeRotationInProgress = "rotation_in_progress"

	// Gossip and the data plane.
	CodeEncryptionDisabled = "encryption_disabled"
	CodePrimaryKey         = "primary_key"
	CodeKeyringPartial     = "keyring_partial"
	CodeTunnelDisabled     = "tunnel_disabled"
)

// CodeInfo describes one code: the status it comes with and what it means
// to a client.
type CodeInfo struct {
	Code    string
	Status  int
	Meaning string
}

// Codes lists every code, in the order docs/api.md shows them.
var Codes = []CodeInfo{
	{CodeInvalid, http.StatusBadRequest, "the request is malformed or invalid: its body, a query parameter or a path segment; the message names which and why"},
	{CodeUnknownEndpoint, http.StatusNotFound, "no endpoint has this path, with any method"},
	{CodeMethodNotAllowed, http.StatusMethodNotAllowed, "the path exists for other methods, which the Allow header lists"},
	{CodeNotFound, http.StatusNotFound, "what the request names does not exist: a service or check of this agent, a policy document, an ACL token or policy"},
	{CodeConflict, http.StatusConflict, "the write conflicts with what is stored: a name that is taken, a policy that tokens still link, a modify index (?cas) that changed"},
	{CodeHostNotAllowed, http.StatusForbidden, "the Host header names neither an IP address nor localhost (a protection against DNS rebinding)"},
	{CodeNotReady, http.StatusServiceUnavailable, "the component that answers is starting or stopping, or the CA has no trust bundle yet; retry"},
	{CodeTimeout, http.StatusGatewayTimeout, "the servers did not answer in time; a read can be retried, a write only with its idempotency key"},
	{CodeInternal, http.StatusInternalServerError, "an error the agent did not expect; the message and the agent's log say more"},

	{CodePermissionDenied, http.StatusForbidden, "the request's ACL token lacks the permission the message names"},
	{CodeTokenNotFound, http.StatusForbidden, "no ACL token has this secret, or the token has expired"},
	{CodeMalformedToken, http.StatusBadRequest, "the ACL token was passed wrongly: not a token's secret, a header sent twice, or X-Meshwork-Token and Authorization carrying different tokens"},
	{CodeACLDisabled, http.StatusNotImplemented, "ACLs are disabled on this agent (acl.enabled: false)"},
	{CodeBootstrapDone, http.StatusConflict, "the ACL bootstrap was done already; it works once"},

	{CodeOutcomeUnknown, http.StatusServiceUnavailable, "the write may or may not have been applied: send it again with the same Idempotency-Key to apply it at most once and learn its result"},
	{CodeNoLeader, http.StatusServiceUnavailable, "the servers have no leader (an election, or no quorum on this side of a partition); nothing was applied; retry"},
	{CodeNoServers, http.StatusServiceUnavailable, "this agent knows no server yet (gossip has found none); retry"},
	{CodeClosed, http.StatusServiceUnavailable, "the agent's replicated store is shutting down"},
	{CodeCASConflict, http.StatusConflict, "the policy document changed since the modify index given with ?cas"},
	{CodePolicyCap, http.StatusRequestEntityTooLarge, "the write would take the policy past its cap on documents or bytes; the message names the cap and the figures"},
	{CodeBadSnapshot, http.StatusBadRequest, "the body is not a snapshot, or a damaged one"},
	{CodeForbidden, http.StatusForbidden, "what was asked for is never served over the API (the secret namespace of the replicated state)"},

	{CodeNoCertificate, http.StatusServiceUnavailable, "the agent holds no certificate yet"},
	{CodeNotServer, http.StatusNotImplemented, "only a server agent running the embedded CA does this"},
	{CodeRotationInProgress, http.StatusConflict, "a root rotation is under way already"},

	{CodeEncryptionDisabled, http.StatusBadRequest, "gossip encryption is not enabled, so there is no keyring"},
	{CodePrimaryKey, http.StatusBadRequest, "the key is the primary key, which cannot be removed; make another key primary first"},
	{CodeKeyringPartial, http.StatusInternalServerError, "the keyring operation failed on some members; the message names them; repeat it"},
	{CodeTunnelDisabled, http.StatusNotFound, "the data plane is disabled on this agent (ports.tunnel: -1)"},
}

// GenericCode is the code of an error answered with status that has no
// code of its own.
func GenericCode(status int) string {
	switch status {
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	case http.StatusConflict:
		return CodeConflict
	case http.StatusServiceUnavailable:
		return CodeNotReady
	case http.StatusGatewayTimeout:
		return CodeTimeout
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeInvalid
}
