package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/testnet"
)

// TestServiceMaintenanceLeavesDNS puts a service in maintenance through the
// API of a real agent: DNS stops answering its name, the health endpoint
// the data plane's pools follow shows it critical, and both take it back
// when the maintenance ends. The node's maintenance does the same for
// every service.
func TestServiceMaintenanceLeavesDNS(t *testing.T) {
	cfg := newConfig(t, "maint", true, "127.248.0.0/16")
	cfg.Ports.Tunnel = -1
	cfg.Services = []api.ServiceDefinition{{Name: "web", Port: backend(t, "web")}, {Name: "db", Port: backend(t, "db")}}
	a := startAgent(t, cfg)
	c := api.NewClient(a.HTTPAddr())
	ctx := context.Background()

	answers := func(name string, want bool) func() error {
		return func() error {
			ips, err := a.lookupA(name + ".service.mesh")
			if err != nil {
				return err
			}
			if got := len(ips) > 0; got != want {
				return fmt.Errorf("%s answers %v, want answered=%v", name, ips, want)
			}
			passing, _, err := c.HealthService(ctx, name, true, nil)
			if err != nil {
				return err
			}
			if got := len(passing) > 0; got != want {
				return fmt.Errorf("%s has %d passing instances, want passing=%v", name, len(passing), want)
			}
			return nil
		}
	}
	testnet.Eventually(t, wait, "web is answered", answers("web", true))

	if _, err := c.ServiceMaintenance(ctx, "web", true, "reindexing"); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "web in maintenance is no longer answered", answers("web", false))
	testnet.Eventually(t, wait, "db is still answered", answers("db", true))
	checks, err := c.AgentChecks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ch := range checks {
		found = found || (ch.ID == api.ServiceMaintenanceCheckPrefix+"web" && ch.Output == "reindexing" && ch.Status == api.HealthCritical)
	}
	if !found {
		t.Fatalf("no critical _service_maintenance:web check with the reason in %+v", checks)
	}

	if _, err := c.ServiceMaintenance(ctx, "web", false, ""); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "web is answered again", answers("web", true))

	if _, err := c.NodeMaintenance(ctx, true, ""); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "web leaves with the node", answers("web", false))
	testnet.Eventually(t, wait, "db leaves with the node", answers("db", false))
	if _, err := c.NodeMaintenance(ctx, false, ""); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "db is back", answers("db", true))

	// Bad requests name what is wrong.
	var ae *api.Error
	if _, err := c.ServiceMaintenance(ctx, "nope", true, ""); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("maintenance of an unknown service: %v, want 404", err)
	}
	if _, err := c.Do(ctx, http.MethodPut, "/v1/agent/maintenance", nil, nil, nil); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("maintenance without enable=: %v, want 400", err)
	}
}
