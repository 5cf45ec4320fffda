package config

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meshwork/meshwork/acl"
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
	switch {
	case !c.Server && c.BootstrapExpect != 0:
		bad("bootstrap_expect", "%d is only for servers; set server: true", c.BootstrapExpect)
	case c.BootstrapExpect != 0 && c.BootstrapExpect != 1 && c.BootstrapExpect != 3 && c.BootstrapExpect != 5:
		bad("bootstrap_expect", "%d must be 1, 3 or 5: an even count adds no fault tolerance", c.BootstrapExpect)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q must be debug, info, warn or error", c.LogLevel)
	}
	if c.Encrypt != "" {
		if err := checkKey(c.Encrypt, 16, 24, 32); err != nil {
			bad("encrypt", "%v", err)
		}
	}
	if c.ClusterKey == "" && !c.Dev {
		bad("cluster_key", "is required: it secures traffic to the servers (make one with `meshwork keygen`)")
	} else if c.ClusterKey != "" {
		if err := checkKey(c.ClusterKey, 32); err != nil {
			bad("cluster_key", "%v", err)
		}
	}
	if c.ServerKey != "" {
		if !c.Server {
			bad("server_key", "is only for servers: whoever holds it can act as a server, so a client agent must never have it; remove it from this agent's configuration (or set server: true)")
		} else if err := checkKey(c.ServerKey, 32); err != nil {
			bad("server_key", "%v", err)
		} else if sameKey(c.ServerKey, c.ClusterKey) {
			bad("server_key", "is the same key as cluster_key, which every agent holds; make a key of its own with `meshwork keygen`")
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

	if !validDomain(c.DNS.Domain) {
		bad("dns.domain", "%q is not a valid domain name", c.DNS.Domain)
	}
	for i, r := range c.DNS.Recursors {
		if err := checkHostPort(r, false); err != nil {
			bad(fmt.Sprintf("dns.recursors[%d]", i), "%q: %v", r, err)
		}
	}
	positive(bad, "dns.recursor_timeout", c.DNS.RecursorTimeout.D())
	for _, d := range []struct {
		path string
		v    time.Duration
	}{{"dns.service_ttl", c.DNS.ServiceTTL.D()}, {"dns.node_ttl", c.DNS.NodeTTL.D()}, {"dns.negative_ttl", c.DNS.NegativeTTL.D()}} {
		if d.v < 0 || d.v > 24*time.Hour {
			bad(d.path, "%s must be between 0s and 24h", d.v)
		}
	}

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

	switch c.CA.Provider {
	case "embedded":
	case "step-ca":
		s := c.CA.StepCA
		if !strings.HasPrefix(s.URL, "https://") {
			bad("ca.step_ca.url", "%q must be an https:// URL", s.URL)
		}
		if len(s.RootFingerprint) != 64 || !isHex(s.RootFingerprint) {
			bad("ca.step_ca.root_fingerprint", "%q must be a SHA-256 fingerprint in hex (64 digits)", s.RootFingerprint)
		}
		if s.Provisioner == "" {
			bad("ca.step_ca.provisioner", "is required with provider step-ca")
		}
		if s.PasswordFile == "" {
			bad("ca.step_ca.password_file", "is required with provider step-ca")
		}
		if s.RootsRefresh.D() < 0 {
			bad("ca.step_ca.roots_refresh", "%s must not be negative", s.RootsRefresh.D())
		}
	default:
		bad("ca.provider", "%q must be embedded or step-ca", c.CA.Provider)
	}
	if !validDomain(c.CA.TrustDomain) || strings.HasSuffix(c.CA.TrustDomain, ".") {
		bad("ca.trust_domain", "%q is not a valid trust domain (a DNS-like name, no trailing dot)", c.CA.TrustDomain)
	}
	if d := c.CA.LeafTTL.D(); d < time.Minute || d > 90*24*time.Hour {
		bad("ca.leaf_ttl", "%s must be between 1m and 2160h", d)
	}

	if p, err := netip.ParsePrefix(c.Tunnel.VIPRange); err != nil || !netip.MustParsePrefix("127.0.0.0/8").Contains(p.Addr()) || p.Bits() < 8 || p.Bits() > 24 {
		bad("tunnel.vip_range", "%q must be a prefix inside 127.0.0.0/8, between /8 and /24", c.Tunnel.VIPRange)
	} else if p = p.Masked(); p.Overlaps(netip.MustParsePrefix("127.0.0.0/16")) {
		bad("tunnel.vip_range", "%q overlaps 127.0.0.0/16, where 127.0.0.1 lives", c.Tunnel.VIPRange)
	} else {
		// A VIP listener on the agent's own address would shadow it.
		for _, k := range []struct{ path, v string }{{"bind", c.Bind}, {"addresses.http", c.Addresses.HTTP}, {"addresses.dns", c.Addresses.DNS}} {
			if ip, err := netip.ParseAddr(k.v); err == nil && p.Contains(ip) {
				bad("tunnel.vip_range", "%q contains %s %s", c.Tunnel.VIPRange, k.path, k.v)
			}
		}
	}
	if c.Tunnel.DefaultPolicy != "allow" && c.Tunnel.DefaultPolicy != "deny" {
		bad("tunnel.default_policy", "%q must be allow or deny", c.Tunnel.DefaultPolicy)
	}
	positive(bad, "tunnel.idle_timeout", c.Tunnel.IdleTimeout.D())
	positive(bad, "tunnel.drain_timeout", c.Tunnel.DrainTimeout.D())
	if c.Tunnel.MaxStreamsPerPeer < 1 {
		bad("tunnel.max_streams_per_peer", "%d must be at least 1", c.Tunnel.MaxStreamsPerPeer)
	}

	if c.ACL.DefaultPolicy != "deny" && c.ACL.DefaultPolicy != "allow" {
		bad("acl.default_policy", "%q must be deny or allow", c.ACL.DefaultPolicy)
	}
	// The secrets themselves are never repeated in an error.
	t := c.ACL.Tokens
	if t.Agent != "" && t.AgentFile != "" {
		bad("acl.tokens.agent_file", "%q is set, and so is acl.tokens.agent: give the agent's token one way", t.AgentFile)
	}
	if t.Agent != "" {
		if err := acl.CheckSecret("the value", t.Agent); err != nil {
			bad("acl.tokens.agent", "%s", strings.TrimPrefix(err.Error(), acl.ErrMalformedToken.Error()+": "))
		}
	}
	if t.InitialManagement != "" {
		if !c.Server {
			bad("acl.tokens.initial_management", "is only for servers, whose leader makes it into a token; set server: true or remove it")
		} else if err := acl.CheckSecret("the value", t.InitialManagement); err != nil {
			bad("acl.tokens.initial_management", "%s (make one with `meshwork acl secret`)", strings.TrimPrefix(err.Error(), acl.ErrMalformedToken.Error()+": "))
		}
	}
	return errors.Join(errs...)
}

func positive(bad func(string, string, ...any), path string, d time.Duration) {
	if d <= 0 {
		bad(path, "%s must be greater than 0", d)
	}
}

func checkKey(s string, sizes ...int) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return errors.New("is not valid base64 (make a key with `meshwork keygen`)")
	}
	for _, n := range sizes {
		if len(b) == n {
			return nil
		}
	}
	return fmt.Errorf("decodes to %d bytes, want %s", len(b), joinInts(sizes))
}

// sameKey reports whether two base64 keys decode to the same bytes.
func sameKey(a, b string) bool {
	ka, errA := base64.StdEncoding.DecodeString(a)
	kb, errB := base64.StdEncoding.DecodeString(b)
	return errA == nil && errB == nil && subtle.ConstantTimeCompare(ka, kb) == 1
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " or ")
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

func isHex(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
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
