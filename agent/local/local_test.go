package local

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
)

const waitLimit = 10 * time.Second

// pubRecorder is a Publisher that remembers every record it was given.
type pubRecorder struct {
	mu      sync.Mutex
	recs    []catalog.Record
	changed chan struct{}
}

func newPub() *pubRecorder { return &pubRecorder{changed: make(chan struct{})} }

func (p *pubRecorder) SetLocal(rec catalog.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recs = append(p.recs, rec)
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *pubRecorder) last() (catalog.Record, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.recs) == 0 {
		return catalog.Record{}, 0
	}
	return p.recs[len(p.recs)-1], len(p.recs)
}

// waitFor waits until the latest published record satisfies cond.
func (p *pubRecorder) waitFor(t *testing.T, what string, cond func(catalog.Record) bool) catalog.Record {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		p.mu.Lock()
		ch := p.changed
		var rec catalog.Record
		ok := len(p.recs) > 0
		if ok {
			rec = p.recs[len(p.recs)-1]
		}
		p.mu.Unlock()
		if ok && cond(rec) {
			return rec
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no published record where %s; last: %+v", what, rec)
		}
	}
}

func svcHealth(rec catalog.Record, id string) catalog.Health {
	for _, s := range rec.Services {
		if s.ID == id {
			return s.Health
		}
	}
	return ""
}

func hasSvc(rec catalog.Record, id string) bool { return svcHealth(rec, id) != "" }

type fixture struct {
	m     *Manager
	pub   *pubRecorder
	clock *clock.Manual
	reg   *prometheus.Registry
}

func newManager(t *testing.T, cfg Config, clock *clock.Manual) *fixture {
	t.Helper()
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	if cfg.NodeInfo.Addr == "" {
		cfg.NodeInfo.Addr = "127.0.0.1"
	}
	f := &fixture{pub: newPub(), clock: clock, reg: prometheus.NewRegistry()}
	deps := Deps{
		Publisher:  f.pub,
		Registerer: f.reg,
		LookupUser: func(name string) (uint32, error) {
			switch name {
			case "www-data":
				return 33, nil
			case "app":
				return 1000, nil
			}
			return 0, fmt.Errorf("user %q not found", name)
		},
	}
	if clock != nil {
		deps.Clock = clock
	}
	m, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	f.m = m
	return f
}

func sec(n int) api.Duration { return api.Duration(time.Duration(n) * time.Second) }

func ttlService(name string, ttls ...int) api.ServiceDefinition {
	d := api.ServiceDefinition{Name: name, Port: 8080}
	for i, s := range ttls {
		d.Checks = append(d.Checks, api.CheckDefinition{ID: fmt.Sprintf("%s-ttl-%d", name, i), TTL: sec(s)})
	}
	return d
}

func TestRegisterPublishesRecord(t *testing.T) {
	f := newManager(t, Config{NodeInfo: NodeInfo{Addr: "10.0.0.1", TunnelPort: 7948, Server: true, Meta: map[string]string{"raft_port": "7947"}}}, nil)
	rec := f.pub.waitFor(t, "the first record", func(catalog.Record) bool { return true })
	if rec.Node != "n1" || rec.Addr != "10.0.0.1" || rec.TunnelPort != 7948 || !rec.Server || rec.Meta["raft_port"] != "7947" || len(rec.Services) != 0 {
		t.Fatalf("first record = %+v", rec)
	}
	if err := rec.Validate(); err != nil {
		t.Fatalf("published record is invalid: %v", err)
	}
	v0 := rec.Version

	def := api.ServiceDefinition{Name: "web", ID: "web-1", Port: 8080, Ports: []api.ServicePort{{Name: "admin", Port: 9090}},
		Tags: []string{"v1"}, Meta: map[string]string{"k": "v"}}
	if err := f.m.Register(def); err != nil {
		t.Fatal(err)
	}
	rec = f.pub.waitFor(t, "web-1 is there", func(r catalog.Record) bool { return hasSvc(r, "web-1") })
	s := rec.Services[0]
	if s.Name != "web" || s.Port != 8080 || s.Ports[0] != (catalog.Port{Name: "admin", Port: 9090}) || s.Tags[0] != "v1" ||
		s.Meta["k"] != "v" || s.Health != catalog.Passing {
		t.Fatalf("service without checks = %+v, want it passing with its fields", s)
	}
	if rec.Version <= v0 {
		t.Fatalf("version %d did not grow past %d", rec.Version, v0)
	}
	if err := rec.Validate(); err != nil {
		t.Fatal(err)
	}

	svcs := f.m.Services()
	if len(svcs) != 1 || svcs[0].ID != "web-1" || svcs[0].Source != api.SourceAPI || svcs[0].Health != api.HealthPassing {
		t.Fatalf("Services() = %+v", svcs)
	}
	if _, ok := f.m.Service("web-1"); !ok {
		t.Fatal("Service(web-1) not found")
	}

	if err := f.m.Deregister("web-1"); err != nil {
		t.Fatal(err)
	}
	f.pub.waitFor(t, "web-1 is gone", func(r catalog.Record) bool { return !hasSvc(r, "web-1") })
	if err := f.m.Deregister("web-1"); !errors.Is(err, ErrServiceNotFound) {
		t.Fatalf("second Deregister: %v, want ErrServiceNotFound", err)
	}
	if err := f.m.Register(api.ServiceDefinition{Name: "bad name"}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("invalid Register: %v", err)
	}
}

