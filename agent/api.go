package agent

import (
	"net"
	"strconv"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/agent/httpapi"
)

// buildHTTP makes the local API, which enforces the ACLs, and mounts the
// routes of the components that have their own (the CA and the tunnel
// mount theirs when they are built).
func (a *Agent) buildHTTP() error {
	addr := net.JoinHostPort(a.cfg.Addresses.HTTP, strconv.Itoa(a.cfg.Ports.HTTP))
	deps := httpapi.Deps{
		Listener: a.deps.HTTPListener,
		Listen: func(network, addr string) (net.Listener, error) {
			return a.deps.Sockets.Listener("api", network, addr)
		},
		Local:      a.local,
		Catalog:    a.store,
		Members:    httpapi.MembersFunc(a.members),
		Gatherer:   a.reg,
		Registerer: a.reg,
		Logger:     a.logger("http"),
		ACL:        a.acl,
		Membership: apiMembership{a},
	}
	if a.deps.LogStream != nil {
		deps.Logs = a.deps.LogStream
	}
	s, err := httpapi.New(httpapi.Config{Addr: addr, Version: a.deps.Version, Commit: a.deps.Commit}, deps)
	if err != nil {
		return err
	}
	a.http = s
	if err := gossip.RegisterKeyringAPI(a.gossip, s.Mount); err != nil {
		return err
	}
	if err := a.raft.RegisterAPI(s.Mount); err != nil {
		return err
	}
	if err := a.mountACLAPI(s); err != nil {
		return err
	}
	a.add("http", s.Start, s.Close)
	return nil
}
