package gossip_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/prometheus/client_golang/prometheus"
)

// The figures of issue 23: agents find each other again after every server
// restarted, after a client restarted during a full server outage, and when
// a member that left comes back. Real memberlist on loopback sockets; each
// node keeps its port across restarts, as an agent does.

// roles makes nodes of servers servers (Record.Server) and gives every
// other node a passing web instance on port 8000+index. It waits until
// every catalog shows all of it.
func roles(t testing.TB, c *meshtest.Cluster, servers []int) {
	t.Helper()
	for _, n := range c.Nodes {
		publishRole(t, n, servers)
	}
	waitWhole(t, c, servers)
}

// publishRole sets n's record for its role, as the agent's local state does
// at every start.
func publishRole(t testing.TB, n *meshtest.Node, servers []int) {
	t.Helper()
	if slices.Contains(servers, n.Index) {
		setLocal(t, n.Gossip, catalog.Record{Server: true})
	} else {
		setLocal(t, n.Gossip, webRecord(8000+n.Index, catalog.Passing))
	}
}

// restart restarts node i and publishes its record.
func restart(t testing.TB, c *meshtest.Cluster, i int, servers []int) {
	t.Helper()
	publishRole(t, c.Restart(i), servers)
}

// waitWhole waits until every running node sees every running node alive,
// the servers as servers and every running client's web instance passing:
// the catalog is whole.
func waitWhole(t testing.TB, c *meshtest.Cluster, servers []int) {
	t.Helper()
	testnet.Eventually(t, waitLong, "every catalog whole", func() error {
		running := c.Running()
		for _, n := range running {
			s := n.Snapshot()
			for _, o := range running {
				m, ok := s.Member(o.Name)
				switch {
				case !ok:
					return fmt.Errorf("%s does not know %s", n.Name, o.Name)
				case m.Status != catalog.StatusAlive:
					return fmt.Errorf("%s sees %s %s", n.Name, o.Name, m.Status)
				case slices.Contains(servers, o.Index) != m.Server:
					return fmt.Errorf("%s sees %s with server=%v", n.Name, o.Name, m.Server)
				case !m.Server && !passingOn(s, o.Name, 8000+o.Index):
					return fmt.Errorf("%s has no passing web on %s", n.Name, o.Name)
				}
			}
		}
		return nil
	})
}

// retryJoinServers makes every restarted node retry_join the servers, as
// the testers' hosts were configured. (At the first start every node joins
// node 0, a server; a restart takes the addresses every node now has.)
func retryJoinServers(c **meshtest.Cluster, servers []int) func(meshtest.NodeSpec, *gossip.Config) {
	return func(s meshtest.NodeSpec, cfg *gossip.Config) {
		if *c == nil {
			return
		}
		cfg.RetryJoin = nil
		for _, i := range servers {
			if i != s.Index {
				cfg.RetryJoin = append(cfg.RetryJoin, (*c).Net.Addr((*c).Nodes[i].Name))
			}
		}
	}
}

// TestEveryServerRestartsAndOneClusterForms stops every server with a
// graceful leave, as SIGTERM does, and starts them again: clients and
// servers form one cluster again with no manual step, whether the servers
// remember the clients (their peers file) or lost their data dir, in which
// case the clients, which have lost every server, find them.
func TestEveryServerRestartsAndOneClusterForms(t *testing.T) {
	for _, wipe := range []bool{false, true} {
		t.Run(fmt.Sprintf("servers_lost_data_dir=%v", wipe), func(t *testing.T) {
			servers := []int{0, 1, 2}
			var c *meshtest.Cluster
			join := retryJoinServers(&c, servers)
			c = meshtest.NewCluster(t, 5, meshtest.Options{Loopback: true, Config: func(s meshtest.NodeSpec, cfg *gossip.Config) {
				join(s, cfg)
				if c != nil && wipe && slices.Contains(servers, s.Index) {
					if err := os.RemoveAll(s.DataDir); err != nil {
						t.Errorf("wipe %s: %v", s.DataDir, err)
					}
				}
			}})
			roles(t, c, servers)

			for _, i := range servers {
				c.Leave(i)
			}
			testnet.Eventually(t, waitLong, "both clients to see every server left", testnet.Holds(func() bool {
				return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
					for _, i := range servers {
						if m, ok := s.Member(c.Nodes[i].Name); !ok || m.Status != catalog.StatusLeft {
							return false
						}
					}
					return true
				})
			}))

			for _, i := range servers {
				restart(t, c, i, servers)
			}
			waitWhole(t, c, servers)
		})
	}
}

