package dnsserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid config")

// Config configures the DNS server. The zero value of a field means its
// default, except for the TTL fields, which are taken as written (0 is a
// valid TTL: "do not cache"); DefaultConfig fills those too.
type Config struct {
	// Domain is the mesh domain, answered from the catalog. Default: "mesh.".
	// A missing trailing dot is added.
	Domain string

	// Recursors receive queries for every other zone, as "ip" or "ip:port"
	// (port 53 when omitted), tried in order with failover. Default: none,
	// and such queries are answered REFUSED.
	Recursors []string
	// RecursorTimeout bounds one attempt at one recursor. Default: 2s.
	RecursorTimeout time.Duration
	// MaxForwards bounds the forwarded queries in flight; beyond it a query
	// gets SERVFAIL at once rather than a goroutine. Default: 512.
	MaxForwards int

	// ServiceTTL is the TTL of service answers: A/AAAA (instances or VIP),
	// SRV, and PTR of service addresses. Default (DefaultConfig): 0s. The
	// answer costs microseconds from local memory, and a cached address of an
	// instance that just failed its check is worse than one more lookup.
	ServiceTTL time.Duration
	// NodeTTL is the TTL of node answers (<node>.node, <hex>.addr, node PTR,
	// NS). Default (DefaultConfig): 30s; node addresses rarely change.
	NodeTTL time.Duration
	// NegativeTTL is the TTL and MINIMUM of the SOA record, which resolvers
	// use to cache NXDOMAIN and NODATA (RFC 2308). Default (DefaultConfig):
	// 5s, so a service registered just after a failed lookup resolves soon.
	NegativeTTL time.Duration

	// EDNSBufferSize is the largest UDP response this server sends (when the
	// client's EDNS0 buffer is larger) and the size it advertises in its OPT
	// record. Default: 1232, the DNS flag day 2020 value that avoids IP
	// fragmentation on any path. Between 512 and 65535.
	EDNSBufferSize int

	// NodeName is this agent's node; the NS record and the SOA MNAME are
	// <NodeName>.node.<Domain>. Default: empty, and they are ns.<Domain>.
	NodeName string
	// AdvertiseAddr is the address given for the NS target name (glue).
	// Default: 127.0.0.1, where the DNS server listens by default.
	AdvertiseAddr netip.Addr

	// Direct answers instance addresses for <svc>.service.<Domain> even
	// when a VIPResolver is set. Default: false.
	Direct bool

	// UDPReaders is the number of goroutines reading the UDP socket.
	// Default: 2.
	UDPReaders int
	// TCPIdleTimeout closes a TCP connection that sends no query for this
	// long (RFC 7766 asks for seconds, not minutes). Default: 10s.
	TCPIdleTimeout time.Duration
	// MaxTCPConns bounds concurrent TCP connections; more are closed at
	// once. Default: 256.
	MaxTCPConns int
}

// Defaults of the fields whose zero value means "default".
const (
	DefaultDomain          = "mesh."
	DefaultRecursorTimeout = 2 * time.Second
	DefaultMaxForwards     = 512
	DefaultEDNSBufferSize  = 1232
	DefaultUDPReaders      = 2
	DefaultTCPIdleTimeout  = 10 * time.Second
	DefaultMaxTCPConns     = 256
	DefaultServiceTTL      = 0 * time.Second
	DefaultNodeTTL         = 30 * time.Second
	DefaultNegativeTTL     = 5 * time.Second
	// maxTTL bounds configured TTLs: a day is already more than any mesh
	// answer deserves, and a bigger value is likely a typo.
	maxTTL = 24 * time.Hour
	// maxDomainWire leaves room under the 255-byte limit for the longest
	// names built under the domain (<63>.node.<domain>, <63>.service.<domain>).
	maxDomainWire = 128
)

// DefaultConfig returns a Config with every default, TTLs included.
func DefaultConfig() Config {
	return Config{
		Domain:          DefaultDomain,
		RecursorTimeout: DefaultRecursorTimeout,
		MaxForwards:     DefaultMaxForwards,
		ServiceTTL:      DefaultServiceTTL,
		NodeTTL:         DefaultNodeTTL,
		NegativeTTL:     DefaultNegativeTTL,
		EDNSBufferSize:  DefaultEDNSBufferSize,
		AdvertiseAddr:   netip.AddrFrom4([4]byte{127, 0, 0, 1}),
		UDPReaders:      DefaultUDPReaders,
		TCPIdleTimeout:  DefaultTCPIdleTimeout,
		MaxTCPConns:     DefaultMaxTCPConns,
	}
}

