package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
)

// maxPEMCerts bounds how many certificates one PEM bundle may hold.
const maxPEMCerts = 32

// Fingerprint is the SHA-256 of a certificate's DER, in lowercase hex: the
// form `step ca root` and `step certificate fingerprint` print.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// newKey generates an ECDSA P-256 key, the only key type the mesh uses.
func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(der) // RFC 5280 method 1 identifies, it does not protect
	return sum[:], nil
}

// newRoot makes a self-signed root for trust domain td.
func newRoot(td string, gen int, now time.Time, ttl time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"Meshwork"}, CommonName: fmt.Sprintf("Meshwork Root CA %s g%d", td, gen)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

// intermediateTemplate is the template of the intermediate of generation gen.
// It is signed once by its own root and, during a rotation, once more by the
// previous root (the cross-signed copy): both copies share subject, key and
// key identifier, so a verifier finds whichever path its bundle allows.
// PermittedURIDomains confines every leaf under it to the trust domain.
func intermediateTemplate(td string, gen int, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"Meshwork"}, CommonName: fmt.Sprintf("Meshwork Intermediate CA %s g%d", td, gen)},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski,
		PermittedURIDomains:   []string{td},
	}, nil
}

// signCA signs tmpl with parent/parentKey, never past the parent's expiry.
func signCA(tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) (*x509.Certificate, error) {
	t := *tmpl
	if t.NotAfter.After(parent.NotAfter) {
		t.NotAfter = parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// EncodeCertificatesPEM returns certs as concatenated PEM blocks.
func EncodeCertificatesPEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// ParseCertificatesPEM parses a PEM bundle of certificates, such as a trust
// bundle or a chain. It refuses blocks of another type, PEM headers, text
// between or after the blocks (other than whitespace), an empty bundle and
// more than 32 certificates, naming the problem and the block.
func ParseCertificatesPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := b
	for i := 1; ; i++ {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		if i > maxPEMCerts {
			return nil, fmt.Errorf("%w: PEM bundle holds more than %d certificates", ErrBadRequest, maxPEMCerts)
		}
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("%w: PEM block %d: text where a PEM block should begin", ErrBadRequest, i)
		}
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("%w: PEM block %d is malformed", ErrBadRequest, i)
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %d is a %q, want CERTIFICATE", ErrBadRequest, i, blk.Type)
		}
		if len(blk.Headers) != 0 {
			return nil, fmt.Errorf("%w: PEM block %d has headers", ErrBadRequest, i)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: PEM block %d: %v", ErrBadRequest, i, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: PEM bundle holds no certificate", ErrBadRequest)
	}
	return out, nil
}

// ParseCSRPEM parses one PEM "CERTIFICATE REQUEST" and checks its signature
// (proof that the requester holds the private key).
func ParseCSRPEM(b []byte) (*x509.CertificateRequest, error) {
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: csr: not PEM", ErrBadRequest)
	}
	if blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: csr: PEM block is a %q, want CERTIFICATE REQUEST", ErrBadRequest, blk.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: csr: data after the PEM block", ErrBadRequest)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: csr: %v", ErrBadRequest, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: csr: signature: %v", ErrBadRequest, err)
	}
	return csr, nil
}

// encodeCSRPEM returns der as a PEM CERTIFICATE REQUEST.
func encodeCSRPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// newCSR makes a CSR for id signed by key: the node ID as common name, every
// ID as a URI SAN, nothing else.
func newCSR(id Identity, key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: spiffeid.Node(id.TrustDomain, id.Node)},
		URIs:    id.URIs(),
	}, key)
}

func marshalKey(k *ecdsa.PrivateKey) ([]byte, error) {
	return x509.MarshalPKCS8PrivateKey(k)
}

func parseKey(der []byte) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key is a %T, want ECDSA P-256", k)
	}
	return ek, nil
}
