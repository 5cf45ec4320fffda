package dnsserver

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		field  string // "" when valid
		value  string
	}{
		{"defaults", func(*Config) {}, "", ""},
		{"zero value", func(c *Config) { *c = Config{} }, "", ""},
		{"domain without dot", func(c *Config) { c.Domain = "corp.example" }, "", ""},
		{"recursor without port", func(c *Config) { c.Recursors = []string{"10.0.0.53", "[fd00::53]:5353"} }, "", ""},
		{"root domain", func(c *Config) { c.Domain = "." }, "Domain", `"."`},
		{"domain with space", func(c *Config) { c.Domain = "my mesh" }, "Domain", `"my mesh."`},
		{"domain empty label", func(c *Config) { c.Domain = "a..b" }, "Domain", `"a..b."`},
		{"domain too long", func(c *Config) { c.Domain = strings.Repeat("abcdefghi.", 14) }, "Domain", "abcdefghi"},
		{"recursor hostname", func(c *Config) { c.Recursors = []string{"dns.example:53"} }, "Recursors[0]", `"dns.example:53"`},
		{"recursor bad port", func(c *Config) { c.Recursors = []string{"10.0.0.1:53", "10.0.0.2:0"} }, "Recursors[1]", `"10.0.0.2:0"`},
		{"negative timeout", func(c *Config) { c.RecursorTimeout = -time.Second }, "RecursorTimeout", "-1s"},
		{"negative service TTL", func(c *Config) { c.ServiceTTL = -time.Second }, "ServiceTTL", "-1s"},
		{"node TTL over a day", func(c *Config) { c.NodeTTL = 48 * time.Hour }, "NodeTTL", "48h0m0s"},
		{"fractional negative TTL", func(c *Config) { c.NegativeTTL = 1500 * time.Millisecond }, "NegativeTTL", "1.5s"},
		{"EDNS too small", func(c *Config) { c.EDNSBufferSize = 100 }, "EDNSBufferSize", "100"},
		{"EDNS too big", func(c *Config) { c.EDNSBufferSize = 70000 }, "EDNSBufferSize", "70000"},
		{"node name with dot", func(c *Config) { c.NodeName = "a.b" }, "NodeName", `"a.b"`},
		{"unspecified advertise", func(c *Config) { c.AdvertiseAddr = netip.IPv4Unspecified() }, "AdvertiseAddr", "0.0.0.0"},
		{"too many readers", func(c *Config) { c.UDPReaders = 1000 }, "UDPReaders", "1000"},
		{"negative TCP conns", func(c *Config) { c.MaxTCPConns = -1 }, "MaxTCPConns", "-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.field+" ") || !strings.Contains(err.Error(), tc.value) {
				t.Errorf("error %q does not name field %s and value %s", err, tc.field, tc.value)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Recursors: []string{"10.0.0.53", "[fd00::53]"}}.withDefaults()
	if c.Domain != "mesh." || c.RecursorTimeout != 2*time.Second || c.EDNSBufferSize != 1232 || c.AdvertiseAddr.String() != "127.0.0.1" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if want := []string{"10.0.0.53:53", "[fd00::53]:53"}; !slices.Equal(c.Recursors, want) {
		t.Errorf("recursors %v, want %v", c.Recursors, want)
	}
	d := DefaultConfig()
	if d.ServiceTTL != 0 || d.NodeTTL != 30*time.Second || d.NegativeTTL != 5*time.Second {
		t.Errorf("DefaultConfig TTLs %v %v %v", d.ServiceTTL, d.NodeTTL, d.NegativeTTL)
	}
}

// packetConnOnly hides the *net.UDPConn behind the net.PacketConn interface,
// as a wrapped or in-memory socket would be.
type packetConnOnly struct{ net.PacketConn }

// TestInjectedPacketConn serves through a PacketConn that is not a
// *net.UDPConn, and with no TCP listener at all.
func TestInjectedPacketConn(t *testing.T) {
	s, _, _ := newTestServer(t, testConfig(), nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), packetConnOnly{pc}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	m := new(dns.Msg)
	m.SetQuestion("web.service.mesh.", dns.TypeA)
	if r := exchange(t, "udp", pc.LocalAddr().String(), m); len(r.Answer) != 2 {
		t.Fatalf("answer %v", r.Answer)
	}
}