// withDefaults returns c with zero fields (other than TTLs) set to their
// defaults, the domain fully qualified and the recursors given a port.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Domain == "" {
		c.Domain = d.Domain
	}
	c.Domain = dns.Fqdn(c.Domain)
	if c.RecursorTimeout == 0 {
		c.RecursorTimeout = d.RecursorTimeout
	}
	if c.MaxForwards == 0 {
		c.MaxForwards = d.MaxForwards
	}
	if c.EDNSBufferSize == 0 {
		c.EDNSBufferSize = d.EDNSBufferSize
	}
	if !c.AdvertiseAddr.IsValid() {
		c.AdvertiseAddr = d.AdvertiseAddr
	}
	if c.UDPReaders == 0 {
		c.UDPReaders = d.UDPReaders
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = d.TCPIdleTimeout
	}
	if c.MaxTCPConns == 0 {
		c.MaxTCPConns = d.MaxTCPConns
	}
	if len(c.Recursors) > 0 {
		rs := make([]string, len(c.Recursors))
		for i, r := range c.Recursors {
			rs[i] = withPort(r)
		}
		c.Recursors = rs
	}
	return c
}

// withPort adds port 53 to a bare IP address.
func withPort(r string) string {
	if _, _, err := net.SplitHostPort(r); err == nil {
		return r
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(r, "["), "]"), "53")
}

// Validate reports the first invalid field of c, with its defaults applied,
// as an error wrapping ErrInvalidConfig that names the field and its value.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("dnsserver: config: %s %v: %s: %w", field, v, why, ErrInvalidConfig)
	}
	if err := CheckDomain(c.Domain); err != nil {
		return fmt.Errorf("dnsserver: config: Domain %v: %w", err, ErrInvalidConfig)
	}
	for i, r := range c.Recursors {
		if err := CheckRecursor(r); err != nil {
			return fmt.Errorf("dnsserver: config: Recursors[%d] %v: %w", i, err, ErrInvalidConfig)
		}
	}
	if c.RecursorTimeout < 0 {
		return bad("RecursorTimeout", c.RecursorTimeout, "must be positive")
	}
	if c.MaxForwards < 0 {
		return bad("MaxForwards", c.MaxForwards, "must be positive")
	}
	for _, t := range []struct {
		name string
		v    time.Duration
	}{{"ServiceTTL", c.ServiceTTL}, {"NodeTTL", c.NodeTTL}, {"NegativeTTL", c.NegativeTTL}} {
		if err := CheckTTL(t.v); err != nil {
			return fmt.Errorf("dnsserver: config: %s %v: %w", t.name, err, ErrInvalidConfig)
		}
	}
	if c.EDNSBufferSize < dns.MinMsgSize || c.EDNSBufferSize > dns.MaxMsgSize {
		return bad("EDNSBufferSize", c.EDNSBufferSize, "must be between 512 and 65535")
	}
	if c.NodeName != "" && (len(c.NodeName) > 63 || strings.ContainsAny(c.NodeName, ". ")) {
		return bad("NodeName", strconv.Quote(c.NodeName), "must be one DNS label of at most 63 bytes")
	}
	if c.AdvertiseAddr.IsUnspecified() {
		return bad("AdvertiseAddr", c.AdvertiseAddr, "cannot be unspecified")
	}
	if c.UDPReaders < 0 || c.UDPReaders > 256 {
		return bad("UDPReaders", c.UDPReaders, "must be between 1 and 256")
	}
	if c.TCPIdleTimeout < 0 {
		return bad("TCPIdleTimeout", c.TCPIdleTimeout, "must be positive")
	}
	if c.MaxTCPConns < 0 {
		return bad("MaxTCPConns", c.MaxTCPConns, "must be positive")
	}
	return nil
}

// wireLen is the length of the fully qualified name fqdn in wire form.
func wireLen(fqdn string) int {
	if fqdn == "." {
		return 1
	}
	return len(fqdn) + 1
}
