package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/x509util"
)

// These are the smallstep sign options the mesh passes to
// authority.SignWithContext. The leaf is built from the identity the server
// has already authorized, never from whatever else the CSR asks for.

// leafTemplate builds the certificate from the authorized identity: the node
// ID as common name, every ID as a URI SAN, digital signature, server and
// client authentication.
type leafTemplate struct{ id Identity }

var _ provisioner.CertificateOptions = leafTemplate{}

func (t leafTemplate) Options(provisioner.SignOptions) []x509util.Option {
	return []x509util.Option{func(_ *x509.CertificateRequest, o *x509util.Options) error {
		b, err := json.Marshal(struct {
			Subject     map[string]string `json:"subject"`
			URIs        []string          `json:"uris"`
			KeyUsage    []string          `json:"keyUsage"`
			ExtKeyUsage []string          `json:"extKeyUsage"`
		}{
			Subject:     map[string]string{"commonName": spiffeid.Node(t.id.TrustDomain, t.id.Node)},
			URIs:        t.id.IDs(),
			KeyUsage:    []string{"digitalSignature"},
			ExtKeyUsage: []string{"serverAuth", "clientAuth"},
		})
		if err != nil {
			return err
		}
		o.CertBuffer = bytes.NewBuffer(b)
		return nil
	}}
}

// csrValidator refuses a CSR that asks for anything but the authorized
// identity or whose key is not ECDSA P-256.
type csrValidator struct{ id Identity }

var _ provisioner.CertificateRequestValidator = csrValidator{}

func (v csrValidator) Valid(csr *x509.CertificateRequest) error {
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
		return fmt.Errorf("%w: csr asks for DNS, IP or email SANs; mesh leaves carry SPIFFE IDs only", ErrBadRequest)
	}
	id, err := ParseIdentity(v.id.TrustDomain, csr.URIs)
	if err != nil {
		return err
	}
	if !id.Equal(v.id) {
		return fmt.Errorf("%w: csr asks for %v, authorized %v", ErrUnauthorized, id.IDs(), v.id.IDs())
	}
	k, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return fmt.Errorf("%w: csr key is a %T, want ECDSA P-256", ErrBadRequest, csr.PublicKey)
	}
	return nil
}

// validity is the certificate modifier that sets the validity period: from
// now minus a small backdate (clock skew between hosts) to now plus the leaf
// lifetime.
type validity struct {
	now      time.Time
	lifetime time.Duration
	backdate time.Duration
}

var _ provisioner.CertificateModifier = validity{}

func (v validity) Modify(c *x509.Certificate, _ provisioner.SignOptions) error {
	c.NotBefore = v.now.Add(-v.backdate)
	c.NotAfter = v.now.Add(v.lifetime)
	return nil
}

// issuerBound is the authority-wide enforcer (authority.WithX509Enforcers):
// no leaf outlives its issuer, and no leaf is a CA.
type issuerBound struct{ issuer *x509.Certificate }

var _ provisioner.CertificateEnforcer = issuerBound{}

func (e issuerBound) Enforce(c *x509.Certificate) error {
	if c.NotAfter.After(e.issuer.NotAfter) {
		c.NotAfter = e.issuer.NotAfter
	}
	if c.IsCA || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return fmt.Errorf("a leaf may not be a CA")
	}
	c.BasicConstraintsValid = false
	return nil
}

// backdateFor is the backdate of leaves of the given lifetime: one minute,
// or a tenth of a very short lifetime.
func backdateFor(lifetime time.Duration) time.Duration {
	return min(time.Minute, lifetime/10)
}
