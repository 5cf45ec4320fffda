package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshwork/meshwork/acl"
)

func startAgent(t *testing.T, cfg Config, deps AgentDeps) *Agent {
	t.Helper()
	a, err := NewAgent(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := a.Manager().WaitReady(ctxT(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAgentDevAndClients wires the pieces as the agent does: a --dev node
// that makes its CA and its own leaf without a token, a client that
// bootstraps from a token file over the built-in RPC transport, and one that
// goes through the agent's own RPC client (an RPCDoer).
func TestAgentDevAndClients(t *testing.T) {
	st := NewMemStore()
	devDir := t.TempDir()
	dev := startAgent(t, Config{TrustDomain: testTD}, AgentDeps{Node: "dev1", DataDir: devDir, Dev: true, State: st, Services: []string{"web"}, PeerTLS: testPeerTLS})
	assertMode(t, filepath.Join(devDir, "ca", "state.key"), 0o600)
	assertMode(t, filepath.Join(devDir, "ca", leafFile), 0o600)
	l, _ := dev.Manager().Leaf()
	if !slices.Equal(l.IDs, []string{"spiffe://mesh.test/node/dev1", "spiffe://mesh.test/svc/web"}) {
		t.Fatalf("dev leaf %v", l.IDs)
	}
	addr, _ := serveRPC(t, dev.RPCHandler(), dev.Manager())

	// A client with a token file.
	tok, _, err := dev.Server().Token(context.Background(), "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c1 := startAgent(t, Config{TrustDomain: testTD, TokenFile: tokFile}, AgentDeps{Node: "c1", DataDir: t.TempDir(), State: st,
		Servers: func(context.Context) ([]string, error) { return []string{addr}, nil }})
	if c1.Server() != nil || c1.RPCHandler() != nil {
		t.Fatal("a client agent runs a CA")
	}

	// A client through an RPCDoer: here a transport that calls the
	// handler in process and presents the client's current leaf as its TLS
	// peer certificate, as raftstore's RPC client does over the wire.
	var c2m *Manager
	doer := func(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
		req := httptest.NewRequest(method, path, bytes.NewReader(body)).WithContext(ctx)
		if c2m != nil {
			if cert, err := c2m.GetClientCertificate(nil); err == nil {
				req = req.WithContext(context.WithValue(ctx, peerTLSKey{}, tls.ConnectionState{PeerCertificates: mustParse(t, cert.Certificate)}))
			}
		}
		w := httptest.NewRecorder()
		dev.RPCHandler().ServeHTTP(w, req)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, b, nil
	}
	tok2, _, _ := dev.Server().Token(context.Background(), "c2", 0)
	tokFile2 := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile2, []byte(tok2), 0o600); err != nil {
		t.Fatal(err)
	}
	c2, err := NewAgent(Config{TrustDomain: testTD, TokenFile: tokFile2}, AgentDeps{Node: "c2", DataDir: t.TempDir(), State: st, RPC: doer})
	if err != nil {
		t.Fatal(err)
	}
	c2m = c2.Manager()
	if err := c2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2m.WaitReady(ctxT(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c2m.SetServices([]string{"db"}); err != nil { // a renewal through the doer
		t.Fatal(err)
	}
	waitLeafIDs(t, c2m, []string{"spiffe://mesh.test/node/c2", "spiffe://mesh.test/svc/db"}, 15*time.Second)

	// The local API is mounted from the agent.
	mux := http.NewServeMux()
	if err := c1.RegisterAPI(acl.MountAllowAll(mux)); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, APIPathLeaf, nil))
	if w.Code != 200 {
		t.Fatalf("client API: %d", w.Code)
	}
}

func TestAgentConfigErrors(t *testing.T) {
	st := NewMemStore()
	// No token and no leaf: the agent says what to do.
	a, err := NewAgent(Config{TrustDomain: testTD, TokenFile: filepath.Join(t.TempDir(), "absent")}, AgentDeps{Node: "c", DataDir: t.TempDir(), State: st,
		Servers: func(context.Context) ([]string, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("Start = %v, want ErrNoCredentials", err)
	}
	// A configured state key file must exist.
	if _, err := NewAgent(Config{TrustDomain: testTD, StateKeyFile: filepath.Join(t.TempDir(), "nope")}, AgentDeps{Node: "s", DataDir: t.TempDir(), Server: true, State: st}); err == nil {
		t.Fatal("a server started without its configured state key")
	}
	if _, err := NewAgent(Config{Provider: "vault"}, AgentDeps{Node: "s", DataDir: t.TempDir()}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad provider: %v", err)
	}
}
