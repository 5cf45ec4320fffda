// Package config reads the agent's configuration: YAML files and directories
// merged in order, then command-line flags on top. Unknown keys are refused,
// and every error names the file, the line and the key. The doc comments of
// the Config structs are the reference: docs/configuration.md is generated
// from them.
package config

//go:generate go run ./gendoc -o ../../docs/configuration.md

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/transport"
)

// Default ports, as DESIGN.md lists them.
const (
	DefaultHTTPPort   = 8500
	DefaultDNSPort    = 8600
	DefaultGossipPort = 7946
	DefaultRaftPort   = 7947
	DefaultTunnelPort = 7948
)

// Config is the whole agent configuration as an operator writes it. Each
// section is translated into the Config of the component it configures.
type Config struct {
	// Node is this node's name, unique in the cluster. Default: the hostname.
	Node string `yaml:"node"`
	// DataDir holds the agent's state: registrations, keyring, Raft, CA.
	// Required, except with dev, which uses a fresh temporary directory.
	DataDir string `yaml:"data_dir"`
	// Bind is the address the cluster-facing listeners (gossip, Raft, tunnel)
	// bind. Default: 0.0.0.0.
	Bind string `yaml:"bind"`
	// Advertise is the address other agents use to reach this one. Default:
	// bind, or the first private IPv4 address when bind is unspecified.
	Advertise string `yaml:"advertise"`
	// RetryJoin lists agents (host or host:port) to join at start. They are
	// tried, with the agents this one remembers in data_dir, with backoff
	// until it is in contact with the cluster, and again whenever it loses
	// contact (docs/operations.md). Default: none.
	RetryJoin []string `yaml:"retry_join"`
	// Server makes this agent a Raft server. Default: false.
	Server bool `yaml:"server"`
	// BootstrapExpect is how many servers to wait for before the first Raft
	// election: 1, 3 or 5. Only for servers. Default: 0 (join an existing cluster).
	BootstrapExpect int `yaml:"bootstrap_expect"`
	// Dev starts a single self-contained node on loopback with no files
	// needed. Default: false.
	Dev bool `yaml:"dev"`
	// LogLevel is debug, info, warn or error. Default: info.
	LogLevel string `yaml:"log_level"`
	// LogJSON writes logs as JSON lines. Default: false (text).
	LogJSON bool `yaml:"log_json"`
	// Encrypt is the gossip encryption key, base64 of 32 random bytes
	// (`meshwork keygen`). Default: none, and the agent warns.
	Encrypt string `yaml:"encrypt"`
	// ClusterKey, base64 of 32 random bytes, authenticates and encrypts traffic
	// to the servers (Raft and agent-to-server calls). Required on every agent
	// of a cluster with servers. With dev, one is generated.
	ClusterKey string `yaml:"cluster_key"`
	// ServerKey, base64 of 32 random bytes (`meshwork keygen`), is held by
	// servers only, the same on every server. From it they derive the
	// certificates that only servers can present on the server port, so
	// that an agent holding cluster_key (every agent does) cannot act as a
	// server there: speak Raft, write the CA's state, get a backup with
	// the private state (docs/security.md). Never on a client agent; must
	// differ from cluster_key. Default: none, and servers warn. With dev,
	// one is generated.
	ServerKey string `yaml:"server_key"`
	// AcceptClusterKeys lists further cluster keys, base64 of 32 bytes,
	// whose certificates are trusted on the server port besides those of
	// cluster_key; certificates are still made from cluster_key only. It
	// rotates the cluster key without a flag day, in three rolling
	// restarts: every agent gets the new key here; every agent switches
	// cluster_key to the new key and keeps the old one here; the old one
	// is removed (docs/operations.md). A secret, as cluster_key is. At
	// most 4, none equal to cluster_key, server_key or another entry.
	// Default: none.
	AcceptClusterKeys []string `yaml:"accept_cluster_keys"`
	// AcceptServerKeys lists further server keys, base64 of 32 bytes,
	// whose certificates servers trust besides those of server_key: it
	// rotates server_key in the same three steps as accept_cluster_keys
	// does cluster_key. Servers with server_key only; a secret, as
	// server_key is. At most 4, none equal to server_key, cluster_key,
	// an entry of accept_cluster_keys or another entry. Default: none.
	AcceptServerKeys []string `yaml:"accept_server_keys"`

	Ports     Ports     `yaml:"ports"`
	Addresses Addresses `yaml:"addresses"`

	// Services are registered at start and replaced on reload.
	Services []api.ServiceDefinition `yaml:"services"`
	// Service is one more service; handy for one file per service in a
	// config directory.
	Service *api.ServiceDefinition `yaml:"service"`

	DNS       DNS       `yaml:"dns"`
	Gossip    Gossip    `yaml:"gossip"`
	Raft      Raft      `yaml:"raft"`
	CA        CA        `yaml:"ca"`
	Tunnel    Tunnel    `yaml:"tunnel"`
	ACL       ACL       `yaml:"acl"`
	Telemetry Telemetry `yaml:"telemetry"`
	UI        UI        `yaml:"ui"`
}

