package gossip_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/prometheus/client_golang/prometheus"
)

// counterValue returns the value of the counter name with the given label
// pairs in reg, 0 when absent.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

const waitLong = 20 * time.Second

func webRecord(port int, health catalog.Health) catalog.Record {
	return catalog.Record{
		TunnelPort: 7948,
		Services: []catalog.Service{{
			ID: "web-1", Name: "web", Port: port, Tags: []string{"v1"},
			Meta: map[string]string{"team": "edge"}, Health: health,
		}},
	}
}

// passingOn reports whether snapshot s lists a passing "web" instance on
// node with the given port.
func passingOn(s *catalog.Snapshot, node string, port int) bool {
	for _, in := range s.Passing("web", "") {
		if in.Member.Node == node && in.Service.Port == port {
			return true
		}
	}
	return false
}

func setLocal(t testing.TB, g *gossip.Gossip, rec catalog.Record) uint64 {
	t.Helper()
	v, err := g.SetLocal(rec)
	if err != nil {
		t.Fatalf("SetLocal on %s: %v", g.Name(), err)
	}
	return v
}

func TestClusterConvergesAndReplicatesRegistration(t *testing.T) {
	for _, loopback := range []bool{false, true} {
		t.Run(fmt.Sprintf("loopback=%v", loopback), func(t *testing.T) {
			c := meshtest.NewCluster(t, 5, meshtest.Options{Loopback: loopback})
			c.WaitConverged(waitLong)

			reg := c.Nodes[2]
			v := setLocal(t, reg.Gossip, webRecord(8080, catalog.Passing))
			testnet.Eventually(t, waitLong, "every catalog to list web on node-2 as passing", testnet.Holds(func() bool {
				return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
					m, ok := s.Member(reg.Name)
					return ok && m.Version == v && passingOn(s, reg.Name, 8080)
				})
			}))

			// A change of health travels too, and wins by version.
			v2 := setLocal(t, reg.Gossip, webRecord(8080, catalog.Critical))
			if v2 <= v {
				t.Fatalf("second version %d is not above the first %d", v2, v)
			}
			testnet.Eventually(t, waitLong, "every catalog to show web on node-2 critical", testnet.Holds(func() bool {
				return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
					m, ok := s.Member(reg.Name)
					return ok && m.Version == v2 && len(s.Instances("web")) == 1 && !passingOn(s, reg.Name, 8080)
				})
			}))

			// Members() agrees with the catalog.
			for _, n := range c.Nodes {
				ms := n.Gossip.Members()
				if len(ms) != 5 {
					t.Fatalf("%s: Members() has %d entries, want 5: %+v", n.Name, len(ms), ms)
				}
				for _, m := range ms {
					// Suspect is possible on a loaded test machine; failed is not.
					if !m.Status.Reachable() || m.Port == 0 || m.Addr == "" {
						t.Fatalf("%s: member %+v, want alive with an address", n.Name, m)
					}
				}
			}
		})
	}
}

func TestFailureAndLeaveAreToldApart(t *testing.T) {
	for _, loopback := range []bool{false, true} {
		t.Run(fmt.Sprintf("loopback=%v", loopback), func(t *testing.T) {
			c := meshtest.NewCluster(t, 5, meshtest.Options{Loopback: loopback})
			c.WaitConverged(waitLong)
			for _, i := range []int{3, 4} {
				setLocal(t, c.Nodes[i].Gossip, webRecord(9000+i, catalog.Passing))
			}
			testnet.Eventually(t, waitLong, "web on node-3 and node-4 passing everywhere", testnet.Holds(func() bool {
				return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
					return passingOn(s, "node-3", 9003) && passingOn(s, "node-4", 9004)
				})
			}))

			c.Kill(3)
			c.Leave(4)
			testnet.Eventually(t, waitLong, "node-3 failed and node-4 left on every running node", testnet.Holds(func() bool {
				return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
					m3, ok3 := s.Member("node-3")
					m4, ok4 := s.Member("node-4")
					return ok3 && ok4 && m3.Status == catalog.StatusFailed && m4.Status == catalog.StatusLeft
				})
			}))
			for _, n := range c.Running() {
				s := n.Snapshot()
				if passingOn(s, "node-3", 9003) || passingOn(s, "node-4", 9004) {
					t.Fatalf("%s still returns instances of gone nodes as passing", n.Name)
				}
				if got := len(s.Instances("web")); got != 2 {
					t.Fatalf("%s: %d web instances listed, want 2 (kept, not passing)", n.Name, got)
				}
			}
		})
	}
}

