// Package transporttest holds twins of the transport's collaborators for
// tests and benchmarks: a throwaway certificate authority issuing SPIFFE
// leaf certificates (ECDSA P-256), and an in-memory identity whose
// certificate and trust bundle can be rotated while connections are open.
// It is not for production: the CA key lives in memory. CheckMetricNames
// checks a package's metric names.
package transporttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
)

// CA is a self-signed root that issues leaf certificates directly.
type CA struct {
	// TrustDomain is the SPIFFE trust domain of the identities it issues.
	TrustDomain string
	Cert        *x509.Certificate
	Key         *ecdsa.PrivateKey
}

// NewCA makes a root valid for a day.
func NewCA(trustDomain string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "meshwork test root " + trustDomain},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{TrustDomain: trustDomain, Cert: cert, Key: key}, nil
}

func randSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NodeID is the SPIFFE ID of a node.
func (ca *CA) NodeID(node string) string {
	return spiffeid.Node(ca.TrustDomain, node)
}

// ServiceID is the SPIFFE ID of a service.
func (ca *CA) ServiceID(svc string) string {
	return spiffeid.Service(ca.TrustDomain, svc)
}

// IssueNode issues the leaf of a node hosting services: one URI SAN for the
// node and one for each service, as the mesh CA does.
func (ca *CA) IssueNode(node string, services []string, ttl time.Duration) (*tls.Certificate, error) {
	ids := []string{ca.NodeID(node)}
	for _, s := range services {
		ids = append(ids, ca.ServiceID(s))
	}
	return ca.Issue(ids, ttl)
}

// Issue issues a leaf carrying exactly the URI SANs ids, valid for ttl.
func (ca *CA) Issue(ids []string, ttl time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	var uris []*url.URL
	for _, id := range ids {
		u, err := url.Parse(id)
		if err != nil {
			return nil, fmt.Errorf("transporttest: SAN %q: %w", id, err)
		}
		uris = append(uris, u)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// WriteRootPEM writes the root certificate to path.
func (ca *CA) WriteRootPEM(path string) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644)
}

// WritePEM writes cert's chain and key to dir/name.crt and dir/name.key,
// and both together to dir/name.pem (the form HAProxy wants).
func WritePEM(dir, name string, cert *tls.Certificate) (crtFile, keyFile, bothFile string, err error) {
	var crt []byte
	for _, der := range cert.Certificate {
		crt = append(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return "", "", "", err
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	crtFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	bothFile = filepath.Join(dir, name+".pem")
	for _, f := range []struct {
		path string
		data []byte
	}{{crtFile, crt}, {keyFile, key}, {bothFile, append(append([]byte(nil), crt...), key...)}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return "", "", "", err
		}
	}
	return crtFile, keyFile, bothFile, nil
}

// Identity is an in-memory twin of the agent's certificate manager: it
// serves its current certificate to TLS and verifies peers against its
// current roots. Both can be swapped at any time (rotation).
type Identity struct {
	trustDomain string
	cert        atomic.Pointer[tls.Certificate]
	roots       atomic.Pointer[x509.CertPool]
	// Served counts the certificates handed to TLS handshakes.
	Served atomic.Int64
}

// NewIdentity returns an identity presenting cert and trusting roots.
func NewIdentity(trustDomain string, cert *tls.Certificate, roots ...*CA) *Identity {
	id := &Identity{trustDomain: trustDomain}
	id.SetCertificate(cert)
	id.SetRoots(roots...)
	return id
}

// SetCertificate rotates the leaf; handshakes after the call present it.
func (id *Identity) SetCertificate(c *tls.Certificate) { id.cert.Store(c) }

// SetRoots replaces the trust bundle.
func (id *Identity) SetRoots(cas ...*CA) {
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca.Cert)
	}
	id.roots.Store(pool)
}

// LoadIdentity reads an identity from PEM files: a certificate chain, its
// key, and the roots to trust (as WritePEM and WriteRootPEM write them).
func LoadIdentity(trustDomain, certFile, keyFile, rootsFile string) (*Identity, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	roots, err := os.ReadFile(rootsFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		return nil, fmt.Errorf("transporttest: %s holds no certificate", rootsFile)
	}
	id := &Identity{trustDomain: trustDomain}
	id.cert.Store(&cert)
	id.roots.Store(pool)
	return id, nil
}

// Certificate returns the current leaf.
func (id *Identity) Certificate() *tls.Certificate { return id.cert.Load() }

// GetCertificate serves the current leaf to TLS servers.
func (id *Identity) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	id.Served.Add(1)
	return id.cert.Load(), nil
}

// GetClientCertificate serves the current leaf to TLS clients.
func (id *Identity) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	id.Served.Add(1)
	return id.cert.Load(), nil
}

// ErrForeign is returned by VerifyPeer for a chain that does not lead to a
// current root, or carries no identity of the trust domain.
var ErrForeign = errors.New("transporttest: peer not trusted")

// VerifyPeer verifies a peer chain against the current roots and returns
// its SPIFFE IDs in the trust domain.
func (id *Identity) VerifyPeer(rawCerts [][]byte) ([]string, error) {
	if len(rawCerts) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrForeign)
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrForeign, i, err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         id.roots.Load(),
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrForeign, err)
	}
	var ids []string
	for _, u := range certs[0].URIs {
		if _, err := spiffeid.FromURL(id.trustDomain, u); err == nil {
			ids = append(ids, u.String())
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no SPIFFE ID in trust domain %s", ErrForeign, id.trustDomain)
	}
	return ids, nil
}
