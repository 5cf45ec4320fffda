package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/internal/testnet"
)

// TestFailover: two servers share the replicated state; the first one made
// the CA and issued the agents' leaves, then stops. The second one renews,
// bootstraps with a token the first one made, refuses a token the first one
// already consumed, and its leaves have the same chain.
func TestFailover(t *testing.T) {
	c := newCluster(t)
	a := c.server("srv-a", nil)
	regB := prometheus.NewRegistry()
	b := c.server("srv-b", func(_ *ServerConfig, d *ServerDeps) { d.Registerer = regB })
	rsA, rsB := c.rpc(a), c.rpc(b)
	if !a.Bundle().Roots[0].Equal(b.Bundle().Roots[0]) {
		t.Fatal("the servers do not share one root")
	}
	usedTok := c.token(a, "x")
	laterTok := c.token(a, "y") // made before the failover, used after
	servers := fixed(rsA.addr, rsB.addr)
	x := c.manager("x", func(mc *ManagerConfig) { mc.Token = usedTok }, nil, servers)
	before, _ := x.GetCertificate(nil)

	// The first server goes away: its process and its RPC port.
	rsA.stop()
	rsA.mgr.Close()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	if err := x.SetServices([]string{"web"}); err != nil { // renew now
		t.Fatal(err)
	}
	waitLeafIDs(t, x, []string{"spiffe://mesh.test/node/x", "spiffe://mesh.test/svc/web"}, 15*time.Second)
	after, _ := x.GetCertificate(nil)
	if after.Leaf.SerialNumber.Cmp(before.Leaf.SerialNumber) == 0 {
		t.Fatal("no new leaf")
	}
	if len(after.Certificate) != len(before.Certificate) || !bytes.Equal(after.Certificate[1], before.Certificate[1]) {
		t.Fatal("the intermediate changed across the failover")
	}
	inter, _ := x509.ParseCertificate(after.Certificate[1])
	if err := inter.CheckSignatureFrom(b.Bundle().Roots[0]); err != nil {
		t.Fatalf("chain broken after failover: %v", err)
	}
	if got := metricValue(b.m.issued.WithLabelValues("renew")); got != 1 {
		t.Fatalf("second server %s{method=renew} = %v, want 1", MetricIssued, got)
	}

	// A token made by the first server works once on the second.
	c.manager("y", func(mc *ManagerConfig) { mc.Token = laterTok }, nil, servers)
	k, _ := newKey()
	id, _ := NewIdentity(testTD, "x", nil)
	der, _ := newCSR(id, k)
	csr, _ := x509.ParseCertificateRequest(der)
	if _, err := b.SignWithToken(context.Background(), usedTok, csr, ""); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("token used before the failover: %v, want ErrTokenUsed", err)
	}
	// And the second server makes tokens with the same provisioner.
	c.manager("z", func(mc *ManagerConfig) { mc.Token = c.token(b, "z") }, nil, servers)
}

// TestBootstrapOnce starts several servers on an empty state at the same
// moment: exactly one CA is made, and all of them load it.
func TestBootstrapOnce(t *testing.T) {
	c := newCluster(t)
	servers := make([]*Server, 4)
	for i := range servers {
		s, err := NewServer(ServerConfig{TrustDomain: testTD, Node: "s" + string(rune('0'+i)), StateKey: c.key}, ServerDeps{State: c.state})
		if err != nil {
			t.Fatal(err)
		}
		servers[i] = s
		t.Cleanup(func() { s.Close() })
	}
	for _, s := range servers {
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range servers {
		if err := s.WaitReady(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, "every server on the same state", testnet.Holds(func() bool {
		for _, s := range servers[1:] {
			if s.Bundle().Generation != servers[0].Bundle().Generation {
				return false
			}
		}
		return true
	}))
	root := servers[0].Bundle().Roots[0]
	for _, s := range servers {
		if b := s.Bundle(); len(b.Roots) != 1 || !b.Roots[0].Equal(root) {
			t.Fatal("servers disagree on the root")
		}
	}
}

// TestWrongStateKey: a server whose state key does not open the CA keys
// never becomes ready and says why, and the state is left alone.
func TestWrongStateKey(t *testing.T) {
	c := newCluster(t)
	c.server("srv1", nil)
	before, idx, _ := c.state.Get(context.Background(), KeyAuthority)
	reg := prometheus.NewRegistry()
	s, err := NewServer(ServerConfig{TrustDomain: testTD, Node: "srv2", StateKey: newStateKey(t)}, ServerDeps{State: c.state, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testnet.Eventually(t, 10*time.Second, "the state error to be counted", testnet.Holds(func() bool { return metricValue(s.m.stateErrors) == 1 }))
	if err := s.WaitReady(ctxT(t, 50*time.Millisecond)); !errors.Is(err, ErrNotReady) {
		t.Fatalf("WaitReady = %v, want ErrNotReady", err)
	}
	after, idx2, _ := c.state.Get(context.Background(), KeyAuthority)
	if idx2 != idx || !bytes.Equal(before, after) {
		t.Fatal("the state changed")
	}
	if _, _, err := s.Token(context.Background(), "n", 0); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Token = %v, want ErrNotReady", err)
	}
}
