package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/httpjson"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
)

const waitLimit = 10 * time.Second

// harness runs a real local manager whose records feed a real catalog
// store, beside a static remote node, behind the API on a loopback port.
type harness struct {
	srv    *Server
	local  *local.Manager
	store  *catalog.Store
	client *api.Client
	base   string
	reg    *prometheus.Registry
	logs   *meshtest.LogBuffer

	mu     sync.Mutex
	remote []catalog.Member
	self   catalog.Record
}

func remoteNode() catalog.Member {
	return catalog.Member{Status: catalog.StatusFailed, Record: catalog.Record{
		Node: "n2", Version: 1, Addr: "10.0.0.2", TunnelPort: 7948, Server: true,
		Services: []catalog.Service{
			{ID: "web-2", Name: "web", Port: 8080, Tags: []string{"v2"}, Health: catalog.Passing},
			{ID: "db", Name: "db", Port: 5432, Address: "10.0.0.22", Health: catalog.Passing},
		},
	}}
}

func (h *harness) SetLocal(rec catalog.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.self = rec
	h.publishLocked()
}

func (h *harness) publishLocked() {
	members := []catalog.Member{{Record: h.self, Status: catalog.StatusAlive}}
	members = append(members, h.remote...)
	h.store.Publish(members)
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	return newHarnessWith(t, cfg, nil)
}

