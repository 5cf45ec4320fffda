package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/testnet"
)

func TestIssuanceSANsAndChain(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	tests := []struct {
		name     string
		node     string
		services []string
		want     []string
	}{
		{"node only", "web-1", nil, []string{"spiffe://mesh.test/node/web-1"}},
		{"one service", "web-2", []string{"web"}, []string{"spiffe://mesh.test/node/web-2", "spiffe://mesh.test/svc/web"}},
		{"services sorted and unique", "db-1", []string{"pg", "api", "pg"}, []string{"spiffe://mesh.test/node/db-1", "spiffe://mesh.test/svc/api", "spiffe://mesh.test/svc/pg"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c.in(t)
			tok := c.token(srv, tt.node)
			m := c.manager(tt.node, func(mc *ManagerConfig) { mc.Token = tok; mc.Services = tt.services }, nil, fixed(rs.addr))
			cert, err := m.GetCertificate(nil)
			if err != nil {
				t.Fatal(err)
			}
			leaf := cert.Leaf
			var got []string
			for _, u := range leaf.URIs {
				got = append(got, u.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("URI SANs = %v, want %v", got, tt.want)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("leaf has non-URI SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if leaf.Subject.CommonName != tt.want[0] {
				t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, tt.want[0])
			}
			if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("IsCA=%v KeyUsage=%v", leaf.IsCA, leaf.KeyUsage)
			}
			if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
				t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life < time.Hour || life > time.Hour+time.Minute+time.Second {
				t.Errorf("lifetime %s, want 1h plus a backdate of at most 1m", life)
			}
			// The chain: leaf, intermediate; the intermediate under the root.
			if len(cert.Certificate) != 2 {
				t.Fatalf("chain of %d certificates, want leaf + intermediate", len(cert.Certificate))
			}
			inter, _ := x509.ParseCertificate(cert.Certificate[1])
			b := srv.Bundle()
			if len(b.Roots) != 1 || !inter.IsCA || inter.CheckSignatureFrom(b.Roots[0]) != nil || leaf.CheckSignatureFrom(inter) != nil {
				t.Fatalf("chain does not lead leaf → intermediate → root")
			}
			pool := x509.NewCertPool()
			pool.AddCert(inter)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: b.Pool(), Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("leaf does not verify: %v", err)
			}
			// The private key stayed here: the leaf's public key is ours.
			if !cert.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(cert.PrivateKey.(*ecdsa.PrivateKey).Public()) {
				t.Fatal("leaf is not for the manager's key")
			}
		})
	}
}

func TestSetServicesReissues(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	m := c.manager("app-1", func(mc *ManagerConfig) { mc.Token = c.token(srv, "app-1"); mc.Services = []string{"web"} }, nil, fixed(rs.addr))
	first, _ := m.GetCertificate(nil)
	ch := m.Changes()
	if err := m.SetServices([]string{"web", "api"}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "a leaf with the new services", testnet.Holds(func() bool {
		l, _ := m.Leaf()
		return slices.Equal(l.IDs, []string{"spiffe://mesh.test/node/app-1", "spiffe://mesh.test/svc/api", "spiffe://mesh.test/svc/web"})
	}))
	<-ch
	second, _ := m.GetCertificate(nil)
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the leaf did not change")
	}
	if err := m.SetServices([]string{"bad/name"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("SetServices(bad/name) = %v, want ErrBadRequest", err)
	}
}

