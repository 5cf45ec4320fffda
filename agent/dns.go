package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/meshwork/meshwork/dnsserver"
)

// buildDNS makes the DNS server over the catalog and the tunnel's virtual
// IPs, unless ports.dns is -1.
func (a *Agent) buildDNS() error {
	if a.cfg.Ports.DNS < 0 && a.deps.DNSConn == nil {
		return nil
	}
	dc := dnsserver.DefaultConfig()
	dc.Domain = a.cfg.DNS.Domain
	dc.Recursors = a.cfg.DNS.Recursors
	dc.RecursorTimeout = a.cfg.DNS.RecursorTimeout.D()
	dc.ServiceTTL = a.cfg.DNS.ServiceTTL.D()
	dc.NodeTTL = a.cfg.DNS.NodeTTL.D()
	dc.NegativeTTL = a.cfg.DNS.NegativeTTL.D()
	dc.NodeName = a.cfg.Node
	if ip, err := netip.ParseAddr(a.cfg.Addresses.DNS); err == nil && !ip.IsUnspecified() {
		dc.AdvertiseAddr = ip
	}
	deps := dnsserver.Deps{
		Catalog:    a.store,
		Logger:     a.logger("dns"),
		Registerer: a.reg,
	}
	if a.tunnel != nil {
		// <svc>.service.<domain> answers the service's virtual IP on this
		// host; <svc>.service.direct.<domain> the instances.
		deps.VIPs = a.tunnel
	}
	s, err := dnsserver.New(dc, deps)
	if err != nil {
		return err
	}
	a.dns = s
	a.add("dns", func(ctx context.Context) error {
		pc, l := a.deps.DNSConn, a.deps.DNSListener
		if pc == nil || l == nil {
			var err error
			pc, l, err = a.listenDNS(net.JoinHostPort(a.cfg.Addresses.DNS, strconv.Itoa(a.cfg.Ports.DNS)))
			if err != nil {
				return err
			}
		}
		a.dnsAddr = pc.LocalAddr().String()
		return s.Start(ctx, pc, l)
	}, s.Close)
	return nil
}

// listenDNS opens DNS's UDP and TCP sockets on addr, as dnsserver.Listen
// does, through the agent's socket set, so that they are those of the
// previous agent when it handed them over: "dns-udp" and "dns-tcp". With
// port 0 (tests), TCP takes the port UDP got, and another is tried when
// that one is taken on TCP.
func (a *Agent) listenDNS(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: dns: listen %q: %w", addr, err)
	}
	for attempt := 0; ; attempt++ {
		pc, err := a.deps.Sockets.PacketConn("dns-udp", "udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: dns: %w", err)
		}
		taddr := net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		l, err := a.deps.Sockets.Listener("dns-tcp", "tcp", taddr)
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("agent: dns: %w", err)
		}
	}
}