// TestClientRestartedDuringServerOutageRejoinsThroughRememberedPeers kills
// every server, then restarts a client whose only RetryJoin address is a
// server: it rejoins the other clients through the peers it remembers, so
// its catalog is whole again without any server. It knows that servers
// exist, so it stays out of contact, and keeps trying, until they return;
// then one cluster forms.
func TestClientRestartedDuringServerOutageRejoinsThroughRememberedPeers(t *testing.T) {
	servers := []int{0, 1}
	c := meshtest.NewCluster(t, 5, meshtest.Options{Loopback: true})
	roles(t, c, servers)
	restarted := c.Nodes[4]
	peersFile := filepath.Join(restarted.DataDir, "peers.json")
	testnet.Eventually(t, waitLong, "node-4's peers file to list the other four", func() error {
		ps, err := gossip.ReadPeersFile(peersFile, restarted.Name)
		if err != nil {
			return err
		}
		if len(ps) != 4 || !ps[0].Server || !ps[1].Server {
			return fmt.Errorf("it lists %+v", ps)
		}
		return nil
	})

	for _, i := range servers {
		c.Kill(i)
	}
	testnet.Eventually(t, waitLong, "the clients to see both servers failed", testnet.Holds(func() bool {
		return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
			m0, _ := s.Member("node-0")
			m1, _ := s.Member("node-1")
			return m0.Status == catalog.StatusFailed && m1.Status == catalog.StatusFailed
		})
	}))
	c.Kill(4)
	restart(t, c, 4, servers)
	clients := []int{2, 3, 4}
	testnet.Eventually(t, waitLong, "the clients' catalogs whole without the servers", func() error {
		for _, i := range clients {
			s := c.Nodes[i].Snapshot()
			for _, j := range clients {
				m, ok := s.Member(c.Nodes[j].Name)
				if !ok || m.Status != catalog.StatusAlive || !passingOn(s, m.Node, 8000+j) {
					return fmt.Errorf("node-%d sees node-%d as %+v", i, j, m)
				}
			}
		}
		return nil
	})
	if !restarted.Logs.Contains("gossip remembers peers", "peers=4") {
		t.Fatal("the restarted client did not say that it read its peers file")
	}
	if v := counterValue(t, restarted.Registry, "meshwork_gossip_in_contact"); v != 0 {
		t.Fatalf("in contact = %v without any server, want 0", v)
	}

	for _, i := range servers {
		restart(t, c, i, servers)
	}
	waitWhole(t, c, servers)
	testnet.Eventually(t, waitLong, "the restarted client to be in contact once a server is back", testnet.Holds(func() bool {
		return counterValue(t, restarted.Registry, "meshwork_gossip_in_contact") == 1
	}))
}

// TestLeftMemberIsReconnectedWhenItReturns restarts a member after a
// graceful leave with no way to find the cluster itself (no RetryJoin, no
// peers file): the others try it again within LeftReconnectTimeout, and it
// shows alive again everywhere, with its new record.
func TestLeftMemberIsReconnectedWhenItReturns(t *testing.T) {
	restarting := false
	c := meshtest.NewCluster(t, 3, meshtest.Options{Loopback: true, Config: func(s meshtest.NodeSpec, cfg *gossip.Config) {
		if restarting && s.Index == 2 {
			cfg.RetryJoin = nil
			cfg.PeersFile = ""
		}
	}})
	c.WaitConverged(waitLong)
	c.Leave(2)
	testnet.Eventually(t, waitLong, "node-2 left on node-0 and node-1", testnet.Holds(func() bool {
		return c.StatusOf(0, "node-2") == catalog.StatusLeft && c.StatusOf(1, "node-2") == catalog.StatusLeft
	}))

	restarting = true
	n := c.Restart(2)
	v := setLocal(t, n.Gossip, webRecord(8002, catalog.Passing))
	testnet.Eventually(t, waitLong, "node-2 alive again everywhere with its new record", testnet.Holds(func() bool {
		return c.Converged() && c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
			m, ok := s.Member("node-2")
			return ok && m.Version == v && passingOn(s, "node-2", 8002)
		})
	}))
	var reconnects float64
	for _, i := range []int{0, 1} {
		reconnects += counterValue(t, c.Nodes[i].Registry, "meshwork_gossip_join_attempts_total", "loop", "reconnect", "result", "ok")
	}
	if reconnects < 1 {
		t.Fatal("node-2 came back, but not through a reconnect by node-0 or node-1")
	}
}

