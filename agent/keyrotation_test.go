package agent

import (
	"context"
	"net/http"
	"testing"

	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/keytls"
)

// TestKeyRotationReload: an agent started with accept_cluster_keys names
// its keys by fingerprint at start; after a gossip key rotation a reload
// with the new `encrypt` brings the keyring listing in step, while a
// reload that changes the cluster key says it needs a restart.
func TestKeyRotationReload(t *testing.T) {
	k1, k2 := config.NewKey(), config.NewKey()
	accepted := config.NewKey()
	cfg := newConfig(t, "rot", true, "127.248.0.0/16")
	cfg.Ports.Tunnel = -1
	cfg.Encrypt = k1
	cfg.AcceptClusterKeys = []string{accepted}
	a := startAgent(t, cfg)

	key, _ := keytls.ParseKey(cfg.ClusterKey)
	acc, _ := keytls.ParseKey(accepted)
	fp, _ := keytls.Fingerprint(key)
	accFP, _ := keytls.Fingerprint(acc)
	if !a.logs.Contains("raftstore started", "cluster_key="+fp, accFP) {
		t.Fatalf("the start log does not name the keys by fingerprint (%s, accepting %s):\n%s", fp, accFP, a.logs)
	}

	list := func() gossip.KeyringResponse {
		t.Helper()
		var resp gossip.KeyringResponse
		if _, err := api.NewClient(a.HTTPAddr()).Do(context.Background(), http.MethodGet, gossip.KeyringPath, nil, nil, &resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := list(); !r.ConfiguredEncryptPrimary || r.ConfiguredEncrypt != gossip.KeyFingerprint(k1) {
		t.Fatalf("at start: %+v, want encrypt primary", r)
	}
	ctx := context.Background()
	if _, err := a.Gossip().InstallKey(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Gossip().UseKey(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if r := list(); r.ConfiguredEncryptPrimary || !r.ConfiguredEncryptInRing || r.ConfiguredEncryptOutOfStep["rot"] != "installed, not primary" {
		t.Fatalf("after use: %+v, want encrypt in the ring but not primary", r)
	}

	next := *cfg
	next.Encrypt = k2
	if err := a.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if r := list(); !r.ConfiguredEncryptPrimary || r.ConfiguredEncrypt != gossip.KeyFingerprint(k2) || len(r.ConfiguredEncryptOutOfStep) != 0 {
		t.Fatalf("after a reload with the new key: %+v, want it in step", r)
	}
	if a.logs.Contains("take effect only after a restart") {
		t.Fatalf("a reload of encrypt alone asks for a restart:\n%s", a.logs)
	}
	next.ClusterKey = config.NewKey()
	if err := a.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if !a.logs.Contains("reload: cluster_key", "take effect only after a restart") {
		t.Fatalf("a reload of cluster_key does not say it needs a restart:\n%s", a.logs)
	}
}
