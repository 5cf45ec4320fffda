package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/ca"
)

// startCAAgent runs the embedded CA and the agent's certificate manager in
// process, behind the CA's local API on a loopback port.
func startCAAgent(t *testing.T) (string, *ca.Manager) {
	t.Helper()
	st := ca.NewMemStore()
	raw := make([]byte, ca.StateKeySize)
	copy(raw, "0123456789abcdef0123456789abcdef")
	srv, err := ca.NewServer(ca.ServerConfig{TrustDomain: "mesh.test", Node: "srv1", StateKey: raw}, ca.ServerDeps{State: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	m, err := ca.NewManager(ca.ManagerConfig{TrustDomain: "mesh.test", Node: "srv1", Services: []string{"web"}},
		ca.ManagerDeps{Issuer: srv.LocalIssuer(), Bundles: ca.NewStateBundleSource(st, "mesh.test")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(ca.NewAPIHandler(ca.APIDeps{Manager: m, Server: srv}))
	t.Cleanup(hs.Close)
	return hs.Listener.Addr().String(), m
}

func TestCACommands(t *testing.T) {
	addr, mgr := startCAAgent(t)

	out, err := runCLI(t, "ca", "cert", "--http-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"spiffe://mesh.test/node/srv1", "spiffe://mesh.test/svc/web", "Not after:", "Renewal at:"} {
		if !strings.Contains(out, want) {
			t.Errorf("ca cert: no %q in\n%s", want, out)
		}
	}
	out, err = runCLI(t, "ca", "cert", "--pem", "--http-addr", addr)
	if err != nil || strings.Contains(out, "PRIVATE") {
		t.Fatalf("ca cert --pem: %v\n%s", err, out)
	}
	if blk, _ := pem.Decode([]byte(out)); blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("ca cert --pem printed no certificate:\n%s", out)
	}

	out, err = runCLI(t, "ca", "roots", "--http-addr", addr)
	if err != nil || !strings.Contains(out, "Trust domain:") || !strings.Contains(out, "true") {
		t.Fatalf("ca roots: %v\n%s", err, out)
	}
	out, err = runCLI(t, "ca", "roots", "--pem", "--http-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(out))
	if blk == nil {
		t.Fatalf("ca roots --pem:\n%s", out)
	}
	if root, err := x509.ParseCertificate(blk.Bytes); err != nil || !root.IsCA {
		t.Fatalf("ca roots --pem printed no CA certificate: %v", err)
	}

	out, err = runCLI(t, "ca", "token", "web-1", "--ttl", "5m", "--http-addr", addr)
	if err != nil || strings.Count(strings.TrimSpace(out), ".") != 2 || strings.Contains(strings.TrimSpace(out), "\n") {
		t.Fatalf("ca token printed %q, %v; want one JWT line", out, err)
	}
	if _, err := runCLI(t, "ca", "token", "bad/name", "--http-addr", addr); err == nil {
		t.Fatal("ca token accepted a bad node name")
	}
	if _, err := runCLI(t, "ca", "token", "web-1", "--ttl", "3h", "--http-addr", addr); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Fatalf("ca token --ttl 3h: %v, want an error naming the ttl", err)
	}

	// With its certificate manager stopped, srv1 keeps its leaf from the
	// old root, so the rotation waits for it instead of completing as soon
	// as srv1 renews.
	mgr.Close()
	out, err = runCLI(t, "ca", "rotate", "--format", "json", "--http-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	var st ca.RotationStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.InProgress || st.From == st.To {
		t.Fatalf("ca rotate: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "ca", "rotate", "--http-addr", addr); err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Fatalf("second ca rotate: %v", err)
	}
	out, err = runCLI(t, "ca", "roots", "--http-addr", addr)
	if err != nil || !strings.Contains(out, "Rotation:") || !strings.Contains(out, "1 node(s) srv1") {
		t.Fatalf("ca roots during a rotation: %v\n%s", err, out)
	}

	out, err = runCLI(t, "ca", "keygen")
	if err != nil || len(strings.TrimSpace(out)) != 44 {
		t.Fatalf("ca keygen: %q, %v", out, err)
	}
}
