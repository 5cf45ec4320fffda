package raftstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/keytls"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/policy"
)

// TestClusterKeyRotation walks the rotation of the cluster key that
// docs/operations.md describes, one agent restarted at a time, over
// loopback TCP with mutual TLS: (1) every agent accepts the new key;
// (2) every agent mints from the new key and accepts the old one; (3) the
// old key is dropped. After every restart, old-key and new-key agents
// side by side, a write through each client agent commits, Raft
// replicates it to every server and the watch brings it to every client.
// With server keys, the server authorities (which follow from the cluster
// key too) rotate along. Afterwards an agent that holds only the old key
// is refused, and the error names the mismatch by fingerprint.
func TestClusterKeyRotation(t *testing.T) {
	for _, withServerKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("server key %v", withServerKey), func(t *testing.T) {
			var logs lockedBuffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			c := MakeTestCluster(t, 3, TestOptions{ServerKey: withServerKey, Logger: logger, Configure: func(c *Config) {
				if !withServerKey {
					c.ServerKey = nil // whatever MESHWORK_TEST_SERVER_KEY says
				}
			}})
			clients := []*TestNode{c.AddClient("c1"), c.AddClient("c2")}
			oldKey, newKey := c.Key, randomKey(t)
			ctx := ctxT(t, 4*time.Minute)

			check, roll := rotationSteps(ctx, t, c, clients, []*TestNode{c.Server(0), clients[0], c.Server(1), clients[1], c.Server(2)})
			check("before")
			roll("accept", func(cfg *Config) { cfg.AcceptClusterKeys = [][]byte{newKey} })
			roll("switch", func(cfg *Config) { cfg.ClusterKey, cfg.AcceptClusterKeys = newKey, [][]byte{oldKey} })
			roll("drop", func(cfg *Config) { cfg.AcceptClusterKeys = nil })

			newFP, _ := keytls.Fingerprint(newKey)
			oldFP, _ := keytls.Fingerprint(oldKey)
			for _, n := range append(c.Servers(), clients...) {
				if got := n.Node.TLS().Fingerprint(); got != newFP || len(n.Node.TLS().AcceptedFingerprints()) != 0 {
					t.Fatalf("%s mints from %s and accepts %v after the rotation, want %s alone", n.Name, got, n.Node.TLS().AcceptedFingerprints(), newFP)
				}
			}
			if strings.Contains(logs.String(), "key mismatch") {
				t.Fatalf("an agent was refused for its key during the rotation: %s", logs.String())
			}

			// An agent left behind with the old key only: its calls are
			// refused, by its own check of the servers' leaves, with an
			// error that names both keys by fingerprint.
			stale := startAgent(t, c, "stale", oldKey, nil)
			_, err := ApplyDoc(ctxT(t, 5*time.Second), stale, "kind: ServiceDefaults\nname: stale\nprotocol: http\n")
			if err == nil || !strings.Contains(err.Error(), "key mismatch") || !strings.Contains(err.Error(), oldFP) || !strings.Contains(err.Error(), newFP) {
				t.Fatalf("a write through an agent with the old key only: %v, want a key mismatch naming %s and %s", err, oldFP, newFP)
			}
			t.Logf("refused as it should be: %v", err)
			for _, k := range [][]byte{oldKey, newKey} {
				if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(k)) {
					t.Fatalf("the error reveals a key: %v", err)
				}
			}

			// One that holds an unknown key but would accept the
			// cluster's: the servers refuse it and say why.
			strangeKey := randomKey(t)
			strangeFP, _ := keytls.Fingerprint(strangeKey)
			stranger := startAgent(t, c, "stranger", strangeKey, [][]byte{newKey})
			if _, err := ApplyDoc(ctxT(t, 5*time.Second), stranger, "kind: ServiceDefaults\nname: stranger\nprotocol: http\n"); err == nil {
				t.Fatal("a write through an agent whose key no server accepts")
			}
			testnet.Eventually(t, 10*time.Second, "a server's warning about the stranger's key", testnet.Holds(func() bool {
				got := logs.String()
				return strings.Contains(got, "raftstore handshake refused") && strings.Contains(got, "key mismatch") &&
					strings.Contains(got, strangeFP) && strings.Contains(got, newFP)
			}))
			if _, _, err := clients[0].Node.KVGet(ctx, "missing"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a read through %s after the stranger: %v, want ErrNotFound from a server", clients[0].Name, err)
			}
		})
	}
}