func TestPartitionedNodeRejoinsWithLatestRecord(t *testing.T) {
	c := meshtest.NewCluster(t, 4, meshtest.Options{})
	c.WaitConverged(waitLong)
	p := c.Nodes[3]
	setLocal(t, p.Gossip, webRecord(8000, catalog.Passing))
	testnet.Eventually(t, waitLong, "first record everywhere", testnet.Holds(func() bool {
		return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool { return passingOn(s, p.Name, 8000) })
	}))

	c.Isolate(3)
	testnet.Eventually(t, waitLong, "both sides of the partition to see the other failed", testnet.Holds(func() bool {
		for _, i := range []int{0, 1, 2} {
			if c.StatusOf(i, p.Name) != catalog.StatusFailed {
				return false
			}
		}
		return c.StatusOf(3, "node-0") == catalog.StatusFailed
	}))

	// Changed while cut off: nobody can hear it yet.
	v := setLocal(t, p.Gossip, webRecord(8001, catalog.Passing))

	c.Heal()
	testnet.Eventually(t, waitLong, "the healed node alive everywhere with its latest record", testnet.Holds(func() bool {
		return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
			m, ok := s.Member(p.Name)
			return ok && m.Status == catalog.StatusAlive && m.Version == v && passingOn(s, p.Name, 8001)
		}) && c.Converged()
	}))
}

func TestLargeRecordTravelsOverStreams(t *testing.T) {
	c := meshtest.NewCluster(t, 5, meshtest.Options{})
	c.WaitConverged(waitLong)
	rec := catalog.Record{}
	for i := range 200 {
		rec.Services = append(rec.Services, catalog.Service{
			ID: fmt.Sprintf("svc-%03d", i), Name: fmt.Sprintf("svc-%03d", i), Port: 10000 + i,
			Tags:   []string{"blue", "zone-a"},
			Meta:   map[string]string{"owner": "payments-team", "version": "2024.11.3"},
			Health: catalog.Passing,
		})
	}
	src := c.Nodes[1]
	v := setLocal(t, src.Gossip, rec)
	testnet.Eventually(t, waitLong, "the 200-service record on every node", testnet.Holds(func() bool {
		return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
			m, ok := s.Member(src.Name)
			return ok && m.Version == v && len(m.Services) == 200 && len(s.Passing("svc-199", "zone-a")) == 1
		})
	}))
	// It cannot have come by broadcast: it does not fit in a packet, and the
	// owner pushed it over streams.
	if n := counterValue(t, src.Registry, "meshwork_gossip_stream_messages_sent_total", "type", "record", "result", "ok"); n < 1 {
		t.Fatalf("owner sent %v records over streams, want at least 1", n)
	}
}

// TestForceLeave forces a failed member out: every running node then shows
// it as left, not failed. A live member and an unknown one are refused.
func TestForceLeave(t *testing.T) {
	c := meshtest.NewCluster(t, 4, meshtest.Options{})
	c.WaitConverged(waitLong)
	g := c.Nodes[0].Gossip
	if err := g.ForceLeave("node-1"); !errors.Is(err, gossip.ErrMemberAlive) || !strings.Contains(err.Error(), "alive") {
		t.Fatalf("force leave of a live member: %v, want ErrMemberAlive", err)
	}
	if err := g.ForceLeave("node-0"); !errors.Is(err, gossip.ErrMemberAlive) {
		t.Fatalf("force leave of itself: %v, want ErrMemberAlive", err)
	}
	if err := g.ForceLeave("nope"); !errors.Is(err, gossip.ErrUnknownMember) {
		t.Fatalf("force leave of an unknown member: %v, want ErrUnknownMember", err)
	}

	c.Kill(3)
	testnet.Eventually(t, waitLong, "node-3 failed on every running node", testnet.Holds(func() bool {
		return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
			m, ok := s.Member("node-3")
			return ok && m.Status == catalog.StatusFailed
		})
	}))
	if err := g.ForceLeave("node-3"); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, waitLong, "node-3 left on every running node", testnet.Holds(func() bool {
		return c.AllSee(func(_ *meshtest.Node, s *catalog.Snapshot) bool {
			m, ok := s.Member("node-3")
			return ok && m.Status == catalog.StatusLeft
		})
	}))
	if err := g.ForceLeave("node-3"); err != nil {
		t.Fatalf("force leave of a member that left: %v, want none", err)
	}
}
