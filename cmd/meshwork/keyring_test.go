package main

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/internal/meshtest"
)

func TestKeygen(t *testing.T) {
	out, err := runCLI(t, "keygen")
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(out)
	if k, err := gossip.ParseKey(key); err != nil || len(k) != 32 {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	again, _ := runCLI(t, "keygen")
	if strings.TrimSpace(again) == key {
		t.Fatal("keygen printed the same key twice")
	}
}

// TestKeyringRotation rotates the key of a running 3-member cluster with the
// CLI, through the keyring endpoint of one member.
func TestKeyringRotation(t *testing.T) {
	k1, _ := gossip.GenerateKey()
	k2, _ := gossip.GenerateKey()
	c := meshtest.NewCluster(t, 3, meshtest.Options{Config: func(_ meshtest.NodeSpec, cfg *gossip.Config) {
		cfg.Keyring = []string{k1}
	}})
	c.WaitConverged(meshtestWait)
	srv := httptest.NewServer(gossip.NewKeyringHandler(c.Nodes[0].Gossip))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	for _, step := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"keyring", "install", "-"}, k2 + "\n", "key installed on 3 of 3 members"},
		{[]string{"keyring", "use", k2}, "", "key primary on 3 of 3 members"},
		{[]string{"keyring", "remove", k1}, "", "key removed from 3 of 3 members"},
		{[]string{"keyring", "list"}, "", gossip.KeyFingerprint(k2) + "  3/3        3/3"},
	} {
		out, err := runCLIInput(t, step.stdin, append(step.args, "--http-addr", addr)...)
		if err != nil || !strings.Contains(out, step.want) {
			t.Fatalf("%v: %q, %v; want output containing %q", step.args, out, err, step.want)
		}
	}
	if out, err := runCLI(t, "keyring", "fingerprint", k2); err != nil || strings.TrimSpace(out) != gossip.KeyFingerprint(k2) || !strings.HasPrefix(out, "sha256:") {
		t.Fatalf("keyring fingerprint: %q, %v", out, err)
	}
	if out, err := runCLIInput(t, "  "+k1+"\n", "keyring", "fingerprint", "-"); err != nil || strings.TrimSpace(out) != gossip.KeyFingerprint(k1) {
		t.Fatalf("keyring fingerprint - (the key on standard input): %q, %v", out, err)
	}
	out, err := runCLI(t, "keyring", "list", "--format", "json", "--http-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	var resp gossip.KeyringResponse
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Keys) != 1 || resp.PrimaryKeys[gossip.KeyFingerprint(k2)] != 3 {
		t.Fatalf("list --format json: %s, %v", out, err)
	}
	if strings.Contains(out, k2) || strings.Contains(out, k1) {
		t.Fatalf("keyring list shows a key:\n%s", out)
	}
	// Removing the primary key is refused, in one line.
	_, err = runCLI(t, "keyring", "remove", k2, "--http-addr", addr)
	if err == nil || !strings.Contains(err.Error(), "primary key cannot be removed") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("remove of the primary key: %v", err)
	}
	// A bad key, in argv or on standard input, is a usage error: nothing
	// is sent.
	if _, err := runCLI(t, "keyring", "install", "not-a-key", "--http-addr", addr); err == nil || !strings.Contains(err.Error(), "not base64") || exitCode(err) != exitUsage {
		t.Fatalf("install of a bad key: %v (exit %d)", err, exitCode(err))
	}
	if _, err := runCLIInput(t, "", "keyring", "use", "-", "--http-addr", addr); err == nil || !strings.Contains(err.Error(), "standard input holds no key") || exitCode(err) != exitUsage {
		t.Fatalf("use - with nothing on standard input: %v (exit %d)", err, exitCode(err))
	}
}

const meshtestWait = 20 * time.Second
