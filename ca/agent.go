package ca

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// AgentDeps are what the agent gives its CA pieces.
type AgentDeps struct {
	// Node is this agent's node name. Required.
	Node string
	// DataDir is the agent's data directory; the CA keeps its files in
	// DataDir/ca (leaf.pem 0600, bundle.json, state.key 0600). Required.
	DataDir string
	// Server is true on server agents: they run the embedded CA.
	Server bool
	// Dev is --dev: a single node that makes its CA and its own leaf
	// without a token (it implies Server).
	Dev bool
	// Services are the local services at start (see Manager.SetServices).
	Services []string
	// State is the replicated state (embedded provider). Required unless
	// the provider is step-ca.
	State StateStore
	// Servers lists server RPC addresses for the built-in RPC transport
	// (raftca.Servers). Client agents with the embedded provider need it or
	// RPC.
	Servers func(ctx context.Context) ([]string, error)
	// RPC, when set, carries the CA's RPCs instead of the built-in
	// transport (see RPCDoer): fine for bootstrap, but a transport that pools
	// connections may renew over a connection opened with another client
	// certificate; prefer Servers with RPCTLS.
	RPC RPCDoer
	// ClientCertificate is presented by the built-in RPC transport at
	// bootstrap (see RPCClientConfig.ClientCertificate). Optional.
	ClientCertificate func() (*tls.Certificate, error)
	// RPCTLS is the client TLS config of the server port for the built-in
	// transport (see RPCClientConfig.TLS; raftca.ClientTLS). Optional.
	RPCTLS func() *tls.Config
	// PeerTLS, LiveNodes, AuthorizeServices, ServicePolicy and
	// AuthorizeToken are passed to the Server (see ServerDeps). Optional.
	PeerTLS           func(*http.Request) (tls.ConnectionState, bool)
	LiveNodes         func() []string
	AuthorizeServices func(node string, services []string) error
	ServicePolicy     func(node, service string) (bool, string)
	AuthorizeToken    TokenAuthorizer
	// AgentToken is passed to the Manager (see ManagerDeps.AgentToken).
	// Optional.
	AgentToken func() string
	// Logger and Registerer are shared by the pieces. Optional.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Agent is the CA of one agent, built from the `ca:` configuration: on a
// server (or in --dev) the embedded CA and a Manager that gets its leaf in
// process; on a client a Manager that bootstraps with the token file and
// renews over the RPC port; with provider step-ca a Manager fed by step-ca.
// Start starts the Server before the Manager; Close stops them in reverse.
type Agent struct {
	srv *Server
	mgr *Manager
	api http.Handler
}

// NewAgent validates cfg and deps and builds the pieces; it starts nothing.
// On a server with the default state key file, a missing key is created
// (first server, --dev); a configured ca.state_key_file must exist.
func NewAgent(cfg Config, deps AgentDeps) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if deps.Node == "" || deps.DataDir == "" {
		return nil, fmt.Errorf("ca: %w: AgentDeps.Node and DataDir are required", ErrInvalidConfig)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := filepath.Join(deps.DataDir, "ca")
	mcfg := ManagerConfig{TrustDomain: cfg.TrustDomain, Node: deps.Node, Services: deps.Services, DataDir: dir}
	mdeps := ManagerDeps{Logger: deps.Logger.With("component", "ca"), Registerer: deps.Registerer, AgentToken: deps.AgentToken}
	a := &Agent{}

	switch {
	case cfg.Provider == ProviderStepCA:
		sc := cfg.StepCA
		sc.TrustDomain, sc.LeafTTL, sc.Logger = cfg.TrustDomain, cfg.LeafTTL, mdeps.Logger
		p, err := NewStepCA(sc)
		if err != nil {
			return nil, err
		}
		mdeps.Issuer, mdeps.Bundles = p, p

	case deps.Server || deps.Dev:
		if deps.State == nil {
			return nil, fmt.Errorf("ca: %w: AgentDeps.State is required on a server", ErrInvalidConfig)
		}
		keyFile, create := cfg.StateKeyFile, false
		if keyFile == "" {
			keyFile, create = filepath.Join(dir, "state.key"), true
		}
		key, err := LoadStateKey(keyFile, create)
		if err != nil {
			return nil, fmt.Errorf("%w (ca.state_key_file: every server needs the same key; make one with `meshwork ca keygen`)", err)
		}
		srv, err := NewServer(ServerConfig{TrustDomain: cfg.TrustDomain, Node: deps.Node, StateKey: key, LeafTTL: cfg.LeafTTL},
			ServerDeps{State: deps.State, Logger: mdeps.Logger, Registerer: deps.Registerer, LiveNodes: deps.LiveNodes,
				AuthorizeServices: deps.AuthorizeServices, ServicePolicy: deps.ServicePolicy, AuthorizeToken: deps.AuthorizeToken, PeerTLS: deps.PeerTLS})
		if err != nil {
			return nil, err
		}
		a.srv = srv
		mdeps.Issuer, mdeps.Bundles = srv.LocalIssuer(), NewStateBundleSource(deps.State, cfg.TrustDomain)

	default:
		if deps.State == nil {
			return nil, fmt.Errorf("ca: %w: AgentDeps.State is required (the trust bundle comes from it)", ErrInvalidConfig)
		}
		cl, err := NewRPCClient(RPCClientConfig{TrustDomain: cfg.TrustDomain, Do: deps.RPC, Servers: deps.Servers,
			ClientCertificate: deps.ClientCertificate, TLS: deps.RPCTLS})
		if err != nil {
			return nil, err
		}
		if cfg.TokenFile != "" {
			tok, err := os.ReadFile(cfg.TokenFile)
			switch {
			case err == nil:
				mcfg.Token = strings.TrimSpace(string(tok))
			case errors.Is(err, fs.ErrNotExist):
				// Fine once the agent has a leaf; Start says so otherwise.
			default:
				return nil, fmt.Errorf("ca: %w: ca.token_file: %v", ErrInvalidConfig, err)
			}
		}
		mdeps.Issuer, mdeps.Bundles = cl, NewStateBundleSource(deps.State, cfg.TrustDomain)
	}

	mgr, err := NewManager(mcfg, mdeps)
	if err != nil {
		return nil, err
	}
	a.mgr = mgr
	a.api = NewAPIHandler(APIDeps{Manager: mgr, Server: a.srv})
	return a, nil
}

// Start starts the Server (if any), then the Manager. It does not wait for
// a certificate: see Manager.Ready.
func (a *Agent) Start(ctx context.Context) error {
	if a.srv != nil {
		if err := a.srv.Start(ctx); err != nil {
			return err
		}
	}
	if err := a.mgr.Start(ctx); err != nil {
		if a.srv != nil {
			a.srv.Close()
		}
		return err
	}
	return nil
}

// Close stops the Manager, then the Server. It is idempotent.
func (a *Agent) Close() error {
	err := a.mgr.Close()
	if a.srv != nil {
		err = errors.Join(err, a.srv.Close())
	}
	return err
}

// Manager is the agent's certificate manager, the TLSIdentity of the data
// plane.
func (a *Agent) Manager() *Manager { return a.mgr }

// Server is the embedded CA, nil on client agents and with step-ca.
func (a *Agent) Server() *Server { return a.srv }

// APIHandler serves /v1/ca/... on the local HTTP API.
func (a *Agent) APIHandler() http.Handler { return a.api }

// RPCHandler serves /rpc/v1/ca/... on the server port (MountRPC with
// RPCPrefix); nil when this agent runs no embedded CA.
func (a *Agent) RPCHandler() http.Handler {
	if a.srv == nil {
		return nil
	}
	return a.srv.RPCHandler()
}