// Ports are the listening ports. 0 means the default; -1 disables a listener
// where that makes sense (dns, raft on clients).
type Ports struct {
	// HTTP is the local API port. Default: 8500.
	HTTP int `yaml:"http"`
	// DNS is the DNS port, UDP and TCP. Default: 8600.
	DNS int `yaml:"dns"`
	// Gossip is the memberlist port, UDP and TCP. Default: 7946.
	Gossip int `yaml:"gossip"`
	// Raft is the server port (Raft and agent-to-server calls). Default: 7947.
	Raft int `yaml:"raft"`
	// Tunnel is the QUIC tunnel port, UDP. Default: 7948.
	Tunnel int `yaml:"tunnel"`
}

// Addresses are where the host-local listeners bind.
type Addresses struct {
	// HTTP is the local API address. Default: 127.0.0.1.
	HTTP string `yaml:"http"`
	// DNS is the DNS address. Default: 127.0.0.1.
	DNS string `yaml:"dns"`
}

// DNS configures the DNS interface.
type DNS struct {
	// Domain is the mesh domain. Default: "mesh.".
	Domain string `yaml:"domain"`
	// Recursors receive queries for other zones (host or host:port). Default:
	// none, and such queries are refused.
	Recursors []string `yaml:"recursors"`
	// RecursorTimeout bounds one forwarded query. Default: 2s.
	RecursorTimeout api.Duration `yaml:"recursor_timeout"`
	// ServiceTTL is the TTL of service answers. Default: 0s, because health
	// changes within seconds.
	ServiceTTL *api.Duration `yaml:"service_ttl"`
	// NodeTTL is the TTL of node answers. Default: 30s.
	NodeTTL *api.Duration `yaml:"node_ttl"`
	// NegativeTTL is the SOA minimum, how long resolvers cache a negative
	// answer. Default: 5s.
	NegativeTTL *api.Duration `yaml:"negative_ttl"`
}

// Gossip tunes membership. Leave it alone unless a measurement says otherwise.
type Gossip struct {
	// ReconnectTimeout is how long a failed node stays listed before it is
	// forgotten. Default: 72h.
	ReconnectTimeout api.Duration `yaml:"reconnect_timeout"`
	// TombstoneTimeout is how long a node that left stays listed. Default: 24h.
	TombstoneTimeout api.Duration `yaml:"tombstone_timeout"`
	// LeftReconnectTimeout is how long a node that left gracefully is still
	// tried again, in case it is restarting (a reboot, an upgrade). At most
	// tombstone_timeout. Default: 30m, or tombstone_timeout when shorter.
	LeftReconnectTimeout api.Duration `yaml:"left_reconnect_timeout"`
	// RetryJoinInterval is the first wait between join attempts; it doubles,
	// with jitter, up to 5s (or stays at this value when it is longer).
	// Default: 1s.
	RetryJoinInterval api.Duration `yaml:"retry_join_interval"`
}

// Raft tunes the server side.
type Raft struct {
	// DeadServerAfter is how long a server must stay failed before it is
	// removed from the Raft configuration. Default: 5m.
	DeadServerAfter api.Duration `yaml:"dead_server_after"`
	// SnapshotThreshold is how many log entries trigger a snapshot.
	// Default: 8192.
	SnapshotThreshold int `yaml:"snapshot_threshold"`
}

