package transport

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
)

// policyHolders is the agent's IdentityPolicy adapter in small: the
// ServiceIdentity documents of a policy set that the test may swap.
type policyHolders struct{ set atomic.Pointer[policy.Set] }

func newPolicyHolders(t testing.TB, src string) *policyHolders {
	t.Helper()
	h := &policyHolders{}
	h.apply(t, src)
	return h
}

// apply replaces the policy with the documents of src ("" for none).
func (h *policyHolders) apply(t testing.TB, src string) {
	t.Helper()
	var entries []policy.Entry
	if src != "" {
		docs, err := policy.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			entries = append(entries, policy.Entry{Document: d})
		}
	}
	h.set.Store(policy.NewSet(uint64(len(entries)+1), entries))
}

func (h *policyHolders) MayHold(node, service string) (bool, string) {
	return h.set.Load().MayHold(node, service)
}

// tryAsk connects to addr and returns what the service says, or an error
// when the agent resets the connection (no instance may take it); the
// reset may come before the connect returns.
func tryAsk(t *testing.T, addr string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.(*net.TCPConn).CloseWrite()
	return readAll(t, c)
}

// countAnswers makes n connections to addr and counts the answers.
func countAnswers(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		s, err := tryAsk(t, addr)
		if err != nil {
			s = "failed"
		}
		got[s]++
	}
	return got
}

// webPair starts web on n2 and n3 on a common port (backends on 127.0.0.2
// and .3 that answer with their node's name) and a client with
// IdentityRecheck of an hour, so that nothing but a call dials a peer.
// n3's certificate holds web only if n3HoldsWeb.
func webPair(t *testing.T, n3HoldsWeb bool, holders IdentityPolicy) (client, n2, n3 *agent, addr string) {
	t.Helper()
	m := newMesh(t)
	port := samePortBackends(t, func(ip string) func(net.Conn) {
		return identify(map[string]string{"127.0.0.2": "n2", "127.0.0.3": "n3"}[ip])
	}, "127.0.0.2", "127.0.0.3")
	n2 = m.addAgent("n2", []LocalService{{Name: "web", Address: "127.0.0.2", Ports: []int{port}}}, agentOpts{})
	var certSvcs []string
	if !n3HoldsWeb {
		certSvcs = []string{} // a node that registered web in gossip but holds no leaf for it
	}
	n3 = m.addAgent("n3", []LocalService{{Name: "web", Address: "127.0.0.3", Ports: []int{port}}}, agentOpts{certSvcs: certSvcs})
	client = m.addAgent("client", nil, agentOpts{
		cfg: func(c *Config) { c.IdentityRecheck = time.Hour },
		deps: func(d *Deps) {
			if holders != nil {
				d.IdentityPolicy = holders
			}
		},
	})
	return client, n2, n3, client.vipAddr(t, "web", port)
}

// TestCallerSkipsInstanceWithoutServiceIdentity is the rogue node of
// issue 24: n3 registers web through gossip, but its certificate does not
// hold svc/web. It receives none of web's connections, which n2 takes
// all of; the caller decides from the certificate of its one connection
// to n3, without a handshake per call.
func TestCallerSkipsInstanceWithoutServiceIdentity(t *testing.T) {
	client, n2, n3, addr := webPair(t, false, nil)
	const calls = 40
	got := countAnswers(t, addr, calls)
	if got["n2"] != calls {
		t.Fatalf("answers %v, want all %d from n2", got, calls)
	}
	if n := n3.metric(t, MetricInbound); n != 0 {
		t.Fatalf("n3 accepted %v streams", n)
	}
	skips := client.metric(t, MetricSkipped, "reason", skipNoIdentity)
	if skips < 1 {
		t.Fatal("n3 was never picked: the test proves nothing")
	}
	if n := client.metric(t, MetricSkipped, "reason", skipNodeNotAllowed); n != 0 {
		t.Fatalf("%v skips for policy, with no policy", n)
	}
	// One connection to each peer, whatever the number of calls and skips.
	if n := client.metric(t, MetricPeerDials, "result", "ok"); n != 2 {
		t.Fatalf("%v peer dials for %d calls (%v skips of n3), want 2", n, calls, skips)
	}
	if n := n2.metric(t, MetricInbound); n != calls {
		t.Fatalf("n2 accepted %v streams, want %d", n, calls)
	}
	st := client.tr.Status()
	for _, p := range st.Peers {
		if p.Node == "n3" && len(p.Services) != 0 {
			t.Fatalf("status shows n3 holding %v", p.Services)
		}
		if p.Node == "n2" && strings.Join(p.Services, ",") != "web" {
			t.Fatalf("status shows n2 holding %v", p.Services)
		}
	}
}

