package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport"
)

func policySet(t *testing.T, src string) *policy.Set {
	t.Helper()
	docs, err := policy.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	entries := make([]policy.Entry, len(docs))
	for i, d := range docs {
		entries[i] = policy.Entry{Document: d, CreateIndex: 1, ModifyIndex: 1}
	}
	return policy.NewSet(1, entries)
}

func TestPolicyReaderAllowed(t *testing.T) {
	node := transport.Source{ID: "spiffe://td/node/n1", Node: "n1"}
	api := transport.Source{ID: "spiffe://td/svc/api", Service: "api", Node: "n1"}
	apiOnN2 := transport.Source{ID: "spiffe://td/svc/api", Service: "api", Node: "n2"}
	const allowAPI = "kind: Intention\nname: web\nsources: [{name: api, action: allow}]\n---\n"
	tests := []struct {
		name     string
		docs     string
		fallback string
		src      transport.Source
		want     bool
	}{
		{"no policy, default deny", "", "deny", api, false},
		{"no policy, default allow (dev)", "", "allow", node, true},
		{"IntentionDefaults beats the agent default", "kind: IntentionDefaults\nname: default\naction: allow\n", "deny", node, true},
		{"named source allowed", "kind: Intention\nname: web\nsources: [{name: api, action: allow}]\n", "deny", api, true},
		{"node caller does not match a named source", "kind: Intention\nname: web\nsources: [{name: api, action: allow}]\n", "deny", node, false},
		{"node caller matches *", "kind: Intention\nname: web\nsources: [{name: \"*\", action: allow}]\n", "deny", node, true},
		{"deny * under allow default", "kind: Intention\nname: web\nsources: [{name: \"*\", action: deny}]\n", "allow", node, false},
		{"specific allow beats * deny", "kind: Intention\nname: web\nsources: [{name: api, action: allow}, {name: \"*\", action: deny}]\n", "deny", api, true},
		{"node caller and * deny, specific allow", "kind: Intention\nname: web\nsources: [{name: api, action: allow}, {name: \"*\", action: deny}]\n", "allow", node, false},
		{"service held by a listed node", allowAPI + "kind: ServiceIdentity\nname: api\nnodes: [n1]\n", "deny", api, true},
		{"service held by an unlisted node", allowAPI + "kind: ServiceIdentity\nname: api\nnodes: [n1]\n", "allow", apiOnN2, false},
		{"the * ServiceIdentity refuses", allowAPI + "kind: ServiceIdentity\nname: \"*\"\nnodes: []\n", "allow", api, false},
		{"ServiceIdentity does not concern node callers", "kind: ServiceIdentity\nname: \"*\"\nnodes: []\n", "allow", node, true},
		{"deny mode refuses a service no document covers", allowAPI + "kind: ServiceIdentityDefaults\nname: default\nmode: deny\n", "allow", api, false},
		{"deny mode spares a listed node", allowAPI + "kind: ServiceIdentityDefaults\nname: default\nmode: deny\n---\nkind: ServiceIdentity\nname: api\nnodes: [n1]\n", "deny", api, true},
		{"deny mode does not concern node callers", "kind: ServiceIdentityDefaults\nname: default\nmode: deny\n", "allow", node, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set := policy.Empty()
			if tc.docs != "" {
				set = policySet(t, tc.docs)
			}
			r := newPolicyReader(func() *policy.Set { return set }, tc.fallback)
			got, reason := r.Allowed(tc.src, "web")
			if got != tc.want {
				t.Fatalf("Allowed(%+v, web) = %v (%s), want %v", tc.src, got, reason, tc.want)
			}
			if reason == "" {
				t.Fatal("no reason given")
			}
		})
	}
}

// TestPolicyReaderMayHold: the caller's side of ServiceIdentity, as the
// data plane asks it before it sends a connection to an instance.
func TestPolicyReaderMayHold(t *testing.T) {
	tests := []struct {
		name, docs, node string
		want             bool
	}{
		{"no document", "", "n3", true},
		{"listed node", "kind: ServiceIdentity\nname: web\nnodes: [n2]\n", "n2", true},
		{"unlisted node", "kind: ServiceIdentity\nname: web\nnodes: [n2]\n", "n3", false},
		{"deny mode", "kind: ServiceIdentityDefaults\nname: default\nmode: deny\n", "n2", false},
		{"allow mode", "kind: ServiceIdentityDefaults\nname: default\nmode: allow\n", "n2", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set := policy.Empty()
			if tc.docs != "" {
				set = policySet(t, tc.docs)
			}
			var ip transport.IdentityPolicy = newPolicyReader(func() *policy.Set { return set }, "deny")
			if got, why := ip.MayHold(tc.node, "web"); got != tc.want || why == "" {
				t.Fatalf("MayHold(%s, web) = %v (%q), want %v", tc.node, got, why, tc.want)
			}
		})
	}
}

func TestPolicyReaderFollowsChanges(t *testing.T) {
	cur := policy.Empty()
	r := newPolicyReader(func() *policy.Set { return cur }, "allow")
	src := transport.Source{Service: "api"}
	if ok, _ := r.Allowed(src, "web"); !ok {
		t.Fatal("default allow refused")
	}
	cur = policySet(t, "kind: Intention\nname: web\nsources: [{name: api, action: deny}]\n")
	if ok, _ := r.Allowed(src, "web"); ok {
		t.Fatal("a new policy is not read on the next call")
	}
}

