package acl

import (
	"fmt"
	"strconv"
)

// Access is a level a rule grants, or the level a request needs.
//
// A rule of Write also grants Read. Deny grants nothing and overrides the
// default policy. When rules of the same specificity meet (two policies of
// one token name the same service), Deny beats Write beats Read.
type Access uint8

// The access levels, in the order in which they win a tie.
const (
	// Read lets a token see a resource.
	Read Access = iota + 1
	// Write lets a token change a resource, and see it.
	Write
	// Deny refuses both, whatever the default policy says.
	Deny
)

// String is the level as rules spell it: "read", "write" or "deny".
func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case Deny:
		return "deny"
	}
	return "access(" + strconv.Itoa(int(a)) + ")"
}

// grants reports whether a rule of level a allows a request that needs want.
func (a Access) grants(want Access) bool {
	switch a {
	case Write:
		return want == Read || want == Write
	case Read:
		return want == Read
	}
	return false
}

// accessNames are the spellings rules accept.
var accessNames = []string{"read", "write", "deny"}

func parseAccess(s string) (Access, bool) {
	switch s {
	case "read":
		return Read, true
	case "write":
		return Write, true
	case "deny":
		return Deny, true
	}
	return 0, false
}

// MarshalText writes the level's name.
func (a Access) MarshalText() ([]byte, error) {
	if a < Read || a > Deny {
		return nil, fmt.Errorf("%w: access level %d", ErrInvalidPolicy, a)
	}
	return []byte(a.String()), nil
}

// UnmarshalText reads "read", "write" or "deny".
func (a *Access) UnmarshalText(b []byte) error {
	v, ok := parseAccess(string(b))
	if !ok {
		return fmt.Errorf("%w: %q is not an access level (want read, write or deny)", ErrInvalidPolicy, truncate(string(b)))
	}
	*a = v
	return nil
}

// Resource is a kind of thing rules protect. The package comment says what
// each one covers and what each level allows on it.
type Resource uint8

// The resources.
const (
	// ResourceService is a service by name: its catalog entries and health
	// (read), its registration and checks (write).
	ResourceService Resource = iota + 1
	// ResourceIntention is the Intention document of a destination service.
	ResourceIntention
	// ResourcePolicy is a kind of policy document other than Intention.
	ResourcePolicy
	// ResourceNode is a node by name.
	ResourceNode
	// ResourceOperator is an operator action: OperatorRaft,
	// OperatorSnapshot or OperatorKeyring.
	ResourceOperator
	// ResourceCA is an action on the mesh CA: CARoots, CALeaf, CAToken or
	// CARotate.
	ResourceCA
	// ResourceACL is the ACL tokens and policies themselves.
	ResourceACL
	// ResourceAgent is the local agent's own endpoints.
	ResourceAgent

	numResources = iota + 1
)

// resourceNames are the rule sections' names, as permissions are written in
// errors ("service:write").
var resourceNames = [numResources]string{
	ResourceService:   "service",
	ResourceIntention: "intention",
	ResourcePolicy:    "policy",
	ResourceNode:      "node",
	ResourceOperator:  "operator",
	ResourceCA:        "ca",
	ResourceACL:       "acl",
	ResourceAgent:     "agent",
}

// String is the resource's name in rules and errors.
func (r Resource) String() string {
	if r > 0 && int(r) < len(resourceNames) {
		return resourceNames[r]
	}
	return "resource(" + strconv.Itoa(int(r)) + ")"
}

// named reports whether the resource's rules are keyed by a name. The ACL
// and agent rules are a single level.
func (r Resource) named() bool { return r != ResourceACL && r != ResourceAgent }

// The names of operator actions (ResourceOperator).
const (
	// OperatorRaft: read lists the Raft peers, write removes one.
	OperatorRaft = "raft"
	// OperatorSnapshot: read saves a snapshot, write restores one.
	OperatorSnapshot = "snapshot"
	// OperatorKeyring: read lists the gossip keys' fingerprints, write
	// installs, uses and removes keys.
	OperatorKeyring = "keyring"
)

// The names of CA actions (ResourceCA).
const (
	// CARoots: read shows the trust bundle and the rotation status.
	CARoots = "roots"
	// CALeaf: read shows the agent's own leaf certificate (never its key).
	CALeaf = "leaf"
	// CAToken: write mints a one-time bootstrap token for a node.
	CAToken = "token"
	// CARotate: write starts a root rotation.
	CARotate = "rotate"
)

// actionLevels are the keys of the operator and ca sections, each with the
// levels that mean something for it (Deny always does).
var actionLevels = map[Resource]map[string][]Access{
	ResourceOperator: {
		OperatorRaft:     {Read, Write},
		OperatorSnapshot: {Read, Write},
		OperatorKeyring:  {Read, Write},
	},
	ResourceCA: {
		CARoots:  {Read},
		CALeaf:   {Read},
		CAToken:  {Write},
		CARotate: {Write},
	},
}

// Permission is what one request needs: a level on a named resource.
type Permission struct {
	Resource Resource
	// Name is the service, destination, document kind, node or action;
	// empty for ResourceACL and ResourceAgent.
	Name   string
	Access Access
}

// String reads `service:write on "web"`, or `acl:write`.
func (p Permission) String() string {
	if !p.Resource.named() {
		return p.Resource.String() + ":" + p.Access.String()
	}
	return fmt.Sprintf("%s:%s on %q", p.Resource, p.Access, truncate(p.Name))
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