// CA configures the mesh PKI.
type CA struct {
	// Provider is "embedded" (the servers run the CA) or "step-ca" (an
	// external step-ca). Default: "embedded".
	Provider string `yaml:"provider"`
	// TrustDomain is the SPIFFE trust domain. Default: "meshwork.local".
	TrustDomain string `yaml:"trust_domain"`
	// LeafTTL is the lifetime of leaf certificates. Default: 24h.
	LeafTTL api.Duration `yaml:"leaf_ttl"`
	// TokenFile holds a one-time bootstrap token made on a server by
	// `meshwork ca token <node>`. Client agents need it for their first
	// certificate only; servers and dev sign their own. Default: none.
	TokenFile string `yaml:"token_file"`
	// StateKeyFile holds the key (`meshwork ca keygen`) that seals the CA's
	// private keys in the replicated state: servers only, the same on every
	// server, mode 0600. Default: <data_dir>/ca/state.key, created when
	// missing (the first server, dev).
	StateKeyFile string `yaml:"state_key_file"`
	// StepCA configures the external CA when provider is "step-ca".
	StepCA StepCA `yaml:"step_ca"`
}

// StepCA points at an external step-ca server.
type StepCA struct {
	// URL of the step-ca server, https://host:port.
	URL string `yaml:"url"`
	// RootFingerprint is the SHA-256 fingerprint of its root, in hex.
	RootFingerprint string `yaml:"root_fingerprint"`
	// Provisioner is the name of a JWK provisioner.
	Provisioner string `yaml:"provisioner"`
	// PasswordFile holds the provisioner's password.
	PasswordFile string `yaml:"password_file"`
	// KeyFile holds the provisioner's encrypted private JWK. Default: none,
	// fetched from the CA.
	KeyFile string `yaml:"key_file"`
	// RootsRefresh is how often the roots are fetched again. Default: 1h.
	RootsRefresh api.Duration `yaml:"roots_refresh"`
}

// Tunnel configures the data plane.
type Tunnel struct {
	// VIPRange is where service virtual IPs are allocated. Default:
	// 127.240.0.0/12.
	VIPRange string `yaml:"vip_range"`
	// DefaultPolicy decides calls that no Intention matches, until the mesh-wide
	// default is set by policy: "allow" or "deny". Default: "deny", or "allow"
	// with dev.
	DefaultPolicy string `yaml:"default_policy"`
	// IdleTimeout closes proxied connections idle this long. Default: 1h.
	IdleTimeout api.Duration `yaml:"idle_timeout"`
	// MaxStreamsPerPeer caps the concurrent streams one peer agent may open.
	// Each holds a descriptor on this host (its connection to the local
	// app), hence the default. A peer over it is refused at once as
	// overloaded. Default: half the open-file limit, between 4096 and 65536
	// (32768 under the shipped unit).
	MaxStreamsPerPeer int `yaml:"max_streams_per_peer"`
	// DrainTimeout is how long a stopping agent, once it has left the
	// cluster, waits for the connections it carries to end before it cuts
	// them. It takes no new ones meanwhile. Default: 10s.
	DrainTimeout api.Duration `yaml:"drain_timeout"`
}

// Telemetry configures what the agent tells about itself and the traffic
// it carries (docs/observability.md).
type Telemetry struct {
	// Listen is host:port of the telemetry listener. It serves only
	// /metrics, /healthz and /readyz, with no token, so it is safe to expose
	// on the host's address to a Prometheus. Empty: off.
	Listen string `yaml:"listen"`
	// ServiceMetrics keeps the golden signals of each service the agent
	// carries calls for (meshwork_service_*). Default: true.
	ServiceMetrics *bool `yaml:"service_metrics"`
	// Tracing exports a span for each request and connection.
	Tracing Tracing `yaml:"tracing"`
	// AccessLog writes a line for each request and connection.
	AccessLog AccessLog `yaml:"access_log"`
}

// UI configures the web UI that every agent serves at /ui/ on its HTTP
// API (docs/design.md, "The web UI"). Its pages read the API with the
// user's token; only the topology's numbers need settings.
type UI struct {
	// MetricsProvider is where the topology page's requests per second,
	// error rates and p99 come from: "agents", the agent serving the UI
	// asks every live agent for its golden-signal counters on its
	// telemetry listener and turns two readings into rates; or
	// "prometheus", it queries the Prometheus at prometheus_url, which
	// scrapes the agents. Default: agents.
	MetricsProvider string `yaml:"metrics_provider"`
	// PrometheusURL is the base URL of the Prometheus HTTP API, such as
	// http://prometheus.example:9090. Required with metrics_provider
	// prometheus; not allowed otherwise.
	PrometheusURL string `yaml:"prometheus_url"`
	// AgentTelemetryPort is the port of the other agents' telemetry
	// listeners, asked on their gossip address by the agents provider.
	// Default: the port of this agent's telemetry.listen; with neither,
	// the topology shows only the calls this agent counts, and says so.
	AgentTelemetryPort int `yaml:"agent_telemetry_port"`
}