func TestSplitTargets(t *testing.T) {
	set := policySet(t, `kind: Split
name: web
splits:
  - weight: 90
    subset: {tags: [v1]}
  - weight: 10
    subset: {tags: [v2], meta: {zone: a}}
---
kind: Split
name: shop
service: shop-v2
splits:
  - weight: 100
    subset: {}
`)
	r := newPolicyReader(func() *policy.Set { return set }, "deny")
	got := r.SplitFor("web")
	want := []transport.SplitTarget{{Tags: []string{"v1"}, Weight: 90}, {Tags: []string{"v2"}, Meta: map[string]string{"zone": "a"}, Weight: 10}}
	if len(got) != 2 || got[0].Weight != 90 || got[1].Weight != 10 || !slices.Equal(got[0].Tags, want[0].Tags) ||
		!slices.Equal(got[1].Tags, want[1].Tags) || got[1].Meta["zone"] != "a" || got[0].Service != "" {
		t.Fatalf("SplitFor(web) = %+v, want %+v", got, want)
	}
	if got := r.SplitFor("shop"); len(got) != 1 || got[0].Service != "shop-v2" || got[0].Weight != 100 {
		t.Fatalf("SplitFor(shop) = %+v, want shop-v2 at 100", got)
	}
	if got := r.SplitFor("db"); got != nil {
		t.Fatalf("SplitFor(db) = %+v, want none", got)
	}
}

func TestLocalServicesConversion(t *testing.T) {
	svcs := []api.AgentService{
		{ID: "web-1", Name: "web", Address: "10.0.0.5", Port: 8080, Ports: []api.ServicePort{{Name: "admin", Port: 9090}}, User: "www-data"},
		{ID: "web-2", Name: "web", Port: 8081},
		{ID: "app", Name: "app", Upstreams: []api.Upstream{{Service: "web", LocalBind: "127.0.0.1:9191", Port: 9090}}},
	}
	got := localServices(svcs)
	want := []transport.LocalService{
		{Name: "web", Address: "10.0.0.5", Ports: []int{8080, 9090}, User: "www-data"},
		{Name: "web", Ports: []int{8081}},
		{Name: "app", Upstreams: []transport.Upstream{{Service: "web", LocalBind: "127.0.0.1:9191", Port: 9090}}},
	}
	if !slices.EqualFunc(got, want, equalLocal) {
		t.Fatalf("localServices = %+v\nwant %+v", got, want)
	}
	if names := serviceNames(svcs); !slices.Equal(names, []string{"app", "web"}) {
		t.Fatalf("serviceNames = %v", names)
	}
	changed := slices.Clone(want)
	changed[1].Ports = []int{8082}
	if slices.EqualFunc(got, changed, equalLocal) {
		t.Fatal("equalLocal misses a port change")
	}
}

func TestAuthorizeServices(t *testing.T) {
	st := catalog.NewStore()
	member := func(services ...string) catalog.Member {
		m := catalog.Member{Record: catalog.Record{Node: "c1", Version: 1, Addr: "10.0.0.1"}, Status: catalog.StatusAlive}
		for _, s := range services {
			m.Services = append(m.Services, catalog.Service{ID: s, Name: s, Health: catalog.Passing})
		}
		return m
	}
	st.Publish([]catalog.Member{member("web")})
	auth := authorizeServices(st, 200*time.Millisecond)
	tests := []struct {
		name     string
		node     string
		services []string
		want     string // "" means allowed
	}{
		{"registered", "c1", []string{"web"}, ""},
		{"case does not matter", "c1", []string{"WEB"}, ""},
		{"none", "c1", nil, ""},
		{"not registered", "c1", []string{"web", "db"}, `does not register service "db"`},
		{"unknown node", "x9", []string{"web"}, `node "x9" is not in the gossip catalog`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := auth(tc.node, tc.services)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("authorize(%s, %v) = %v, want %q", tc.node, tc.services, err, tc.want)
			}
		})
	}
	// A record that arrives during the wait is taken.
	auth = authorizeServices(st, time.Minute)
	errc := make(chan error, 1)
	go func() { errc <- auth("c1", []string{"web", "api"}) }()
	st.Publish([]catalog.Member{member("web", "api")})
	if err := <-errc; err != nil {
		t.Fatalf("record published during the wait: %v", err)
	}
}

func TestLiveNodes(t *testing.T) {
	st := catalog.NewStore()
	st.Publish([]catalog.Member{
		{Record: catalog.Record{Node: "a", Addr: "10.0.0.1"}, Status: catalog.StatusAlive},
		{Record: catalog.Record{Node: "b", Addr: "10.0.0.2"}, Status: catalog.StatusFailed},
		{Record: catalog.Record{Node: "c", Addr: "10.0.0.3"}, Status: catalog.StatusAlive},
	})
	if got := liveNodes(st)(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("liveNodes = %v", got)
	}
}

func TestResetKeyKeptAcrossRestarts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tunnel", "reset.key")
	k1, err := loadResetKey(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	k2, err := loadResetKey(p)
	if err != nil || *k1 != *k2 {
		t.Fatalf("second load gave another key (%v)", err)
	}
	if *k1 == [32]byte{} {
		t.Fatal("zero key")
	}
	if err := os.WriteFile(p, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadResetKey(p); err == nil || !strings.Contains(err.Error(), "5 bytes, want 32") {
		t.Fatalf("truncated key: %v", err)
	}
}

func TestMetricNamesAsDocumented(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newTunnelMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.refusedCerts.Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "meshwork_tunnel_peer_certificates_refused_total" || MetricTunnelRefusedCerts != mfs[0].GetName() {
		t.Fatalf("metrics %v", mfs)
	}
	doc, err := os.ReadFile("../docs/tunnels.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), MetricTunnelRefusedCerts) {
		t.Errorf("docs/tunnels.md does not list %s", MetricTunnelRefusedCerts)
	}
}
