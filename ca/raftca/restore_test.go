package raftca_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/ca/raftca"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/raftstore"
)

// caCluster runs the CA on three Raft servers wired as the agent wires
// them (agent/raft.go), and returns the cluster and the servers' CAs.
func caCluster(t *testing.T) (*raftstore.TestCluster, []*ca.Agent) {
	t.Helper()
	tc := raftstore.MakeTestCluster(t, 3, raftstore.TestOptions{Configure: func(c *raftstore.Config) {
		c.PrivateKV = raftca.PrivateKV
		c.PrivateBoundKV = raftca.PrivateBoundKV
		c.KeepOnRestore = raftca.KeepOnRestore
	}})
	keyFile := filepath.Join(t.TempDir(), "state.key")
	key, _ := ca.NewStateKey()
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	servers := make([]*ca.Agent, 3)
	for i, s := range tc.Servers() {
		servers[i] = startAgent(t, ca.Config{TrustDomain: td, StateKeyFile: keyFile}, ca.AgentDeps{Node: s.Name, DataDir: t.TempDir(), Server: true,
			State: raftca.State(s.Node), PeerTLS: raftstore.PeerTLS})
		s.Node.MountRPC(ca.RPCPrefix, servers[i].RPCHandler())
	}
	root := servers[0].Server().Bundle().Roots[0]
	for _, a := range servers[1:] {
		testnet.Eventually(t, 10*time.Second, "one CA on every server", testnet.Holds(func() bool {
			b := a.Server().Bundle()
			return b != nil && b.Roots[0].Equal(root)
		}))
	}
	return tc, servers
}

func save(t *testing.T, n *raftstore.Node) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := n.SaveSnapshot(ctxT(t, 30*time.Second), &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func restore(t *testing.T, n *raftstore.Node, b []byte) {
	t.Helper()
	if _, err := n.RestoreSnapshot(ctxT(t, 60*time.Second), bytes.NewReader(b)); err != nil {
		t.Fatalf("restore: %v", err)
	}
}

// decodeBackup reads a backup as docs/policy.md describes it: gzip, a JSON
// header line, then the state as JSON.
func decodeBackup(t *testing.T, b []byte) (header map[string]any, keys map[string][]byte) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(line, &header); err != nil {
		t.Fatal(err)
	}
	var state struct {
		KV []struct {
			Key   string `json:"key"`
			Value []byte `json:"value"`
		} `json:"kv"`
	}
	if err := json.NewDecoder(br).Decode(&state); err != nil {
		t.Fatal(err)
	}
	keys = map[string][]byte{}
	for _, e := range state.KV {
		keys[e.Key] = e.Value
	}
	return header, keys
}

// TestUsedTokenStaysUsedAcrossRestore uses a bootstrap token after a
// backup was taken through a server, restores that backup, and tries the
// token again: refused. A backup taken through a client agent holds none
// of the CA's private state, and restoring it leaves the CA as it was.
func TestUsedTokenStaysUsedAcrossRestore(t *testing.T) {
	tc, servers := caCluster(t)
	client := tc.AddClient("c1")
	srv := servers[0].Server()
	ctx := ctxT(t, 2*time.Minute)

	root := srv.Bundle().Roots[0]
	bundle, _, err := raftca.State(client.Node).Get(ctx, ca.KeyBundle)
	if err != nil || bundle == nil {
		t.Fatalf("the trust bundle: %v", err)
	}
	before := save(t, tc.Server(0).Node) // the whole state, before the token is used
	tok, _, err := srv.Token(ctx, "n1", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, csr := newCSR(t, "n1")
	if _, err := srv.SignWithToken(ctx, tok, csr, ""); err != nil {
		t.Fatalf("first use of the token: %v", err)
	}

	restore(t, tc.Server(1).Node, before)
	if _, err := srv.SignWithToken(ctx, tok, csr, ""); !errors.Is(err, ca.ErrTokenUsed) {
		t.Fatalf("the token after restoring a backup taken before its use: %v, want ErrTokenUsed", err)
	}

	// Through a client agent: no private state in the backup.
	authority, authIdx, err := raftca.State(tc.Server(0).Node).Get(ctx, ca.KeyAuthority)
	if err != nil || authority == nil {
		t.Fatalf("read %s on a server: %v", ca.KeyAuthority, err)
	}
	public := save(t, client.Node)
	h, keys := decodeBackup(t, public)
	if h["private"] != "omitted" {
		t.Fatalf("header of the client's backup: %v, want private omitted", h)
	}
	for k := range keys {
		for _, p := range append(raftca.PrivateKV, raftca.PrivateBoundKV...) {
			if strings.HasPrefix(k, p) {
				t.Fatalf("the client's backup holds %s", k)
			}
		}
	}
	raw, _ := gzip.NewReader(bytes.NewReader(public))
	all := new(bytes.Buffer)
	_, _ = all.ReadFrom(raw)
	if bytes.Contains(all.Bytes(), []byte(base64.StdEncoding.EncodeToString(authority))) {
		t.Fatal("the client's backup contains the CA's authority state")
	}
	if full, whole := decodeBackup(t, save(t, tc.Server(2).Node)); full["private"] != "included" || whole[ca.KeyAuthority] == nil {
		t.Fatalf("a server's backup: header %v, without %s", full, ca.KeyAuthority)
	}

	// Restoring it keeps the CA: same sealed keys, still signing under the
	// same root, and the used token still used.
	restore(t, client.Node, public)
	after, afterIdx, err := raftca.State(tc.Leader().Node).Get(ctx, ca.KeyAuthority)
	if err != nil || !bytes.Equal(after, authority) || afterIdx != authIdx {
		t.Fatalf("%s after restoring the client's backup: index %d (was %d), same value %v, %v", ca.KeyAuthority, afterIdx, authIdx, bytes.Equal(after, authority), err)
	}
	if _, err := srv.SignWithToken(ctx, tok, csr, ""); !errors.Is(err, ca.ErrTokenUsed) {
		t.Fatalf("the token after restoring the client's backup: %v, want ErrTokenUsed", err)
	}
	tok2, _, err := srv.Token(ctx, "n2", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, csr2 := newCSR(t, "n2")
	is, err := servers[1].Server().SignWithToken(context.Background(), tok2, csr2, "")
	if err != nil {
		t.Fatalf("the CA after restoring the client's backup: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range is.Chain[1:] {
		inter.AddCert(c)
	}
	if _, err := is.Chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("a leaf signed after the restore does not chain to the CA's root: %v", err)
	}
	if b, _, err := raftca.State(client.Node).Get(ctx, ca.KeyBundle); err != nil || !bytes.Equal(b, bundle) {
		t.Fatalf("the trust bundle after the restore differs from the CA's (%v)", err)
	}
}
