package raftstore

import (
	"errors"
	"fmt"

	"github.com/meshwork/meshwork/policy"
)

// Sentinel errors. Errors that cross the RPC port keep their sentinel: the
// RPC client maps the code of an error answer back to it, so errors.Is works
// on any agent.
var (
	// ErrNoLeader means the cluster has no leader this agent can reach: an
	// election is under way, or this side of a partition has no quorum.
	ErrNoLeader = errors.New("no Raft leader: the servers cannot reach a quorum")
	// ErrNotLeader means the server asked is not the leader. The RPC client
	// follows the redirect itself; callers see it only when that fails.
	ErrNotLeader = errors.New("this server is not the Raft leader")
	// ErrOutcomeUnknown means a write may or may not have been applied: it
	// may have reached a leader, and no definite answer came back before
	// the deadline (the leader was lost, or its answer was). It is never a
	// refusal: retry with the same idempotency key (WithIdempotencyKey) to
	// apply the write at most once and learn its result.
	ErrOutcomeUnknown = errors.New("outcome unknown: the write may or may not have been applied")
	// ErrLeadershipLost means the leader lost its leadership while the write
	// was in flight: it may or may not have been committed. It matches
	// ErrOutcomeUnknown too.
	ErrLeadershipLost = fmt.Errorf("%w (leadership lost while the write was in flight)", ErrOutcomeUnknown)
	// ErrCASConflict means a compare-and-set named an index that is not the
	// current modify index.
	ErrCASConflict = errors.New("compare-and-set conflict")
	// ErrNotFound means the document or key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid means a request was malformed or a document invalid. Errors
	// of the policy package's validation also match policy.ErrInvalid.
	ErrInvalid = errors.New("invalid request")
	// ErrForbidden means a key of the secret namespace was asked for over
	// the network: those are readable only inside a server agent.
	ErrForbidden = errors.New("forbidden")
	// ErrNotServer means an operation needs a server agent.
	ErrNotServer = errors.New("this agent is not a server")
	// ErrNoServers means discovery knows no server to talk to.
	ErrNoServers = errors.New("no server agent is known (gossip has found none yet)")
	// ErrClosed means the node was closed.
	ErrClosed = errors.New("raftstore closed")
	// ErrBadSnapshot means a snapshot file is damaged or not a snapshot.
	ErrBadSnapshot = errors.New("bad snapshot file")
)

// errCodes name the sentinels on the wire, the more specific first: an
// error that matches two (ErrLeadershipLost is also ErrOutcomeUnknown) takes
// the first code.
var errCodes = []struct {
	code string
	err  error
}{
	{"lost_leader", ErrLeadershipLost},
	{"outcome_unknown", ErrOutcomeUnknown},
	{"no_leader", ErrNoLeader},
	{"not_leader", ErrNotLeader},
	{"cas_conflict", ErrCASConflict},
	{"policy_cap", policy.ErrCapExceeded},
	{"not_found", ErrNotFound},
	{"invalid", ErrInvalid},
	{"forbidden", ErrForbidden},
	{"not_server", ErrNotServer},
	{"closed", ErrClosed},
	{"bad_snapshot", ErrBadSnapshot},
}

// errCode returns the wire code of err's sentinel, or "internal".
func errCode(err error) string {
	if code := aclErrCode(err); code != "" {
		return code
	}
	for _, c := range errCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

// sentinelOf returns the sentinel a wire code names, or nil.
func sentinelOf(code string) error {
	for _, c := range errCodes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// definite reports whether err is a definite answer about a write: the
// state machine or the leader's checks refused it, so it was not applied
// and a retry would be refused the same way.
func definite(err error) bool {
	for _, s := range []error{ErrCASConflict, ErrNotFound, ErrInvalid, policy.ErrInvalid, ErrForbidden, policy.ErrCapExceeded} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// RemoteError is an error answered by a server, carrying its sentinel.
type RemoteError struct {
	// Code names the sentinel ("cas_conflict", ...), "internal" when none.
	Code string `json:"code"`
	// Message is the server's explanation.
	Message string `json:"error"`
	// Status is the HTTP status of the answer; 0 when not from one.
	Status int `json:"-"`
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinel the code names, so errors.Is works; an
// invalid policy also matches policy.ErrInvalid.
func (e *RemoteError) Unwrap() []error {
	if errs := aclSentinels(e.Code); errs != nil {
		return errs
	}
	s := sentinelOf(e.Code)
	switch {
	case s == nil:
		return nil
	case s == ErrInvalid:
		return []error{s, policy.ErrInvalid}
	}
	return []error{s}
}

// opError wraps err with the operation: "raftstore: apply: ...".
func opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("raftstore: %s: %w", op, err)
}
