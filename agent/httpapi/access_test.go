package httpapi

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
)

// aclFixture is an enabled resolver over a MemStore holding a management
// token and a token that may write service web only.
type aclFixture struct {
	res              *acl.Resolver
	store            *acl.MemStore
	mgmt, web, webID string
}

func newACLFixture(t testing.TB) *aclFixture {
	t.Helper()
	ctx := context.Background()
	st := acl.NewMemStore()
	id, _ := acl.NewID()
	if _, err := st.SetPolicy(ctx, &acl.Policy{ID: id, Name: "web", Rules: acl.Rules{Service: map[string]acl.Access{"web": acl.Write}}}, 0); err != nil {
		t.Fatal(err)
	}
	_, mgmt, err := acl.Bootstrap(ctx, st, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	tok, web, err := acl.NewToken(acl.TokenSpec{Policies: []acl.PolicyLink{{Name: "web"}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetToken(ctx, tok, 0); err != nil {
		t.Fatal(err)
	}
	res, err := acl.NewResolver(acl.Config{Enabled: true}, acl.Deps{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return &aclFixture{res: res, store: st, mgmt: mgmt, web: web, webID: tok.AccessorID}
}

// errCode is the code of an API error answer.
func errCode(err error) (int, string) {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Status, e.Code
	}
	return 0, ""
}

// TestACLEnforced checks the API with ACLs on and deny by default: route
// requirements, the checks in handlers, filtered lists, the answers to
// refusals, the denial metric and its log line.
func TestACLEnforced(t *testing.T) {
	f := newACLFixture(t)
	var logs bytes.Buffer
	h := newHarnessWith(t, Config{}, f.res)
	h.srv.log = slog.New(slog.NewTextHandler(&logs, nil))
	mgmt, web, anon := h.client.WithToken(f.mgmt), h.client.WithToken(f.web), h.client
	c := ctx(t)

	// Fixed requirement: agent:read.
	if _, err := anon.Self(c); !hasCode(err, 403, acl.CodePermissionDenied) || !strings.Contains(err.Error(), "permission denied: token lacks agent:read") {
		t.Fatalf("anonymous self: %v", err)
	}
	if _, err := mgmt.Self(c); err != nil {
		t.Fatalf("management self: %v", err)
	}
	// The body decides: web may register web, not api.
	if err := web.RegisterService(c, api.ServiceDefinition{Name: "web", Port: 80, Check: &api.CheckDefinition{ID: "web-ttl", TTL: api.Duration(time.Minute)}}); err != nil {
		t.Fatalf("web registers web: %v", err)
	}
	err := web.RegisterService(c, api.ServiceDefinition{Name: "api", Port: 81})
	if !hasCode(err, 403, acl.CodePermissionDenied) || !strings.Contains(err.Error(), `token lacks service:write on "api"`) {
		t.Fatalf("web registers api: %v", err)
	}
	if err := mgmt.RegisterService(c, api.ServiceDefinition{Name: "api", Port: 81, Check: &api.CheckDefinition{ID: "api-ttl", TTL: api.Duration(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	// Replacing api by registering web under its ID needs write on api.
	if err := web.RegisterService(c, api.ServiceDefinition{ID: "api", Name: "web", Port: 82}); !hasCode(err, 403, acl.CodePermissionDenied) {
		t.Fatalf("web takes over api's ID: %v", err)
	}
	// Lists are filtered.
	svcs, err := web.AgentServices(c)
	if err != nil || len(svcs) != 1 || svcs[0].Name != "web" {
		t.Fatalf("web lists %+v, %v; want web only", svcs, err)
	}
	if all, _ := mgmt.AgentServices(c); len(all) != 2 {
		t.Fatalf("management lists %d services, want 2", len(all))
	}
	checks, err := web.AgentChecks(c)
	if err != nil || len(checks) != 1 || checks[0].ID != "web-ttl" {
		t.Fatalf("web lists checks %+v, %v", checks, err)
	}
	if _, err := web.AgentService(c, "api"); !hasCode(err, 403, acl.CodePermissionDenied) {
		t.Fatalf("web reads api: %v", err)
	}
	if err := web.PassTTL(c, "web-ttl", "ok"); err != nil {
		t.Fatalf("web passes its check: %v", err)
	}
	if err := web.PassTTL(c, "api-ttl", "ok"); !hasCode(err, 403, acl.CodePermissionDenied) {
		t.Fatalf("web passes api's check: %v", err)
	}
	if err := web.DeregisterService(c, "api"); !hasCode(err, 403, acl.CodePermissionDenied) {
		t.Fatalf("web deregisters api: %v", err)
	}
	if _, err := mgmt.AgentService(c, "api"); err != nil {
		t.Fatalf("api was deregistered by a refused call: %v", err)
	}
	// The anonymous token reads the catalog, as DNS does.
	if _, _, err := anon.CatalogServices(c, nil); err != nil {
		t.Fatalf("anonymous catalog read: %v", err)
	}
	if _, _, err := anon.HealthService(c, "web", false, nil); err != nil {
		t.Fatalf("anonymous health read: %v", err)
	}
	// Unknown, malformed and misplaced tokens.
	unknown, _ := acl.NewSecret()
	if _, err := h.client.WithToken(unknown).Self(c); !hasCode(err, 403, acl.CodeTokenNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	code, msg, _ := h.raw(t, "GET", "/v1/agent/self?token="+f.mgmt, "")
	if code != 400 || strings.Contains(msg, f.mgmt) {
		t.Fatalf("token in the URL: %d %s", code, msg)
	}

	// Denials are counted by route and code, and logged with the accessor
	// ID, never the secret.
	if n := metricValue(t, h, MetricACLDenials, `route="PUT /v1/agent/service/register",code="permission_denied"`); n != 2 {
		t.Fatalf("register denials counted %v, want 2", n)
	}
	if n := metricValue(t, h, MetricACLDenials, `route="GET /v1/agent/self",code="acl_not_found"`); n != 1 {
		t.Fatalf("unknown-token denials counted %v, want 1", n)
	}
	if !strings.Contains(logs.String(), f.webID) || strings.Contains(logs.String(), f.web) || strings.Contains(logs.String(), f.mgmt) {
		t.Fatalf("denial log: want the accessor ID and no secret:\n%s", logs.String())
	}
}

// TestACLDisabledIgnoresTokens: with ACLs off, nothing is checked and a
// token header, even a malformed one, is not looked at.
func TestACLDisabledIgnoresTokens(t *testing.T) {
	h := newHarness(t, Config{})
	req, _ := http.NewRequest("GET", h.base+"/v1/agent/self", nil)
	req.Header.Set(acl.HeaderToken, "garbage")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("self with ACLs disabled: %d", resp.StatusCode)
	}
	if err := h.client.RegisterService(ctx(t), api.ServiceDefinition{Name: "api", Port: 1}); err != nil {
		t.Fatal(err)
	}
}

// TestRoutesDeclareRequirements: every route of the server says what it
// needs.
func TestRoutesDeclareRequirements(t *testing.T) {
	h := newHarness(t, Config{})
	routes := h.srv.Routes()
	if len(routes) < 16 {
		t.Fatalf("%d routes", len(routes))
	}
	for _, r := range routes {
		if err := r.Need.Validate(); err != nil {
			t.Errorf("%s: %v", r.Pattern, err)
		}
	}
}

func hasCode(err error, status int, code string) bool {
	s, c := errCode(err)
	return s == status && c == code
}

// metricValue reads one series of a counter from /v1/metrics.
func metricValue(t *testing.T, h *harness, name, labels string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var parts []string
			for _, l := range m.GetLabel() {
				parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if strings.Join(parts, ",") == labels || strings.Join(reverse(parts), ",") == labels {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// BenchmarkGuard measures what the access control adds to one request:
// resolving a token (cached after the first) and checking a permission,
// against the same route with ACLs disabled.
func BenchmarkGuard(b *testing.B) {
	for _, tc := range []struct {
		name    string
		enabled bool
	}{{"disabled", false}, {"enabled", true}} {
		b.Run(tc.name, func(b *testing.B) {
			f := newACLFixture(b)
			res := f.res
			if !tc.enabled {
				res = nil
			}
			s := &Server{log: slog.New(slog.DiscardHandler), deps: Deps{ACL: res}}
			if res == nil {
				r, _ := acl.NewResolver(acl.Config{}, acl.Deps{Store: acl.NewMemStore()})
				s.deps.ACL = r
			}
			m, _ := newMetrics(prometheus.NewRegistry())
			s.metrics = m
			h := s.guard("PUT /v1/bench/{name}", acl.RequireOnPath(acl.ResourceService, "name", acl.Write), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			mux := http.NewServeMux()
			mux.Handle("PUT /v1/bench/{name}", h)
			req, _ := http.NewRequest("PUT", "/v1/bench/web", nil)
			acl.SetToken(req.Header, f.web)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				mux.ServeHTTP(w, req)
			}
			if w.status != 0 {
				b.Fatalf("refused: %d", w.status)
			}
		})
	}
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
