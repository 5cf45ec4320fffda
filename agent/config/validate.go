package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/dnsserver"
	"github.com/meshwork/meshwork/internal/keytls"
	"github.com/meshwork/meshwork/raftstore"
	"github.com/meshwork/meshwork/transport"
	"github.com/meshwork/meshwork/transport/vip"
)

// FieldError is one invalid key.
type FieldError struct {
	// Path is the key path as written in YAML, such as "ports.http".
	Path string
	// Origin is "file:line" where the key was set, when a file set it.
	Origin string
	Msg    string
}

func (e *FieldError) Error() string {
	if e.Origin != "" {
		return fmt.Sprintf("%s: %s: %s", e.Origin, e.Path, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// nodeName is what a node name may be: one DNS label, since it appears in
// <node>.node.<domain>.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// Validate checks a configuration with its defaults applied. It returns every
// problem at once, each a *FieldError naming the key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	// check reports the error of a component's rule for the key at path.
	check := func(path string, err error) {
		if err != nil {
			errs = append(errs, &FieldError{Path: path, Msg: reason(err)})
		}
	}

	if !nodeName.MatchString(c.Node) {
		bad("node", "%q must be one DNS label: letters, digits and '-', at most 63", c.Node)
	}
	if c.DataDir == "" && !c.Dev {
		bad("data_dir", "is required (or use dev)")
	}
	for _, k := range []struct{ path, v string }{{"bind", c.Bind}, {"advertise", c.Advertise}, {"addresses.http", c.Addresses.HTTP}, {"addresses.dns", c.Addresses.DNS}} {
		if _, err := netip.ParseAddr(k.v); err != nil {
			bad(k.path, "%q is not an IP address", k.v)
		}
	}
	if ip, err := netip.ParseAddr(c.Advertise); err == nil && ip.IsUnspecified() {
		bad("advertise", "%q cannot be advertised; set a routable address", c.Advertise)
	}
	for i, j := range c.RetryJoin {
		if err := checkHostPort(j, true); err != nil {
			bad(fmt.Sprintf("retry_join[%d]", i), "%q: %v", j, err)
		}
	}
	check("bootstrap_expect", raftstore.CheckBootstrapExpect(c.Server, c.BootstrapExpect))
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q must be debug, info, warn or error", c.LogLevel)
	}
	if c.Encrypt != "" {
		if _, err := gossip.ParseKey(c.Encrypt); err != nil {
			check("encrypt", err)
		}
	}
	var clusterKey []byte
	if c.ClusterKey == "" && !c.Dev {
		bad("cluster_key", "is required: it secures traffic to the servers (make one with `meshwork keygen`)")
	} else if c.ClusterKey != "" {
		var err error
		clusterKey, err = keytls.DecodeKey(c.ClusterKey)
		check("cluster_key", err)
	}
	if c.ServerKey != "" {
		serverKey, err := keytls.DecodeKey(c.ServerKey)
		switch {
		case err != nil && c.Server:
			check("server_key", err)
		case err != nil:
			// Unreadable, but a client must not hold one at all: say so.
			check("server_key", raftstore.CheckServerKey(false, []byte{}, nil))
		default:
			check("server_key", raftstore.CheckServerKey(c.Server, serverKey, clusterKey))
		}
	}
	errs = append(errs, c.validateAcceptKeys()...)

	ports := []struct {
		path string
		v    int
	}{{"ports.http", c.Ports.HTTP}, {"ports.dns", c.Ports.DNS}, {"ports.gossip", c.Ports.Gossip}, {"ports.raft", c.Ports.Raft}, {"ports.tunnel", c.Ports.Tunnel}}
	for _, p := range ports {
		if p.v < -1 || p.v > 65535 || (p.v == -1 && (p.path == "ports.http" || p.path == "ports.gossip")) {
			bad(p.path, "%d is out of range (1-65535%s)", p.v, map[bool]string{true: ", or -1 to disable"}[p.path != "ports.http" && p.path != "ports.gossip"])
		}
	}
	// The cluster-facing listeners share the bind address: gossip uses UDP and
	// TCP, Raft TCP, the tunnel UDP.
	if c.Ports.Gossip == c.Ports.Raft && c.Ports.Raft > 0 {
		bad("ports.raft", "%d is also ports.gossip (both use TCP on %s)", c.Ports.Raft, c.Bind)
	}
	if c.Ports.Gossip == c.Ports.Tunnel && c.Ports.Tunnel > 0 {
		bad("ports.tunnel", "%d is also ports.gossip (both use UDP on %s)", c.Ports.Tunnel, c.Bind)
	}
	if c.Addresses.HTTP == c.Addresses.DNS && c.Ports.HTTP == c.Ports.DNS {
		bad("ports.dns", "%d is also ports.http on %s", c.Ports.DNS, c.Addresses.DNS)
	}

	ids := map[string]int{}
	for i, s := range c.Services {
		path := fmt.Sprintf("services[%d]", i)
		if err := s.Validate(); err != nil {
			bad(path, "%v", err)
			continue
		}
		id := s.ID
		if id == "" {
			id = s.Name
		}
		if j, dup := ids[id]; dup {
			bad(path+".id", "%q is also the id of services[%d]", id, j)
		}
		ids[id] = i
	}

	check("dns.domain", dnsserver.CheckDomain(c.DNS.Domain))
	for i, r := range c.DNS.Recursors {
		check(fmt.Sprintf("dns.recursors[%d]", i), dnsserver.CheckRecursor(r))
	}
	positive(bad, "dns.recursor_timeout", c.DNS.RecursorTimeout.D())
	check("dns.service_ttl", dnsserver.CheckTTL(c.DNS.ServiceTTL.D()))
	check("dns.node_ttl", dnsserver.CheckTTL(c.DNS.NodeTTL.D()))
	check("dns.negative_ttl", dnsserver.CheckTTL(c.DNS.NegativeTTL.D()))

	positive(bad, "gossip.reconnect_timeout", c.Gossip.ReconnectTimeout.D())
	positive(bad, "gossip.tombstone_timeout", c.Gossip.TombstoneTimeout.D())
	positive(bad, "gossip.retry_join_interval", c.Gossip.RetryJoinInterval.D())
	positive(bad, "gossip.left_reconnect_timeout", c.Gossip.LeftReconnectTimeout.D())
	if lr, ts := c.Gossip.LeftReconnectTimeout.D(), c.Gossip.TombstoneTimeout.D(); lr > ts {
		bad("gossip.left_reconnect_timeout", "%s is longer than gossip.tombstone_timeout %s, after which a node that left is forgotten", lr, ts)
	}

	positive(bad, "raft.dead_server_after", c.Raft.DeadServerAfter.D())
	if c.Raft.SnapshotThreshold < 16 {
		bad("raft.snapshot_threshold", "%d must be at least 16", c.Raft.SnapshotThreshold)
	}

	for _, p := range c.CA.Component().Problems() {
		bad("ca."+p.Key, "%s", p.Reason)
	}

	if p, err := netip.ParsePrefix(c.Tunnel.VIPRange); err != nil {
		bad("tunnel.vip_range", "%q is not a prefix such as 127.240.0.0/12", c.Tunnel.VIPRange)
	} else if err := vip.CheckPrefix(p); err != nil {
		check("tunnel.vip_range", err)
	} else {
		// A VIP listener on the agent's own address would shadow it.
		for _, k := range []struct{ path, v string }{{"bind", c.Bind}, {"addresses.http", c.Addresses.HTTP}, {"addresses.dns", c.Addresses.DNS}} {
			if ip, err := netip.ParseAddr(k.v); err == nil && p.Masked().Contains(ip) {
				bad("tunnel.vip_range", "%q contains %s %s", c.Tunnel.VIPRange, k.path, k.v)
			}
		}
	}
	if c.Tunnel.DefaultPolicy != "allow" && c.Tunnel.DefaultPolicy != "deny" {
		bad("tunnel.default_policy", "%q must be allow or deny", c.Tunnel.DefaultPolicy)
	}
	positive(bad, "tunnel.idle_timeout", c.Tunnel.IdleTimeout.D())
	positive(bad, "tunnel.drain_timeout", c.Tunnel.DrainTimeout.D())
	check("tunnel.max_streams_per_peer", transport.CheckMaxStreamsPerPeer(c.Tunnel.MaxStreamsPerPeer))

	if c.ACL.DefaultPolicy != "deny" && c.ACL.DefaultPolicy != "allow" {
		bad("acl.default_policy", "%q must be deny or allow", c.ACL.DefaultPolicy)
	}
	// The secrets themselves are never repeated in an error.
	t := c.ACL.Tokens
	if t.Agent != "" && t.AgentFile != "" {
		bad("acl.tokens.agent_file", "%q is set, and so is acl.tokens.agent: give the agent's token one way", t.AgentFile)
	}
	if t.Agent != "" {
		check("acl.tokens.agent", acl.CheckSecret("the value", t.Agent))
	}
	check("acl.tokens.initial_management", raftstore.CheckInitialManagement(c.Server, t.InitialManagement))

	tm := c.Telemetry
	if tm.Listen != "" {
		if _, _, err := net.SplitHostPort(tm.Listen); err != nil {
			bad("telemetry.listen", "%q is not host:port", tm.Listen)
		}
	}
	if e := tm.Tracing.OTLPEndpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("telemetry.tracing.otlp_endpoint", "%q is not an http:// or https:// URL", e)
		}
	}
	share(bad, "telemetry.tracing.sample_rate", tm.Tracing.SampleRate)
	if tm.Tracing.QueueSize < 1 {
		bad("telemetry.tracing.queue_size", "%d must be at least 1", tm.Tracing.QueueSize)
	}
	if p := tm.AccessLog.Path; p != "" && p != "journal" && !filepath.IsAbs(p) {
		bad("telemetry.access_log.path", "%q must be an absolute path or \"journal\"", p)
	}
	share(bad, "telemetry.access_log.sample_rate", tm.AccessLog.SampleRate)
	if tm.AccessLog.RateLimit < 1 {
		bad("telemetry.access_log.rate_limit", "%d must be at least 1 line per second", tm.AccessLog.RateLimit)
	}
	switch u := c.UI; u.MetricsProvider {
	case "", "agents":
		if u.PrometheusURL != "" {
			bad("ui.prometheus_url", "%q is set, but ui.metrics_provider is not prometheus", u.PrometheusURL)
		}
	case "prometheus":
		if pu, err := url.Parse(u.PrometheusURL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			bad("ui.prometheus_url", "%q is not an http:// or https:// URL (required with ui.metrics_provider prometheus)", u.PrometheusURL)
		}
	default:
		bad("ui.metrics_provider", "%q must be agents or prometheus", u.MetricsProvider)
	}
	if p := c.UI.AgentTelemetryPort; p < 0 || p > 65535 {
		bad("ui.agent_telemetry_port", "%d is not a port", p)
	}
	return errors.Join(errs...)
}

