package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/testnet"
)

// aclServer starts a --dev server agent with ACLs on, deny by default,
// whose leader makes mgmt the initial management token; it returns once
// the token works on its API.
func aclServer(t *testing.T, node, vips string) (*testAgent, string) {
	t.Helper()
	mgmt, err := acl.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	cfg := newConfig(t, node, true, vips)
	cfg.ACL.Enabled = true
	cfg.ACL.Tokens.InitialManagement = mgmt
	a := startAgent(t, cfg)
	cli := api.NewClient(a.HTTPAddr()).WithToken(mgmt)
	testnet.Eventually(t, wait, "the initial management token", func() error {
		_, err := cli.Self(context.Background())
		return err
	})
	return a, mgmt
}

// status sends one request and returns its status and body.
func status(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	acl.SetToken(req.Header, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") && strings.HasSuffix(url, "/v1/agent/monitor") {
		return resp.StatusCode, "(a stream)" // it never ends
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var wildcard = regexp.MustCompile(`\{([a-z]+)(\.\.\.)?\}`)

// TestACLEveryRoute enumerates every route a real agent mounted and calls
// it: with no token (the anonymous token, deny by default) every call is
// refused with 403 but the reads the anonymous token's builtin policy
// grants (the catalog, health, the agent's services and members: what DNS
// answers anyway), the CA roots, and the two ACL endpoints that need no
// permission; with the management token none is refused. Then a token
// that may only write service web registers web and not api, and sees
// only web in the lists.
func TestACLEveryRoute(t *testing.T) {
	a, mgmt := aclServer(t, "acl1", "127.246.0.0/16")
	base := "http://" + a.HTTPAddr()
	ctx := context.Background()
	m := api.NewClient(a.HTTPAddr()).WithToken(mgmt)
	// Something for the routes to find, so that their checks run.
	if err := m.RegisterService(ctx, api.ServiceDefinition{Name: "web", Port: 80, Check: &api.CheckDefinition{ID: "web-ttl", TTL: api.Duration(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Do(ctx, "PUT", "/v1/policy", nil, nil, nil); err == nil {
		t.Fatal("an empty policy body was applied")
	}

	values := map[string]string{"id": "web", "name": "web", "kind": "ServiceDefaults", "accessor": acl.AnonymousAccessorID, "node": "nope"}
	bodies := map[string]string{
		"PUT /v1/agent/service/register":  `{"name": "web", "port": 81}`,
		"PUT /v1/agent/check/update/{id}": `{"status": "passing"}`,
		"PUT /v1/policy":                  "kind: ServiceDefaults\nname: web\nprotocol: http\n",
	}
	// What the anonymous token may call, and why.
	anonymousOK := map[string]string{
		"GET /v1/catalog/services":       "catalog read",
		"GET /v1/catalog/nodes":          "catalog read",
		"GET /v1/catalog/service/{name}": "catalog read",
		"GET /v1/health/service/{name}":  "health read",
		"GET /v1/agent/services":         "the agent's services: service read",
		"GET /v1/agent/service/{id}":     "the agent's services: service read",
		"GET /v1/agent/checks":           "the agent's services' checks: service read",
		"GET /v1/agent/members":          "members: node read",
		"GET /v1/agent/maintenance":      "maintenance modes: node and service read, filtered",
		"GET /v1/ca/roots":               "the trust bundle is public",
		"PUT /v1/acl/bootstrap":          "one time, no token: done here, 409",
		"GET /v1/acl/token/self":         "the anonymous token's own record",
		"GET /v1/policy":                 "a list filtered to nothing",
		"GET /ui/":                       "the UI's files hold no data",
		"GET /v1/ui/config":              "whether ACLs are on, which any refusal tells",
		"GET /v1/ui/topology":            "edges filtered to nothing",
	}
	routes := a.http.Routes()
	if len(routes) < 40 {
		t.Fatalf("the agent mounted %d routes; the enumeration is broken", len(routes))
	}
	seen := map[string]bool{}
	for _, token := range []string{"", mgmt} {
		for _, r := range routes {
			method, path, ok := strings.Cut(r.Pattern, " ")
			if !ok {
				t.Fatalf("route %q has no method: every route must say which it serves", r.Pattern)
			}
			path = wildcard.ReplaceAllStringFunc(path, func(w string) string {
				name := wildcard.FindStringSubmatch(w)[1]
				if name == "id" && strings.HasPrefix(r.Pattern, "PUT /v1/agent/check/") {
					return "web-ttl"
				}
				if v, ok := values[name]; ok {
					return v
				}
				t.Fatalf("route %s: no value for {%s}", r.Pattern, name)
				return ""
			})
			if token == mgmt && r.Pattern == "PUT /v1/agent/leave" {
				continue // it would stop the agent: TestLeaveThroughAPI
			}
			code, body := status(t, method, base+path, token, bodies[r.Pattern])
			seen[r.Pattern] = true
			switch {
			case token == mgmt && code == http.StatusForbidden:
				t.Errorf("management: %s answered 403: %s", r.Pattern, body)
			case token == "" && anonymousOK[r.Pattern] == "" && code != http.StatusForbidden:
				t.Errorf("anonymous: %s (%s) answered %d, want 403: %s", r.Pattern, r.Need, code, body)
			case token == "" && anonymousOK[r.Pattern] != "" && code == http.StatusForbidden:
				t.Errorf("anonymous: %s (%s) refused: %s", r.Pattern, anonymousOK[r.Pattern], body)
			case token == "" && code == http.StatusForbidden && !strings.Contains(body, `"code": "permission_denied"`):
				t.Errorf("anonymous: %s answered 403 without its code: %s", r.Pattern, body)
			}
		}
	}
	for _, p := range []string{"GET /v1/agent/monitor", "PUT /v1/agent/force-leave/{node}", "PUT /v1/agent/maintenance"} {
		if !seen[p] {
			t.Errorf("%s is not mounted", p)
		}
	}
	for p := range anonymousOK {
		if !seen[p] {
			t.Errorf("%s is allowed to the anonymous token but not mounted", p)
		}
	}
	// The filtered list shows the anonymous token nothing.
	if code, body := status(t, "GET", base+"/v1/policy", "", ""); code != 200 || !strings.Contains(body, `"documents": []`) {
		t.Fatalf("anonymous policy list: %d %s", code, body)
	}

	// A token that may write web, and only web.
	if _, err := m.ACLPolicyCreate(ctx, api.ACLPolicy{Name: "web-deploy", Rules: acl.Rules{Service: map[string]acl.Access{"web": acl.Write}}}); err != nil {
		t.Fatal(err)
	}
	tok, err := m.ACLTokenCreate(ctx, api.ACLTokenRequest{Description: "deploys web", Policies: []api.ACLPolicyLink{{Name: "web-deploy"}}})
	if err != nil {
		t.Fatal(err)
	}
	web := api.NewClient(a.HTTPAddr()).WithToken(tok.SecretID)
	if err := web.RegisterService(ctx, api.ServiceDefinition{Name: "web", Port: 80}); err != nil {
		t.Fatalf("the web token registers web: %v", err)
	}
	err = web.RegisterService(ctx, api.ServiceDefinition{Name: "api", Port: 81})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Code != acl.CodePermissionDenied || ae.Message != `permission denied: token lacks service:write on "api"` {
		t.Fatalf("the web token registers api: %v", err)
	}
	if err := m.RegisterService(ctx, api.ServiceDefinition{Name: "api", Port: 81}); err != nil {
		t.Fatal(err)
	}
	svcs, err := web.AgentServices(ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Name != "web" {
		t.Fatalf("the web token lists %v, %v; want web only", svcs, err)
	}
	testnet.Eventually(t, wait, "the catalog to hold api", func() error {
		all, _, err := m.CatalogServices(ctx, nil)
		if err != nil || len(all) < 2 {
			return fmt.Errorf("catalog %v, %v", all, err)
		}
		return nil
	})
	cat, _, err := web.CatalogServices(ctx, nil)
	if err != nil || len(cat) != 1 || cat[0].Name != "web" {
		t.Fatalf("the web token's catalog: %v, %v; want web only", cat, err)
	}
	if n := counterValue(t, a.reg, "meshwork_http_acl_denials_total", map[string]string{"route": "PUT /v1/agent/service/register", "code": "permission_denied"}); n < 2 {
		t.Fatalf("register denials counted: %v", n)
	}
}

// TestACLClientAgent: a client agent enforces the tokens made through it,
// from its own copy of the ACL state, and goes on enforcing them when the
// server is gone.
func TestACLClientAgent(t *testing.T) {
	s, mgmt := aclServer(t, "acls", "127.247.0.0/16")
	ccfg := newConfig(t, "aclc", false, "127.248.0.0/16")
	ccfg.ClusterKey = s.cfg.ClusterKey
	ccfg.RetryJoin = []string{s.gossip}
	ccfg.Ports.Tunnel = -1
	ccfg.ACL.Enabled = true
	c := startAgent(t, ccfg)
	ctx := context.Background()
	cm := api.NewClient(c.HTTPAddr()).WithToken(mgmt)
	testnet.Eventually(t, wait, "the client to know the management token", func() error {
		_, err := cm.Self(ctx)
		return err
	})
	if _, err := cm.ACLPolicyCreate(ctx, api.ACLPolicy{Name: "web", Rules: acl.Rules{Service: map[string]acl.Access{"web": acl.Write}}}); err != nil {
		t.Fatal(err)
	}
	tok, err := cm.ACLTokenCreate(ctx, api.ACLTokenRequest{Policies: []api.ACLPolicyLink{{Name: "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	web := api.NewClient(c.HTTPAddr()).WithToken(tok.SecretID)
	check := func(when string) {
		t.Helper()
		if err := web.RegisterService(ctx, api.ServiceDefinition{Name: "web", Port: 80}); err != nil {
			t.Fatalf("%s: the web token registers web on the client: %v", when, err)
		}
		var ae *api.Error
		if err := web.RegisterService(ctx, api.ServiceDefinition{Name: "api", Port: 81}); !errors.As(err, &ae) || ae.Status != 403 {
			t.Fatalf("%s: the web token registers api on the client: %v", when, err)
		}
		if _, err := api.NewClient(c.HTTPAddr()).Self(ctx); !errors.As(err, &ae) || ae.Status != 403 {
			t.Fatalf("%s: anonymous self on the client: %v", when, err)
		}
	}
	check("with the server up")
	if err := s.Close(); err != nil {
		t.Logf("server close: %v", err)
	}
	check("with the server gone")
}

// TestACLAgentTokenDecidesLeaf: with ACLs on, a server names a client's
// service in its leaf only when the client's own token (acl.tokens.agent)
// may write that service, whatever the client registers; a client without
// a token gets no leaf at all.
func TestACLAgentTokenDecidesLeaf(t *testing.T) {
	s, mgmt := aclServer(t, "acls2", "127.238.0.0/16")
	s.waitTunnel(t) // the CA is up
	ctx := context.Background()
	m := api.NewClient(s.HTTPAddr()).WithToken(mgmt)
	if _, err := m.ACLPolicyCreate(ctx, api.ACLPolicy{Name: "agent-c2", Rules: acl.Rules{
		Node: map[string]acl.Access{"c2": acl.Write}, Service: map[string]acl.Access{"web": acl.Write},
	}}); err != nil {
		t.Fatal(err)
	}
	tok, err := m.ACLTokenCreate(ctx, api.ACLTokenRequest{Policies: []api.ACLPolicyLink{{Name: "agent-c2"}}})
	if err != nil {
		t.Fatal(err)
	}
	client := func(node, vips, agentToken string) *testAgent {
		caTok, _, err := s.CA().Server().Token(ctx, node, 0)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		caFile := filepath.Join(dir, "ca-token")
		if err := os.WriteFile(caFile, []byte(caTok), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := newConfig(t, node, false, vips)
		cfg.ClusterKey = s.cfg.ClusterKey
		cfg.RetryJoin = []string{s.gossip}
		cfg.CA.TokenFile = caFile
		cfg.ACL.Enabled = true
		if agentToken != "" {
			cfg.ACL.Tokens.AgentFile = filepath.Join(dir, "agent.token")
			if err := os.WriteFile(cfg.ACL.Tokens.AgentFile, []byte(agentToken+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg.Services = []api.ServiceDefinition{{Name: "web", Port: 80}, {Name: "api", Port: 81}}
		return startAgent(t, cfg)
	}
	c := client("c2", "127.237.0.0/16", tok.SecretID)
	testnet.Eventually(t, wait, "c2's leaf to name web", func() error {
		leaf, err := c.CA().Manager().Leaf()
		if err != nil {
			return err
		}
		if !slices.Contains(leaf.IDs, "spiffe://meshwork.local/svc/web") {
			return fmt.Errorf("leaf names %v", leaf.IDs)
		}
		return nil
	})
	leaf, _ := c.CA().Manager().Leaf()
	if slices.Contains(leaf.IDs, "spiffe://meshwork.local/svc/api") || !slices.Contains(leaf.Withheld, "api") {
		t.Fatalf("the leaf names %v, withholds %v: api must be withheld, the token may not write it", leaf.IDs, leaf.Withheld)
	}
	none := client("c3", "127.236.0.0/16", "")
	if _, err := none.CA().Manager().Leaf(); err == nil {
		t.Fatal("a client without an agent token got a leaf")
	}
	testnet.Eventually(t, wait, "c3 to be told to set acl.tokens.agent", func() error {
		if !none.logs.Contains("acl.tokens.agent") {
			return errors.New("not in its log")
		}
		return nil
	})
	if _, err := none.CA().Manager().Leaf(); err == nil {
		t.Fatal("a client without an agent token got a leaf")
	}
}