// TestPeersFileSurvivesRestartsAndACorruptOneIsIgnored restarts a member
// with no RetryJoin: it rejoins through the peers file it wrote before.
// Then a member's file is corrupted before its restart: it starts, says so,
// is found again by the others (it failed, so they retry it), and writes a
// valid file again.
func TestPeersFileSurvivesRestartsAndACorruptOneIsIgnored(t *testing.T) {
	restarting := false
	c := meshtest.NewCluster(t, 3, meshtest.Options{Loopback: true, Config: func(s meshtest.NodeSpec, cfg *gossip.Config) {
		if restarting {
			cfg.RetryJoin = nil
		}
	}})
	c.WaitConverged(waitLong)
	file := func(n *meshtest.Node) string { return filepath.Join(n.DataDir, "peers.json") }
	listsOthers := func(n *meshtest.Node) error {
		ps, err := gossip.ReadPeersFile(file(n), n.Name)
		if err != nil {
			return err
		}
		var names []string
		for _, p := range ps {
			names = append(names, p.Name)
		}
		slices.Sort(names)
		if want := slices.DeleteFunc([]string{"node-0", "node-1", "node-2"}, func(s string) bool { return s == n.Name }); !slices.Equal(names, want) {
			return fmt.Errorf("%s remembers %v, want %v", n.Name, names, want)
		}
		return nil
	}
	for _, n := range c.Nodes {
		testnet.Eventually(t, waitLong, n.Name+"'s peers file", func() error { return listsOthers(n) })
	}

	restarting = true
	c.Kill(2)
	c.Restart(2)
	c.WaitConverged(waitLong)
	if err := listsOthers(c.Nodes[2]); err != nil {
		t.Fatalf("after the restart: %v", err)
	}

	c.Kill(1)
	if err := os.WriteFile(file(c.Nodes[1]), []byte(`{"format":"meshwork-gossip-peers/1","node":"node-1","peers":[{"na`), 0o600); err != nil {
		t.Fatal(err)
	}
	n := c.Restart(1)
	if !n.Logs.Contains("gossip peers file ignored", "not a peers file") {
		t.Fatal("the corrupt peers file was not reported")
	}
	c.WaitConverged(waitLong)
	testnet.Eventually(t, waitLong, "node-1's peers file rewritten", func() error { return listsOthers(n) })
}

// TestRejoinBacksOffWhenAJoinBringsNoContact gives a node one remembered
// server, "ghost", whose address answers but belongs to another node (a
// reused address): every join of it succeeds and never makes ghost live,
// so the node stays out of contact. It must still back off, not spin. Its
// loops run on a manual clock, so after the first attempt nothing moves
// until the test advances it.
func TestRejoinBacksOffWhenAJoinBringsNoContact(t *testing.T) {
	other, err := gossip.New(gossip.FastTestConfig("other"), gossip.Deps{Store: catalog.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := other.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	host, port, _ := net.SplitHostPort(other.Addr())

	cfg := gossip.FastTestConfig("self")
	cfg.PeersFile = filepath.Join(t.TempDir(), "peers.json")
	file := fmt.Sprintf(`{"format":"meshwork-gossip-peers/1","node":"self","peers":[`+
		`{"name":"ghost","addr":%q,"port":%s,"server":true,"status":"alive","since":"2026-12-01T12:00:00Z"}]}`, host, port)
	if err := os.WriteFile(cfg.PeersFile, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &meshtest.LogBuffer{}
	reg := prometheus.NewRegistry()
	clk := clock.NewManual(time.Now())
	g, err := gossip.New(cfg, gossip.Deps{
		Store: catalog.NewStore(), Registerer: reg, Clock: clk,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })

	testnet.Eventually(t, waitLong, "the first rejoin attempt to end in a backoff", testnet.Holds(func() bool {
		return logs.Contains("gossip will retry joining", "attempt=1")
	}))
	if n := counterValue(t, reg, "meshwork_gossip_join_attempts_total", "loop", "rejoin", "result", "ok"); n != 1 {
		t.Fatalf("%v successful rejoin attempts while the clock stood still, want 1", n)
	}
	if v := counterValue(t, reg, "meshwork_gossip_in_contact"); v != 0 {
		t.Fatalf("in contact = %v with its only server a ghost, want 0", v)
	}
	// The next attempt comes once the backoff has passed.
	clk.Advance(cfg.RetryJoinInterval * 2)
	testnet.Eventually(t, waitLong, "a second attempt once the clock passed the backoff", testnet.Holds(func() bool {
		return counterValue(t, reg, "meshwork_gossip_join_attempts_total", "loop", "rejoin", "result", "ok") >= 2
	}))
}