func TestTokenOneTimeAndExpiry(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	other := c.server("srv2", nil) // shares the state: the ledger is replicated
	ctx := ctxT(t, 20*time.Second)
	csrFor := func(node string) *x509.CertificateRequest {
		t.Helper()
		k, _ := newKey()
		id, _ := NewIdentity(testTD, node, nil)
		der, err := newCSR(id, k)
		if err != nil {
			t.Fatal(err)
		}
		csr, _ := x509.ParseCertificateRequest(der)
		return csr
	}

	t.Run("reuse refused on every server", func(t *testing.T) {
		tok := c.token(srv, "n1")
		if _, err := srv.SignWithToken(ctx, tok, csrFor("n1"), ""); err != nil {
			t.Fatalf("first use: %v", err)
		}
		for _, s := range []*Server{srv, other} {
			if _, err := s.SignWithToken(ctx, tok, csrFor("n1"), ""); !errors.Is(err, ErrTokenUsed) {
				t.Fatalf("second use on %s: %v, want ErrTokenUsed", s.cfg.Node, err)
			}
		}
	})
	t.Run("concurrent use wins once", func(t *testing.T) {
		tok := c.token(srv, "n2")
		errs := make(chan error, 8)
		for i := range 8 {
			s := []*Server{srv, other}[i%2]
			go func() { _, err := s.SignWithToken(ctx, tok, csrFor("n2"), ""); errs <- err }()
		}
		ok := 0
		for range 8 {
			err := <-errs
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrTokenUsed):
				t.Errorf("unexpected error %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d successes with one token, want 1", ok)
		}
	})
	past := c.server("srv-past", func(sc *ServerConfig, _ *ServerDeps) {
		sc.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	})
	// A token that expired 4s ago: past the allowed clock skew.
	justPast := c.server("srv-just-past", func(sc *ServerConfig, _ *ServerDeps) {
		sc.Now = func() time.Time { return time.Now().Add(-30*time.Minute - 4*time.Second) }
	})
	cases := []struct {
		name string
		tok  func() string
		node string
		want error
	}{
		{"expired", func() string { t, _, _ := past.Token(ctx, "n3", 30*time.Minute); return t }, "n3", ErrBadToken},
		{"expired 4s ago", func() string { t, _, _ := justPast.Token(ctx, "n8", 30*time.Minute); return t }, "n8", ErrBadToken},
		{"for another node", func() string { return c.token(srv, "n4") }, "n5", ErrBadToken},
		{"forged", func() string { return forgedToken(t, "n6") }, "n6", ErrBadToken},
		{"garbage", func() string { return "not.a.token" }, "n7", ErrBadToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.tok()
			if _, err := srv.SignWithToken(ctx, tok, csrFor(tc.node), ""); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("refused tokens cost no ledger entry", func(t *testing.T) {
		used := 0
		for i := range tokenShards {
			val, _, _ := c.state.Get(ctx, fmt.Sprintf("%s/%02x", KeyTokens, i))
			if val == nil {
				continue
			}
			var l tokenLedger
			if err := jsonUnmarshal(val, &l); err != nil {
				t.Fatal(err)
			}
			used += len(l.Used)
		}
		// n1 and n2 were used; none of the refused ones reached the ledger.
		if used != 2 {
			t.Fatalf("ledger holds %d token IDs, want 2", used)
		}
	})
}

func TestTokenOverRPC(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	tok := c.token(srv, "edge-1")
	c.manager("edge-1", func(mc *ManagerConfig) { mc.Token = tok }, nil, fixed(rs.addr))
	// A second agent that was handed the same token is refused, with the
	// reason carried over the wire.
	cl := c.rpcClient(fixed(rs.addr))
	k, _ := newKey()
	id, _ := NewIdentity(testTD, "edge-1", nil)
	der, _ := newCSR(id, k)
	_, err := cl.Issue(context.Background(), IssueRequest{CSR: der, Token: tok})
	if !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("reuse over RPC: %v, want ErrTokenUsed", err)
	}
	// Without token or certificate the manager does not even start.
	m := c.newManager("edge-2", nil, nil, fixed(rs.addr))
	if err := m.Start(context.Background()); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("Start without credentials = %v, want ErrNoCredentials", err)
	}
}

// TestPolicyWithholdsServices: a service that ServicePolicy does not let the
// node hold is left out of its leaf, which still names the node and its
// other services. The agent reports what was withheld, does not ask again at
// once, and gets the service at its next ask once policy allows it.
func TestPolicyWithholdsServices(t *testing.T) {
	c := newCluster(t)
	var mu sync.Mutex
	holdable := map[string]bool{"web": true}
	srv := c.server("srv1", func(_ *ServerConfig, d *ServerDeps) {
		d.ServicePolicy = func(node, service string) (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			if node == "app-1" && holdable[service] {
				return true, "listed"
			}
			return false, "not listed"
		}
	})
	rs := c.rpc(srv)
	var skew atomic.Int64 // the agent's clock runs ahead by this much
	m := c.manager("app-1", func(mc *ManagerConfig) {
		mc.Token = c.token(srv, "app-1")
		mc.Services = []string{"web", "api"}
		mc.WithheldRetry = 10 * time.Minute
		mc.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}, nil, fixed(rs.addr))

	const node, api, web = "spiffe://mesh.test/node/app-1", "spiffe://mesh.test/svc/api", "spiffe://mesh.test/svc/web"
	waitLeafIDs(t, m, []string{node, web}, 10*time.Second)
	if l, _ := m.Leaf(); !slices.Equal(l.Withheld, []string{"api"}) {
		t.Fatalf("Withheld = %v, want [api]", l.Withheld)
	}
	if n := metricValue(srv.m.withheld.WithLabelValues("policy")); n != 1 {
		t.Fatalf("withheld counted %v times, want 1", n)
	}
	// The withheld service is asked for again after WithheldRetry, not at
	// once, and not only at the renewal (two thirds of the hour's leaf).
	at, why := m.nextIssue()
	if until := time.Until(at); why != "services withheld" || until < 9*time.Minute || until > 11*time.Minute {
		t.Fatalf("next issue in %s (%s), want about 10m for the withheld service", until, why)
	}

	mu.Lock()
	holdable["api"] = true
	mu.Unlock()
	skew.Store(int64(11 * time.Minute))
	m.poke()
	waitLeafIDs(t, m, []string{node, api, web}, 10*time.Second)
	if l, _ := m.Leaf(); len(l.Withheld) != 0 {
		t.Fatalf("Withheld = %v after policy allowed it", l.Withheld)
	}
}