// newHarnessWith is newHarness with a resolver of ACL tokens.
func newHarnessWith(t *testing.T, cfg Config, res *acl.Resolver) *harness {
	t.Helper()
	h := &harness{store: catalog.NewStore(), reg: prometheus.NewRegistry(), remote: []catalog.Member{remoteNode()}, logs: &meshtest.LogBuffer{}}
	lm, err := local.New(local.Config{Node: "n1", DataDir: t.TempDir(), NodeInfo: local.NodeInfo{Addr: "127.0.0.1", TunnelPort: 7948}},
		local.Deps{Publisher: h, Registerer: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := lm.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lm.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version == "" {
		cfg.Version, cfg.Commit = "1.2.3", "0123456789ab"
	}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := New(cfg, Deps{Listener: l, Local: lm, Catalog: h.store, Gatherer: h.reg, Registerer: h.reg, ACL: res, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	h.srv, h.local = srv, lm
	h.base = "http://" + l.Addr().String()
	h.client = api.NewClient(l.Addr().String())
	return h
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return c
}

// raw sends a request and returns the status, the decoded error message
// (for error answers) and the headers.
func (h *harness) raw(t *testing.T, method, path, body string) (int, string, http.Header) {
	t.Helper()
	code, eb, hdr := h.rawError(t, method, path, body)
	return code, eb.Error, hdr
}

// rawError is raw returning the whole error body, which it requires to be
// the API's one error shape, with a message and a code.
func (h *harness) rawError(t *testing.T, method, path, body string) (int, httpjson.ErrorBody, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode >= 400 && !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: error answered as %q: %s", method, path, ct, b)
	}
	var eb httpjson.ErrorBody
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error == "" || eb.Code == "" {
			t.Fatalf("%s %s: error body %q is not {\"error\": ..., \"code\": ...}", method, path, b)
		}
	}
	return resp.StatusCode, eb, resp.Header
}

func apiStatus(err error) int {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func TestAgentEndpoints(t *testing.T) {
	h := newHarness(t, Config{})
	c := ctx(t)

	self, err := h.client.Self(c)
	if err != nil {
		t.Fatal(err)
	}
	if self.Node != "n1" || self.Addr != "127.0.0.1" || self.TunnelPort != 7948 || self.Build != (api.Build{Version: "1.2.3", Commit: "0123456789ab"}) || self.CatalogIndex < 2 {
		t.Fatalf("Self = %+v", self)
	}

	// The body of the example, sent as is.
	code, msg, _ := h.raw(t, "PUT", "/v1/agent/service/register",
		`{"name":"web","id":"web-1","port":8080,"address":"","tags":["v1"],"meta":{},"checks":[{"ttl":"30s"}]}`)
	if code != 200 {
		t.Fatalf("register: %d %s", code, msg)
	}
	svcs, err := h.client.AgentServices(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].ID != "web-1" || svcs[0].Health != api.HealthCritical || len(svcs[0].Checks) != 1 ||
		svcs[0].Checks[0].ID != "service:web-1" || svcs[0].Source != api.SourceAPI {
		t.Fatalf("AgentServices = %+v", svcs)
	}
	one, err := h.client.AgentService(c, "web-1")
	if err != nil || one.Name != "web" {
		t.Fatalf("AgentService = %+v, %v", one, err)
	}
	if _, err := h.client.AgentService(c, "nope"); apiStatus(err) != 404 {
		t.Fatalf("unknown AgentService: %v", err)
	}
	checks, err := h.client.AgentChecks(c)
	if err != nil || len(checks) != 1 || checks[0].ServiceID != "web-1" {
		t.Fatalf("AgentChecks = %+v, %v", checks, err)
	}

	members, err := h.client.Members(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 2 || members[0].Name != "n1" || members[0].Status != "alive" || members[1].Status != "failed" || !members[1].Server {
		t.Fatalf("Members = %+v", members)
	}

	if err := h.client.DeregisterService(c, "web-1"); err != nil {
		t.Fatal(err)
	}
	err = h.client.DeregisterService(c, "web-1")
	if apiStatus(err) != 404 || !strings.Contains(err.Error(), `service "web-1" is not registered`) {
		t.Fatalf("second deregister: %v", err)
	}
	if svcs, _ := h.client.AgentServices(c); len(svcs) != 0 {
		t.Fatalf("after deregister: %+v", svcs)
	}
}

func TestMembersSource(t *testing.T) {
	h := newHarness(t, Config{})
	// A gossip layer, when given, is the source of members.
	srv, err := New(Config{}, Deps{Local: h.local, Catalog: h.store, Gatherer: h.reg,
		Members: MembersFunc(func() []api.Member {
			return []api.Member{{Name: "z", Addr: "10.0.0.9", Port: 7946, Status: "left"}, {Name: "a", Addr: "10.0.0.1", Port: 7946, Status: "suspect"}}
		})})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.deps.Listener = l
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ms, err := api.NewClient(l.Addr().String()).Members(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "a" || ms[0].Port != 7946 || ms[1].Status != "left" {
		t.Fatalf("Members = %+v", ms)
	}
}

func TestRegisterBadBodies(t *testing.T) {
	h := newHarness(t, Config{})
	tests := []struct{ name, body, want string }{
		{"empty", ``, "body is empty"},
		{"syntax", `{"name":`, "bad request body"},
		{"unknown field", `{"name":"web","prot":80}`, `unknown field "prot"`},
		{"wrong type", `{"name":"web","port":"80"}`, `field "port"`},
		{"duration as number", `{"name":"web","checks":[{"tcp":"a:1","interval":30}]}`, `field "checks.interval"`},
		{"duration garbage", `{"name":"web","check":{"ttl":"soon"}}`, `field "check.ttl"`},
		{"port range", `{"name":"web","port":70000}`, `service "web": port: 70000 is out of range`},
		{"zero interval", `{"name":"web","checks":[{"http":"http://127.0.0.1/","interval":"0s"}]}`, `service "web": checks[0].interval: "0s" must be > 0`},
		{"no name", `{"port":1}`, `name: is required`},
		{"trailing", `{"name":"web"}{}`, "trailing data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, msg, _ := h.raw(t, "PUT", "/v1/agent/service/register", tc.body)
			if code != 400 || !strings.Contains(msg, tc.want) {
				t.Fatalf("got %d %q, want 400 containing %q", code, msg, tc.want)
			}
		})
	}
	if svcs := h.local.Services(); len(svcs) != 0 {
		t.Fatalf("a bad body registered something: %+v", svcs)
	}
	// A check ID taken by another service is a 400 too.
	if err := h.client.RegisterService(ctx(t), api.ServiceDefinition{Name: "a", Check: &api.CheckDefinition{ID: "c", TTL: api.Duration(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	code, msg, _ := h.raw(t, "PUT", "/v1/agent/service/register", `{"name":"b","check":{"id":"c","ttl":"1m"}}`)
	if code != 400 || !strings.Contains(msg, `"c" is already used by service "a"`) {
		t.Fatalf("conflict: %d %q", code, msg)
	}
}

func TestRoutesAndMethods(t *testing.T) {
	h := newHarness(t, Config{})
	tests := []struct {
		method, path string
		code         int
		errCode      string
		want, allow  string
	}{
		{"GET", "/v1/agent/service/register", 405, "method_not_allowed", "use PUT", "PUT"},
		{"POST", "/v1/agent/self", 405, "method_not_allowed", "method POST is not allowed", "GET, HEAD"},
		{"DELETE", "/v1/agent/service/deregister/x", 405, "method_not_allowed", "", "PUT"},
		{"GET", "/v1/nope", 404, "unknown_endpoint", "no endpoint GET /v1/nope", ""},
		{"GET", "/", 404, "unknown_endpoint", "no endpoint", ""},
		{"PUT", "/v1/agent/service/deregister/nope", 404, "not_found", `service "nope" is not registered`, ""},
		{"PUT", "/v1/agent/check/pass/nope", 404, "not_found", `check "nope" is not registered`, ""},
		{"GET", "/v1/catalog/services?index=abc", 400, "invalid", `query parameter "index": "abc"`, ""},
		{"GET", "/v1/catalog/services?index=1&wait=30", 400, "invalid", `query parameter "wait": "30" must be a duration`, ""},
		{"GET", "/v1/health/service/web?passing=maybe", 400, "invalid", `query parameter "passing": "maybe"`, ""},
		{"PUT", "/v1/agent/check/update/x", 400, "invalid", "body is empty", ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			code, eb, hdr := h.rawError(t, tc.method, tc.path, "")
			if code != tc.code || eb.Code != tc.errCode || !strings.Contains(eb.Error, tc.want) {
				t.Fatalf("got %d %q %q, want %d %q containing %q", code, eb.Code, eb.Error, tc.code, tc.errCode, tc.want)
			}
			if tc.allow != "" && hdr.Get("Allow") != tc.allow {
				t.Fatalf("Allow = %q, want %q", hdr.Get("Allow"), tc.allow)
			}
		})
	}
}

func TestTTLEndpoints(t *testing.T) {
	h := newHarness(t, Config{})
	c := ctx(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = h.client.RegisterService(c, api.ServiceDefinition{Name: "api", Port: 9000, Checks: []api.CheckDefinition{
		{ID: "api-ttl", TTL: api.Duration(time.Minute)},
		{ID: "api-tcp", TCP: l.Addr().String(), Interval: api.Duration(time.Minute), Status: "passing"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	passing := func() int {
		t.Helper()
		es, _, err := h.client.HealthService(c, "api", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	if n := passing(); n != 0 {
		t.Fatalf("%d passing before the first TTL update", n)
	}
	if err := h.client.PassTTL(c, "api-ttl", "up"); err != nil {
		t.Fatal(err)
	}
	if n := passing(); n != 1 {
		t.Fatalf("%d passing after PassTTL", n)
	}
	svc, _ := h.client.AgentService(c, "api")
	if svc.Checks[0].Output != "up" || svc.Health != api.HealthPassing {
		t.Fatalf("after PassTTL: %+v", svc)
	}
	if err := h.client.WarnTTL(c, "api-ttl", ""); err != nil {
		t.Fatal(err)
	}
	es, _, _ := h.client.HealthService(c, "api", false, nil)
	if len(es) != 1 || es[0].Status != api.HealthWarning {
		t.Fatalf("after WarnTTL: %+v", es)
	}
	if err := h.client.FailTTL(c, "api-ttl", "down"); err != nil {
		t.Fatal(err)
	}
	if n := passing(); n != 0 {
		t.Fatalf("%d passing after FailTTL", n)
	}
	code, msg, _ := h.raw(t, "PUT", "/v1/agent/check/update/api-ttl", `{"status":"passing","output":"via update"}`)
	if code != 200 || passing() != 1 {
		t.Fatalf("update: %d %s", code, msg)
	}
	code, msg, _ = h.raw(t, "PUT", "/v1/agent/check/update/api-ttl", `{"status":"great"}`)
	if code != 400 || !strings.Contains(msg, `field "status": "great"`) {
		t.Fatalf("bad update: %d %q", code, msg)
	}
	err = h.client.PassTTL(c, "api-tcp", "")
	if apiStatus(err) != 400 || !strings.Contains(err.Error(), "not a ttl check") {
		t.Fatalf("PassTTL on a tcp check: %v", err)
	}
}

func TestCatalogEndpoints(t *testing.T) {
	h := newHarness(t, Config{})
	c := ctx(t)
	if err := h.client.RegisterService(c, api.ServiceDefinition{Name: "web", ID: "web-1", Port: 8080, Tags: []string{"v1"},
		Ports: []api.ServicePort{{Name: "admin", Port: 9090}}}); err != nil {
		t.Fatal(err)
	}

	sums, meta, err := h.client.CatalogServices(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Index == 0 {
		t.Fatal("no index header")
	}
	if len(sums) != 2 || sums[0].Name != "db" || sums[0].Passing != 0 || sums[1].Name != "web" || sums[1].Instances != 2 ||
		sums[1].Passing != 1 || strings.Join(sums[1].Tags, ",") != "v1,v2" {
		t.Fatalf("CatalogServices = %+v", sums)
	}

	nodes, _, err := h.client.CatalogNodes(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].Name != "n1" || nodes[0].Services != 1 || nodes[1].Status != "failed" || nodes[1].TunnelPort != 7948 {
		t.Fatalf("CatalogNodes = %+v", nodes)
	}

	entries, _, err := h.client.CatalogService(c, "WEB", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("CatalogService(web) = %+v", entries)
	}
	e1, e2 := entries[0], entries[1]
	if e1.Node != "n1" || e1.Address != "127.0.0.1" || !e1.Passing || e1.Ports[0].Name != "admin" ||
		e2.Node != "n2" || e2.Passing || e2.Health != "passing" || e2.NodeStatus != "failed" {
		t.Fatalf("CatalogService(web) = %+v", entries)
	}
	db, _, _ := h.client.CatalogService(c, "db", nil)
	if len(db) != 1 || db[0].Address != "10.0.0.22" || db[0].NodeAddr != "10.0.0.2" {
		t.Fatalf("CatalogService(db) = %+v", db)
	}
	tagged, _, _ := h.client.CatalogService(c, "web", &api.QueryOptions{Tag: "v2"})
	if len(tagged) != 1 || tagged[0].ServiceID != "web-2" {
		t.Fatalf("tag v2 = %+v", tagged)
	}
	none, _, err := h.client.CatalogService(c, "nothing", nil)
	if err != nil || none == nil || len(none) != 0 {
		t.Fatalf("unknown service = %#v, %v (want an empty list)", none, err)
	}

	// The failed node's instance is critical in the health view.
	hs, _, err := h.client.HealthService(c, "web", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].Status != "passing" || hs[1].Status != "critical" || hs[1].Service.Health != "passing" || hs[1].Node.Name != "n2" {
		t.Fatalf("HealthService(web) = %+v", hs)
	}
	hs, _, _ = h.client.HealthService(c, "web", true, nil)
	if len(hs) != 1 || hs[0].Node.Name != "n1" || hs[0].Service.Port != 8080 {
		t.Fatalf("HealthService(web, passing) = %+v", hs)
	}
}

func blockingGauge(h *harness) float64 {
	mfs, err := h.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == MetricBlocking {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

func TestBlockingQueryWakesOnChange(t *testing.T) {
	h := newHarness(t, Config{})
	c := ctx(t)
	_, meta, err := h.client.CatalogServices(c, nil)
	if err != nil {
		t.Fatal(err)
	}

	type result struct {
		sums []api.CatalogServiceSummary
		meta api.QueryMeta
		err  error
	}
	done := make(chan result, 1)
	go func() {
		s, m, err := h.client.CatalogServices(c, &api.QueryOptions{Index: meta.Index, Wait: 5 * time.Minute})
		done <- result{s, m, err}
	}()
	testnet.Eventually(t, waitLimit, "the query blocks", testnet.Holds(func() bool { return blockingGauge(h) == 1 }))
	select {
	case r := <-done:
		t.Fatalf("the blocking query returned before any change: %+v", r)
	default:
	}

	if err := h.client.RegisterService(c, api.ServiceDefinition{Name: "newsvc"}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.meta.Index <= meta.Index {
		t.Fatalf("index %d did not pass %d", r.meta.Index, meta.Index)
	}
	found := false
	for _, s := range r.sums {
		found = found || s.Name == "newsvc"
	}
	if !found {
		t.Fatalf("woken answer lacks the change: %+v", r.sums)
	}

	// A stale index answers at once with the newer state.
	_, m2, err := h.client.CatalogServices(c, &api.QueryOptions{Index: meta.Index, Wait: 5 * time.Minute})
	if err != nil || m2.Index != r.meta.Index {
		t.Fatalf("stale index: %v, %v", m2, err)
	}
	// An index from the future (an earlier life of the agent) too.
	_, m3, err := h.client.CatalogNodes(c, &api.QueryOptions{Index: r.meta.Index + 1000, Wait: 5 * time.Minute})
	if err != nil || m3.Index != r.meta.Index {
		t.Fatalf("future index: %v, %v", m3, err)
	}
}

func TestBlockingQueryTimesOut(t *testing.T) {
	h := newHarness(t, Config{})
	c := ctx(t)
	before, meta, err := h.client.HealthService(c, "web", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	after, meta2, err := h.client.HealthService(c, "web", false, &api.QueryOptions{Index: meta.Index, Wait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if meta2.Index != meta.Index || len(after) != len(before) {
		t.Fatalf("timed-out query answered index %d (%d entries), want %d (%d)", meta2.Index, len(after), meta.Index, len(before))
	}
	if g := blockingGauge(h); g != 0 {
		t.Fatalf("blocking gauge %v after the query ended", g)
	}
}

func TestBlockingQueryCapsWait(t *testing.T) {
	// With MaxWait tiny, even a 10-minute wait must come back without any
	// catalog change.
	h := newHarness(t, Config{MaxWait: 20 * time.Millisecond})
	c := ctx(t)
	_, meta, err := h.client.CatalogNodes(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, meta2, err := h.client.CatalogNodes(c, &api.QueryOptions{Index: meta.Index, Wait: 10 * time.Minute})
	if err != nil || meta2.Index != meta.Index {
		t.Fatalf("capped query: %+v, %v", meta2, err)
	}
}

func TestBlockingQueryClientGoneAndClose(t *testing.T) {
	h := newHarness(t, Config{})
	_, meta, err := h.client.CatalogServices(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The client gives up: the server stops waiting.
	cctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := h.client.CatalogServices(cctx, &api.QueryOptions{Index: meta.Index})
		errc <- err
	}()
	testnet.Eventually(t, waitLimit, "the query blocks", testnet.Holds(func() bool { return blockingGauge(h) == 1 }))
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned query: %v", err)
	}
	testnet.Eventually(t, waitLimit, "the server stops waiting", testnet.Holds(func() bool { return blockingGauge(h) == 0 }))

	// Close answers a waiting query with the current state.
	done := make(chan error, 1)
	go func() {
		_, m, err := h.client.CatalogServices(ctx(t), &api.QueryOptions{Index: meta.Index})
		if err == nil && m.Index != meta.Index {
			err = errors.New("unexpected index")
		}
		done <- err
	}()
	testnet.Eventually(t, waitLimit, "the query blocks", testnet.Holds(func() bool { return blockingGauge(h) == 1 }))
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("query in flight at Close: %v", err)
	}
	if err := h.srv.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := h.client.Self(ctx(t)); !errors.Is(err, api.ErrUnreachable) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestMetricsEndpointAndNames(t *testing.T) {
	h := newHarness(t, Config{})
	c := ctx(t)
	if _, err := h.client.Self(c); err != nil {
		t.Fatal(err)
	}
	h.raw(t, "GET", "/v1/nope", "")
	var sb strings.Builder
	if _, err := h.client.Do(c, "GET", "/v1/metrics", nil, nil, &sb); err != nil {
		t.Fatal(err)
	}
	text := sb.String()
	for _, want := range []string{
		`meshwork_http_requests_total{code="200",route="GET /v1/agent/self"} 1`,
		`meshwork_http_requests_total{code="404",route="unmatched"} 1`,
		MetricRequestDuration + "_bucket",
		MetricBlocking + " 0",
		local.MetricServices,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/v1/metrics lacks %q", want)
		}
	}
	if _, err := newMetrics(h.reg); err == nil {
		t.Fatal("registering the metrics twice must fail")
	}
}

func TestMount(t *testing.T) {
	h := newHarness(t, Config{})
	err := h.srv.Mount("GET /v1/operator/ping", acl.Require(acl.ResourceAgent, "", acl.Read), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`"pong"`))
	}))
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if _, err := h.client.Do(ctx(t), "GET", "/v1/operator/ping", nil, nil, &out); err != nil || out != "pong" {
		t.Fatalf("mounted route: %q, %v", out, err)
	}
	code, _, hdr := h.raw(t, "PUT", "/v1/operator/ping", "")
	if code != 405 || hdr.Get("Allow") != "GET, HEAD" {
		t.Fatalf("PUT on a mounted GET route: %d, Allow %q", code, hdr.Get("Allow"))
	}
	open := acl.Open("test")
	if err := h.srv.Mount("GET /v1/agent/self", open, http.NotFoundHandler()); err == nil {
		t.Fatal("a conflicting Mount succeeded")
	}
	if err := h.srv.Mount("BAD PATTERN WITH SPACES", open, http.NotFoundHandler()); err == nil {
		t.Fatal("a malformed Mount succeeded")
	}
	if err := h.srv.Mount("GET /v1/operator/pong", acl.Requirement{}, http.NotFoundHandler()); err == nil {
		t.Fatal("a Mount without a requirement succeeded")
	}
	if err := h.srv.Mount("GET /v1/operator/pong", acl.CheckedInHandler(""), http.NotFoundHandler()); err == nil {
		t.Fatal("a Mount checked in its handler without saying what succeeded")
	}
}

// TestDeprecatedAlias: a route mounted as a deprecated alias is served,
// marks every answer (errors too), is listed with its successor, counts
// every call and logs only the first.
func TestDeprecatedAlias(t *testing.T) {
	h := newHarness(t, Config{})
	const pattern = "POST /v1/operator/ping"
	ping := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("fail") {
			httpjson.CodedError(w, http.StatusConflict, httpjson.CodeConflict, errors.New("refused"))
			return
		}
		httpjson.Write(w, http.StatusOK, "pong")
	})
	if err := errors.Join(
		h.srv.Mount("PUT /v1/operator/ping", acl.Open("test"), ping),
		h.srv.Mount(pattern, acl.Open("test"), httpjson.Deprecated{Successor: "PUT /v1/operator/ping", Handler: ping}),
	); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, query string
		code          int
		deprecated    bool
	}{
		{"PUT", "", 200, false},
		{"POST", "", 200, true},
		{"POST", "?fail", 409, true},
		{"POST", "", 200, true},
	} {
		code, eb, hdr := h.rawError(t, tc.method, "/v1/operator/ping"+tc.query, "")
		if code != tc.code || (hdr.Get(httpjson.DeprecationHeader) != "") != tc.deprecated {
			t.Fatalf("%s%s: %d %v, Deprecation %q", tc.method, tc.query, code, eb, hdr.Get(httpjson.DeprecationHeader))
		}
	}
	var found bool
	for _, r := range h.srv.Routes() {
		if r.Pattern == pattern {
			found = r.Successor == "PUT /v1/operator/ping"
		} else if r.Successor != "" {
			t.Errorf("route %s is listed as deprecated", r.Pattern)
		}
	}
	if !found {
		t.Fatalf("Routes does not list %s with its successor: %v", pattern, h.srv.Routes())
	}
	if n := metricValue(t, h, MetricDeprecated, `route="`+pattern+`"`); n != 3 {
		t.Fatalf("%s = %v, want 3", MetricDeprecated, n)
	}
	var logged int
	for _, l := range h.logs.Lines() {
		if strings.Contains(l, "deprecated api route called") {
			logged++
		}
	}
	if logged != 1 {
		t.Fatalf("the deprecated route was logged %d times, want once:\n%s", logged, h.logs.String())
	}
}

func TestNewAndStart(t *testing.T) {
	h := newHarness(t, Config{})
	if err := h.srv.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	deps := Deps{Local: h.local, Catalog: h.store, Gatherer: h.reg}
	for name, tc := range map[string]struct {
		cfg  Config
		deps Deps
		want string
	}{
		"no local":    {Config{}, Deps{Catalog: h.store, Gatherer: h.reg}, "local is nil"},
		"no catalog":  {Config{}, Deps{Local: h.local, Gatherer: h.reg}, "catalog is nil"},
		"no gatherer": {Config{}, Deps{Local: h.local, Catalog: h.store}, "gatherer is nil"},
		"bad addr":    {Config{Addr: "localhost"}, deps, `addr "localhost"`},
		"bad wait":    {Config{DefaultWait: time.Hour, MaxWait: time.Minute}, deps, "default_wait 1h0m0s is above max_wait 1m0s"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(tc.cfg, tc.deps)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want %q", err, tc.want)
			}
		})
	}
	// Without an injected listener, Start listens on Config.Addr.
	s, err := New(Config{Addr: "127.0.0.1:0"}, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := api.NewClient(s.Addr().String()).Self(ctx(t)); err != nil {
		t.Fatal(err)
	}
}