func TestHealthIsWorstOfChecks(t *testing.T) {
	clock := clock.NewManual(time.Unix(1_700_000_000, 0))
	f := newManager(t, Config{}, clock)
	if err := f.m.Register(ttlService("db", 60, 60)); err != nil {
		t.Fatal(err)
	}
	f.pub.waitFor(t, "db critical", func(r catalog.Record) bool { return svcHealth(r, "db") == catalog.Critical })

	if err := f.m.UpdateTTL("db-ttl-0", "passing", "ok"); err != nil {
		t.Fatal(err)
	}
	// One of two checks passing: still critical.
	if got := f.m.Services()[0].Health; got != api.HealthCritical {
		t.Fatalf("health with one check critical = %s", got)
	}
	if err := f.m.UpdateTTL("db-ttl-1", "warning", "slow"); err != nil {
		t.Fatal(err)
	}
	f.pub.waitFor(t, "db warning", func(r catalog.Record) bool { return svcHealth(r, "db") == catalog.Warning })
	if err := f.m.UpdateTTL("db-ttl-1", "passing", ""); err != nil {
		t.Fatal(err)
	}
	f.pub.waitFor(t, "db passing", func(r catalog.Record) bool { return svcHealth(r, "db") == catalog.Passing })

	checks := f.m.Checks()
	if len(checks) != 2 || checks[0].ID != "db-ttl-0" || checks[0].Output != "ok" || checks[0].Type != api.CheckTTL ||
		checks[0].ServiceID != "db" || checks[0].Status != api.HealthPassing {
		t.Fatalf("Checks() = %+v", checks)
	}

	// TTL expiry turns the service critical, and gossip hears of it.
	clock.Advance(60 * time.Second)
	f.pub.waitFor(t, "db critical after ttl", func(r catalog.Record) bool { return svcHealth(r, "db") == catalog.Critical })

	for _, tc := range []struct {
		id, status string
		want       error
	}{
		{"nope", "passing", ErrCheckNotFound},
		{"db-ttl-0", "fine", ErrBadStatus},
	} {
		if err := f.m.UpdateTTL(tc.id, tc.status, ""); !errors.Is(err, tc.want) {
			t.Errorf("UpdateTTL(%s, %s) = %v, want %v", tc.id, tc.status, err, tc.want)
		}
	}
}

