package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshwork/meshwork/ca/stepcatest"
)

// startStepCA runs a real step-ca for the test, or skips when the binaries
// are not installed.
func startStepCA(t *testing.T) *stepcatest.CA {
	t.Helper()
	if _, _, err := stepcatest.Binaries(); err != nil {
		t.Skipf("skipping the step-ca integration test: %v", err)
	}
	sca, err := stepcatest.Start(ctxT(t, 60*time.Second), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sca.Close() })
	return sca
}

// TestStepCAProvider issues mesh identities from a real step-ca that the
// test initialises and starts on loopback.
func TestStepCAProvider(t *testing.T) {
	sca := startStepCA(t)
	cfg := Config{Provider: ProviderStepCA, TrustDomain: testTD, LeafTTL: time.Hour, StepCA: StepCAConfig{
		URL: sca.URL, RootFingerprint: sca.Fingerprint, Provisioner: sca.Provisioner, PasswordFile: sca.PasswordFile,
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sc := cfg.StepCA
	sc.TrustDomain, sc.LeafTTL, sc.Logger = testTD, time.Hour, testLogger(t)
	p, err := NewStepCA(sc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(ManagerConfig{TrustDomain: testTD, Node: "edge-1", Services: []string{"web", "api"}, RetryMin: 50 * time.Millisecond},
		ManagerDeps{Issuer: p, Bundles: p, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.WaitReady(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	cert, _ := m.GetCertificate(nil)
	var ids []string
	for _, u := range cert.Leaf.URIs {
		ids = append(ids, u.String())
	}
	want := []string{"spiffe://mesh.test/node/edge-1", "spiffe://mesh.test/svc/api", "spiffe://mesh.test/svc/web"}
	if !slices.Equal(ids, want) {
		t.Fatalf("URI SANs %v, want %v", ids, want)
	}
	b := m.Bundle()
	if len(b.Roots) != 1 || Fingerprint(b.Roots[0]) != sca.Fingerprint {
		t.Fatalf("bundle is not the step-ca root")
	}
	chain := mustParse(t, cert.Certificate)
	if _, _, err := b.verifyChain(chain, time.Now()); err != nil {
		t.Fatalf("leaf does not chain to the step-ca root: %v", err)
	}
	if life := cert.Leaf.NotAfter.Sub(time.Now()); life > time.Hour+time.Minute || life < 50*time.Minute {
		t.Fatalf("leaf lifetime %s, want about 1h", life)
	}

	// Two agents verify each other with certificates from step-ca.
	peer, err := NewManager(ManagerConfig{TrustDomain: testTD, Node: "edge-2"}, ManagerDeps{Issuer: p, Bundles: p})
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := peer.WaitReady(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	addr, _ := tlsEcho(t, m)
	if err := oneCall(addr, peer.ClientTLSConfig()); err != nil {
		t.Fatalf("mTLS between step-ca identities: %v", err)
	}

	// New services: a new leaf from step-ca.
	if err := m.SetServices([]string{"web"}); err != nil {
		t.Fatal(err)
	}
	waitLeafIDs(t, m, []string{"spiffe://mesh.test/node/edge-1", "spiffe://mesh.test/svc/web"}, 30*time.Second)

	// step-ca refuses a CSR whose SANs the token does not cover.
	k, _ := newKey()
	der, _ := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{DNSNames: []string{"evil.example"}, URIs: mustIdentity(t, "edge-3").URIs()}, k)
	if _, err := p.Issue(context.Background(), IssueRequest{CSR: der}); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("step-ca signed a CSR with extra SANs: %v", err)
	}

	// The provisioner key may also come from a file (the encrypted JWK),
	// so that no request for it goes to the CA.
	t.Run("key file", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(sca.Dir, "config", "ca.json"))
		if err != nil {
			t.Fatal(err)
		}
		var cj struct {
			Authority struct {
				Provisioners []struct {
					Name         string `json:"name"`
					EncryptedKey string `json:"encryptedKey"`
				} `json:"provisioners"`
			} `json:"authority"`
		}
		if err := json.Unmarshal(raw, &cj); err != nil || len(cj.Authority.Provisioners) == 0 {
			t.Fatalf("ca.json: %v", err)
		}
		keyFile := filepath.Join(t.TempDir(), "provisioner.jwe")
		if err := os.WriteFile(keyFile, []byte(cj.Authority.Provisioners[0].EncryptedKey), 0o600); err != nil {
			t.Fatal(err)
		}
		kc := sc
		kc.KeyFile = keyFile
		kp, err := NewStepCA(kc)
		if err != nil {
			t.Fatal(err)
		}
		id := mustIdentity(t, "edge-5", "db")
		k, _ := newKey()
		der, _ := newCSR(id, k)
		is, err := kp.Issue(context.Background(), IssueRequest{CSR: der})
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseIdentity(testTD, is.Chain[0].URIs)
		if err != nil || !got.Equal(id) {
			t.Fatalf("identity %v, %v", got, err)
		}
	})

	// A wrong fingerprint is refused before anything is sent.
	bad := sc
	bad.RootFingerprint = "00" + sca.Fingerprint[2:]
	bp, err := NewStepCA(bad)
	if err != nil {
		t.Fatal(err)
	}
	der2, _ := newCSR(mustIdentity(t, "edge-4"), k)
	if _, err := bp.Issue(context.Background(), IssueRequest{CSR: der2}); !errors.Is(err, ErrNotReady) {
		t.Fatalf("wrong root fingerprint: %v, want ErrNotReady", err)
	}
}

func mustIdentity(t *testing.T, node string, services ...string) Identity {
	t.Helper()
	id, err := NewIdentity(testTD, node, services)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
