package ca

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/testnet"
)

// signLeaf signs a leaf for uris with the given CA, bypassing every check
// of the CA: what a rogue or foreign CA could present.
func signLeaf(t *testing.T, issuer *x509.Certificate, issuerKey any, uris []string, notBefore, notAfter time.Time) (*x509.Certificate, *tls.Certificate) {
	t.Helper()
	k, _ := newKey()
	sn, _ := serial()
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: "x"},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, k.Public(), issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, &tls.Certificate{Certificate: [][]byte{der, issuer.Raw}, PrivateKey: k, Leaf: c}
}

// foreignCA is a CA of another mesh, without name constraints.
func foreignCA(t *testing.T) (*x509.Certificate, any) {
	t.Helper()
	root, key, err := newRoot("other.test", 1, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return root, key
}

func TestVerifyPeer(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	m := c.manager("a", func(mc *ManagerConfig) { mc.Token = c.token(srv, "a") }, nil, fixed(rs.addr))
	peer := c.manager("b", func(mc *ManagerConfig) { mc.Token = c.token(srv, "b"); mc.Services = []string{"api"} }, nil, fixed(rs.addr))
	sg := srv.cur.Load()
	inter, interKey := sg.chain[0], sg.issuerKey
	froot, fkey := foreignCA(t)
	now := time.Now()
	good, _ := peer.GetCertificate(nil)

	_, otherTD := signLeaf(t, inter, interKey, []string{"spiffe://other.test/node/x"}, now.Add(-time.Minute), now.Add(time.Hour))
	_, foreign := signLeaf(t, froot, fkey, []string{"spiffe://mesh.test/node/x"}, now.Add(-time.Minute), now.Add(time.Hour))
	_, expired := signLeaf(t, inter, interKey, []string{"spiffe://mesh.test/node/x"}, now.Add(-2*time.Hour), now.Add(-time.Hour))
	_, noNode := signLeaf(t, inter, interKey, []string{"spiffe://mesh.test/svc/x"}, now.Add(-time.Minute), now.Add(time.Hour))
	_, https := signLeaf(t, inter, interKey, []string{"https://mesh.test/node/x"}, now.Add(-time.Minute), now.Add(time.Hour))
	_, caLeaf := signLeaf(t, inter, interKey, nil, now.Add(-time.Minute), now.Add(time.Hour))

	tests := []struct {
		name    string
		raw     [][]byte
		want    error
		wantIDs []string
	}{
		{"mesh leaf", good.Certificate, nil, []string{"spiffe://mesh.test/node/b", "spiffe://mesh.test/svc/api"}},
		{"another CA", foreign.Certificate, ErrUntrusted, nil},
		{"another trust domain under our intermediate", otherTD.Certificate, ErrUntrusted, nil}, // refused by the name constraint
		{"expired", expired.Certificate, ErrUntrusted, nil},
		{"no node ID", noNode.Certificate, ErrTrustDomain, nil},
		{"not SPIFFE", https.Certificate, ErrTrustDomain, nil},
		{"no URI at all", caLeaf.Certificate, ErrTrustDomain, nil},
		{"leaf without its intermediate", good.Certificate[:1], ErrUntrusted, nil},
		{"garbage", [][]byte{[]byte("not DER")}, ErrUntrusted, nil},
		{"empty", nil, ErrUntrusted, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, err := m.VerifyPeer(tt.raw)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("VerifyPeer = %v, want %v", err, tt.want)
			}
			if !slices.Equal(ids, tt.wantIDs) {
				t.Fatalf("ids = %v, want %v", ids, tt.wantIDs)
			}
		})
	}

	// A bundle that also trusts a foreign root (federation, or a mistake):
	// the foreign root's leaves of its own trust domain are still refused.
	t.Run("trusted root, other trust domain", func(t *testing.T) {
		_, fleaf := signLeaf(t, froot, fkey, []string{"spiffe://other.test/node/x"}, now.Add(-time.Minute), now.Add(time.Hour))
		b := m.Bundle()
		fb := (&Bundle{TrustDomain: testTD, Roots: append(slices.Clone(b.Roots), froot), ActiveRoot: b.ActiveRoot, Generation: b.Generation}).init()
		if _, _, err := fb.verifyChain(mustParse(t, fleaf.Certificate), now); !errors.Is(err, ErrTrustDomain) {
			t.Fatalf("got %v, want ErrTrustDomain", err)
		}
	})
}

func mustParse(t *testing.T, raw [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// TestHandshakeRefusesOtherCA runs real TLS handshakes on loopback: a mesh
// peer gets through, a peer with a certificate of another CA or of another
// trust domain does not, in either direction.
func TestHandshakeRefusesOtherCA(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	a := c.manager("a", func(mc *ManagerConfig) { mc.Token = c.token(srv, "a") }, nil, fixed(rs.addr))
	b := c.manager("b", func(mc *ManagerConfig) { mc.Token = c.token(srv, "b") }, nil, fixed(rs.addr))
	addr, srvErrs := tlsEcho(t, a)

	// Another mesh, with its own CA and the same trust domain name.
	other := newCluster(t)
	osrv := other.server("srv1", nil)
	ors := other.rpc(osrv)
	o := other.manager("o", func(mc *ManagerConfig) { mc.Token = other.token(osrv, "o") }, nil, fixed(ors.addr))
	froot, fkey := foreignCA(t)
	now := time.Now()
	_, otherTD := signLeaf(t, froot, fkey, []string{"spiffe://other.test/node/x"}, now.Add(-time.Minute), now.Add(time.Hour))

	call := func(cfg *tls.Config) error {
		conn, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := io.ReadAll(conn)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return errors.New("server closed without answering")
		}
		return nil
	}
	if err := call(b.ClientTLSConfig()); err != nil {
		t.Fatalf("mesh peer refused: %v", err)
	}
	withCert := func(cert *tls.Certificate) *tls.Config {
		cfg := b.ClientTLSConfig()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		return cfg
	}
	for name, cfg := range map[string]*tls.Config{
		"client of another CA":           o.ClientTLSConfig(),
		"client of another trust domain": withCert(otherTD),
	} {
		if err := call(cfg); err == nil {
			t.Errorf("%s: handshake succeeded", name)
		}
	}
	testnet.Eventually(t, 5*time.Second, "the server to record both failed handshakes", testnet.Holds(func() bool { return len(srvErrs()) == 2 }))
	// And the other way: a mesh client refuses a server of another CA.
	oaddr, _ := tlsEcho(t, o)
	conn, err := tls.Dial("tcp", oaddr, b.ClientTLSConfig())
	if err == nil {
		conn.Close()
		t.Fatal("mesh client accepted a server of another CA")
	}
	if !errors.Is(err, ErrUntrusted) {
		t.Fatalf("client error %v, want ErrUntrusted", err)
	}
}