// Tracing configures the export of spans with OpenTelemetry.
type Tracing struct {
	// OTLPEndpoint is the URL of an OTLP/HTTP trace receiver, such as
	// http://127.0.0.1:4318. Empty: no span is exported; the trace context
	// is still carried from app to app.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRate is the share of the traces that the mesh starts that are
	// sampled, from 0 to 1. A request that comes with a W3C traceparent
	// keeps its sampled flag. Default: 0.01.
	SampleRate *float64 `yaml:"sample_rate"`
	// QueueSize bounds the spans waiting for export. Spans beyond it are
	// dropped and counted, so that a slow receiver never slows a call.
	// Default: 2048.
	QueueSize int `yaml:"queue_size"`
}

// AccessLog configures the access log: one JSON line per L7 request or
// L4 connection, on each agent it passes. Off by default.
type AccessLog struct {
	// Path is the file the lines are appended to, or "journal" for the
	// systemd journal. Empty: off.
	Path string `yaml:"path"`
	// SampleRate is the share of calls logged, from 0 to 1. Default: 1.
	SampleRate *float64 `yaml:"sample_rate"`
	// RateLimit is the most lines written per second. Lines beyond it are
	// dropped and counted. Default: 1000.
	RateLimit int `yaml:"rate_limit"`
}

// ACL configures the access control of the agent's HTTP API
// (docs/security.md has the guide). Every agent of a cluster should have
// the same enabled and default_policy.
type ACL struct {
	// Enabled turns enforcement on: every API call then needs a token
	// allowed to make it (none is the anonymous token, which reads the
	// catalog). Default: false.
	Enabled bool `yaml:"enabled"`
	// DefaultPolicy decides what no rule of a token covers: "deny" or
	// "allow" (to turn ACLs on in a running mesh before every token has
	// its policies). Default: "deny".
	DefaultPolicy string `yaml:"default_policy"`
	// Tokens are the secrets the agent itself holds.
	Tokens ACLTokens `yaml:"tokens"`
}

// ACLTokens are the ACL tokens of the agent itself. A file that holds one is
// a secret file: mode 0600 (or 0640 with the agent's group).
type ACLTokens struct {
	// Agent is the secret of the agent's own token, which goes with its
	// certificate requests. Default: none.
	Agent string `yaml:"agent"`
	// AgentFile holds that secret instead, alone in the file. Default: none.
	AgentFile string `yaml:"agent_file"`
	// InitialManagement, on servers, is the secret of a management token
	// the leader makes when the ACL system was never bootstrapped, so that
	// automation needs no interactive `meshwork acl bootstrap`. Default:
	// none.
	InitialManagement string `yaml:"initial_management"`
}

// Durations of the defaults that other files refer to.
const (
	defaultRecursorTimeout = 2 * time.Second
)

