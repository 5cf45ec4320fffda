//go:build e2e

package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
)

// startCluster starts one agent per host, all joining the first, with web
// registered from the config of every host but the first, and waits until
// every agent sees every other alive.
func startCluster(t *testing.T, nw *Net) []*Agent {
	t.Helper()
	enc, ck := Key(), Key()
	var agents []*Agent
	for i, h := range nw.Hosts {
		opts := AgentOptions{Encrypt: enc, ClusterKey: ck, Join: []string{nw.Hosts[0].Addr}}
		if i > 0 {
			opts.Extra = fmt.Sprintf("services:\n  - name: web\n    id: web-%s\n    port: 8080\n", h.Name)
		}
		agents = append(agents, h.StartAgent(opts))
	}
	for _, a := range agents {
		Eventually(t, 30*time.Second, a.Host.Name+" sees every member alive", func() error {
			ms, err := a.Members()
			if err != nil {
				return err
			}
			for _, h := range nw.Hosts {
				if ms[h.Name].Status != api.MemberAlive {
					return fmt.Errorf("%s is %q", h.Name, ms[h.Name].Status)
				}
			}
			return nil
		})
	}
	return agents
}

// passingWeb returns the node names of the passing web instances a sees.
func passingWeb(a *Agent) (map[string]bool, error) {
	var es []api.CatalogServiceEntry
	if err := a.JSON(&es, "catalog", "service", "web", "--passing"); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range es {
		out[e.Node] = true
	}
	return out, nil
}

// TestKilledNodeIsMarkedFailed kills an agent with SIGKILL and checks that
// every other agent marks it failed and stops returning its instance.
func TestKilledNodeIsMarkedFailed(t *testing.T) {
	nw := New(t, 3)
	agents := startCluster(t, nw)
	for _, a := range agents {
		Eventually(t, 30*time.Second, a.Host.Name+" sees both web instances", func() error {
			p, err := passingWeb(a)
			if err != nil {
				return err
			}
			if !p["h2"] || !p["h3"] {
				return fmt.Errorf("passing web on %v", p)
			}
			return nil
		})
	}

	victim := agents[2]
	victim.Proc.Signal(syscall.SIGKILL)
	if _, ok := victim.Proc.Wait(10 * time.Second); !ok {
		t.Fatal("the killed agent did not exit")
	}
	for _, a := range agents[:2] {
		Eventually(t, 30*time.Second, a.Host.Name+" marks h3 failed and drops its instance", func() error {
			st, err := a.StatusOf("h3")
			if err != nil {
				return err
			}
			if st != api.MemberFailed {
				return fmt.Errorf("h3 is %q", st)
			}
			p, err := passingWeb(a)
			if err != nil {
				return err
			}
			if p["h3"] || !p["h2"] {
				return fmt.Errorf("passing web on %v, want only h2", p)
			}
			return nil
		})
	}
}

// TestStoppedNodeIsNotDeclaredDead freezes an agent for 2 s with SIGSTOP,
// as a long GC pause or a VM stall would, and checks that no other agent
// ever declares it failed.
func TestStoppedNodeIsNotDeclaredDead(t *testing.T) {
	nw := New(t, 3)
	agents := startCluster(t, nw)
	victim := agents[2]

	// Watch the other agents throughout the stall and the time after it in
	// which a declaration of death could still arrive.
	var seen []string
	watch := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			for _, a := range agents[:2] {
				if st, err := a.StatusOf("h3"); err == nil && st == api.MemberFailed {
					seen = append(seen, a.Host.Name+" saw h3 failed")
				}
			}
		}
	}
	victim.Proc.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	watch(2 * time.Second)
	victim.Proc.Signal(syscall.SIGCONT)
	t.Logf("h3 was stopped for %s", time.Since(stopped).Round(time.Millisecond))
	watch(5 * time.Second)
	if len(seen) > 0 {
		t.Fatalf("a stalled node was declared dead: %v", seen)
	}
	for _, a := range agents[:2] {
		if st, err := a.StatusOf("h3"); err != nil || st != api.MemberAlive {
			t.Fatalf("%s: h3 is %q (%v) after the stall, want alive", a.Host.Name, st, err)
		}
	}
}

// TestLeaveIsNotFailure stops one agent with SIGTERM (a graceful leave) and
// another with SIGKILL, and checks that the survivor tells them apart.
func TestLeaveIsNotFailure(t *testing.T) {
	nw := New(t, 3)
	agents := startCluster(t, nw)

	agents[1].Proc.Signal(syscall.SIGTERM)
	if err, ok := agents[1].Proc.Wait(20 * time.Second); !ok || err != nil {
		t.Fatalf("SIGTERM: agent exited=%v err=%v, want a clean exit", ok, err)
	}
	agents[2].Proc.Signal(syscall.SIGKILL)
	Eventually(t, 30*time.Second, "h1 tells the leave from the failure", func() error {
		ms, err := agents[0].Members()
		if err != nil {
			return err
		}
		if ms["h2"].Status != api.MemberLeft || ms["h3"].Status != api.MemberFailed {
			return fmt.Errorf("h2 is %q (want left), h3 is %q (want failed)", ms["h2"].Status, ms["h3"].Status)
		}
		return nil
	})
}

// TestPartitionedNodeRejoins cuts one host's link, registers a service on it
// while it is away, mends the link, and checks that the others see it alive again
// with its latest record.
func TestPartitionedNodeRejoins(t *testing.T) {
	nw := New(t, 3)
	agents := startCluster(t, nw)
	h3 := nw.Hosts[2]

	h3.Cut()
	Eventually(t, 30*time.Second, "h1 marks the cut host failed", func() error {
		st, err := agents[0].StatusOf("h3")
		if err != nil {
			return err
		}
		if st != api.MemberFailed {
			return fmt.Errorf("h3 is %q", st)
		}
		return nil
	})
	def := filepath.Join(t.TempDir(), "cache.json")
	if err := os.WriteFile(def, []byte(`{"name":"cache","port":6379}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := agents[2].CLI("services", "register", def); err != nil {
		t.Fatalf("register on the cut host: %v: %s", err, out)
	}
	h3.Mend()
	for _, a := range agents[:2] {
		Eventually(t, 60*time.Second, a.Host.Name+" sees h3 back with its latest record", func() error {
			st, err := a.StatusOf("h3")
			if err != nil {
				return err
			}
			if st != api.MemberAlive {
				return fmt.Errorf("h3 is %q", st)
			}
			var es []api.CatalogServiceEntry
			if err := a.JSON(&es, "catalog", "service", "cache", "--passing"); err != nil {
				return err
			}
			if len(es) != 1 || es[0].Node != "h3" {
				return fmt.Errorf("passing cache instances %+v, want the one h3 registered while cut off", es)
			}
			return nil
		})
	}
}
