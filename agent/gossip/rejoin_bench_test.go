package gossip_test

import (
	"testing"
	"time"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
)

// BenchmarkRejoinLAN measures, with the production timers
// (DefaultLANConfig) on loopback sockets, how long the catalog of every
// agent takes to be whole again once a fault ends, for the faults of issue
// 23 (3 servers, 2 clients). The goal is 10 s; each figure is reported as
// s/whole. Slow by design (a partition must outlast memberlist's 15 s of
// gossip to the dead): go test -run '^$' -bench RejoinLAN ./agent/gossip/
func BenchmarkRejoinLAN(b *testing.B) {
	servers := []int{0, 1, 2}
	lan := func(c **meshtest.Cluster) meshtest.Options {
		join := retryJoinServers(c, servers)
		return meshtest.Options{Loopback: true, Config: func(s meshtest.NodeSpec, cfg *gossip.Config) {
			p := gossip.DefaultLANConfig()
			p.NodeName, p.BindAddr, p.BindPort = cfg.NodeName, cfg.BindAddr, cfg.BindPort
			p.RetryJoin, p.PeersFile = cfg.RetryJoin, cfg.PeersFile
			*cfg = p
			join(s, cfg)
		}}
	}
	measure := func(b *testing.B, c *meshtest.Cluster, start time.Time) {
		waitWhole(b, c, servers)
		b.ReportMetric(time.Since(start).Seconds(), "s/whole")
	}

	b.Run("every_server_restarts", func(b *testing.B) {
		for range b.N {
			var c *meshtest.Cluster
			c = meshtest.NewCluster(b, 5, lan(&c))
			roles(b, c, servers)
			for _, i := range servers {
				c.Leave(i)
			}
			testnet.Eventually(b, time.Minute, "the clients to see the servers left", testnet.Holds(func() bool {
				return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
					m, _ := s.Member("node-2")
					return m.Status == catalog.StatusLeft
				})
			}))
			start := time.Now()
			for _, i := range servers {
				restart(b, c, i, servers)
			}
			measure(b, c, start)
		}
	})

	b.Run("client_restarts_during_server_outage", func(b *testing.B) {
		for range b.N {
			var c *meshtest.Cluster
			c = meshtest.NewCluster(b, 5, lan(&c))
			roles(b, c, servers)
			for _, i := range servers {
				c.Kill(i)
			}
			testnet.Eventually(b, time.Minute, "the clients to see the servers failed", testnet.Holds(func() bool {
				return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
					m, _ := s.Member("node-2")
					return m.Status == catalog.StatusFailed
				})
			}))
			c.Kill(4)
			start := time.Now()
			restart(b, c, 4, servers)
			measure(b, c, start) // the two clients only: the servers are down
		}
	})

	b.Run("partition_heals", func(b *testing.B) {
		for range b.N {
			var c *meshtest.Cluster
			c = meshtest.NewCluster(b, 5, lan(&c))
			roles(b, c, servers)
			c.Partition([]int{0, 1, 2, 3}, []int{4})
			// Past memberlist's 15 s of gossip to the dead: only a reconnect
			// can merge the two sides.
			testnet.Eventually(b, time.Minute, "each side to see the other failed", testnet.Holds(func() bool {
				return c.StatusOf(0, "node-4") == catalog.StatusFailed && c.StatusOf(4, "node-0") == catalog.StatusFailed
			}))
			<-time.After(gossip.DefaultLANConfig().GossipToTheDeadTime + time.Second) // the fault's length, not a wait for a condition
			start := time.Now()
			c.Heal()
			measure(b, c, start)
		}
	})
}
