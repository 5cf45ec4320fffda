package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/policy"
)

// The ports every agent has on the network twin, as on a fleet of hosts.
const (
	twinRaftPort   = 7947
	twinTunnelPort = 7948
)

// twinMember adapts *Agent to meshtest.Member.
type twinMember struct{ *Agent }

func (m twinMember) Leave(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return m.Agent.Leave(ctx)
}

// twinServers returns a meshtest builder of server agents on the network
// twin: gossip, the Raft port and the tunnel socket are the twin's, so that
// a partition cuts all three. Only the local-facing sockets (API, DNS, the
// VIP listeners and the backends) are real, on loopback. services gives
// node i's services. The servers share a cluster key and a CA state key.
func twinServers(t *testing.T, services func(i int) []api.ServiceDefinition) func(testing.TB, meshtest.NodeSpec) (meshtest.Member, error) {
	key := config.NewKey()
	stateKey, err := ca.NewStateKey()
	if err != nil {
		t.Fatal(err)
	}
	stateKeyFile := filepath.Join(t.TempDir(), "state.key")
	if err := os.WriteFile(stateKeyFile, []byte(stateKey), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(tb testing.TB, spec meshtest.NodeSpec) (meshtest.Member, error) {
		t := tb.(*testing.T)
		ip := spec.Host.IP().String()
		cfg := &config.Config{Node: spec.Name, DataDir: spec.DataDir, Bind: ip, Advertise: ip, LogLevel: "debug"}
		cfg.Tunnel.VIPRange = fmt.Sprintf("127.%d.0.0/16", 240+spec.Index)
		cfg.Server, cfg.BootstrapExpect = true, 3
		cfg.ClusterKey = key
		cfg.RetryJoin = spec.Join
		cfg.Services = services(spec.Index)
		cfg.CA.StateKeyFile = stateKeyFile
		if err := cfg.ApplyDefaults(); err != nil {
			return nil, err
		}
		cfg.Ports.Gossip = 7946 // meshtest's, on the twin
		cfg.Ports.Raft = twinRaftPort
		cfg.Ports.Tunnel = twinTunnelPort
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		raftL, err := spec.Host.Listen(twinRaftPort)
		if err != nil {
			return nil, err
		}
		tunnel, err := spec.Host.ListenPacket(twinTunnelPort)
		if err != nil {
			raftL.Close()
			return nil, err
		}
		t.Cleanup(func() { raftL.Close(); tunnel.Close() })
		profile := gossip.FastTestConfig(spec.Name)
		a, err := New(cfg, Deps{
			Logger:          spec.Logger,
			Registry:        prometheus.NewRegistry(),
			GossipTransport: spec.Transport,
			GossipProfile:   &profile,
			HTTPListener:    listenTCP(t),
			DNSConn:         listenUDP(t),
			DNSListener:     listenTCP(t),
			RaftListener:    raftL,
			RaftDial:        spec.Host.Dial,
			TunnelConn:      tunnel,
		})
		if err != nil {
			return nil, err
		}
		return twinMember{a}, nil
	}
}

func twinAgent(c *meshtest.Cluster, i int) *Agent { return c.Nodes[i].Member.(twinMember).Agent }

// raftLeader returns the index of the node that leads Raft, -1 if none.
func raftLeader(c *meshtest.Cluster, among ...int) int {
	for _, i := range among {
		if lead, _ := twinAgent(c, i).Raft().Leadership(); lead {
			return i
		}
	}
	return -1
}

// TestAgentsOnTheTwinPartitionEveryPlane runs three whole server agents
// in-process on the network twin, cuts one away on every plane at once and
// heals: gossip marks it failed, the two others keep a Raft quorum and it
// loses its own, the tunnel cannot reach its service; after the heal the
// cluster re-forms on all three planes.
func TestAgentsOnTheTwinPartitionEveryPlane(t *testing.T) {
	webPort := backend(t, "web-node-2")
	c := meshtest.NewCluster(t, 3, meshtest.Options{
		LogLevel: -4, // debug
		NewMember: twinServers(t, func(i int) []api.ServiceDefinition {
			if i == 2 {
				return []api.ServiceDefinition{{Name: "web", Port: webPort}}
			}
			return nil
		}),
	})
	c.WaitConverged(wait)
	for i := range 3 {
		a := twinAgent(c, i)
		if got, want := a.Tunnel().Addr().String(), c.Twin().Host(c.Nodes[i].Name).Addr(twinTunnelPort); got != want {
			t.Fatalf("node-%d's tunnel is on %s, not on the twin's %s", i, got, want)
		}
	}
	testnet.Eventually(t, wait, "a Raft leader", func() error {
		if raftLeader(c, 0, 1, 2) < 0 {
			return errors.New("no node leads")
		}
		return nil
	})
	applyPolicy(t, twinAgent(c, 0).Raft(), "kind: IntentionDefaults\nname: default\naction: allow\n")
	for i := range 3 {
		select {
		case <-twinAgent(c, i).TunnelReady():
		case <-time.After(wait):
			t.Fatalf("node-%d: the tunnel did not start", i)
		}
	}

	caller := &testAgent{Agent: twinAgent(c, 0)}
	var url string
	testnet.Eventually(t, wait, "web.service.mesh to answer a virtual IP on node-0", func() error {
		ips, err := caller.lookupA("web.service.mesh")
		if err != nil {
			return err
		}
		if len(ips) != 1 || !netip.MustParsePrefix("127.240.0.0/16").Contains(ips[0]) {
			return fmt.Errorf("answers %v", ips)
		}
		url = fmt.Sprintf("http://%s/", netip.AddrPortFrom(ips[0], uint16(webPort)))
		return nil
	})
	testnet.Eventually(t, wait, "node-0 to reach web on node-2 through the tunnel", func() error {
		return getBody(url, "web-node-2 /")
	})

	// Cut node-2 away on every plane.
	lostBefore := c.Twin().Stats().Lost
	c.Isolate(2)
	testnet.Eventually(t, wait, "node-0 and node-1 to see node-2 failed", func() error {
		for _, i := range []int{0, 1} {
			if st := c.StatusOf(i, "node-2"); st != catalog.StatusFailed {
				return fmt.Errorf("node-%d sees node-2 %q", i, st)
			}
		}
		return nil
	})
	if c.Twin().Stats().Lost == lostBefore {
		t.Fatal("the partition lost no datagram")
	}
	testnet.Eventually(t, wait, "the majority to keep a Raft leader", func() error {
		if raftLeader(c, 0, 1) < 0 {
			return errors.New("neither node-0 nor node-1 leads")
		}
		return nil
	})
	// The majority commits; the isolated node cannot.
	applyPolicy(t, twinAgent(c, 1).Raft(), "kind: Intention\nname: during-partition\nsources: [{name: \"*\", action: allow}]\n")
	testnet.Eventually(t, wait, "node-2 to lose its Raft quorum", func() error {
		if lead, _ := twinAgent(c, 2).Raft().Leadership(); lead {
			return errors.New("node-2 still thinks it leads")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := twinAgent(c, 2).Raft().KVSet(ctx, "twin/minority", []byte("x")); err == nil {
			return errors.New("node-2 committed a write without a quorum")
		}
		return nil
	})
	if _, ok := twinAgent(c, 2).Raft().Policy().Get(policy.KindIntention, "during-partition"); ok {
		t.Fatal("node-2 got a document committed while it was cut away")
	}
	testnet.Eventually(t, wait, "node-0's calls to web to fail while node-2 is cut away", func() error {
		if _, err := get(url); err == nil {
			return errors.New("a call reached web on node-2 across the partition")
		}
		return nil
	})

	c.Heal()
	c.WaitConverged(wait)
	testnet.Eventually(t, wait, "node-2 to follow the leader and get the document of the partition", func() error {
		if _, ok := twinAgent(c, 2).Raft().Policy().Get(policy.KindIntention, "during-partition"); !ok {
			return errors.New("node-2 lacks intention during-partition")
		}
		if raftLeader(c, 0, 1, 2) < 0 {
			return errors.New("no leader")
		}
		return nil
	})
	testnet.Eventually(t, wait, "node-0 to reach web on node-2 again", func() error {
		return getBody(url, "web-node-2 /")
	})
}
