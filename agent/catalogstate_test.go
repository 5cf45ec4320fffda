package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/agent/catalogstate"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/agent/readiness"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/logstream"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
)

// restartOnPorts starts an agent again with the configuration, data dir,
// gossip port and server port of one that was closed, as a restart of the
// process would, so that the agents that knew it find it where it was.
// Only the API, DNS and tunnel sockets are new.
func restartOnPorts(t *testing.T, old *testAgent) *testAgent {
	t.Helper()
	cfg := old.cfg
	logs := &meshtest.LogBuffer{}
	tee, logStream := logstream.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log := slog.New(tee)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s (restarted) log:\n%s", cfg.Node, logs.String())
		}
	})
	nt, err := gossip.NewNetTransport("127.0.0.1", cfg.Ports.Gossip, log)
	if err != nil {
		t.Fatalf("gossip port %d again: %v", cfg.Ports.Gossip, err)
	}
	raftL, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.Ports.Raft))
	if err != nil {
		t.Fatalf("server port %d again: %v", cfg.Ports.Raft, err)
	}
	t.Cleanup(func() { raftL.Close() })
	tunnel := listenUDP(t)
	cfg.Ports.Tunnel = tunnel.LocalAddr().(*net.UDPAddr).Port
	reg := prometheus.NewRegistry()
	a, err := New(cfg, Deps{
		Logger: log, Registry: reg, GossipTransport: nt,
		HTTPListener: listenTCP(t), DNSConn: listenUDP(t), DNSListener: listenTCP(t),
		RaftListener: raftL, TunnelConn: tunnel, LogStream: logStream,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return &testAgent{Agent: a, cfg: cfg, reg: reg, gossip: old.gossip, logs: logs}
}

// answers returns a condition that name.service.mesh has (or has not) an
// A record on ta's DNS, and the addresses when it has.
func (ta *testAgent) answers(name string, want bool, got *[]netip.Addr) func() error {
	return func() error {
		ips, err := ta.lookupA(name + ".service.mesh")
		if err != nil {
			return err
		}
		if (len(ips) > 0) != want {
			return fmt.Errorf("%s.service.mesh answers %v, want answered=%v", name, ips, want)
		}
		if got != nil {
			*got = ips
		}
		return nil
	}
}

// catalogCheck returns the catalog check of the agent's readiness, read
// through the API, and whether the agent is ready.
func (ta *testAgent) catalogCheck(t *testing.T) (api.ReadinessCheck, bool) {
	t.Helper()
	r, err := api.NewClient(ta.HTTPAddr()).Ready(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Checks {
		if c.Name == readiness.CheckCatalog {
			return c, r.Ready
		}
	}
	t.Fatalf("no %s check in %+v", readiness.CheckCatalog, r)
	return api.ReadinessCheck{}, false
}

// TestRestartAnswersFromTheSavedCatalog: client c1 knows the services of
// server s1. c1 stops, s1 deregisters one service and stops too; c1
// starts again with nothing to gossip with, and answers both services by
// DNS from the catalog it saved, opens their VIP listeners, and says it is
// ready with a restored catalog. When s1 is back and gossip has synced,
// the catalog is s1's word alone: the deregistered service is gone, and
// readiness says synced.
func TestRestartAnswersFromTheSavedCatalog(t *testing.T) {
	s, c, webPort := serverAndClient(t, "127.243.0.0/16", "127.244.0.0/16", nil)
	sapi := api.NewClient(s.HTTPAddr())
	ctx := context.Background()
	if err := sapi.RegisterService(ctx, api.ServiceDefinition{Name: "billing", Port: backend(t, "billing")}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "c1 answers billing", c.answers("billing", true, nil))
	testnet.Eventually(t, wait, "c1 answers web", c.answers("web", true, nil))
	if st, ready := c.catalogCheck(t); !ready || !st.OK || !strings.Contains(st.Reason, "synced") {
		t.Fatalf("c1 before its restart: %+v, ready %v; want synced and ready", st, ready)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sapi.DeregisterService(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "s1 no longer answers billing", s.answers("billing", false, nil))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// c1 alone: what it answers can only come from its file.
	c2 := startAgent(t, c.cfg)
	var vips []netip.Addr
	if err := c2.answers("web", true, &vips)(); err != nil {
		t.Fatalf("restarted c1, first query: %v", err)
	}
	if err := c2.answers("billing", true, nil)(); err != nil {
		t.Fatalf("restarted c1, first query: %v", err)
	}
	st, ready := c2.catalogCheck(t)
	if !st.OK || !ready || !strings.Contains(st.Reason, "restored from disk") || !strings.Contains(st.Reason, "gossip not yet synced") {
		t.Fatalf("restarted c1: catalog check %+v, ready %v; want restored and ready", st, ready)
	}
	if !c2.logs.Contains("catalog restored from disk", "nodes=1", "services=2") {
		t.Errorf("the restore is not logged with what it restored:\n%s", c2.logs.Tail(40))
	}
	// The VIP of web listens at once: a connection is accepted (and then
	// cut, since s1 is down), not refused.
	c2.waitTunnel(t)
	testnet.Eventually(t, wait, "web's VIP listens", func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(vips[0], uint16(webPort)).String(), 5*time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})

	// s1 is back, and tells c1 what changed while both were down.
	s.cfg.RetryJoin = []string{fmt.Sprintf("127.0.0.1:%d", c2.cfg.Ports.Gossip)}
	restartOnPorts(t, s)
	testnet.Eventually(t, wait, "c1 drops billing once gossip synced", c2.answers("billing", false, nil))
	// s1's first record may reach c1 before s1's services are in it: the
	// same as for any restart of s1, with or without a restored catalog.
	testnet.Eventually(t, wait, "c1 answers web from s1's record", c2.answers("web", true, nil))
	testnet.Eventually(t, wait, "c1's readiness says synced", func() error {
		st, ready := c2.catalogCheck(t)
		if !st.OK || !ready || st.Reason != "synced with the cluster through gossip" {
			return fmt.Errorf("catalog check %+v, ready %v", st, ready)
		}
		return nil
	})
	if !c2.Catalog().Current().RestoredAt().IsZero() {
		t.Fatal("the catalog still includes the restored one after the sync")
	}
}

// TestUnreadableCatalogStartsEmpty: a damaged file is a warning and an
// empty start, and the agent saves a good one again.
func TestUnreadableCatalogStartsEmpty(t *testing.T) {
	cfg := newConfig(t, "damaged", true, "127.242.0.0/16")
	cfg.Ports.Tunnel = -1
	cfg.Services = []api.ServiceDefinition{{Name: "web", Port: backend(t, "web")}}
	file := filepath.Join(cfg.DataDir, catalogstate.FileName)
	if err := os.WriteFile(file, []byte(`{"format":"meshwork-catalog/1","node":"damaged","saved_at":"`), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfg)
	if !a.logs.Contains("saved catalog not restored: unreadable") {
		t.Fatalf("no warning for the damaged file:\n%s", a.logs.Tail(40))
	}
	if !a.Catalog().Current().RestoredAt().IsZero() {
		t.Fatal("a damaged file was restored")
	}
	testnet.Eventually(t, wait, "its own service is answered", a.answers("web", true, nil))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := catalogstate.Read(catalogstate.Config{Path: file, Node: "damaged"}, time.Now())
	if err != nil {
		t.Fatalf("the file saved at close: %v", err)
	}
	if len(st.Members) != 1 || st.Members[0].Node != "damaged" {
		t.Fatalf("the file saved at close holds %+v", st.Members)
	}
}