// TestSplitToRogueSubsetReachesNothing: after a Split that sends all of
// web's traffic to a subset only n3 is in, n3 still receives nothing; the
// connections fail as having no instance rather than reach it.
func TestSplitToRogueSubsetReachesNothing(t *testing.T) {
	m := newMesh(t)
	port := samePortBackends(t, func(ip string) func(net.Conn) { return identify(ip) }, "127.0.0.2", "127.0.0.3")
	m.addAgent("n2", []LocalService{{Name: "web", Address: "127.0.0.2", Ports: []int{port}}}, agentOpts{})
	n3 := m.addAgent("n3", []LocalService{{Name: "web", Address: "127.0.0.3", Ports: []int{port}}},
		agentOpts{certSvcs: []string{}, tags: map[string][]string{"web": {"rogue"}}})
	split := splitSource{"web": {{Tags: []string{"rogue"}, Weight: 100}}}
	client := m.addAgent("client", nil, agentOpts{deps: func(d *Deps) { d.Splits = split }})
	addr := client.vipAddr(t, "web", port)
	const calls = 20
	if got := countAnswers(t, addr, calls); got["failed"] != calls {
		t.Fatalf("answers %v, want every call to fail", got)
	}
	if n := n3.metric(t, MetricInbound); n != 0 {
		t.Fatalf("n3 accepted %v streams", n)
	}
	if n := client.metric(t, MetricOutbound, "result", "no_instance"); n != calls {
		t.Fatalf("no_instance = %v, want %d", n, calls)
	}
}

// TestIdentityPolicyKeepsCallsOffNode: `ServiceIdentity web nodes: [n2]`
// keeps web's calls off n3 even though n3's certificate holds svc/web (a
// leaf issued before the policy); the caller never even dials n3.
func TestIdentityPolicyKeepsCallsOffNode(t *testing.T) {
	holders := newPolicyHolders(t, "kind: ServiceIdentity\nname: web\nnodes: [n2]\n")
	client, _, n3, addr := webPair(t, true, holders)
	const calls = 40
	if got := countAnswers(t, addr, calls); got["n2"] != calls {
		t.Fatalf("answers %v, want all %d from n2", got, calls)
	}
	if n := n3.metric(t, MetricInbound); n != 0 {
		t.Fatalf("n3 accepted %v streams", n)
	}
	if n := client.metric(t, MetricSkipped, "reason", skipNodeNotAllowed); n < 1 {
		t.Fatal("n3 was never picked: the test proves nothing")
	}
	_, dialed := client.tr.tun.PeerConn("n3")
	if dialed {
		t.Fatal("the caller dialled n3, which the policy rules out")
	}

	// The policy changes: n3 may hold web, and gets its share at once.
	holders.apply(t, "kind: ServiceIdentity\nname: web\nnodes: [n2, n3]\n")
	eventually(t, "a call to reach n3", func() bool {
		s, err := tryAsk(t, addr)
		return err == nil && s == "n3"
	})
}

// TestIdentityDefaultsDenyMode: with ServiceIdentityDefaults mode deny, a
// service that no ServiceIdentity document covers may be held by no node,
// so its calls reach no instance, whatever their certificates hold; a
// document for the service then lets its listed nodes serve it.
func TestIdentityDefaultsDenyMode(t *testing.T) {
	holders := newPolicyHolders(t, "kind: ServiceIdentityDefaults\nname: default\nmode: deny\n")
	client, n2, n3, addr := webPair(t, true, holders)
	const calls = 10
	if got := countAnswers(t, addr, calls); got["failed"] != calls {
		t.Fatalf("answers %v, want every call to fail", got)
	}
	if n2.metric(t, MetricInbound)+n3.metric(t, MetricInbound) != 0 {
		t.Fatal("an instance accepted a stream in deny mode")
	}
	if n := client.metric(t, MetricSkipped, "reason", skipNodeNotAllowed); n < calls {
		t.Fatalf("%v policy skips for %d calls", n, calls)
	}

	holders.apply(t, "kind: ServiceIdentityDefaults\nname: default\nmode: deny\n---\nkind: ServiceIdentity\nname: web\nnodes: [n3]\n")
	if got := countAnswers(t, addr, calls); got["n3"] != calls {
		t.Fatalf("answers %v, want all %d from n3", got, calls)
	}
}

// TestRenewedLeafMakesInstanceUsable: n3 registers web before its
// certificate holds svc/web (its new leaf is on the way). Calls skip it
// until then; once it holds a leaf with svc/web, a call finds it on a new
// connection to n3, without a restart of either agent.
func TestRenewedLeafMakesInstanceUsable(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, identify("n3"))
	n3 := m.addAgent("n3", []LocalService{{Name: "web", Ports: []int{be.port}}}, agentOpts{certSvcs: []string{}})
	client := m.addAgent("client", nil, agentOpts{cfg: func(c *Config) { c.IdentityRecheck = 50 * time.Millisecond }})
	addr := client.vipAddr(t, "web", be.port)
	if _, err := tryAsk(t, addr); err == nil {
		t.Fatal("a call reached n3 before its certificate held svc/web")
	}
	if n := n3.metric(t, MetricInbound); n != 0 {
		t.Fatalf("n3 accepted %v streams", n)
	}
	if n := client.metric(t, MetricSkipped, "reason", skipNoIdentity); n < 1 {
		t.Fatalf("%v skips: the call failed for another reason", n)
	}

	cert, err := m.ca.IssueNode("n3", []string{"web"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n3.id.SetCertificate(cert)
	eventually(t, "a call to reach n3 with its renewed leaf", func() bool {
		s, err := tryAsk(t, addr)
		return err == nil && s == "n3"
	})
	if n := client.metric(t, MetricPeerDials, "result", "ok"); n < 2 {
		t.Fatalf("%v dials: the renewed certificate came without a new connection?", n)
	}
}
