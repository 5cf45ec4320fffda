// Package agent is the composition root of a Meshwork agent. It translates
// the configuration into each component's own Config, hands every component
// the few collaborators it needs, starts them in dependency order and stops
// them in reverse. It holds no logic of its own beyond that wiring: the
// components never import this package.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/agent/httpapi"
	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/agent/readiness"
	"github.com/meshwork/meshwork/agent/telemetryhttp"
	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/dnsserver"
	"github.com/meshwork/meshwork/internal/clock"
	"github.com/meshwork/meshwork/internal/logstream"
	"github.com/meshwork/meshwork/internal/sockets"
	"github.com/meshwork/meshwork/raftstore"
	"github.com/meshwork/meshwork/telemetry/accesslog"
)

// Deps are what the process gives the agent. Only Logger matters in
// production; the sockets and the gossip profile are for in-process tests
// that run many agents on one host.
type Deps struct {
	// Logger receives every component's logs, each under a "component" key.
	// Default: discards.
	Logger *slog.Logger
	// Version is the binary's semantic version, reported by the API and
	// logged at start. Default: the API's, "0.0.0-dev".
	Version string
	// Commit is the git commit the binary was built from, reported beside
	// Version. Default: the API's, "unknown".
	Commit string
	// Registry receives every metric. Default: a fresh registry with the Go
	// runtime and process collectors.
	Registry *prometheus.Registry

	// GossipTransport replaces memberlist's UDP/TCP transport.
	GossipTransport memberlist.Transport
	// GossipProfile replaces the production timers of gossip
	// (gossip.DefaultLANConfig); the agent still sets names, addresses and
	// keys from the configuration.
	GossipProfile *gossip.Config
	// HTTPListener, DNSConn and DNSListener replace the sockets the agent
	// would bind from the configuration.
	HTTPListener net.Listener
	DNSConn      net.PacketConn
	DNSListener  net.Listener
	// RaftListener replaces the server port's listener (servers); the
	// configured ports.raft must be its port, which is advertised.
	RaftListener net.Listener
	// RaftDial replaces the dialer of the connections to the servers' port
	// (Raft and RPC), for agents on an in-process network.
	RaftDial raftstore.DialFunc
	// TunnelConn replaces the tunnel's UDP socket; the agent does not close
	// it.
	TunnelConn net.PacketConn
	// LogStream follows Logger's records for GET /v1/agent/monitor.
	// Default: none, and the API has no monitor.
	LogStream *logstream.Broker
	// TelemetryListener replaces the telemetry listener's socket, and turns
	// the listener on even when telemetry.listen is empty.
	TelemetryListener net.Listener
	// Clock is the time the readiness checks judge the certificate by.
	// Default: clock.Real.
	Clock clock.Clock
	// Sockets opens the API, DNS, tunnel and VIP sockets the fields above
	// do not replace, under their names, reusing those the previous agent
	// or systemd handed over (docs/restart.md). Default: a Set with none,
	// so that every socket is new.
	Sockets *sockets.Set
}

// Agent is one running Meshwork agent.
type Agent struct {
	cfg  *config.Config
	deps Deps
	log  *slog.Logger
	reg  *prometheus.Registry
	// accessLog is reopened on reload; nil when off.
	accessLog *accesslog.Log

	store    *catalog.Store
	gossip   *gossip.Gossip
	local    *local.Manager
	dns      *dnsserver.Server
	http     *httpapi.Server
	raft     *raftstore.Node
	acl      *acl.Resolver // tokens of API calls (acl.go)
	ca       *ca.Agent
	tunnel   *tunnel      // nil when ports.tunnel is -1
	services *serviceSync // hands local services to the CA and the tunnel
	// catalogState restores the catalog saved before a restart and saves
	// it as it changes (catalogstate.go).
	catalogState *catalogState

	ready     *readiness.Checker    // joined, catalog, certificate, policy (telemetry.go)
	telemetry *telemetryhttp.Server // nil when telemetry.listen is empty

	dnsAddr string // where DNS listens, once started

	aclAgentToken string // the secret of the agent's own ACL token, "" when none

	// leaveRequested is closed when the API asked the agent to leave and
	// it has (leave.go).
	leaveRequested chan struct{}

	// components in start order; Close stops them in reverse.
	components []component

	mu      sync.Mutex
	started []component
	closed  bool
	// closing names the component Close is stopping, for Shutdown's error.
	closing string
	// closeDone is closed when Close has stopped every component, and
	// closeErr is then what it returned.
	closeDone chan struct{}
	closeErr  error
	// apiLeave is set once the API asked the agent to leave.
	apiLeave bool
	// releaseAgain drops the executable's pages once more after the
	// one-time work that follows Start (see settleTime).
	releaseAgain *time.Timer
}

