package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/acl"
)

// aclFixture is an ACL store with enforcement on and default deny, and the
// resolver servers would use over it.
type aclFixture struct {
	t     *testing.T
	store *acl.MemStore
	res   *acl.Resolver
}

func newACL(t *testing.T, enabled bool) *aclFixture {
	t.Helper()
	s := acl.NewMemStore()
	res, err := acl.NewResolver(acl.Config{Enabled: enabled, DefaultPolicy: acl.DefaultDeny}, acl.Deps{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	return &aclFixture{t: t, store: s, res: res}
}

// policy stores an ACL policy called name with rules (YAML under rules:).
func (f *aclFixture) policy(name, rules string) {
	f.t.Helper()
	p, err := acl.ParsePolicy([]byte("name: " + name + "\nrules:\n" + rules))
	if err != nil {
		f.t.Fatalf("policy %s: %v", name, err)
	}
	if p.ID, err = acl.NewID(); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.store.SetPolicy(context.Background(), p, 0); err != nil {
		f.t.Fatalf("SetPolicy(%s): %v", name, err)
	}
}

// token stores a client token linking policies by name and returns its
// accessor ID and secret.
func (f *aclFixture) token(policies ...string) (string, string) {
	f.t.Helper()
	var spec acl.TokenSpec
	for _, n := range policies {
		spec.Policies = append(spec.Policies, acl.PolicyLink{Name: n})
	}
	tok, secret, err := acl.NewToken(spec, time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.store.SetToken(context.Background(), tok, 0); err != nil {
		f.t.Fatalf("SetToken: %v", err)
	}
	return tok.AccessorID, secret
}

// authorizeWith makes servers decide by f's tokens.
func authorizeWith(f *aclFixture) func(*ServerConfig, *ServerDeps) {
	return func(_ *ServerConfig, d *ServerDeps) { d.AuthorizeToken = ACLTokens(f.res.Resolve) }
}

// csrWith makes a CSR for node and services.
func csrWith(t *testing.T, node string, services ...string) []byte {
	t.Helper()
	der, _ := csrAndKey(t, node, services...)
	return der
}

// csrAndKey makes a key and a CSR for node and services.
func csrAndKey(t *testing.T, node string, services ...string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(testTD, node, services)
	if err != nil {
		t.Fatal(err)
	}
	der, err := newCSR(id, k)
	if err != nil {
		t.Fatal(err)
	}
	return der, k
}

func leafIDs(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

const (
	idApp1 = "spiffe://mesh.test/node/app-1"
	idWeb  = "spiffe://mesh.test/svc/web"
	idAPI  = "spiffe://mesh.test/svc/api"
)

// TestAgentTokenDecidesServiceIdentities runs a CA server whose RPCs are
// served over TLS on loopback and an agent's certificate manager that
// bootstraps and renews through them. Its agent token may write web but not
// api: the leaf names web and withholds api, whatever the node asks. Once
// the agent holds a token that may write api too, its next renewal names
// api: the token decides again at every request.
func TestAgentTokenDecidesServiceIdentities(t *testing.T) {
	f := newACL(t, true)
	f.policy("app-1-web", "  node: {app-1: write}\n  service: {web: write}\n")
	f.policy("app-1-all", "  node: {app-1: write}\n  service: {web: write, api: write}\n")
	webAccessor, webOnly := f.token("app-1-web")
	_, both := f.token("app-1-all")

	c := newCluster(t)
	srv := c.server("srv1", authorizeWith(f))
	rs := c.rpc(srv)
	var secret atomic.Value
	secret.Store(webOnly)
	var skew atomic.Int64 // the agent's clock runs ahead by this much
	m, err := NewManager(ManagerConfig{
		TrustDomain: testTD, Node: "app-1", Services: []string{"web", "api"}, Token: c.token(srv, "app-1"),
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, WithheldRetry: 10 * time.Minute,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
	}, ManagerDeps{
		Issuer: c.rpcClient(fixed(rs.addr)), Bundles: NewStateBundleSource(c.state, testTD), Logger: testLogger(t),
		AgentToken: func() string { return secret.Load().(string) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })

	waitLeafIDs(t, m, []string{idApp1, idWeb}, 10*time.Second)
	if l, _ := m.Leaf(); !slices.Equal(l.Withheld, []string{"api"}) {
		t.Fatalf("Withheld = %v, want [api]", l.Withheld)
	}
	if n := metricValue(srv.m.withheld.WithLabelValues(withheldByToken)); n != 1 {
		t.Fatalf("withheld by token counted %v times, want 1", n)
	}
	if n := metricValue(srv.m.withheld.WithLabelValues(withheldByPolicy)); n != 0 {
		t.Fatalf("withheld by policy counted %v times, want 0", n)
	}
	if webAccessor == "" {
		t.Fatal("no accessor ID")
	}

	// The operator gives the agent a token that may write api too; the
	// agent asks again when its withheld-retry is due (a renewal, over
	// mTLS with its current leaf).
	secret.Store(both)
	skew.Store(int64(11 * time.Minute))
	m.poke()
	waitLeafIDs(t, m, []string{idApp1, idAPI, idWeb}, 10*time.Second)
	if n := metricValue(srv.m.issued.WithLabelValues("renew")); n < 1 {
		t.Fatalf("%v renewals issued, want the new leaf to come from one", n)
	}
}

// TestAgentTokenRefusals sends sign and renew requests over the RPC port
// with agent tokens that may not act for the node: no leaf is issued, the
// refusal says why, and a refused bootstrap request leaves its one-time
// token unused.
func TestAgentTokenRefusals(t *testing.T) {
	f := newACL(t, true)
	f.policy("app-1", "  node: {app-1: write}\n  service: {web: write}\n")
	f.policy("app-2", "  node: {app-2: write}\n  service_prefix: {\"\": write}\n")
	f.policy("web-only", "  service: {web: write}\n")
	_, good := f.token("app-1")
	_, other := f.token("app-2")
	_, noNode := f.token("web-only")
	unknown, err := acl.NewSecret()
	if err != nil {
		t.Fatal(err)
	}

	c := newCluster(t)
	srv := c.server("srv1", authorizeWith(f))
	rs := c.rpc(srv)
	cl := c.rpcClient(fixed(rs.addr))
	boot := c.token(srv, "app-1")
	refusals := []struct {
		name, secret, want string
	}{
		{"a node token for another node", other, `may not act for node "app-1": permission denied: token lacks node:write on "app-1"`},
		{"a token without node:write", noNode, `token lacks node:write on "app-1"`},
		{"no agent token", "", "the request carries no agent token: set acl.tokens.agent"},
		{"an unknown token", unknown, "ACL token not found"},
		{"a malformed token", "not-a-secret", "malformed ACL token"},
	}
	for _, tc := range refusals {
		t.Run("sign/"+tc.name, func(t *testing.T) {
			_, err := cl.Issue(ctxT(t, 10*time.Second), IssueRequest{CSR: csrWith(t, "app-1", "web"), Token: boot, AgentToken: tc.secret})
			if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Issue = %v, want ErrUnauthorized saying %q", err, tc.want)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Fatalf("the refusal shows a secret: %v", err)
			}
		})
	}
	if n := metricValue(srv.m.issued.WithLabelValues("token")); n != 0 {
		t.Fatalf("%v leaves issued to refused tokens", n)
	}

	// The bootstrap token survived every refusal.
	der, key := csrAndKey(t, "app-1", "web")
	is, err := cl.Issue(ctxT(t, 10*time.Second), IssueRequest{CSR: der, Token: boot, AgentToken: good})
	if err != nil {
		t.Fatalf("bootstrap with the right agent token after refusals: %v", err)
	}
	if ids := leafIDs(is.Chain[0]); !slices.Equal(ids, []string{idApp1, idWeb}) {
		t.Fatalf("leaf names %v", ids)
	}

	// Renewals are decided the same way: the current leaf proves the node,
	// the token must still be allowed to act for it.
	cur := &tls.Certificate{PrivateKey: key, Leaf: is.Chain[0]}
	for _, c := range is.Chain {
		cur.Certificate = append(cur.Certificate, c.Raw)
	}
	for _, tc := range refusals {
		t.Run("renew/"+tc.name, func(t *testing.T) {
			_, err := cl.Issue(ctxT(t, 10*time.Second), IssueRequest{CSR: csrWith(t, "app-1", "web"), Current: cur, Bundle: srv.Bundle(), AgentToken: tc.secret})
			if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("renewal = %v, want ErrUnauthorized saying %q", err, tc.want)
			}
		})
	}
	is, err = cl.Issue(ctxT(t, 10*time.Second), IssueRequest{CSR: csrWith(t, "app-1", "web", "api"), Current: cur, Bundle: srv.Bundle(), AgentToken: good})
	if err != nil {
		t.Fatalf("renewal with the right token: %v", err)
	}
	if ids := leafIDs(is.Chain[0]); !slices.Equal(ids, []string{idApp1, idWeb}) {
		t.Fatalf("renewed leaf names %v, want the node and web (api withheld)", ids)
	}
}

// TestAgentTokenWithoutServiceWrite: a token that may act for the node but
// write no service gets a leaf that names the node alone.
func TestAgentTokenWithoutServiceWrite(t *testing.T) {
	f := newACL(t, true)
	f.policy("node-only", "  node: {app-1: write}\n  service_prefix: {\"\": read}\n")
	_, secret := f.token("node-only")
	c := newCluster(t)
	srv := c.server("srv1", authorizeWith(f))
	rs := c.rpc(srv)
	is, err := c.rpcClient(fixed(rs.addr)).Issue(ctxT(t, 10*time.Second),
		IssueRequest{CSR: csrWith(t, "app-1", "web"), Token: c.token(srv, "app-1"), AgentToken: secret})
	if err != nil {
		t.Fatal(err)
	}
	if ids := leafIDs(is.Chain[0]); !slices.Equal(ids, []string{idApp1}) {
		t.Fatalf("leaf names %v, want the node alone", ids)
	}
	if n := metricValue(srv.m.withheld.WithLabelValues(withheldByToken)); n != 1 {
		t.Fatalf("withheld by token counted %v times, want 1", n)
	}
}

// TestAgentTokenACLsOff: with ACLs disabled nothing changes, whether the
// servers have the hook over a disabled resolver or no hook at all, and
// whatever token the agent sends; and a server's own leaf, signed in
// process, is never asked about a token.
func TestAgentTokenACLsOff(t *testing.T) {
	off := newACL(t, false)
	refuseAll := func(_ *ServerConfig, d *ServerDeps) {
		d.AuthorizeToken = func(node string, services []string, _ string) (TokenGrant, error) {
			return TokenGrant{}, errors.New("refused by the test")
		}
	}
	tests := []struct {
		name   string
		mod    func(*ServerConfig, *ServerDeps)
		secret string
	}{
		{"disabled resolver, no token", authorizeWith(off), ""},
		{"disabled resolver, a garbage token", authorizeWith(off), "garbage"},
		{"no hook, no token", nil, ""},
		{"no hook, a garbage token", nil, "garbage"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			srv := c.server("srv1", tc.mod)
			rs := c.rpc(srv)
			is, err := c.rpcClient(fixed(rs.addr)).Issue(ctxT(t, 10*time.Second),
				IssueRequest{CSR: csrWith(t, "app-1", "api", "web"), Token: c.token(srv, "app-1"), AgentToken: tc.secret})
			if err != nil {
				t.Fatal(err)
			}
			if ids := leafIDs(is.Chain[0]); !slices.Equal(ids, []string{idApp1, idAPI, idWeb}) {
				t.Fatalf("leaf names %v, want every service asked", ids)
			}
		})
	}
	t.Run("local issuer", func(t *testing.T) {
		c := newCluster(t)
		srv := c.server("srv1", refuseAll)
		m := c.manager("srv1", func(mc *ManagerConfig) { mc.Services = []string{"web"} }, srv.LocalIssuer(), nil)
		waitLeafIDs(t, m, []string{"spiffe://mesh.test/node/srv1", idWeb}, 10*time.Second)
	})
}

// TestACLTokens checks the verdicts of the ACL adapter alone.
func TestACLTokens(t *testing.T) {
	f := newACL(t, true)
	f.policy("edge", "  node_prefix: {edge-: write}\n  service_prefix: {\"web\": write}\n  service: {web-admin: deny}\n")
	accessor, secret := f.token("edge")
	authorize := ACLTokens(f.res.Resolve)
	g, err := authorize("edge-7", []string{"web", "web-v2", "web-admin", "db"}, secret)
	if err != nil {
		t.Fatal(err)
	}
	if g.AccessorID != accessor {
		t.Fatalf("accessor %q, want %q", g.AccessorID, accessor)
	}
	var refused []string
	for s := range g.Refused {
		refused = append(refused, s)
	}
	slices.Sort(refused)
	if !slices.Equal(refused, []string{"db", "web-admin"}) {
		t.Fatalf("refused %v, want [db web-admin]", refused)
	}
	if why := g.Refused["web-admin"]; !strings.Contains(why, `token lacks service:write on "web-admin"`) || !strings.Contains(why, `rule service "web-admin": deny`) {
		t.Fatalf("reason for web-admin: %q", why)
	}
	if _, err := authorize("core-1", []string{"web"}, secret); err == nil || !strings.Contains(err.Error(), `token lacks node:write on "core-1"`) {
		t.Fatalf("another node: %v", err)
	}
}
