package raftstore

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
)

// aclAPIServer serves the ACL API of n on loopback, its requirements not
// enforced (the agent's HTTP API does that; agent tests check it).
func aclAPIServer(t *testing.T, n *Node, enabled bool) *httptest.Server {
	t.Helper()
	res, err := acl.NewResolver(acl.Config{Enabled: enabled}, acl.Deps{Store: n.ACL()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	if err := n.RegisterACLAPI(acl.MountAllowAll(mux), ACLAPIDeps{Resolver: res}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func callToken(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	acl.SetToken(req.Header, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestACLHTTPAPI drives /v1/acl/* on a client agent of a real cluster: the
// secret is answered at creation only, and no answer ever holds a secret's
// hash.
func TestACLHTTPAPI(t *testing.T) {
	c := MakeTestCluster(t, 1)
	cl := c.AddClient("c1")
	srv := aclAPIServer(t, cl.Node, true)
	cli := api.NewClient(srv.URL)
	ctx := ctxT(t, time.Minute)

	var answers []string
	record := func(v any) {
		b, _ := json.Marshal(v)
		answers = append(answers, string(b))
	}
	boot, err := cli.ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	record(boot)
	if err := acl.CheckSecret("bootstrap", boot.SecretID); err != nil || boot.Type != "management" {
		t.Fatalf("bootstrap answered %+v: %v", boot, err)
	}
	if _, err := cli.ACLBootstrap(ctx); !isAPIError(err, 409, "acl_bootstrap_done") {
		t.Fatalf("second bootstrap: %v", err)
	}
	mgmt := cli.WithToken(boot.SecretID)

	p, err := mgmt.ACLPolicyCreate(ctx, api.ACLPolicy{Name: "web", Rules: acl.Rules{Service: map[string]acl.Access{"web": acl.Write}}})
	if err != nil {
		t.Fatal(err)
	}
	record(p)
	if _, err := mgmt.ACLPolicyCreate(ctx, api.ACLPolicy{Name: "WEB"}); !isAPIError(err, 409, "conflict") {
		t.Fatalf("a second policy named WEB: %v", err)
	}
	if _, err := mgmt.ACLPolicyCreate(ctx, api.ACLPolicy{Name: "bad", Rules: acl.Rules{Service: map[string]acl.Access{"a*": acl.Read}}}); !isAPIError(err, 400, "invalid") || !strings.Contains(err.Error(), "globs are not supported") {
		t.Fatalf("a glob rule: %v", err)
	}
	given, _ := acl.NewSecret()
	tok, err := mgmt.ACLTokenCreate(ctx, api.ACLTokenRequest{Description: "deploys web", SecretID: given, Policies: []api.ACLPolicyLink{{Name: "web"}}, TTL: api.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	record(tok)
	if tok.SecretID != given || tok.ExpirationTime == nil || tok.Policies[0].ID != p.ID {
		t.Fatalf("create answered %+v", tok)
	}
	if _, err := mgmt.ACLTokenCreate(ctx, api.ACLTokenRequest{TTL: api.Duration(time.Second)}); !isAPIError(err, 400, "invalid") {
		t.Fatalf("a TTL of 1s: %v", err)
	}
	if _, err := mgmt.ACLTokenCreate(ctx, api.ACLTokenRequest{SecretID: given}); !isAPIError(err, 409, "conflict") {
		t.Fatalf("a second token with the same secret: %v", err)
	}
	if _, err := mgmt.ACLTokenCreate(ctx, api.ACLTokenRequest{SecretID: "not-a-secret"}); !isAPIError(err, 400, "invalid") || strings.Contains(err.Error(), "not-a-secret") {
		t.Fatalf("a malformed secret: %v", err)
	}

	read, err := mgmt.ACLTokenRead(ctx, tok.AccessorID)
	if err != nil {
		t.Fatal(err)
	}
	record(read)
	self, err := cli.WithToken(given).ACLTokenSelf(ctx)
	if err != nil {
		t.Fatal(err)
	}
	record(self)
	anon, err := cli.ACLTokenSelf(ctx)
	if err != nil || anon.AccessorID != acl.AnonymousAccessorID {
		t.Fatalf("self without a token: %+v, %v", anon, err)
	}
	unknown, _ := acl.NewSecret()
	if _, err := cli.WithToken(unknown).ACLTokenSelf(ctx); !isAPIError(err, 403, acl.CodeTokenNotFound) {
		t.Fatalf("self with an unknown token: %v", err)
	}
	list, err := mgmt.ACLTokenList(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("list: %d tokens, %v", len(list), err)
	}
	record(list)
	for _, l := range list {
		if l.SecretID != "" {
			t.Fatalf("the list shows the secret of %s", l.AccessorID)
		}
	}
	if read.SecretID != "" || self.SecretID != "" {
		t.Fatal("a read shows a secret")
	}

	upd, err := mgmt.ACLTokenUpdate(ctx, tok.AccessorID, api.ACLTokenRequest{Description: "reads nothing"}, &api.ACLWriteOptions{CAS: read.ModifyIndex})
	if err != nil || len(upd.Policies) != 0 || upd.Description != "reads nothing" || upd.ModifyIndex <= read.ModifyIndex {
		t.Fatalf("update: %+v, %v", upd, err)
	}
	if _, err := mgmt.ACLTokenUpdate(ctx, tok.AccessorID, api.ACLTokenRequest{}, &api.ACLWriteOptions{CAS: read.ModifyIndex}); !isAPIError(err, 409, "conflict") {
		t.Fatalf("update with a stale cas: %v", err)
	}
	if _, err := mgmt.ACLTokenUpdate(ctx, tok.AccessorID, api.ACLTokenRequest{Type: "management"}, nil); !isAPIError(err, 400, "invalid") {
		t.Fatalf("changing the type: %v", err)
	}
	// A policy still linked is kept.
	if _, err := mgmt.ACLTokenUpdate(ctx, tok.AccessorID, api.ACLTokenRequest{Policies: []api.ACLPolicyLink{{ID: p.ID}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := mgmt.ACLPolicyDelete(ctx, "web", nil); !isAPIError(err, 409, "conflict") || !strings.Contains(err.Error(), tok.AccessorID) {
		t.Fatalf("deleting a linked policy: %v", err)
	}
	pu, err := mgmt.ACLPolicyUpdate(ctx, "web", api.ACLPolicy{Description: "now reads", Rules: acl.Rules{Service: map[string]acl.Access{"web": acl.Read}}}, nil)
	if err != nil || pu.Name != "web" || pu.Rules.Service["web"] != acl.Read {
		t.Fatalf("policy update by name: %+v, %v", pu, err)
	}
	if got, err := mgmt.ACLPolicyRead(ctx, p.ID); err != nil || got.Description != "now reads" {
		t.Fatalf("policy read by ID: %+v, %v", got, err)
	}
	pl, err := mgmt.ACLPolicyList(ctx)
	if err != nil || len(pl) != 2 {
		t.Fatalf("policy list: %d, %v", len(pl), err)
	}
	if err := mgmt.ACLTokenDelete(ctx, tok.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	if err := mgmt.ACLPolicyDelete(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := mgmt.ACLTokenRead(ctx, tok.AccessorID); !isAPIError(err, 404, "not_found") {
		t.Fatalf("read of a deleted token: %v", err)
	}
	if err := mgmt.ACLTokenDelete(ctx, acl.AnonymousAccessorID, nil); !isAPIError(err, 409, "conflict") {
		t.Fatalf("deleting the anonymous token: %v", err)
	}
	if code, body := callToken(t, "PUT", srv.URL+"/v1/acl/token", boot.SecretID, `{"description": 5}`); code != 400 || !strings.Contains(body, `field \"description\"`) {
		t.Fatalf("bad body: %d %s", code, body)
	}
	if code, body := callToken(t, "GET", srv.URL+"/v1/acl/token/self?token=x", "", ""); code != 400 || !strings.Contains(body, acl.CodeMalformedToken) {
		t.Fatalf("a token in the URL: %d %s", code, body)
	}

	for _, a := range answers {
		if strings.Contains(a, "secret_hash") || strings.Contains(a, "SecretHash") {
			t.Fatalf("an answer holds a secret's hash: %s", a)
		}
	}
	// The raw answers of reads, too.
	for _, path := range []string{"/v1/acl/tokens", "/v1/acl/token/" + boot.AccessorID, "/v1/acl/token/self"} {
		code, body := callToken(t, "GET", srv.URL+path, boot.SecretID, "")
		if code != 200 || strings.Contains(body, "secret_hash") || strings.Contains(body, boot.SecretID) {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
	}
}

// TestACLHTTPAPIDisabled: with ACLs disabled on the agent, the ACL API
// says so rather than bootstrap a system nobody enforces.
func TestACLHTTPAPIDisabled(t *testing.T) {
	c := MakeTestCluster(t, 1)
	srv := aclAPIServer(t, c.Server(0).Node, false)
	code, body := callToken(t, "PUT", srv.URL+"/v1/acl/bootstrap", "", "")
	if code != http.StatusNotImplemented || !strings.Contains(body, "acl_disabled") {
		t.Fatalf("bootstrap with ACLs disabled: %d %s", code, body)
	}
	if st := c.Server(0).Node.ACL().State(); st.BootstrapIndex() != 0 {
		t.Fatal("a refused bootstrap happened")
	}
}

func isAPIError(err error, status int, code string) bool {
	ae, ok := err.(*api.Error)
	return ok && ae.Status == status && ae.Code == code
}
