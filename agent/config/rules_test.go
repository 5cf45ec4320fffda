package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/dnsserver"
	"github.com/meshwork/meshwork/raftstore"
	"github.com/meshwork/meshwork/transport"
	"github.com/meshwork/meshwork/transport/vip"
)

// TestComponentRules: where a key configures a component, the component's
// own check decides, and validate reports its words under the key's path.
// A rule changed in the component changes here with it.
func TestComponentRules(t *testing.T) {
	base := "node: n1\ndata_dir: /tmp/x\ncluster_key: " + testKey + "\nbind: 10.1.2.3\n"
	tests := []struct {
		name, body, path string
		rule             error // the component's verdict on the value
	}{
		{"bootstrap_expect", "server: true\nbootstrap_expect: 4\n", "bootstrap_expect", raftstore.CheckBootstrapExpect(true, 4)},
		{"bootstrap_expect on a client", "bootstrap_expect: 3\n", "bootstrap_expect", raftstore.CheckBootstrapExpect(false, 3)},
		{"vip_range", "tunnel:\n  vip_range: 127.250.3.0/25\n", "tunnel.vip_range", vip.CheckPrefix(netip.MustParsePrefix("127.250.3.0/25"))},
		{"max_streams_per_peer", "tunnel:\n  max_streams_per_peer: 2000000\n", "tunnel.max_streams_per_peer", transport.CheckMaxStreamsPerPeer(2000000)},
		{"dns.domain", "dns:\n  domain: my mesh\n", "dns.domain", dnsserver.CheckDomain("my mesh.")},
		{"dns.node_ttl", "dns:\n  node_ttl: 1500ms\n", "dns.node_ttl", dnsserver.CheckTTL(1500 * time.Millisecond)},
		{"dns.recursors", "dns:\n  recursors: [dns.example]\n", "dns.recursors[0]", dnsserver.CheckRecursor("dns.example")},
		{"ca.leaf_ttl", "ca:\n  leaf_ttl: 1s\n", "ca.leaf_ttl", problem(ca.Config{LeafTTL: time.Second}, "leaf_ttl")},
		{"ca.trust_domain", "ca:\n  trust_domain: Mesh.Local\n", "ca.trust_domain", problem(ca.Config{TrustDomain: "Mesh.Local"}, "trust_domain")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rule == nil {
				t.Fatal("the component accepts the value; the case tests nothing")
			}
			want := tc.path + ": " + tc.rule.Error()
			_, err := loadCase(t, t.TempDir(), base, tc.body, want)
			if n := strings.Count(err.Error(), tc.path+": "); n != 1 {
				t.Errorf("%s reported %d times: %v", tc.path, n, err)
			}
		})
	}
}

// problem is the reason the ca package gives for key of c, as an error.
func problem(c ca.Config, key string) error {
	for _, p := range c.Problems() {
		if p.Key == key {
			return errorString(p.Reason)
		}
	}
	return nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestEveryProblemOfAFile: validate names each wrong key of a file, not
// just the first, so that one run of `meshwork validate` lists them all.
func TestEveryProblemOfAFile(t *testing.T) {
	p := write(t, t.TempDir(), "bad.yaml", "node: a\nnode: b\nports:\n  htp: 1\n  dns: many\nservices:\n  - name: web\n    prot: 1\nserver: yes\n&x bind: 1\n")
	_, err := Load([]string{p}, nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"line 2: node: appears twice",
		`line 4: ports.htp: unknown key (did you mean "http"?)`,
		`line 5: ports.dns: want a whole number, got string "many"`,
		`line 8: services[0].prot: unknown key (did you mean "port"?)`,
		`line 9: server: want true or false, got string "yes"`,
		"line 10: YAML anchors and aliases are not supported",
	} {
		if !strings.Contains(err.Error(), p+": "+want) {
			t.Errorf("error\n%v\ndoes not name %q", err, want)
		}
	}
}
