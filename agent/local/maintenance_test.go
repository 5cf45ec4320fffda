package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
)

func hasCheck(checks []api.CheckStatus, id string) (api.CheckStatus, bool) {
	for _, c := range checks {
		if c.ID == id {
			return c, true
		}
	}
	return api.CheckStatus{}, false
}

// TestServiceMaintenance takes one service out of service and back: it is
// published critical with a maintenance check carrying the reason, the
// other services are untouched, the data plane sees it critical, the mode
// survives a restart from the data directory, and ends with disable or
// with the service's deregistration.
func TestServiceMaintenance(t *testing.T) {
	dir := t.TempDir()
	f := newManager(t, Config{DataDir: dir, Services: []api.ServiceDefinition{{Name: "db", Port: 5432}}}, nil)
	if err := f.m.Register(api.ServiceDefinition{Name: "web", ID: "web-1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	if err := f.m.SetServiceMaintenance("web-1", true, "kernel upgrade"); err != nil {
		t.Fatal(err)
	}
	rec := f.pub.waitFor(t, "web-1 critical", func(r catalog.Record) bool { return svcHealth(r, "web-1") == catalog.Critical })
	if svcHealth(rec, "db") != catalog.Passing {
		t.Fatalf("db is %s, want passing: only web-1 is in maintenance", svcHealth(rec, "db"))
	}
	c, ok := hasCheck(f.m.Checks(), "_service_maintenance:web-1")
	if !ok || c.Status != api.HealthCritical || c.Output != "kernel upgrade" || c.ServiceName != "web" || c.Type != api.CheckMaintenance {
		t.Fatalf("maintenance check = %+v (found %v)", c, ok)
	}
	if svc, _ := f.m.Service("web-1"); svc.Health != api.HealthCritical {
		t.Fatalf("Service(web-1).Health = %s, want critical", svc.Health)
	}
	if inst := f.m.LocalInstances("web", 8080); len(inst) != 1 || inst[0].Health != catalog.Critical {
		t.Fatalf("data plane sees %+v, want web-1 critical", inst)
	}
	st := f.m.Maintenance()
	if st.Node != nil || len(st.Services) != 1 || st.Services[0].ServiceID != "web-1" || st.Services[0].Reason != "kernel upgrade" {
		t.Fatalf("Maintenance() = %+v", st)
	}
	if err := f.m.SetServiceMaintenance("nope", true, ""); !errors.Is(err, ErrServiceNotFound) {
		t.Fatalf("maintenance of an unknown service: %v, want ErrServiceNotFound", err)
	}
	if err := f.m.SetServiceMaintenance("web-1", true, "bad\nreason"); !errors.Is(err, ErrBadReason) {
		t.Fatalf("a reason with a newline: %v, want ErrBadReason", err)
	}

	// A restart keeps the service out of service.
	f.m.Close()
	g := newManager(t, Config{DataDir: dir}, nil)
	g.pub.waitFor(t, "web-1 critical after a restart", func(r catalog.Record) bool { return svcHealth(r, "web-1") == catalog.Critical })

	if err := g.m.SetServiceMaintenance("web-1", false, ""); err != nil {
		t.Fatal(err)
	}
	g.pub.waitFor(t, "web-1 passing again", func(r catalog.Record) bool { return svcHealth(r, "web-1") == catalog.Passing })
	if _, ok := hasCheck(g.m.Checks(), "_service_maintenance:web-1"); ok {
		t.Fatal("the maintenance check is still there after disable")
	}

	// Deregistration ends the maintenance: a new service under the ID
	// starts in service.
	if err := g.m.SetServiceMaintenance("web-1", true, ""); err != nil {
		t.Fatal(err)
	}
	if err := g.m.Deregister("web-1"); err != nil {
		t.Fatal(err)
	}
	if err := g.m.Register(api.ServiceDefinition{Name: "web", ID: "web-1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	g.pub.waitFor(t, "the new web-1 passing", func(r catalog.Record) bool { return svcHealth(r, "web-1") == catalog.Passing })
}

// TestMaintenanceCheckIDsReserved: a service whose check takes an ID of
// maintenance mode is refused, whether it comes through Register (the
// API) or with the config at start, so that the maintenance check is
// listed once and is the agent's own.
func TestMaintenanceCheckIDsReserved(t *testing.T) {
	f := newManager(t, Config{}, nil)
	for _, id := range []string{api.NodeMaintenanceCheckID, api.ServiceMaintenanceCheckPrefix + "web-1", "_service_maintenance"} {
		def := api.ServiceDefinition{Name: "web", ID: "web-1", Port: 8080, Checks: []api.CheckDefinition{{ID: id, TTL: sec(30)}}}
		err := f.m.Register(def)
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), `checks[0].id: "`+id+`" begins with`) || !strings.Contains(err.Error(), "reserved for the checks of maintenance mode") {
			t.Fatalf("Register with check %q: %v, want the reserved prefix named", id, err)
		}
	}
	if err := f.m.Register(api.ServiceDefinition{Name: "web", ID: "web-1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	if err := f.m.SetNodeMaintenance(true, "reboot"); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range f.m.Checks() {
		if c.ID == api.NodeMaintenanceCheckID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the node maintenance check is listed %d times, want once", n)
	}

	_, err := New(Config{Node: "n1", NodeInfo: NodeInfo{Addr: "127.0.0.1"}, Services: []api.ServiceDefinition{
		{Name: "db", Port: 5432, Check: &api.CheckDefinition{ID: api.NodeMaintenanceCheckID, TTL: sec(30)}},
	}}, Deps{Publisher: newPub()})
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), `check.id: "_node_maintenance" begins with "_node_maintenance"`) {
		t.Fatalf("New with a configured check of a reserved ID: %v", err)
	}
}

