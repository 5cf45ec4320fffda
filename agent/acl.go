package agent

import (
	"fmt"
	"os"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/httpapi"
	"github.com/meshwork/meshwork/raftstore"
)

// buildACL makes the resolver of ACL tokens. Every agent resolves tokens
// from its own copy of the ACL state: a server from its state machine, a
// client agent from the copy it follows and persists (raftstore.ACLStore),
// so that a call is decided where it arrives, with no server in the way.
// It also reads the agent's own token.
func (a *Agent) buildACL() error {
	c := a.cfg.ACL
	res, err := acl.NewResolver(acl.Config{
		Enabled:       c.Enabled,
		DefaultPolicy: acl.DefaultPolicy(c.DefaultPolicy),
	}, acl.Deps{
		Store:      a.raft.ACL(),
		Registerer: a.reg,
		Logger:     a.logger("acl"),
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.acl = res
	// A server decides again what other agents ask of it on their callers'
	// behalf, by the callers' tokens (raftstore/rpcauth.go).
	a.raft.SetACLResolver(res)
	a.aclAgentToken = c.Tokens.Agent
	if f := c.Tokens.AgentFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("agent: acl.tokens.agent_file: %w", err)
		}
		if a.aclAgentToken, err = acl.SecretFromFile(f, b); err != nil {
			return fmt.Errorf("agent: acl.tokens.agent_file: %w", err)
		}
	}
	return nil
}

// caACL connects the CA to the ACLs: the agent sends its own token, when it
// has one, with its sign and renew requests; a server with ACLs enabled
// decides each request by the token it carries (resolved from its own copy
// of the ACL state). With ACLs disabled a server checks no token, and an
// agent without a token sends none.
func (a *Agent) caACL() caACL {
	var c caACL
	if tok := a.aclAgentToken; tok != "" {
		c.AgentToken = func() string { return tok }
	}
	if a.cfg.ACL.Enabled {
		c.Resolve = a.acl.Resolve
	}
	return c
}

// mountACLAPI mounts the ACL API (/v1/acl/...) on the local HTTP API.
func (a *Agent) mountACLAPI(s *httpapi.Server) error {
	return a.raft.RegisterACLAPI(s.Mount, raftstore.ACLAPIDeps{Resolver: a.acl})
}

// ACLResolver resolves the secret of an ACL token to its authorizer, from
// this agent's copy of the ACL state; with ACLs disabled every secret gets
// an authorizer that allows everything. On a server it is what decides the
// requests that other agents make with their own tokens (their
// certificate requests): Resolve(secret), then Check or Allowed.
func (a *Agent) ACLResolver() *acl.Resolver { return a.acl }

// ACLAgentToken is the secret of the agent's own token
// (acl.tokens.agent or agent_file), "" when none; it goes with the
// agent's certificate requests.
func (a *Agent) ACLAgentToken() string { return a.aclAgentToken }