// settleTime is how long after Start the executable's pages are released a
// second time. By then a server has elected a leader and made or loaded the
// CA, and a client holds its first certificate: code that runs once, after
// Start, and would otherwise stay mapped (about 7 MB on a server).
const settleTime = time.Minute

// component is one part of the agent with its lifecycle.
type component struct {
	name  string
	start func(ctx context.Context) error
	close func() error
}

// New builds every component from cfg, which must be validated. It opens no
// socket and starts no goroutine.
func New(cfg *config.Config, deps Deps) (*Agent, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Version == "" {
		deps.Version = httpapi.DefaultVersion
	}
	if deps.Commit == "" {
		deps.Commit = httpapi.DefaultCommit
	}
	if deps.Sockets == nil {
		deps.Sockets = sockets.New(deps.Logger.With("component", "sockets"))
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
		deps.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: data_dir: %w", err)
	}
	a := &Agent{
		cfg:       cfg,
		deps:      deps,
		log:       deps.Logger,
		reg:       deps.Registry,
		store:     catalog.NewStore(),
		closeDone: make(chan struct{}),

		leaveRequested: make(chan struct{}),
	}
	// Order matters: each builder may use what the earlier ones made.
	builders := []func() error{
		a.buildCatalogState, // first: restores the catalog before gossip, DNS and the tunnel serve
		a.buildMembership,
		a.buildRaft,
		a.buildACL, // the API resolves tokens from the Raft-replicated state
		a.buildHTTP,
		a.buildServiceSync,
		a.buildCA,
		a.buildTunnel, // before DNS, which answers with its virtual IPs
		a.buildDNS,
		a.buildReadiness,
		a.buildTelemetryListener, // last: a probe finds every component started
	}
	for _, b := range builders {
		if err := b(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// add appends a component to the start order.
func (a *Agent) add(name string, start func(context.Context) error, closeFn func() error) {
	a.components = append(a.components, component{name: name, start: start, close: closeFn})
}

// logger returns the logger of one component.
func (a *Agent) logger(component string) *slog.Logger {
	return a.log.With("component", component)
}

// Start starts the components in order and returns once all are ready: gossip
// has started, DNS and the API are listening, the tunnel socket is bound.
// The tunnel serves once the agent holds a certificate (TunnelReady), which
// on a client agent needs a server. When one fails, those already started
// are closed.
func (a *Agent) Start(ctx context.Context) error {
	for _, c := range a.components {
		if err := c.start(ctx); err != nil {
			_ = a.Close()
			return fmt.Errorf("agent: start %s: %w", c.name, err)
		}
		a.mu.Lock()
		a.started = append(a.started, c)
		a.mu.Unlock()
	}
	a.releasePages("start")
	a.mu.Lock()
	if !a.closed {
		a.releaseAgain = time.AfterFunc(settleTime, func() { a.releasePages("settled") })
	}
	a.mu.Unlock()
	a.log.Info("agent started", "node", a.cfg.Node, "advertise", a.cfg.Advertise, "server", a.cfg.Server, "version", a.deps.Version, "commit", a.deps.Commit)
	return nil
}

// releasePages drops the executable's pages that the agent is not using;
// see releaseStartupPages.
func (a *Agent) releasePages(when string) {
	if n, err := releaseStartupPages(); err != nil {
		a.log.Debug("executable pages not released", "when", when, "err", err)
	} else {
		a.log.Debug("executable pages released", "when", when, "bytes", n)
	}
}

// Reload applies the parts of a new configuration that can change while the
// agent runs: the services and their checks. Other changes need a restart
// and are reported.
func (a *Agent) Reload(cfg *config.Config) error {
	if cfg.Node != a.cfg.Node || cfg.Bind != a.cfg.Bind || cfg.Ports != a.cfg.Ports || cfg.Server != a.cfg.Server {
		a.log.Warn("reload: node, bind, ports and server take effect only after a restart")
	}
	if cfg.CA != a.cfg.CA || cfg.Tunnel != a.cfg.Tunnel {
		a.log.Warn("reload: the ca and tunnel sections take effect only after a restart")
	}
	if !reflect.DeepEqual(cfg.Telemetry, a.cfg.Telemetry) {
		a.log.Warn("reload: the telemetry section takes effect only after a restart")
	}
	if a.accessLog != nil {
		// After logrotate moved the file away: lines go to a new one.
		if err := a.accessLog.Reopen(); err != nil {
			a.log.Error("reload: access log not reopened; lines still go to the old file", "err", err)
		}
	}
	if cfg.ClusterKey != a.cfg.ClusterKey || cfg.ServerKey != a.cfg.ServerKey ||
		!slices.Equal(cfg.AcceptClusterKeys, a.cfg.AcceptClusterKeys) || !slices.Equal(cfg.AcceptServerKeys, a.cfg.AcceptServerKeys) {
		// A step of their rotation is a rolling restart (docs/operations.md).
		a.log.Warn("reload: cluster_key, server_key, accept_cluster_keys and accept_server_keys take effect only after a restart")
	}
	// After a gossip key rotation, encrypt catches up with the keyring,
	// which the keyring operations changed live: the keyring status
	// compares them from now on.
	if err := a.gossip.SetConfiguredKey(cfg.Encrypt); errors.Is(err, gossip.ErrNoEncryption) && cfg.Encrypt != "" {
		a.log.Warn("reload: encrypt takes effect only after a restart: gossip encryption cannot be turned on live")
	} else if err != nil && !errors.Is(err, gossip.ErrNoEncryption) {
		return fmt.Errorf("agent: reload: %w", err)
	}
	if err := a.local.Reload(cfg.AllServices()); err != nil {
		return fmt.Errorf("agent: reload: %w", err)
	}
	return nil
}

// Leave leaves the cluster gracefully: other agents see this node as left,
// not failed, and stop routing to it at once.
func (a *Agent) Leave(ctx context.Context) error {
	timeout := defaultLeaveTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = timeUntil(dl)
	}
	return a.gossip.Leave(timeout)
}

// Drain lets the connections the tunnel carries end, for at most
// tunnel.drain_timeout or until ctx is done, while it takes no new ones
// (transport.Transport.Drain). Call it after Leave, when peers no longer
// choose this node, and before Close.
func (a *Agent) Drain(ctx context.Context) error {
	tr := a.Tunnel()
	if tr == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Tunnel.DrainTimeout.D())
	defer cancel()
	return tr.Drain(ctx)
}

// Close stops every started component in reverse order. It is idempotent;
// a second call returns at once, without waiting for the first.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	started := a.started
	if a.releaseAgain != nil {
		a.releaseAgain.Stop()
	}
	a.mu.Unlock()

	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		a.mu.Lock()
		a.closing = started[i].name
		a.mu.Unlock()
		if err := started[i].close(); err != nil {
			errs = append(errs, fmt.Errorf("agent: close %s: %w", started[i].name, err))
		}
	}
	a.log.Info("agent stopped", "node", a.cfg.Node)
	a.closeErr = errors.Join(errs...)
	close(a.closeDone)
	return a.closeErr
}

