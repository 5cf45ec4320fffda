package agent

import (
	"fmt"
	"net"
	"strconv"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/ui"

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
	if err := ui.RegisterBuildInfo(a.reg, a.deps.Version, a.deps.Commit); err != nil {
		return err
	}
	topology, err := a.uiTopology()
	if err != nil {
		return err
	}
	providerName := ui.ProviderAgents
	if a.cfg.UI.MetricsProvider == ui.ProviderPrometheus {
		providerName = ui.ProviderPrometheus
	}
	if err := ui.RegisterAPI(ui.API{Topology: topology, ProviderName: providerName, ACLEnabled: a.acl.Enabled}, s.Mount); err != nil {
		return err
	}
	a.add("http", s.Start, s.Close)
	return nil
}

// uiTopology is where the UI's topology page reads its numbers: the
// Prometheus of ui.prometheus_url, or every agent's telemetry listener,
// on the port ui.agent_telemetry_port names or else on this agent's own
// telemetry port (docs/design.md, "The web UI").
func (a *Agent) uiTopology() (ui.Provider, error) {
	if a.cfg.UI.MetricsProvider == "prometheus" {
		return ui.NewPrometheus(ui.PrometheusConfig{URL: a.cfg.UI.PrometheusURL}, nil)
	}
	port := a.cfg.UI.AgentTelemetryPort
	if port == 0 && a.cfg.Telemetry.Listen != "" {
		_, p, err := net.SplitHostPort(a.cfg.Telemetry.Listen)
		if err != nil {
			return nil, fmt.Errorf("agent: ui: telemetry.listen %q: %w", a.cfg.Telemetry.Listen, err)
		}
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("agent: ui: telemetry.listen %q: port: %w", a.cfg.Telemetry.Listen, err)
		}
	}
	return ui.NewAgents(ui.AgentsConfig{TelemetryPort: port}, ui.AgentsDeps{
		Self:       a.cfg.Node,
		Local:      a.reg,
		Members:    func() []*catalog.Member { return a.store.Current().Members() },
		Registerer: a.reg,
	})
}
