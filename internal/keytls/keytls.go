// Package keytls makes mutual TLS between agents from one shared secret, the
// cluster key. Every agent derives the same certificate authority from the
// key (an Ed25519 key from HKDF, and a certificate built deterministically
// from it), mints its own short-lived leaf under it with a fresh key, and
// trusts only peers whose chain ends at that authority. A peer without the
// key cannot complete a handshake in either direction.
//
// The trust decision is pluggable: AddTrust adds further roots (the mesh CA's
// trust bundle, once it exists), and SetCertificate replaces the presented
// certificate (a leaf from the mesh CA), without rebuilding any tls.Config.
package keytls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// KeySize is the length of a cluster key in bytes.
const KeySize = 32

// DefaultLeafTTL is the lifetime of a minted leaf. It is renewed at two
// thirds of it, so a long-running agent never presents an expired one.
const DefaultLeafTTL = 24 * time.Hour

// ServerName is the DNS name every leaf carries and every client expects.
// Agents dial each other by IP; the name only ties leaves to this scheme.
const ServerName = "cluster.meshwork"

// Errors.
var (
	// ErrBadKey is returned for a cluster key that is not base64 of 32 bytes.
	ErrBadKey = errors.New("keytls: cluster key must be base64 of 32 bytes")
	// ErrUntrusted is wrapped by every handshake refusal of a peer's chain.
	ErrUntrusted = errors.New("keytls: peer certificate is not trusted")
)

// ParseKey decodes a cluster key: standard or URL base64 of 32 bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("%w (got %d bytes)", ErrBadKey, len(b))
			}
			return b, nil
		}
	}
	return nil, ErrBadKey
}

