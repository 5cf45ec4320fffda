package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestClientRequests checks the method, path and query each typed method
// sends; the answers themselves are tested against the real server in
// agent/httpapi.
func TestClientRequests(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		line := r.Method + " " + r.URL.EscapedPath()
		if r.URL.RawQuery != "" {
			line += "?" + r.URL.RawQuery
		}
		got = append(got, line)
		mu.Unlock()
		w.Header().Set(IndexHeader, "7")
		switch r.URL.Path {
		case "/v1/agent/self", "/v1/agent/service/web:1":
			w.Write([]byte(`{}`))
		default:
			w.Write([]byte(`[]`))
		}
	}))
	defer srv.Close()
	c := NewClient(srv.URL)
	ctx := context.Background()
	opts := &QueryOptions{Index: 5, Wait: 30 * time.Second, Tag: "v1"}

	calls := []struct {
		want string
		call func() error
	}{
		{"GET /v1/agent/self", func() error { _, err := c.Self(ctx); return err }},
		{"GET /v1/agent/members", func() error { _, err := c.Members(ctx); return err }},
		{"GET /v1/agent/services", func() error { _, err := c.AgentServices(ctx); return err }},
		{"GET /v1/agent/service/web:1", func() error { _, err := c.AgentService(ctx, "web:1"); return err }},
		{"GET /v1/agent/checks", func() error { _, err := c.AgentChecks(ctx); return err }},
		{"PUT /v1/agent/service/register", func() error { return c.RegisterService(ctx, ServiceDefinition{Name: "web"}) }},
		{"PUT /v1/agent/service/deregister/a%3Fb", func() error { return c.DeregisterService(ctx, "a?b") }},
		{"PUT /v1/agent/check/pass/service:web?note=all+good", func() error { return c.PassTTL(ctx, "service:web", "all good") }},
		{"PUT /v1/agent/check/warn/c", func() error { return c.WarnTTL(ctx, "c", "") }},
		{"PUT /v1/agent/check/fail/c", func() error { return c.FailTTL(ctx, "c", "") }},
		{"GET /v1/catalog/services", func() error { _, _, err := c.CatalogServices(ctx, nil); return err }},
		{"GET /v1/catalog/nodes?index=5&tag=v1&wait=30s", func() error { _, _, err := c.CatalogNodes(ctx, opts); return err }},
		{"GET /v1/catalog/service/web?index=5&tag=v1&wait=30s", func() error { _, _, err := c.CatalogService(ctx, "web", opts); return err }},
		{"GET /v1/health/service/web?passing=1", func() error { _, _, err := c.HealthService(ctx, "web", true, nil); return err }},
	}
	for i, tc := range calls {
		if err := tc.call(); err != nil {
			t.Fatalf("%s: %v", tc.want, err)
		}
		mu.Lock()
		if len(got) != i+1 || got[i] != tc.want {
			t.Fatalf("request %d = %q, want %q", i, got[len(got)-1], tc.want)
		}
		mu.Unlock()
	}
	_, meta, err := c.CatalogServices(ctx, nil)
	if err != nil || meta.Index != 7 {
		t.Fatalf("meta = %+v, %v", meta, err)
	}
}
