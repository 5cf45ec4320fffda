package gossip_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/internal/meshtest"
)

// TestConfiguredKeyAgainstKeyringFile: members on loopback sockets rotate
// their gossip key while their configuration still names the old one,
// as a playbook does before it changes the vaulted `encrypt`. The keyring
// listing says, for the agent asked and for every member, whether the
// configured key and the keyring are in step; an agent restarted with its
// keyring file ahead of its configuration warns, naming both keys by
// fingerprint. Once the configuration names the new key, all is in step.
func TestConfiguredKeyAgainstKeyringFile(t *testing.T) {
	k1, _ := gossip.GenerateKey()
	k2, _ := gossip.GenerateKey()
	fp1, fp2 := gossip.KeyFingerprint(k1), gossip.KeyFingerprint(k2)
	var mu sync.Mutex
	configured := map[string]string{} // by node; k1 unless set
	c := meshtest.NewCluster(t, 3, meshtest.Options{Loopback: true, Config: func(s meshtest.NodeSpec, cfg *gossip.Config) {
		mu.Lock()
		defer mu.Unlock()
		cfg.Keyring = []string{k1}
		if k, ok := configured[s.Name]; ok {
			cfg.Keyring = []string{k}
		}
		cfg.KeyringFile = filepath.Join(s.DataDir, "keyring.json")
	}})
	c.WaitConverged(waitLong)
	ctx := context.Background()

	// list asks node i through the HTTP handler, as `meshwork keyring
	// list` does, and checks that no key is in the answer.
	list := func(i int) gossip.KeyringResponse {
		t.Helper()
		rec := httptest.NewRecorder()
		gossip.NewKeyringHandler(c.Nodes[i].Gossip).ServeHTTP(rec, httptest.NewRequest("GET", gossip.KeyringPath, nil))
		if rec.Code != 200 {
			t.Fatalf("list through %s: %d %s", c.Nodes[i].Name, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), k1) || strings.Contains(rec.Body.String(), k2) {
			t.Fatalf("the listing reveals a key: %s", rec.Body)
		}
		for _, field := range []string{`"configured_encrypt_in_ring"`, `"configured_encrypt_primary"`} {
			if !strings.Contains(rec.Body.String(), field) {
				t.Fatalf("the listing has no %s: %s", field, rec.Body)
			}
		}
		var resp gossip.KeyringResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	expect := func(step string, r gossip.KeyringResponse, fp string, inRing, primary bool, outOfStep map[string]string) {
		t.Helper()
		if r.ConfiguredEncrypt != fp || r.ConfiguredEncryptInRing != inRing || r.ConfiguredEncryptPrimary != primary || len(r.ConfiguredEncryptOutOfStep) != len(outOfStep) {
			t.Fatalf("%s: configured %s in ring %v primary %v, out of step %v; want %s %v %v %v", step,
				r.ConfiguredEncrypt, r.ConfiguredEncryptInRing, r.ConfiguredEncryptPrimary, r.ConfiguredEncryptOutOfStep, fp, inRing, primary, outOfStep)
		}
		for node, why := range outOfStep {
			if r.ConfiguredEncryptOutOfStep[node] != why {
				t.Fatalf("%s: %s is out of step %q, want %q", step, node, r.ConfiguredEncryptOutOfStep[node], why)
			}
		}
	}
	all := func(why string) map[string]string {
		return map[string]string{"node-0": why, "node-1": why, "node-2": why}
	}

	expect("at start", list(0), fp1, true, true, nil)

	g := c.Nodes[1].Gossip
	if _, err := g.InstallKey(ctx, k2); err != nil {
		t.Fatal(err)
	}
	expect("new key installed", list(0), fp1, true, true, nil)
	if _, err := g.UseKey(ctx, k2); err != nil {
		t.Fatal(err)
	}
	expect("new key in use", list(0), fp1, true, false, all("installed, not primary"))

	// A restart with the old key configured: the file wins, and says so.
	c.Kill(2)
	n := c.Restart(2)
	c.WaitConverged(waitLong)
	if !n.Logs.Contains("gossip keyring file overrides the configured keys", "used="+fp2, "configured_encrypt="+fp1, "configured_encrypt_in_ring=true", "keyring use") {
		t.Fatalf("no warning naming both keys after a restart with the old key configured:\n%s", n.Logs)
	}

	if _, err := g.RemoveKey(ctx, k1); err != nil {
		t.Fatal(err)
	}
	expect("old key removed", list(2), fp1, false, false, all("not installed"))
	c.Kill(2)
	n = c.Restart(2)
	c.WaitConverged(waitLong)
	if !n.Logs.Contains("gossip keyring file overrides the configured keys", "used="+fp2, "configured_encrypt="+fp1, "configured_encrypt_in_ring=false", "keyring install") {
		t.Fatalf("no warning naming both keys after a restart with a configured key not in the ring:\n%s", n.Logs)
	}

	// The configuration catches up, one agent at a time: by a reload
	// (SetConfiguredKey) on the first, by restarts on the others.
	for i, node := range c.Nodes {
		mu.Lock()
		configured[node.Name] = k2
		mu.Unlock()
		if i == 0 {
			if err := node.Gossip.SetConfiguredKey(k2); err != nil {
				t.Fatal(err)
			}
		} else {
			c.Kill(i)
			n := c.Restart(i)
			c.WaitConverged(waitLong)
			if n.Logs.Contains("overrides the configured keys") {
				t.Fatalf("%s warns with the key in use configured:\n%s", node.Name, n.Logs)
			}
		}
		behind := map[string]string{}
		for _, later := range c.Nodes[i+1:] {
			behind[later.Name] = "not installed"
		}
		expect("configured "+node.Name, list(i), fp2, true, true, behind)
	}
	expect("all configured", list(0), fp2, true, true, nil)

	// A reload back to a key the ring no longer holds says so.
	if err := c.Nodes[0].Gossip.SetConfiguredKey(k1); err != nil {
		t.Fatal(err)
	}
	expect("reloaded with the old key", list(0), fp1, false, false, map[string]string{"node-0": "not installed"})
	if !c.Nodes[0].Logs.Contains("gossip configured key is not the primary key", "configured_encrypt="+fp1, "used="+fp2) {
		t.Fatalf("no warning after a reload with a key not in the ring:\n%s", c.Nodes[0].Logs)
	}
	if err := c.Nodes[0].Gossip.SetConfiguredKey("c2hvcnQ="); !errors.Is(err, gossip.ErrBadKey) {
		t.Fatalf("SetConfiguredKey of a short key: %v, want ErrBadKey", err)
	}
}
