package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for everything the CA parses from outside: RPC bodies (CSR
// and token), PEM bundles, bundle documents, peer certificate chains and
// bootstrap tokens. Each has a seed corpus built from valid inputs and a few
// broken ones.

// seeds builds valid inputs once per fuzz target.
type seeds struct {
	srv     *Server
	csrPEM  string
	token   string
	chain   [][]byte
	bundle  []byte
	rootPEM []byte
	mgr     *Manager
}

func newSeeds(f *testing.F) *seeds {
	f.Helper()
	st := NewMemStore()
	srv, err := NewServer(ServerConfig{TrustDomain: testTD, Node: "srv1", StateKey: bytes.Repeat([]byte{7}, StateKeySize)}, ServerDeps{State: st})
	if err != nil {
		f.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitReady(ctx); err != nil {
		f.Fatal(err)
	}
	k, _ := newKey()
	id, _ := NewIdentity(testTD, "n1", []string{"web"})
	der, _ := newCSR(id, k)
	tok, _, err := srv.Token(ctx, "n1", 0)
	if err != nil {
		f.Fatal(err)
	}
	m, err := NewManager(ManagerConfig{TrustDomain: testTD, Node: "srv1"}, ManagerDeps{Issuer: srv.LocalIssuer(), Bundles: NewStateBundleSource(st, testTD)})
	if err != nil {
		f.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	if err := m.WaitReady(ctx); err != nil {
		f.Fatal(err)
	}
	cert, _ := m.GetCertificate(nil)
	bj, _ := json.Marshal(srv.Bundle().JSON())
	return &seeds{
		srv: srv, csrPEM: string(encodeCSRPEM(der)), token: tok, chain: cert.Certificate,
		bundle: bj, rootPEM: EncodeCertificatesPEM(srv.Bundle().Roots...), mgr: m,
	}
}

// FuzzRPCSignBody drives the sign and renew handlers with arbitrary bodies:
// never a panic, never a 5xx, and nothing but a 200 or a known error code.
func FuzzRPCSignBody(f *testing.F) {
	s := newSeeds(f)
	good, _ := json.Marshal(SignRequest{CSR: s.csrPEM, Token: s.token})
	noTok, _ := json.Marshal(SignRequest{CSR: s.csrPEM})
	for _, b := range [][]byte{good, noTok, []byte(`{}`), []byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n","token":"x"}`),
		[]byte(`{"csr":1}`), []byte(`{"csr":"x","token":"y","extra":1}`), []byte(`{"csr":"x"} trailing`), []byte(``), []byte(`[`)} {
		f.Add(b, true)
		f.Add(b, false)
	}
	h := s.srv.RPCHandler()
	f.Fuzz(func(t *testing.T, body []byte, sign bool) {
		path := RPCPathRenew
		if sign {
			path = RPCPathSign
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code == http.StatusOK {
			return // a valid token and CSR found by the fuzzer (the seed)
		}
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
		var e RPCError
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" || e.Code == "" || e.Code == "internal" {
			t.Fatalf("error body %q for %q", w.Body, body)
		}
	})
}

// FuzzDecodeSignRequest checks the body parser alone: a body it accepts
// has a CSR whose signature holds.
func FuzzDecodeSignRequest(f *testing.F) {
	s := newSeeds(f)
	good, _ := json.Marshal(SignRequest{CSR: s.csrPEM, Token: s.token})
	f.Add(good, true)
	withAgent, _ := json.Marshal(SignRequest{CSR: s.csrPEM, AgentToken: "mwt_" + strings.Repeat("A", 43)})
	f.Add(withAgent, false)
	f.Add([]byte(`{"csr":"x","agent_token":"`+strings.Repeat("A", maxAgentTokenLen+1)+`"}`), false)
	f.Add([]byte(`{"csr":"","token":""}`), false)
	f.Add([]byte(`{"csr":"`+strings.Repeat("A", 100)+`"}`), false)
	f.Fuzz(func(t *testing.T, body []byte, wantToken bool) {
		csr, tok, err := DecodeSignRequest(body, wantToken)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if csr == nil || csr.CheckSignature() != nil || (wantToken && tok == "") {
			t.Fatal("accepted a request without a valid CSR or token")
		}
	})
}

// FuzzParseCertificatesPEM: trust bundles and chains in PEM.
func FuzzParseCertificatesPEM(f *testing.F) {
	s := newSeeds(f)
	f.Add(s.rootPEM)
	f.Add([]byte(s.csrPEM))
	f.Add(append(append([]byte{}, s.rootPEM...), "junk"...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCertificatesPEM(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if len(certs) == 0 || len(certs) > maxPEMCerts {
			t.Fatalf("%d certificates", len(certs))
		}
	})
}

// FuzzParseBundleJSON: the bundle document of the state and the RPC.
func FuzzParseBundleJSON(f *testing.F) {
	s := newSeeds(f)
	f.Add(s.bundle)
	f.Add([]byte(`{"trust_domain":"mesh.test","roots":"","active_root":"x","generation":1}`))
	f.Add([]byte(`{"trust_domain":"BAD","roots":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		bundle, err := ParseBundleJSON(b)
		if err != nil {
			return
		}
		if len(bundle.Roots) == 0 || bundle.Pool() == nil || ValidateTrustDomain(bundle.TrustDomain) != nil {
			t.Fatal("accepted an unusable bundle")
		}
		for _, r := range bundle.Roots {
			if !r.IsCA {
				t.Fatal("accepted a bundle with a non-CA root")
			}
		}
	})
}

// FuzzVerifyPeer: the chain a peer presents in a handshake.
func FuzzVerifyPeer(f *testing.F) {
	s := newSeeds(f)
	f.Add(s.chain[0], s.chain[1])
	f.Add(s.chain[1], s.chain[0])
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00}, []byte{})
	good := string(s.chain[0])
	f.Fuzz(func(t *testing.T, leaf, inter []byte) {
		raw := [][]byte{leaf}
		if len(inter) > 0 {
			raw = append(raw, inter)
		}
		ids, err := s.mgr.VerifyPeer(raw)
		if err != nil {
			if !errors.Is(err, ErrUntrusted) && !errors.Is(err, ErrTrustDomain) {
				t.Fatalf("error %v wraps neither ErrUntrusted nor ErrTrustDomain", err)
			}
			return
		}
		if string(leaf) != good || len(ids) == 0 {
			t.Fatalf("accepted a chain the CA did not issue: %v", ids)
		}
	})
}

// FuzzBootstrapToken: tokens sent with a valid CSR. Only the real token
// (once) may succeed; anything else is refused as a bad or used token,
// and a refused token never reaches the replicated ledger.
func FuzzBootstrapToken(f *testing.F) {
	s := newSeeds(f)
	f.Add(s.token)
	parts := strings.Split(s.token, ".")
	f.Add(parts[0] + "." + parts[1] + ".AAAA")
	f.Add(parts[0] + ".e30." + parts[2])
	f.Add("")
	f.Add("a.b.c")
	csr, err := ParseCSRPEM([]byte(s.csrPEM))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		_, err := s.srv.SignWithToken(context.Background(), tok, csrCopy(csr), "")
		if err == nil {
			if tok != s.token {
				t.Fatalf("accepted a token the CA did not make: %q", tok)
			}
			return
		}
		if !errors.Is(err, ErrBadToken) && !errors.Is(err, ErrTokenUsed) {
			t.Fatalf("error %v wraps neither ErrBadToken nor ErrTokenUsed", err)
		}
	})
}

func csrCopy(c *x509.CertificateRequest) *x509.CertificateRequest {
	cp, _ := x509.ParseCertificateRequest(c.Raw)
	return cp
}
