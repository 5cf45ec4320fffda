package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/meshwork/meshwork/ui"
)

// fixedTopology is a Provider that answers one topology.
type fixedTopology ui.Topology

func (f fixedTopology) Read(context.Context) (ui.Topology, error) { return ui.Topology(f), nil }

// TestUIMounted checks the UI on the API with ACLs on, deny by default:
// its files and settings need no token; the topology is filtered to what
// the token may read.
func TestUIMounted(t *testing.T) {
	f := newACLFixture(t)
	h := newHarnessWith(t, Config{}, f.res)
	top := fixedTopology{Provider: ui.ProviderAgents, At: time.Now(),
		Sources: []ui.Source{{Node: "n1", URL: "local", OK: true}, {Node: "n2", URL: "http://127.0.0.2:9102/metrics", OK: true}},
		Edges:   []ui.Edge{{Source: "web", Destination: "web", RPS: 1}, {Source: "web", Destination: "db", RPS: 2}, {Source: "api", Destination: "web", RPS: 3}},
	}
	if err := ui.RegisterAPI(ui.API{Topology: top, ProviderName: ui.ProviderAgents, ACLEnabled: f.res.Enabled}, h.srv.Mount); err != nil {
		t.Fatal(err)
	}
	get := func(path, token string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, h.base+path, nil)
		if token != "" {
			req.Header.Set("X-Meshwork-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/app.css"} {
		if resp, _ := get(p, ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token: %s", p, resp.Status)
		}
	}
	resp, body := get("/v1/ui/config", "")
	var settings ui.Settings
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &settings) != nil || !settings.ACLEnabled || settings.MetricsProvider != ui.ProviderAgents {
		t.Errorf("GET /v1/ui/config: %s %s", resp.Status, body)
	}

	edges := func(token string) ([]string, []string) {
		t.Helper()
		resp, body := get("/v1/ui/topology", token)
		var got ui.Topology
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
			t.Fatalf("GET /v1/ui/topology: %s %s", resp.Status, body)
		}
		var es, ss []string
		for _, e := range got.Edges {
			es = append(es, e.Source+">"+e.Destination)
		}
		for _, s := range got.Sources {
			ss = append(ss, s.Node)
		}
		return es, ss
	}
	for _, tc := range []struct {
		name         string
		token        string
		edges, nodes []string
	}{
		{"management", f.mgmt, []string{"web>web", "web>db", "api>web"}, []string{"n1", "n2"}},
		{"service web only", f.web, []string{"web>web"}, nil},
		// The anonymous token reads the catalog (docs/security.md).
		{"anonymous", "", []string{"web>web", "web>db", "api>web"}, []string{"n1", "n2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, ss := edges(tc.token)
			if !slices.Equal(es, tc.edges) || !slices.Equal(ss, tc.nodes) {
				t.Errorf("edges %v, sources %v; want %v, %v", es, ss, tc.edges, tc.nodes)
			}
		})
	}
	if resp, body := get("/v1/ui/topology", "not-a-token"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a malformed token: %s %s", resp.Status, body)
	}
	// The route is known to the API, with its requirement.
	var found bool
	for _, r := range h.srv.Routes() {
		found = found || r.Pattern == "GET "+ui.APIPathTopology
	}
	if !found {
		t.Error("GET /v1/ui/topology is not in Routes")
	}
}
