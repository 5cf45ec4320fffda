package raftca_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/ca/raftca"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/raftstore"
)

const td = "mesh.test"

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func startAgent(t *testing.T, cfg ca.Config, deps ca.AgentDeps) *ca.Agent {
	t.Helper()
	a, err := ca.NewAgent(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := a.Manager().WaitReady(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestCAOnRaft runs the CA on a real three-server Raft cluster over
// loopback TCP with mutual TLS: the servers make one CA, a client agent
// bootstraps with a token and renews with its mesh leaf through the server
// port, the leader is killed, and the survivors carry on with the same chain
// and the same token ledger.
func TestCAOnRaft(t *testing.T) {
	tc := raftstore.MakeTestCluster(t, 3, raftstore.TestOptions{Configure: func(c *raftstore.Config) {
		c.PrivateKV = raftca.PrivateKV
	}})
	keyFile := filepath.Join(t.TempDir(), "state.key")
	key, _ := ca.NewStateKey()
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := ca.Config{TrustDomain: td, StateKeyFile: keyFile}
	servers := make([]*ca.Agent, 3)
	for i, s := range tc.Servers() {
		servers[i] = startAgent(t, cfg, ca.AgentDeps{Node: s.Name, DataDir: t.TempDir(), Server: true,
			State: raftca.State(s.Node), PeerTLS: raftstore.PeerTLS})
		s.Node.MountRPC(ca.RPCPrefix, servers[i].RPCHandler())
		raftca.TrustMesh(s.Node, servers[i].Manager())
	}
	root := servers[0].Server().Bundle().Roots[0]
	for _, a := range servers[1:] {
		testnet.Eventually(t, 10*time.Second, "one CA on every server", testnet.Holds(func() bool {
			b := a.Server().Bundle()
			return b != nil && b.Roots[0].Equal(root)
		}))
	}

	client := tc.AddClient("c1")
	tok, _, err := servers[1].Server().Token(context.Background(), "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs meshtest.LogBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("c1's CA log:\n%s", logs.String())
		}
	})
	c1 := startAgent(t, ca.Config{TrustDomain: td, TokenFile: tokFile}, ca.AgentDeps{Node: "c1", DataDir: t.TempDir(),
		State: raftca.State(client.Node), Servers: raftca.Servers(tc.Disc), RPCTLS: raftca.ClientTLS(client.Node), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	raftca.TrustMesh(client.Node, c1.Manager())
	raftca.PresentMeshLeaf(ctxT(t, time.Minute), client.Node, c1.Manager())
	first, _ := c1.Manager().GetCertificate(nil)

	// A client agent cannot read the CA's private state.
	if _, _, err := raftca.State(client.Node).Get(context.Background(), ca.KeyAuthority); !errors.Is(err, raftstore.ErrForbidden) {
		t.Fatalf("client read of %s: %v, want ErrForbidden", ca.KeyAuthority, err)
	}

	renew := func(services ...string) {
		t.Helper()
		ch := c1.Manager().Changes()
		if err := c1.Manager().SetServices(services); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatal("no renewal")
		}
		testnet.Eventually(t, 30*time.Second, "the new leaf", testnet.Holds(func() bool {
			l, _ := c1.Manager().Leaf()
			return len(l.IDs) == 1+len(services)
		}))
	}
	renew("web") // over mTLS with the mesh leaf, through the server port

	leader := tc.Leader()
	tc.Kill(tc.Index(leader))
	tc.Leader()
	renew("web", "api")
	after, _ := c1.Manager().GetCertificate(nil)
	if !bytes.Equal(after.Certificate[1], first.Certificate[1]) {
		t.Fatal("the intermediate changed across the failover")
	}
	if l, _ := c1.Manager().Leaf(); !slices.Equal(l.IDs, []string{"spiffe://mesh.test/node/c1", "spiffe://mesh.test/svc/api", "spiffe://mesh.test/svc/web"}) {
		t.Fatalf("leaf %v", l.IDs)
	}

	// The ledger survived the failover: the used token is refused by a
	// surviving server; a new token from it works.
	var alive *ca.Agent
	for i, s := range tc.Servers() {
		if s.Node != nil {
			alive = servers[i]
			break
		}
	}
	k, _ := os.ReadFile(tokFile)
	csrKey, csr := newCSR(t, "c1")
	_ = csrKey
	if _, err := alive.Server().SignWithToken(context.Background(), string(k), csr, ""); !errors.Is(err, ca.ErrTokenUsed) {
		t.Fatalf("token reuse after failover: %v, want ErrTokenUsed", err)
	}
	tok2, _, err := alive.Server().Token(context.Background(), "c2", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, csr2 := newCSR(t, "c2")
	if _, err := alive.Server().SignWithToken(context.Background(), tok2, csr2, ""); err != nil {
		t.Fatalf("new token after failover: %v", err)
	}
}
