package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/ca/raftca"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/raftstore"
)

// buildCA makes this agent's identity from the ca: section (docs/pki.md).
//
//   - Servers (and --dev, a server of one) run the embedded CA over the
//     replicated state and get their own leaf in process: they hold the CA
//     keys, so they need no token. The first server to start creates the CA
//     (a compare-and-set at index 0 of the state, so servers starting
//     together make one); --dev does so at once, with a state key created in
//     its data directory.
//   - Client agents trade ca.token_file for their first leaf, then renew over
//     mutual TLS on the server port with the leaf they renew.
//   - With provider step-ca, every agent gets its leaves from step-ca.
//
// Every agent trusts mesh leaves on the server port besides cluster-key
// ones (renewals are authenticated by them), and serves /v1/ca/ on the
// local API. Servers serve the CA's RPCs on the server port, check the
// services a node asks to be named for against its gossip record, and leave
// out of its leaf those that the ServiceIdentity policy, or the agent token
// the request carries, does not let it hold.
//
// ACLs reach the CA through caACL, made from the acl: section (acl.go).
func (a *Agent) buildCA() error { return a.buildCAWith(a.caACL()) }

// caACL connects the CA to the ACL system (docs/pki.md, "Who may hold a
// service identity"). Its zero value is ACLs disabled: this agent sends no
// token with its sign and renew requests, and a server checks none.
type caACL struct {
	// AgentToken returns this agent's own token (acl.tokens.agent), sent
	// with each of its sign and renew requests. nil sends none.
	AgentToken func() string
	// Resolve is a server's ACL resolver (acl.Resolver.Resolve): the token
	// of each sign and renew request then decides whether the node gets a
	// leaf (node:write) and which services it names (service:write). nil
	// checks no token. Ignored on client agents.
	Resolve func(secret string) (*acl.Authorizer, error)
}

// buildCAWith is buildCA with the ACL hooks acls.
func (a *Agent) buildCAWith(acls caACL) error {
	cfg := a.cfg.CA.Component()
	deps := ca.AgentDeps{
		Node:       a.cfg.Node,
		DataDir:    a.cfg.DataDir,
		Server:     a.cfg.Server,
		Dev:        a.cfg.Dev,
		State:      raftca.State(a.raft),
		Logger:     a.log, // the ca package adds its own component key
		Registerer: a.reg,
		AgentToken: acls.AgentToken,
	}
	if a.cfg.Server || a.cfg.Dev {
		deps.PeerTLS = raftstore.PeerTLS
		deps.LiveNodes = liveNodes(a.store)
		deps.AuthorizeServices = authorizeServices(a.store, serviceGossipWait)
		deps.ServicePolicy = func(node, service string) (bool, string) {
			return a.raft.Policy().MayHold(node, service)
		}
		if acls.Resolve != nil {
			deps.AuthorizeToken = ca.ACLTokens(acls.Resolve)
		}
	} else {
		deps.Servers = raftca.Servers(raftstore.CatalogDiscovery(a.store))
		deps.RPCTLS = raftca.ClientTLS(a.raft)
	}
	ag, err := ca.NewAgent(cfg, deps)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.ca = ag
	if h := ag.RPCHandler(); h != nil {
		a.raft.MountRPC(ca.RPCPrefix, h)
	}
	raftca.TrustMesh(a.raft, ag.Manager())
	if err := ag.RegisterAPI(a.http.Mount); err != nil {
		return err
	}
	// The leaf names every local service: the service list follows agent/local.
	mgr := ag.Manager()
	var last []string
	a.services.add(func(svcs []localService) {
		names := serviceNames(svcs)
		if last != nil && slices.Equal(names, last) {
			return
		}
		if err := mgr.SetServices(names); err != nil {
			a.logger("ca").Error("local services not named on the certificate", "services", names, "err", err)
			return
		}
		last = names
	})
	a.add("ca", func(ctx context.Context) error {
		err := ag.Start(ctx)
		if errors.Is(err, ca.ErrNoCredentials) {
			// Membership, the catalog, health checks and DNS work without
			// an identity; only the tunnel needs one, and waits for it.
			a.logger("ca").Error("no certificate and no bootstrap token: the tunnel stays down until the agent restarts with one", "err", err)
			return nil
		}
		return err
	}, ag.Close)
	return nil
}

// CA is the agent's certificate authority and certificate manager.
func (a *Agent) CA() *ca.Agent { return a.ca }

// serviceGossipWait bounds how long a server waits for a node's gossip
// record to show a service the node asks to be named for: a node asks for
// its new leaf as soon as it registers the service, and its record takes a
// moment to arrive.
const serviceGossipWait = 5 * time.Second

// authorizeServices lets a node be named only for services its own gossip
// record registers (ca.AgentDeps.AuthorizeServices). It waits up to wait for
// the record to catch up, then refuses, naming the first missing service.
func authorizeServices(st *catalog.Store, wait time.Duration) func(node string, services []string) error {
	return func(node string, services []string) error {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for {
			snap, changed := st.Watch()
			missing := missingServices(snap, node, services)
			if missing == "" {
				return nil
			}
			select {
			case <-changed:
			case <-ctx.Done():
				if _, ok := snap.Member(node); !ok {
					return fmt.Errorf("node %q is not in the gossip catalog", node)
				}
				return fmt.Errorf("node %q does not register service %q", node, missing)
			}
		}
	}
}

// missingServices returns the first of services that node's record does not
// register, or "" when it registers them all.
func missingServices(snap *catalog.Snapshot, node string, services []string) string {
	m, ok := snap.Member(node)
	for _, s := range services {
		if !ok || !slices.ContainsFunc(m.Services, func(svc catalog.Service) bool { return strings.EqualFold(svc.Name, s) }) {
			return s
		}
	}
	return ""
}

// liveNodes lists the members gossip sees alive, so that a root rotation
// waits for them only (ca.AgentDeps.LiveNodes).
func liveNodes(st *catalog.Store) func() []string {
	return func() []string {
		var out []string
		for _, m := range st.Current().Members() {
			if m.Status == catalog.StatusAlive {
				out = append(out, m.Node)
			}
		}
		return out
	}
}