// ApplyDefaults fills every field left empty with its default. With Dev it
// also makes the node self-contained: loopback, a server of one, a fresh data
// directory and cluster key.
func (c *Config) ApplyDefaults() error {
	if c.Dev {
		if c.Bind == "" {
			c.Bind = "127.0.0.1"
		}
		if c.DataDir == "" {
			dir, err := os.MkdirTemp("", "meshwork-dev-")
			if err != nil {
				return fmt.Errorf("dev: data_dir: %w", err)
			}
			c.DataDir = dir
		}
		c.Server = true
		if c.BootstrapExpect == 0 {
			c.BootstrapExpect = 1
		}
		if c.ClusterKey == "" {
			c.ClusterKey = NewKey()
		}
		if c.ServerKey == "" {
			c.ServerKey = NewKey()
		}
		if c.Tunnel.DefaultPolicy == "" {
			c.Tunnel.DefaultPolicy = "allow"
		}
		if c.LogLevel == "" {
			c.LogLevel = "debug"
		}
	}
	if c.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node: no node name given and the hostname is unknown: %w", err)
		}
		c.Node = h
	}
	if c.Bind == "" {
		c.Bind = "0.0.0.0"
	}
	if c.Advertise == "" {
		adv, err := defaultAdvertise(c.Bind)
		if err != nil {
			return err
		}
		c.Advertise = adv
	}
	setInt(&c.Ports.HTTP, DefaultHTTPPort)
	setInt(&c.Ports.DNS, DefaultDNSPort)
	setInt(&c.Ports.Gossip, DefaultGossipPort)
	setInt(&c.Ports.Raft, DefaultRaftPort)
	setInt(&c.Ports.Tunnel, DefaultTunnelPort)
	setStr(&c.Addresses.HTTP, "127.0.0.1")
	setStr(&c.Addresses.DNS, "127.0.0.1")
	setStr(&c.LogLevel, "info")

	setStr(&c.DNS.Domain, "mesh.")
	if !strings.HasSuffix(c.DNS.Domain, ".") {
		c.DNS.Domain += "."
	}
	setDur(&c.DNS.RecursorTimeout, defaultRecursorTimeout)
	setDurPtr(&c.DNS.ServiceTTL, 0)
	setDurPtr(&c.DNS.NodeTTL, 30*time.Second)
	setDurPtr(&c.DNS.NegativeTTL, 5*time.Second)

	setDur(&c.Gossip.ReconnectTimeout, 72*time.Hour)
	setDur(&c.Gossip.TombstoneTimeout, 24*time.Hour)
	setDur(&c.Gossip.LeftReconnectTimeout, min(30*time.Minute, c.Gossip.TombstoneTimeout.D()))
	setDur(&c.Gossip.RetryJoinInterval, time.Second)

	setDur(&c.Raft.DeadServerAfter, 5*time.Minute)
	setInt(&c.Raft.SnapshotThreshold, 8192)

	setStr(&c.CA.Provider, "embedded")
	if c.CA.Provider == "step-ca" {
		setDur(&c.CA.StepCA.RootsRefresh, time.Hour)
	}
	setStr(&c.CA.TrustDomain, "meshwork.local")
	setDur(&c.CA.LeafTTL, 24*time.Hour)

	setStr(&c.Tunnel.VIPRange, "127.240.0.0/12")
	setStr(&c.Tunnel.DefaultPolicy, "deny")
	setDur(&c.Tunnel.IdleTimeout, time.Hour)
	setInt(&c.Tunnel.MaxStreamsPerPeer, transport.DefaultMaxStreamsPerPeer())
	setDur(&c.Tunnel.DrainTimeout, 10*time.Second)

	setStr(&c.ACL.DefaultPolicy, "deny")

	if c.Telemetry.ServiceMetrics == nil {
		on := true
		c.Telemetry.ServiceMetrics = &on
	}
	setFloatPtr(&c.Telemetry.Tracing.SampleRate, 0.01)
	setInt(&c.Telemetry.Tracing.QueueSize, 2048)
	setFloatPtr(&c.Telemetry.AccessLog.SampleRate, 1)
	setInt(&c.Telemetry.AccessLog.RateLimit, 1000)
	return nil
}

func setFloatPtr(p **float64, v float64) {
	if *p == nil {
		*p = &v
	}
}

func setInt(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

func setStr(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

func setDur(p *api.Duration, v time.Duration) {
	if *p == 0 {
		*p = api.Duration(v)
	}
}

func setDurPtr(p **api.Duration, v time.Duration) {
	if *p == nil {
		d := api.Duration(v)
		*p = &d
	}
}

// defaultAdvertise picks the address to advertise for a bind address: the
// bind address itself, or for 0.0.0.0 the first private IPv4 address of the
// host, else its first global unicast IPv4 address.
func defaultAdvertise(bind string) (string, error) {
	ip, err := netip.ParseAddr(bind)
	if err != nil {
		return "", fmt.Errorf("bind: %q is not an IP address", bind)
	}
	if !ip.IsUnspecified() {
		return bind, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("advertise: cannot list interface addresses: %w", err)
	}
	var global netip.Addr
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr()
		switch {
		case !ip.Is4() || !ip.IsGlobalUnicast():
		case ip.IsPrivate():
			return ip.String(), nil
		case !global.IsValid():
			global = ip
		}
	}
	if global.IsValid() {
		return global.String(), nil
	}
	return "", errors.New("advertise: bind is 0.0.0.0 and the host has no IPv4 address to advertise; set advertise")
}

// NewKey returns a fresh base64 key of 32 random bytes, the form of
// Encrypt, ClusterKey and ServerKey.
func NewKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("config: crypto/rand failed: " + err.Error()) // the kernel's RNG does not fail
	}
	return base64.StdEncoding.EncodeToString(b)
}

// AllServices returns Services followed by Service.
func (c *Config) AllServices() []api.ServiceDefinition {
	out := append([]api.ServiceDefinition(nil), c.Services...)
	if c.Service != nil {
		out = append(out, *c.Service)
	}
	return out
}
