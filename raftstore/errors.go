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
	// ErrLeadershipLost means the leader lost its leadership while the write
	// was in flight: it may or may not have been committed.
	ErrLeadershipLost = errors.New("leadership lost while the write was in flight; it may or may not have been applied")
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

// codes name the sentinels on the wire.
var errCodes = map[string]error{
	"no_leader":    ErrNoLeader,
	"not_leader":   ErrNotLeader,
	"lost_leader":  ErrLeadershipLost,
	"cas_conflict": ErrCASConflict,
	"not_found":    ErrNotFound,
	"invalid":      ErrInvalid,
	"forbidden":    ErrForbidden,
	"not_server":   ErrNotServer,
	"bad_snapshot": ErrBadSnapshot,
}

// errCode returns the wire code of err's sentinel, or "internal".
func errCode(err error) string {
	for code, s := range errCodes {
		if errors.Is(err, s) {
			return code
		}
	}
	return "internal"
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
	s := errCodes[e.Code]
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