// TestServerKeyRotation rotates the server key the same way, servers
// only, with accept_server_keys: a server switched to the new key and one
// not yet switched still speak Raft to each other (a server leaf under
// either key is a server's), so the cluster keeps its quorum and every
// write reaches every server at each step.
func TestServerKeyRotation(t *testing.T) {
	c := MakeTestCluster(t, 3, TestOptions{ServerKey: true})
	clients := []*TestNode{c.AddClient("c1")}
	oldKey, newKey := c.ServerKey, randomKey(t)
	ctx := ctxT(t, 3*time.Minute)
	check, roll := rotationSteps(ctx, t, c, clients, c.Servers())
	check("before")
	roll("accept", func(cfg *Config) { cfg.AcceptServerKeys = [][]byte{newKey} })
	roll("switch", func(cfg *Config) { cfg.ServerKey, cfg.AcceptServerKeys = newKey, [][]byte{oldKey} })
	roll("drop", func(cfg *Config) { cfg.AcceptServerKeys = nil })

	// Only leaves of the new server key speak Raft now.
	leader := c.Leader()
	for _, s := range c.Servers() {
		if _, err := raftCall(c, s.Addr, impostorRaftTLS(t, c.Key, oldKey, leader.Name)); err == nil {
			t.Fatalf("%s answered the Raft call of a leaf of the old server key", s.Name)
		}
		if _, err := raftCall(c, s.Addr, impostorRaftTLS(t, c.Key, newKey, leader.Name)); err != nil {
			t.Fatalf("%s refused the Raft call of a leaf of the new server key: %v", s.Name, err)
		}
	}
}

// rotationSteps returns the checks of a key rotation on c: check writes a
// policy document through each client and waits until every server and
// client has every document written so far; roll restarts the agents of
// order one at a time with their config edited, and checks after each.
func rotationSteps(ctx context.Context, t *testing.T, c *TestCluster, clients []*TestNode, order []*TestNode) (check func(step string), roll func(phase string, edit func(*Config))) {
	var names []string
	check = func(step string) {
		t.Helper()
		var last uint64
		for _, cl := range clients {
			name := fmt.Sprintf("%s-via-%s", step, cl.Name)
			idx, err := ApplyDoc(ctx, cl.Node, "kind: ServiceDefaults\nname: "+name+"\nprotocol: http\n")
			if err != nil {
				t.Fatalf("%s: a write through %s: %v", step, cl.Name, err)
			}
			names, last = append(names, name), max(last, idx)
		}
		for _, n := range append(c.Servers(), clients...) {
			s, err := n.Node.Replica().Wait(ctx, last-1)
			if err != nil {
				t.Fatalf("%s: %s does not reach index %d: %v", step, n.Name, last, err)
			}
			for _, name := range names {
				if s.ProtocolFor(name) != policy.ProtocolHTTP {
					t.Fatalf("%s: %s lost %s", step, n.Name, name)
				}
			}
		}
	}
	roll = func(phase string, edit func(*Config)) {
		t.Helper()
		for _, n := range order {
			if n.Config.Server {
				i := c.Index(n)
				c.Kill(i)
				edit(&n.Config)
				c.Restart(i)
			} else {
				c.StopClient(n)
				edit(&n.Config)
				c.StartClient(n)
			}
			check(phase + "-" + n.Name)
		}
	}
	return check, roll
}

// randomKey returns a fresh cluster key.
func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// startAgent starts a client agent of c's network outside the cluster's
// bookkeeping, with the given keys.
func startAgent(t *testing.T, c *TestCluster, name string, key []byte, accept [][]byte) *Node {
	t.Helper()
	n, err := New(Config{NodeName: name, DataDir: t.TempDir(), ClusterKey: key, AcceptClusterKeys: accept},
		Deps{Discovery: c.Disc, Dial: c.net.dialer(name)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}