// TestNodeMaintenance puts the whole node in maintenance: every service is
// published critical, the node check is listed, and it survives a
// restart; a corrupt state file stops the start with an error naming it.
func TestNodeMaintenance(t *testing.T) {
	dir := t.TempDir()
	f := newManager(t, Config{DataDir: dir, Services: []api.ServiceDefinition{{Name: "db", Port: 5432}, {Name: "web", Port: 80}}}, nil)
	if err := f.m.SetNodeMaintenance(true, ""); err != nil {
		t.Fatal(err)
	}
	allCritical := func(r catalog.Record) bool {
		return svcHealth(r, "db") == catalog.Critical && svcHealth(r, "web") == catalog.Critical
	}
	f.pub.waitFor(t, "every service critical", allCritical)
	c, ok := hasCheck(f.m.Checks(), api.NodeMaintenanceCheckID)
	if !ok || c.Status != api.HealthCritical || !strings.Contains(c.Output, "no reason was provided") || c.ServiceID != "" {
		t.Fatalf("node maintenance check = %+v (found %v)", c, ok)
	}
	f.m.Close()

	g := newManager(t, Config{DataDir: dir, Services: []api.ServiceDefinition{{Name: "db", Port: 5432}, {Name: "web", Port: 80}}}, nil)
	g.pub.waitFor(t, "every service critical after a restart", allCritical)
	if g.m.Maintenance().Node == nil {
		t.Fatal("node maintenance lost across a restart")
	}
	if err := g.m.SetNodeMaintenance(false, ""); err != nil {
		t.Fatal(err)
	}
	g.pub.waitFor(t, "every service passing", func(r catalog.Record) bool {
		return svcHealth(r, "db") == catalog.Passing && svcHealth(r, "web") == catalog.Passing
	})
	g.m.Close()

	path := filepath.Join(dir, "local", "maintenance.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"nodes":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Node: "n1", DataDir: dir, NodeInfo: NodeInfo{Addr: "127.0.0.1"}}, Deps{Publisher: newPub()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Start(context.Background()); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Start with a corrupt maintenance file: %v, want an error naming it", err)
	}
}