// share checks that a sampling rate is a share, from 0 to 1.
func share(bad func(string, string, ...any), path string, v *float64) {
	if v != nil && !(*v >= 0 && *v <= 1) {
		bad(path, "%v must be from 0 to 1", *v)
	}
}

// reason is the text of a component's error for a key, without the
// sentinel's words that would only repeat "invalid" before it.
func reason(err error) string {
	msg := err.Error()
	for _, sentinel := range []error{acl.ErrMalformedToken, gossip.ErrBadKey} {
		if errors.Is(err, sentinel) {
			msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
		}
	}
	return msg
}

func positive(bad func(string, string, ...any), path string, d time.Duration) {
	if d <= 0 {
		bad(path, "%s must be greater than 0", d)
	}
}

// checkHostPort accepts "host" or "host:port"; the host must be an IP unless
// hostnameOK.
func checkHostPort(s string, hostnameOK bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if strings.Contains(host, ":") && net.ParseIP(host) == nil {
			return errors.New("want host or host:port")
		}
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not in 1-65535", port)
	}
	switch {
	case host == "":
		return errors.New("host is empty")
	case net.ParseIP(host) != nil:
		return nil
	case !hostnameOK:
		return errors.New("want an IP address, with an optional port")
	case !validDomain(host):
		return fmt.Errorf("%q is not a valid host name", host)
	}
	return nil
}

func validDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if !nodeName.MatchString(label) {
			return false
		}
	}
	return true
}

// Component is the ca: section as the ca package reads it: the agent builds
// its CA from it, and its Problems are the rules of the section's keys.
func (c *CA) Component() ca.Config {
	return ca.Config{
		Provider:     c.Provider,
		TrustDomain:  c.TrustDomain,
		LeafTTL:      c.LeafTTL.D(),
		TokenFile:    c.TokenFile,
		StateKeyFile: c.StateKeyFile,
		StepCA: ca.StepCAConfig{
			URL:             c.StepCA.URL,
			RootFingerprint: c.StepCA.RootFingerprint,
			Provisioner:     c.StepCA.Provisioner,
			PasswordFile:    c.StepCA.PasswordFile,
			KeyFile:         c.StepCA.KeyFile,
			RootsRefresh:    c.StepCA.RootsRefresh.D(),
		},
	}
}

// Annotate adds the file and line where each key of err was set.
func (l *Loaded) Annotate(err error) error {
	if err == nil {
		return nil
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		var fe *FieldError
		if errors.As(e, &fe) && fe.Origin == "" {
			fe.Origin = l.originOf(fe.Path)
		}
	}
	return errors.Join(list...)
}

// originOf finds where path, or its closest parent, was set.
func (l *Loaded) originOf(path string) string {
	for p := path; p != ""; {
		if o := l.origin[p]; o != "" {
			return o
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return ""
}