func TestRealHTTPCheckDrivesRecord(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(code.Load())) }))
	t.Cleanup(srv.Close)

	f := newManager(t, Config{}, nil)
	err := f.m.Register(api.ServiceDefinition{Name: "web", Port: 8080, Check: &api.CheckDefinition{
		HTTP: srv.URL + "/health", Interval: api.Duration(20 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	f.pub.waitFor(t, "web passing", func(r catalog.Record) bool { return svcHealth(r, "web") == catalog.Passing })
	code.Store(500)
	f.pub.waitFor(t, "web critical", func(r catalog.Record) bool { return svcHealth(r, "web") == catalog.Critical })
	if err := f.m.UpdateTTL("service:web", "passing", ""); !errors.Is(err, ErrNotTTL) {
		t.Fatalf("UpdateTTL on an http check: %v", err)
	}
	code.Store(200)
	f.pub.waitFor(t, "web passing again", func(r catalog.Record) bool { return svcHealth(r, "web") == catalog.Passing })
}

func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Services: []api.ServiceDefinition{{Name: "cfgsvc", Port: 1}}}
	f := newManager(t, cfg, nil)
	for _, d := range []api.ServiceDefinition{
		{Name: "web", ID: "web-1", Port: 8080, Check: &api.CheckDefinition{TTL: sec(30)}},
		{Name: "api", Port: 9000},
		{Name: "gone", Port: 9001},
	} {
		if err := f.m.Register(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.m.Deregister("gone"); err != nil {
		t.Fatal(err)
	}
	// A configured service removed through the API is not remembered.
	if err := f.m.Deregister("cfgsvc"); err != nil {
		t.Fatal(err)
	}
	lastVersion := f.m.Record().Version
	f.m.Close()

	path := filepath.Join(dir, "local", "services.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "local", ".services-*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}

	g := newManager(t, cfg, nil)
	var ids []string
	for _, s := range g.m.Services() {
		ids = append(ids, s.ID+"/"+s.Source)
	}
	if got, want := strings.Join(ids, ","), "api/api,cfgsvc/config,web-1/api"; got != want {
		t.Fatalf("after restart: %s, want %s", got, want)
	}
	web, _ := g.m.Service("web-1")
	if len(web.Checks) != 1 || web.Checks[0].Type != api.CheckTTL {
		t.Fatalf("restored web-1 lost its check: %+v", web)
	}
	rec := g.pub.waitFor(t, "restored record", func(r catalog.Record) bool { return hasSvc(r, "web-1") && hasSvc(r, "api") })
	if rec.Version <= lastVersion {
		t.Fatalf("version after restart %d is not above %d", rec.Version, lastVersion)
	}
}

func TestRestoreRefusesBadStateFile(t *testing.T) {
	tests := []struct{ name, content, want string }{
		{"garbage", "{not json", "services.json"},
		{"unknown version", `{"version":9,"services":[]}`, "version 9 is not supported"},
		{"invalid service", `{"version":1,"services":[{"name":"web","port":70000}]}`, `port: 70000`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "local"), 0o700)
			path := filepath.Join(dir, "local", "services.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := New(Config{Node: "n", NodeInfo: NodeInfo{Addr: "127.0.0.1"}, DataDir: dir}, Deps{Publisher: newPub()})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			err = m.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "restore") {
				t.Fatalf("Start error = %v, want one containing %q", err, tc.want)
			}
			// Nothing stored is lost: the file is untouched.
			if b, _ := os.ReadFile(path); string(b) != tc.content {
				t.Fatal("the state file was modified")
			}
		})
	}
}

func TestPersistFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	f := newManager(t, Config{DataDir: dir}, nil)
	// "local" is now a file, so the state directory cannot be created.
	if err := os.WriteFile(filepath.Join(dir, "local"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := f.m.Register(api.ServiceDefinition{Name: "web"})
	if err == nil || !strings.Contains(err.Error(), "persist") {
		t.Fatalf("Register error = %v, want a persist error", err)
	}
	if len(f.m.Services()) != 0 {
		t.Fatal("a registration that could not be saved was applied")
	}
}

func TestReload(t *testing.T) {
	clock := clock.NewManual(time.Unix(1_700_000_000, 0))
	cfg := Config{Services: []api.ServiceDefinition{ttlService("a", 60), ttlService("b", 60)}}
	f := newManager(t, cfg, clock)
	if err := f.m.Register(api.ServiceDefinition{Name: "api1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.m.UpdateTTL("a-ttl-0", "passing", ""); err != nil {
		t.Fatal(err)
	}

	// a unchanged, b removed, c added, api1 in config is shadowed.
	err := f.m.Reload([]api.ServiceDefinition{ttlService("a", 60), ttlService("c", 60), {Name: "api1", Port: 5}})
	if err != nil {
		t.Fatal(err)
	}
	rec := f.pub.waitFor(t, "c is there", func(r catalog.Record) bool { return hasSvc(r, "c") })
	if hasSvc(rec, "b") || !hasSvc(rec, "api1") {
		t.Fatalf("after reload: %+v", rec.Services)
	}
	if svcHealth(rec, "a") != catalog.Passing {
		t.Fatal("an unchanged service lost its check status on reload")
	}
	api1, _ := f.m.Service("api1")
	if api1.Source != api.SourceAPI || api1.Port != 0 {
		t.Fatalf("the API registration was replaced by the config: %+v", api1)
	}

	// A changed check restarts; an invalid set changes nothing.
	if err := f.m.Reload([]api.ServiceDefinition{ttlService("a", 30), {Name: "x", Port: -1}}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("invalid reload: %v", err)
	}
	if _, ok := f.m.Service("c"); !ok {
		t.Fatal("a failed reload removed a service")
	}
	// Two services claiming the same check ID are refused as a whole.
	dup := ttlService("d", 60)
	dup.Checks[0].ID = "a-ttl-0"
	if err := f.m.Reload([]api.ServiceDefinition{ttlService("a", 60), dup}); err == nil || !strings.Contains(err.Error(), `"a-ttl-0" is already used`) {
		t.Fatalf("conflicting reload: %v", err)
	}
	if err := f.m.Reload(nil); err != nil {
		t.Fatal(err)
	}
	rec = f.pub.waitFor(t, "only api1 left", func(r catalog.Record) bool { return len(r.Services) == 1 })
	if !hasSvc(rec, "api1") {
		t.Fatalf("after reload to nothing: %+v", rec.Services)
	}
}

func TestCheckIDConflictOnRegister(t *testing.T) {
	f := newManager(t, Config{}, nil)
	if err := f.m.Register(ttlService("a", 60)); err != nil {
		t.Fatal(err)
	}
	b := ttlService("b", 60)
	b.Checks[0].ID = "a-ttl-0"
	err := f.m.Register(b)
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), `service "b": checks[0].id: "a-ttl-0" is already used by service "a"`) {
		t.Fatalf("Register error = %v", err)
	}
	// Re-registering the owner itself is fine, and keeps a passing check
	// passing.
	if err := f.m.UpdateTTL("a-ttl-0", "passing", ""); err != nil {
		t.Fatal(err)
	}
	a := ttlService("a", 60)
	a.Tags = []string{"new"}
	if err := f.m.Register(a); err != nil {
		t.Fatal(err)
	}
	if s, _ := f.m.Service("a"); s.Health != api.HealthPassing || s.Tags[0] != "new" {
		t.Fatalf("re-registered a = %+v", s)
	}
}

func TestDeregisterCriticalAfter(t *testing.T) {
	clock := clock.NewManual(time.Unix(1_700_000_000, 0))
	dir := t.TempDir()
	f := newManager(t, Config{DataDir: dir}, clock)
	def := api.ServiceDefinition{Name: "flaky", Check: &api.CheckDefinition{
		TTL: sec(10), Status: "passing", DeregisterCriticalAfter: sec(30)}}
	if err := f.m.Register(def); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Register(api.ServiceDefinition{Name: "stable"}); err != nil {
		t.Fatal(err)
	}
	f.pub.waitFor(t, "flaky passing", func(r catalog.Record) bool { return svcHealth(r, "flaky") == catalog.Passing })
	clock.Advance(10 * time.Second)
	f.pub.waitFor(t, "flaky critical", func(r catalog.Record) bool { return svcHealth(r, "flaky") == catalog.Critical })
	clock.Advance(30 * time.Second)
	f.pub.waitFor(t, "flaky removed", func(r catalog.Record) bool { return !hasSvc(r, "flaky") && hasSvc(r, "stable") })
	if _, ok := f.m.Service("flaky"); ok {
		t.Fatal("flaky is still registered")
	}
	b, _ := os.ReadFile(filepath.Join(dir, "local", "services.json"))
	if strings.Contains(string(b), "flaky") || !strings.Contains(string(b), "stable") {
		t.Fatalf("state file after reaping: %s", b)
	}
}