// ErrCloseTimeout is returned by Shutdown when the components did not all
// stop in time.
var ErrCloseTimeout = errors.New("agent: components still stopping")

// Shutdown closes the agent as Close does, but returns when ctx ends even if
// a component has not finished stopping: a process that is being stopped
// must exit within its stop timeout whatever the state of its peers. The
// error then names the component that was still stopping; the process may
// exit, since everything the agent keeps on disk survives a crash.
func (a *Agent) Shutdown(ctx context.Context) error {
	go a.Close()
	select {
	case <-a.closeDone:
		return a.closeErr
	case <-ctx.Done():
		a.mu.Lock()
		name := a.closing
		a.mu.Unlock()
		return fmt.Errorf("%w: %s did not stop within the close timeout", ErrCloseTimeout, name)
	}
}

// Catalog is the agent's catalog store.
func (a *Agent) Catalog() *catalog.Store { return a.store }

// Gossip is the agent's gossip layer.
func (a *Agent) Gossip() *gossip.Gossip { return a.gossip }

// Local is the agent's local services and checks.
func (a *Agent) Local() *local.Manager { return a.local }

// HTTPAddr is where the API listens, once started.
func (a *Agent) HTTPAddr() string {
	if addr := a.http.Addr(); addr != nil {
		return addr.String()
	}
	return ""
}

// DNSAddr is where DNS listens (UDP and TCP), once started; "" when disabled.
func (a *Agent) DNSAddr() string { return a.dnsAddr }
