package dnsserver

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// The rules of the fields an operator sets, one function each. Validate
// applies them to a Config, and agent/config to the configuration file,
// naming the YAML key; their errors say what is wrong with the value and
// name no field.

// CheckDomain checks the mesh domain, with or without its final dot.
func CheckDomain(domain string) error {
	d := dns.Fqdn(domain)
	if _, ok := dns.IsDomainName(d); !ok || d == "." || strings.ContainsAny(d, "\\ ") {
		return fmt.Errorf("%q is not a domain name (letters, digits, '-' and '_' in dot-separated labels)", domain)
	}
	if n := wireLen(d); n > maxDomainWire {
		return fmt.Errorf("%q is longer than %d bytes in wire form", domain, maxDomainWire)
	}
	for _, l := range dns.SplitDomainName(d) {
		if len(l) > 63 {
			return fmt.Errorf("%q has a label longer than 63 bytes", domain)
		}
	}
	return nil
}

// CheckRecursor checks one recursor: an IP address, with an optional
// port (53 when none is given).
func CheckRecursor(r string) error {
	host, port, err := net.SplitHostPort(withPort(r))
	if err != nil {
		return fmt.Errorf("%q: want ip or ip:port", r)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%q: the host is not an IP address", r)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: the port is not in 1-65535", r)
	}
	return nil
}

// CheckTTL checks a TTL of the answers: whole seconds, from 0s to 24h.
func CheckTTL(ttl time.Duration) error {
	if ttl < 0 || ttl > maxTTL {
		return fmt.Errorf("%s must be between 0s and 24h", ttl)
	}
	if ttl%time.Second != 0 {
		return fmt.Errorf("%s must be whole seconds (DNS TTLs are in seconds)", ttl)
	}
	return nil
}
