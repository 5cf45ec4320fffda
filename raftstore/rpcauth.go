package raftstore

import (
	"fmt"
	"net/http"

	"github.com/meshwork/meshwork/acl"
)

// Who decides what on the server port. Every agent decides the API calls it
// receives by their tokens; a call it then makes to the servers on a
// caller's behalf (a forwarded write, a snapshot, a Raft peer change)
// carries the caller's token. A server with ACLs enabled decides such a
// call again, from its own copy of the ACL state, unless it comes from
// another server: an agent whose mesh leaf or cluster-key certificate
// reached the server port cannot do there what its API would refuse. The
// internal namespace (the CA's state) and Raft's own entries are written
// by servers only.
//
// A server is a caller that callerIsServer (snapshot.go) recognises: with
// a server key, one whose leaf only servers can mint. Without one, any
// holder of the cluster key can mint a leaf under a server's name and act
// as that server here. During a rotation of the cluster key (or server
// key), the keys named in accept_cluster_keys (accept_server_keys) count
// as the own: a server not yet switched to the new key is still a server
// to one that has switched, and the other way round.

// SetACLResolver makes this server decide the RPCs of agents that are not
// servers by the tokens they carry, with res. Call it before Start, on a
// server whose ACLs are enabled.
func (n *Node) SetACLResolver(res *acl.Resolver) {
	if res != nil && res.Enabled() {
		n.aclRes.Store(res)
	}
}

// callerWrites returns the check of each transaction an RPC's caller sends
// (with the secret it came with), or nil when the caller's writes need
// none: ACLs are off, or the caller is a server.
func (n *Node) callerWrites(r *http.Request) (func(txn Txn, secret string) error, error) {
	res := n.aclRes.Load()
	if res == nil {
		return nil, nil
	}
	caller, server, err := n.callerIsServer(r)
	if err != nil || server {
		return nil, err
	}
	return func(txn Txn, secret string) error {
		a, err := res.Resolve(secret)
		if err != nil {
			return fmt.Errorf("%w: agent %s: %v", ErrForbidden, caller, err)
		}
		if err := authorizeTxn(a, txn); err != nil {
			return fmt.Errorf("%w: agent %s: %v", ErrForbidden, caller, err)
		}
		return nil
	}, nil
}

// authorizeTxn decides every operation of txn by a: policy documents by
// their kind (an Intention by its destination), ACL changes by acl:write
// (the bootstrap by its once-only rule in the state machine). Keys of the
// internal namespace and Raft's own entries are refused: no agent but a
// server writes them.
func authorizeTxn(a *acl.Authorizer, txn Txn) error {
	for _, op := range txn {
		var err error
		switch op.Type {
		case OpPolicySet:
			err = a.CheckDocument(op.Doc.Kind, op.Doc.Name, acl.Write)
		case OpPolicyDelete:
			err = a.CheckDocument(op.Key.Kind, op.Key.Name, acl.Write)
		case OpACLPolicySet, OpACLPolicyDelete, OpACLTokenSet, OpACLTokenDelete:
			err = a.Check(acl.ResourceACL, "", acl.Write)
		case OpACLBootstrap, opWriteID:
		default:
			err = fmt.Errorf("%s operations are written by servers only", op.Type)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// callerMay checks, for an RPC from an agent that is not a server, that the
// token it carries allows operator action name at want.
func (n *Node) callerMay(r *http.Request, name string, want acl.Access) error {
	res := n.aclRes.Load()
	if res == nil {
		return nil
	}
	caller, server, err := n.callerIsServer(r)
	if err != nil || server {
		return err
	}
	secret, err := acl.TokenFromRequest(r)
	if err != nil {
		return fmt.Errorf("%w: agent %s: %v", ErrForbidden, caller, err)
	}
	a, err := res.Resolve(secret)
	if err == nil {
		err = a.Check(acl.ResourceOperator, name, want)
	}
	if err != nil {
		return fmt.Errorf("%w: agent %s: %v", ErrForbidden, caller, err)
	}
	return nil
}