func TestSetNodeInfo(t *testing.T) {
	f := newManager(t, Config{}, nil)
	if err := f.m.SetNodeInfo(NodeInfo{Addr: "10.1.2.3", TunnelPort: 7000}); err != nil {
		t.Fatal(err)
	}
	f.pub.waitFor(t, "new addr", func(r catalog.Record) bool { return r.Addr == "10.1.2.3" && r.TunnelPort == 7000 })
	if err := f.m.SetNodeInfo(NodeInfo{Addr: "nope"}); err == nil || !strings.Contains(err.Error(), `addr "nope"`) {
		t.Fatalf("bad SetNodeInfo: %v", err)
	}
	if got := f.m.NodeInfo().Addr; got != "10.1.2.3" {
		t.Fatalf("NodeInfo().Addr = %s", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no node", Config{NodeInfo: NodeInfo{Addr: "127.0.0.1"}}, "node is empty"},
		{"bad addr", Config{Node: "n", NodeInfo: NodeInfo{Addr: "x"}}, `addr "x"`},
		{"bad tunnel port", Config{Node: "n", NodeInfo: NodeInfo{Addr: "::1", TunnelPort: 1 << 20}}, "tunnel_port 1048576"},
		{"bad service", Config{Node: "n", NodeInfo: NodeInfo{Addr: "::1"}, Services: []api.ServiceDefinition{{Name: "a"}, {Name: "-"}}}, `services[1]: service "-": name`},
		{"dup id", Config{Node: "n", NodeInfo: NodeInfo{Addr: "::1"}, Services: []api.ServiceDefinition{{Name: "a"}, {Name: "b", ID: "a"}}}, `services[1]: service "a": id: "a" is also the id of services[0]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
			if _, err := New(tc.cfg, Deps{Publisher: newPub()}); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	if _, err := New(Config{Node: "n", NodeInfo: NodeInfo{Addr: "::1"}}, Deps{}); err == nil {
		t.Fatal("New accepted a nil publisher")
	}
}

func TestLifecycle(t *testing.T) {
	pub := newPub()
	m, err := New(Config{Node: "n", NodeInfo: NodeInfo{Addr: "127.0.0.1"}}, Deps{Publisher: pub})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Register(api.ServiceDefinition{Name: "a"}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Register before Start: %v", err)
	}
	if _, n := pub.last(); n != 0 {
		t.Fatal("New published")
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	m.Close()
	m.Close()
	if err := m.Register(api.ServiceDefinition{Name: "a"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after Close: %v", err)
	}
}

func TestDataPlaneLookups(t *testing.T) {
	f := newManager(t, Config{Services: []api.ServiceDefinition{
		{Name: "web", ID: "web-1", Port: 8080, Ports: []api.ServicePort{{Name: "admin", Port: 9090}}, User: "www-data"},
		{Name: "web", ID: "web-2", Port: 8080, Address: "127.0.0.2", User: "33",
			Check: &api.CheckDefinition{TTL: sec(60)}},
		{Name: "db", Port: 5432, User: "app"},
		{Name: "cache", Port: 6379, User: "app"},
		{Name: "lone", Port: 1, User: "ghost"},
	}}, nil)

	got := f.m.LocalInstances("WEB", 8080)
	if len(got) != 2 || got[0].ServiceID != "web-1" || got[0].Addr.String() != "127.0.0.1:8080" || got[0].Health != catalog.Passing ||
		got[1].ServiceID != "web-2" || got[1].Addr.String() != "127.0.0.2:8080" || got[1].Health != catalog.Critical {
		t.Fatalf("LocalInstances(web, 8080) = %+v (passing first)", got)
	}
	if got := f.m.LocalInstances("web", 9090); len(got) != 1 || got[0].ServiceID != "web-1" {
		t.Fatalf("LocalInstances(web, 9090) = %+v", got)
	}
	if got := f.m.LocalInstances("web", 1); len(got) != 0 {
		t.Fatalf("undeclared port: %+v", got)
	}

	if name, err := f.m.ServiceByUID(33); err != nil || name != "web" {
		t.Fatalf("ServiceByUID(33) = %q, %v", name, err)
	}
	if name, err := f.m.ServiceByUser("www-data"); err != nil || name != "web" {
		t.Fatalf("ServiceByUser(www-data) = %q, %v", name, err)
	}
	if _, err := f.m.ServiceByUID(1000); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("ServiceByUID(1000): %v, want ErrAmbiguous", err)
	}
	if _, err := f.m.ServiceByUID(4242); !errors.Is(err, ErrNoService) {
		t.Fatalf("ServiceByUID(4242): %v, want ErrNoService", err)
	}
	if name, err := f.m.ServiceByUser("ghost"); err != nil || name != "lone" {
		t.Fatalf("ServiceByUser(ghost) = %q, %v (an unresolvable name still matches itself)", name, err)
	}

	// The view follows changes.
	if err := f.m.Deregister("web-1"); err != nil {
		t.Fatal(err)
	}
	if got := f.m.LocalInstances("web", 9090); len(got) != 0 {
		t.Fatalf("after deregistering web-1: %+v", got)
	}
}

func TestMetricNames(t *testing.T) {
	f := newManager(t, Config{Services: []api.ServiceDefinition{ttlService("a", 60)}}, nil)
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{MetricServices, MetricChecks, MetricPublishes, MetricReaped} {
		if !got[name] {
			t.Errorf("metric %s missing; have %v", name, got)
		}
	}
}

// TestChangedFollowsPublications checks the watch of the data plane: the
// channel taken before a change closes after it, Services then shows the
// change, and a channel taken after the last change stays open.
func TestChangedFollowsPublications(t *testing.T) {
	f := newManager(t, Config{}, nil)
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(waitLimit):
			t.Fatalf("Changed did not close after %s", what)
		}
	}
	steps := []struct {
		name   string
		change func() error
		want   int // services after the change
	}{
		{"register", func() error { return f.m.Register(api.ServiceDefinition{Name: "web", Port: 8080, User: "app"}) }, 1},
		{"register another", func() error { return f.m.Register(api.ServiceDefinition{Name: "api", Port: 9090}) }, 2},
		{"deregister", func() error { return f.m.Deregister("web") }, 1},
		{"reload", func() error { return f.m.Reload([]api.ServiceDefinition{{Name: "db", Port: 5432}}) }, 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			ch := f.m.Changed()
			if err := st.change(); err != nil {
				t.Fatal(err)
			}
			wait(ch, st.name)
			if got := len(f.m.Services()); got != st.want {
				t.Fatalf("after %s: %d services, want %d", st.name, got, st.want)
			}
		})
	}
	quiet := f.m.Changed()
	select {
	case <-quiet:
		t.Fatal("Changed closed with no publication")
	default:
	}
	if err := f.m.SetNodeInfo(NodeInfo{Addr: "127.0.0.1", TunnelPort: 7948}); err != nil {
		t.Fatal(err)
	}
	wait(quiet, "SetNodeInfo")
}

// A restarted agent's checks resume from what its predecessor published:
// a service that was passing is published passing at once, not critical
// until its first probe; the others start critical as always, and a TTL
// check that is not updated still expires.
func TestChecksResumeFromPrevious(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	f := newManager(t, Config{
		Services: []api.ServiceDefinition{ttlService("a", 30), ttlService("b", 30), ttlService("c", 30)},
		Previous: func() map[string]catalog.Health {
			return map[string]catalog.Health{"a": catalog.Passing, "b": catalog.Critical}
		},
	}, clk)
	f.pub.mu.Lock()
	first := f.pub.recs[0]
	f.pub.mu.Unlock()
	for id, want := range map[string]catalog.Health{"a": catalog.Passing, "b": catalog.Critical, "c": catalog.Critical} {
		if got := svcHealth(first, id); got != want {
			t.Errorf("first record: %s is %q, want %q", id, got, want)
		}
	}
	clk.Advance(31 * time.Second)
	f.pub.waitFor(t, "a's TTL expired", func(r catalog.Record) bool { return svcHealth(r, "a") == catalog.Critical })
}