// GenerateKey returns a new random cluster key in base64.
func GenerateKey() string {
	b := make([]byte, KeySize)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// DeriveKey derives n bytes for purpose from the cluster key with HKDF-SHA256.
// Other parts of the agent use it for keys that must be the same on every
// agent (for example to seal secrets kept in replicated state).
func DeriveKey(clusterKey []byte, purpose string, n int) ([]byte, error) {
	if len(clusterKey) != KeySize {
		return nil, ErrBadKey
	}
	return hkdf.Key(sha256.New, clusterKey, []byte("meshwork"), purpose, n)
}

// TrustSource supplies further roots that a peer's chain may end at. TrustPool
// is called during every handshake, from many goroutines at once; it must be
// cheap and return a pool that is not modified afterwards (or nil).
type TrustSource interface {
	TrustPool() *x509.CertPool
}

// TrustFunc adapts a function to TrustSource.
type TrustFunc func() *x509.CertPool

// TrustPool implements TrustSource.
func (f TrustFunc) TrustPool() *x509.CertPool { return f() }

// Config configures an Authority.
type Config struct {
	// Key is the decoded cluster key (KeySize bytes). Required.
	Key []byte
	// NodeName goes in the leaf's common name, to name peers in logs.
	// Required.
	NodeName string
	// LeafTTL is the lifetime of minted leaves. Default DefaultLeafTTL.
	LeafTTL time.Duration
	// Now tells the time. Default time.Now.
	Now func() time.Time
}

// Validate checks the config.
func (c *Config) Validate() error {
	if len(c.Key) != KeySize {
		return fmt.Errorf("keytls: Key: %w (got %d bytes)", ErrBadKey, len(c.Key))
	}
	if c.NodeName == "" {
		return errors.New("keytls: NodeName: required")
	}
	if c.LeafTTL < 0 || (c.LeafTTL > 0 && c.LeafTTL < time.Minute) {
		return fmt.Errorf("keytls: LeafTTL %s: must be at least 1m", c.LeafTTL)
	}
	return nil
}

// Authority holds the derived CA and this node's current leaf. It is safe for
// concurrent use.
type Authority struct {
	cfg    Config
	caKey  ed25519.PrivateKey
	caCert *x509.Certificate
	pool   *x509.CertPool

	mu       sync.Mutex
	leaf     *tls.Certificate
	leafBorn time.Time
	override func() (*tls.Certificate, error)
	trust    []TrustSource
}

// caEpoch fixes the CA's validity so that every agent builds the same
// certificate, byte for byte.
var (
	caNotBefore = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	caNotAfter  = time.Date(2124, 1, 1, 0, 0, 0, 0, time.UTC)
)

// New derives the authority from cfg.Key. It mints no leaf yet.
func New(cfg Config) (*Authority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.LeafTTL == 0 {
		cfg.LeafTTL = DefaultLeafTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	seed, err := DeriveKey(cfg.Key, "raft ca v1", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	// Ed25519: the key follows from the seed and signatures are
	// deterministic, so every agent derives an identical CA certificate.
	caKey := ed25519.NewKeyFromSeed(seed)
	pub := caKey.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(sum[:16]),
		Subject:               pkix.Name{CommonName: "Meshwork cluster CA " + hex.EncodeToString(sum[:4]), Organization: []string{"Meshwork"}},
		NotBefore:             caNotBefore,
		NotAfter:              caNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          sum[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("keytls: make CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("keytls: parse CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &Authority{cfg: cfg, caKey: caKey, caCert: caCert, pool: pool}, nil
}

// CACert is the derived CA certificate, the same on every agent with the key.
func (a *Authority) CACert() *x509.Certificate { return a.caCert }

// AddTrust adds a source of further roots. Peers whose chain ends at one of
// them are accepted from then on.
func (a *Authority) AddTrust(src TrustSource) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.trust = append(a.trust, src)
}

// SetCertificate makes get the source of the certificate this node presents
// (for example a leaf issued by the mesh CA). get is called on every
// handshake; nil restores the minted cluster-key leaf.
func (a *Authority) SetCertificate(get func() (*tls.Certificate, error)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.override = get
}

// Certificate returns the certificate this node presents, minting or renewing
// the cluster-key leaf when it is missing or past two thirds of its life.
func (a *Authority) Certificate() (*tls.Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.override != nil {
		return a.override()
	}
	now := a.cfg.Now()
	if a.leaf != nil && now.Sub(a.leafBorn) < a.cfg.LeafTTL*2/3 {
		return a.leaf, nil
	}
	leaf, err := a.mint(now)
	if err != nil {
		return nil, err
	}
	a.leaf, a.leafBorn = leaf, now
	return leaf, nil
}

// mint makes a leaf with a fresh P-256 key, signed by the CA.
func (a *Authority) mint(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keytls: leaf key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: a.cfg.NodeName, Organization: []string{"Meshwork"}},
		DNSNames:     []string{ServerName},
		NotBefore:    now.Add(-5 * time.Minute), // tolerate clock skew between agents
		NotAfter:     now.Add(a.cfg.LeafTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.caCert, key.Public(), a.caKey)
	if err != nil {
		return nil, fmt.Errorf("keytls: sign leaf: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: crypto.Signer(key), Leaf: leaf}, nil
}

// verify checks a peer's chain against the cluster CA and every trust source.
func (a *Authority) verify(raw [][]byte, usage x509.ExtKeyUsage) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: no certificate presented", ErrUntrusted)
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUntrusted, err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	a.mu.Lock()
	pools := []*x509.CertPool{a.pool}
	for _, t := range a.trust {
		if p := t.TrustPool(); p != nil {
			pools = append(pools, p)
		}
	}
	a.mu.Unlock()
	var firstErr error
	for _, p := range pools {
		_, err := certs[0].Verify(x509.VerifyOptions{
			Roots:         p,
			Intermediates: inter,
			CurrentTime:   a.cfg.Now(),
			KeyUsages:     []x509.ExtKeyUsage{usage},
		})
		if err == nil {
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return fmt.Errorf("%w: %q: %v", ErrUntrusted, certs[0].Subject.CommonName, firstErr)
}

// ServerConfig returns a TLS 1.3 server config that requires a trusted client
// certificate and offers protos by ALPN.
func (a *Authority) ServerConfig(protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: protos,
		ClientAuth: tls.RequireAnyClientCert, // verified below, against pools that may change
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.Certificate()
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return a.verify(raw, x509.ExtKeyUsageClientAuth)
		},
	}
}

// ClientConfig returns a TLS 1.3 client config that presents this node's
// certificate, asks for proto by ALPN, and accepts only a trusted server.
func (a *Authority) ClientConfig(proto string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: ServerName,
		// The chain is verified by VerifyPeerCertificate against the
		// current pools; the standard check would pin one pool forever.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return a.Certificate()
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return a.verify(raw, x509.ExtKeyUsageServerAuth)
		},
	}
	if proto != "" {
		cfg.NextProtos = []string{proto}
	}
	return cfg
}

// PeerName returns the common name of the verified peer of a connection, for
// logs.
func PeerName(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].Subject.CommonName
}
