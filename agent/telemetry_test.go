package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/agent/readiness"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/clock"
	"github.com/meshwork/meshwork/internal/testnet"
)

// shiftedClock is the wall clock moved by an offset the test sets: the
// certificates are issued at the real time, and the test then looks at
// them from the future.
type shiftedClock struct{ offset atomic.Int64 }

func (c *shiftedClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *shiftedClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return time.AfterFunc(d, f)
}

// readyz reads the telemetry listener's /readyz.
func readyz(base string) (int, api.Readiness, error) {
	var r api.Readiness
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0, r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return resp.StatusCode, r, fmt.Errorf("body %q: %w", b, err)
	}
	return resp.StatusCode, r, nil
}

// checksOK returns the ok of each check by name.
func checksOK(r api.Readiness) map[string]bool {
	out := map[string]bool{}
	for _, c := range r.Checks {
		out[c.Name] = c.OK
	}
	return out
}

// TestReadyzFollowsJoinCertificateAndPolicy runs a client agent with a
// telemetry listener: before it joins it is not ready on any check (with
// no catalog saved, it has none to answer from); once it
// joins a server it gets its leaf and the policy and is ready; when its
// certificate has expired (its readiness clock moved past NotAfter) it is
// not ready again, for that reason alone. The API's /v1/agent/ready says
// the same with 200, and the telemetry listener serves the metrics.
func TestReadyzFollowsJoinCertificateAndPolicy(t *testing.T) {
	scfg := newConfig(t, "rs1", false, "127.246.0.0/16")
	scfg.Server, scfg.BootstrapExpect = true, 1
	scfg.ClusterKey = config.NewKey()
	s := startAgentWith(t, scfg, func(d *Deps) { d.TelemetryListener = listenTCP(t) })
	s.waitTunnel(t)
	// A server that bootstraps alone is a cluster of its own.
	testnet.Eventually(t, wait, "the lone server is ready", func() error {
		if code, r, err := readyz("http://" + s.TelemetryAddr()); err != nil || code != http.StatusOK || !r.Ready {
			return fmt.Errorf("%d %+v %v", code, r, err)
		}
		return nil
	})

	tok, _, err := s.CA().Server().Token(context.Background(), "rc1", 0)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	ccfg := newConfig(t, "rc1", false, "127.247.0.0/16")
	ccfg.ClusterKey = scfg.ClusterKey
	ccfg.CA.TokenFile = tokFile // no retry_join: it joins when the test says
	clk := &shiftedClock{}
	c := startAgentWith(t, ccfg, func(d *Deps) {
		d.TelemetryListener = listenTCP(t)
		d.Clock = clk
	})
	base := "http://" + c.TelemetryAddr()

	code, r, err := readyz(base)
	if err != nil || code != http.StatusServiceUnavailable || r.Ready {
		t.Fatalf("before join: /readyz %d %+v (%v), want 503 not ready", code, r, err)
	}
	if got := checksOK(r); len(got) != 4 || got[readiness.CheckGossip] || got[readiness.CheckCatalog] || got[readiness.CheckCertificate] || got[readiness.CheckPolicy] {
		t.Fatalf("before join: checks %+v, want gossip, catalog, certificate and policy all failing", r.Checks)
	}
	for _, ch := range r.Checks {
		if ch.Reason == "" {
			t.Errorf("check %s gives no reason", ch.Name)
		}
	}

	if _, err := c.Gossip().Join([]string{s.gossip}); err != nil {
		t.Fatal(err)
	}
	c.waitTunnel(t) // its leaf, from the server it now knows
	testnet.Eventually(t, wait, "the client is ready after join", func() error {
		code, r, err := readyz(base)
		if err != nil || code != http.StatusOK || !r.Ready {
			return fmt.Errorf("/readyz %d %+v %v", code, r, err)
		}
		return nil
	})
	// The API says the same, with 200.
	ar, err := api.NewClient(c.HTTPAddr()).Ready(context.Background())
	if err != nil || !ar.Ready || len(ar.Checks) != 4 {
		t.Fatalf("GET /v1/agent/ready: %+v, %v", ar, err)
	}

	// Past the leaf's NotAfter, the agent is not ready, for that alone.
	leaf, err := c.CA().Manager().Leaf()
	if err != nil {
		t.Fatal(err)
	}
	clk.offset.Store(int64(time.Until(leaf.NotAfter) + time.Second))
	code, r, err = readyz(base)
	if got := checksOK(r); err != nil || code != http.StatusServiceUnavailable || r.Ready ||
		!got[readiness.CheckGossip] || !got[readiness.CheckCatalog] || got[readiness.CheckCertificate] || !got[readiness.CheckPolicy] {
		t.Fatalf("after expiry: /readyz %d %+v (%v), want 503 with only the certificate failing", code, r, err)
	}
	if reason := r.Checks[2].Reason; !strings.Contains(reason, "expired at") {
		t.Errorf("after expiry: the certificate's reason %q does not say it expired", reason)
	}
	ar, err = api.NewClient(c.HTTPAddr()).Ready(context.Background())
	if err != nil || ar.Ready {
		t.Errorf("after expiry: GET /v1/agent/ready %+v, %v; want 200 and not ready", ar, err)
	}

	// The same listener serves the agent's whole registry.
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"meshwork_readiness_ready 0", `meshwork_readiness_check_passing{check="certificate"} 0`, "meshwork_gossip_", "meshwork_http_requests_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestTelemetryListenNeedsARestart: a reload that moves telemetry.listen
// says that it takes effect only after a restart, and the listener keeps
// serving where it was.
func TestTelemetryListenNeedsARestart(t *testing.T) {
	cfg := newConfig(t, "tl1", true, "127.245.0.0/16")
	a := startAgentWith(t, cfg, func(d *Deps) { d.TelemetryListener = listenTCP(t) })
	addr := a.TelemetryAddr()
	next := *cfg
	next.Telemetry.Listen = "127.0.0.1:1"
	if err := a.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if !a.logs.Contains("reload: the telemetry section takes effect only after a restart") {
		t.Errorf("a reload of telemetry.listen does not say it needs a restart:\n%s", a.logs)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after the reload, /healthz at %s: %v %v", addr, resp, err)
	}
	resp.Body.Close()
}
