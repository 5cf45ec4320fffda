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
//
// Every agent holds the cluster key, so a leaf minted from it proves only
// that its holder is an agent of the cluster, whatever name it carries.
// Servers may hold a second secret, the server key, from which they derive a
// second authority, the server authority, and mint a server leaf under it.
// Connections between servers (PeerServerConfig, PeerClientConfig) then
// accept only server leaves, and IsServerLeaf tells a server's leaf from any
// agent's. The server authority cannot be derived from the cluster key.
//
// Either key rotates without a flag day: Config.AcceptKeys (and
// Config.AcceptServerKeys) name further keys whose authorities are trusted
// besides the own, while leaves are minted from the own key only. A peer
// that holds a key neither used nor accepted here is refused with
// ErrKeyMismatch, naming both sides' keys by Fingerprint, never the keys.
package keytls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
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
	// ErrBadKey is returned for a cluster key (or server key) that is not
	// base64 of 32 bytes.
	ErrBadKey = errors.New("keytls: key must be base64 of 32 bytes")
	// ErrUntrusted is wrapped by every handshake refusal of a peer's chain.
	ErrUntrusted = errors.New("keytls: peer certificate is not trusted")
	// ErrNotServer is wrapped, with ErrUntrusted, by a refusal of a peer
	// that must be a server and presents no leaf of the server authority.
	ErrNotServer = errors.New("keytls: peer is not a server: its certificate was not minted from this cluster's server key")
	// ErrNoServerKey is returned for a server leaf asked of an authority
	// made without a server key.
	ErrNoServerKey = errors.New("keytls: no server key")
	// ErrKeyMismatch is wrapped, with ErrUntrusted, by a refusal of a peer
	// whose leaf was minted from a key that this node neither uses nor
	// accepts: the two were configured with different cluster keys (or
	// server keys). The error names both sides' keys by Fingerprint.
	ErrKeyMismatch = errors.New("keytls: key mismatch")
)

// MaxAcceptKeys bounds Config.AcceptKeys and Config.AcceptServerKeys: a
// rotation needs one, and every accepted key is one more authority that
// each handshake may try.
const MaxAcceptKeys = 4

// Purposes (HKDF info) of the two authorities' keys. Distinct labels keep
// the authorities apart even if one secret were given for both (Validate
// refuses that too).
const (
	clusterCAPurpose = "raft ca v1"
	serverCAPurpose  = "server ca v1"
)

// ParseKey decodes a cluster key: standard or URL base64 of 32 bytes.
func ParseKey(s string) ([]byte, error) {
	b, err := DecodeKey(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return b, nil
}

// GenerateKey returns a new random cluster key in base64.
func GenerateKey() string {
	b := make([]byte, KeySize)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// Fingerprint names a cluster key without revealing it: the first 8 bytes,
// in hex, of the SHA-256 of the public key of the authority it derives.
// The authority's name carries the first 4 of them, and every leaf it
// minted names it (AuthorityKeyId), so a refused peer's key is named by
// the same fingerprint that its holder computes from the key.
func Fingerprint(clusterKey []byte) (string, error) {
	seed, err := DeriveKey(clusterKey, clusterCAPurpose, ed25519.SeedSize)
	if err != nil {
		return "", err
	}
	iss, err := deriveIssuer(seed, clusterCAName)
	if err != nil {
		return "", err
	}
	return caFingerprint(iss.cert), nil
}

// fingerprintLen is the bytes of a key ID that Fingerprint shows.
const fingerprintLen = 8

// caFingerprint is the fingerprint of a derived authority (see Fingerprint).
func caFingerprint(ca *x509.Certificate) string { return kidFingerprint(ca.SubjectKeyId) }

// kidFingerprint is the fingerprint of the authority whose key ID is kid.
func kidFingerprint(kid []byte) string {
	return hex.EncodeToString(kid[:min(len(kid), fingerprintLen)])
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
	// ServerKey is the decoded server key (KeySize bytes), which servers
	// only hold, the same on every server. With it, the authority also
	// derives the server authority and mints a server leaf under it.
	// It must differ from Key. Default: none (an agent that is not a
	// server, or a server of a cluster without a server key).
	ServerKey []byte
	// AcceptKeys are further cluster keys (KeySize bytes each) whose
	// authorities are trusted besides Key's, so that the cluster key
	// rotates without a flag day (docs/operations.md). Nothing is minted
	// from them. At most MaxAcceptKeys, each different from Key, from
	// ServerKey and from the others. Default: none.
	AcceptKeys [][]byte
	// AcceptServerKeys are further server keys, as AcceptKeys are for the
	// cluster key: a server trusts the server authority of every pair of
	// a server key (ServerKey or one of these) and a cluster key (Key or
	// one of AcceptKeys). Only with ServerKey; at most MaxAcceptKeys, each
	// different from ServerKey, from every cluster key and from the
	// others. Default: none.
	AcceptServerKeys [][]byte
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
	if c.ServerKey != nil {
		if len(c.ServerKey) != KeySize {
			return fmt.Errorf("keytls: ServerKey: %w (got %d bytes)", ErrBadKey, len(c.ServerKey))
		}
		if subtle.ConstantTimeCompare(c.ServerKey, c.Key) == 1 {
			return errors.New("keytls: ServerKey: must differ from the cluster key, which every agent holds")
		}
	}
	inUse := []Held{{Name: "Key", Key: c.Key, InUse: true}, {Name: "ServerKey", Key: c.ServerKey, InUse: true}}
	if err := firstAcceptError("AcceptKeys", CheckAccepted("AcceptKeys", c.AcceptKeys, inUse...)); err != nil {
		return err
	}
	if c.AcceptServerKeys != nil && c.ServerKey == nil {
		return errors.New("keytls: AcceptServerKeys: only with ServerKey")
	}
	held := inUse
	for i, k := range c.AcceptKeys {
		held = append(held, Held{Name: fmt.Sprintf("AcceptKeys[%d]", i), Key: k})
	}
	if err := firstAcceptError("AcceptServerKeys", CheckAccepted("AcceptServerKeys", c.AcceptServerKeys, held...)); err != nil {
		return err
	}
	if c.NodeName == "" {
		return errors.New("keytls: NodeName: required")
	}
	if c.LeafTTL < 0 || (c.LeafTTL > 0 && c.LeafTTL < time.Minute) {
		return fmt.Errorf("keytls: LeafTTL %s: must be at least 1m", c.LeafTTL)
	}
	return nil
}

// firstAcceptError is the first of errs as Validate reports it, or nil.
func firstAcceptError(list string, errs []*AcceptError) error {
	if len(errs) == 0 {
		return nil
	}
	e := errs[0]
	if e.Index < 0 {
		return fmt.Errorf("keytls: %s: %w", list, e)
	}
	return fmt.Errorf("keytls: %s[%d]: %w", list, e.Index, e)
}

// Authority holds the derived CA, this node's current leaf under it and,
// on a server with the server key, the server authority and its server
// leaf. It is safe for concurrent use.
type Authority struct {
	cfg     Config
	cluster *issuer
	server  *issuer // nil without Config.ServerKey
	// clusterCAs are the cluster authorities trusted (cluster's first,
	// then AcceptKeys'), serverCAs the server authorities (server's first,
	// then every other pair of accepted keys; empty without ServerKey).
	clusterCAs, serverCAs *authorities

	mu       sync.Mutex
	override func() (*tls.Certificate, error)
	trust    []TrustSource
}

// issuer is a CA derived from a secret, and the leaf this node holds under
// it (guarded by Authority.mu).
type issuer struct {
	key  ed25519.PrivateKey
	cert *x509.Certificate

	leaf     *tls.Certificate
	leafBorn time.Time
}

// caEpoch fixes the CA's validity so that every agent builds the same
// certificate, byte for byte.
var (
	caNotBefore = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	caNotAfter  = time.Date(2124, 1, 1, 0, 0, 0, 0, time.UTC)
)

// New derives the authority from cfg.Key, and the server authority from
// cfg.ServerKey when set. It mints no leaf yet.
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
	a := &Authority{cfg: cfg}
	seed, err := DeriveKey(cfg.Key, clusterCAPurpose, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	if a.cluster, err = deriveIssuer(seed, clusterCAName); err != nil {
		return nil, err
	}
	a.clusterCAs, a.serverCAs = newAuthorities(a.cluster.cert), newAuthorities()
	for _, k := range cfg.AcceptKeys {
		seed, err := DeriveKey(k, clusterCAPurpose, ed25519.SeedSize)
		if err != nil {
			return nil, err
		}
		iss, err := deriveIssuer(seed, clusterCAName)
		if err != nil {
			return nil, err
		}
		a.clusterCAs.add(iss.cert)
	}
	if cfg.ServerKey != nil {
		if a.server, err = deriveIssuer(serverSeed(cfg.ServerKey, cfg.Key), serverCAName); err != nil {
			return nil, err
		}
		a.serverCAs.add(a.server.cert)
		// Every pair: during a rotation of either key, a server may hold
		// the other one's old or new cluster key and server key.
		for i, sk := range append([][]byte{cfg.ServerKey}, cfg.AcceptServerKeys...) {
			for j, ck := range append([][]byte{cfg.Key}, cfg.AcceptKeys...) {
				if i == 0 && j == 0 {
					continue // the own, added above
				}
				iss, err := deriveIssuer(serverSeed(sk, ck), serverCAName)
				if err != nil {
					return nil, err
				}
				a.serverCAs.add(iss.cert)
			}
		}
	}
	return a, nil
}

// authorities is a set of derived authorities that peers' chains may end
// at. It is not modified after New.
type authorities struct {
	pool  *x509.CertPool
	certs []*x509.Certificate          // the one this node mints under first
	byKID map[string]*x509.Certificate // by SubjectKeyId
}

func newAuthorities(certs ...*x509.Certificate) *authorities {
	s := &authorities{pool: x509.NewCertPool(), byKID: map[string]*x509.Certificate{}}
	for _, c := range certs {
		s.add(c)
	}
	return s
}

func (s *authorities) add(c *x509.Certificate) {
	s.pool.AddCert(c)
	s.certs = append(s.certs, c)
	s.byKID[string(c.SubjectKeyId)] = c
}

// signed reports whether leaf was signed by one of the authorities.
func (s *authorities) signed(leaf *x509.Certificate) bool {
	ca := s.byKID[string(leaf.AuthorityKeyId)]
	return ca != nil && leaf.CheckSignatureFrom(ca) == nil
}

// has reports whether the authority with key ID kid is one of them.
func (s *authorities) has(kid []byte) bool {
	_, ok := s.byKID[string(kid)]
	return ok
}

// fingerprints lists the authorities' fingerprints, the own first.
func (s *authorities) fingerprints() []string {
	out := make([]string, len(s.certs))
	for i, c := range s.certs {
		out[i] = caFingerprint(c)
	}
	return out
}

// serverSeed derives the server authority's key from the server key, with
// the cluster key as the salt: a server of another cluster (another
// cluster key) that shares the server key derives another authority, so
// that a misconfigured server is refused rather than half-joined. The
// cluster key alone derives nothing of it.
func serverSeed(serverKey, clusterKey []byte) []byte {
	seed, err := hkdf.Key(sha256.New, serverKey, clusterKey, serverCAPurpose, ed25519.SeedSize)
	if err != nil {
		panic("keytls: HKDF-SHA256 refused 32 bytes: " + err.Error()) // only for outputs over 8160 bytes
	}
	return seed
}

// deriveIssuer makes the CA whose Ed25519 key follows from seed, named
// name and a fingerprint. Ed25519 signatures are deterministic, so every
// holder of the seed's secret derives an identical CA certificate.
func deriveIssuer(seed []byte, name string) (*issuer, error) {
	caKey := ed25519.NewKeyFromSeed(seed)
	pub := caKey.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(sum[:16]),
		Subject:               pkix.Name{CommonName: name + hex.EncodeToString(sum[:4]), Organization: []string{"Meshwork"}},
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
	return &issuer{key: caKey, cert: caCert}, nil
}

// CACert is the derived CA certificate, the same on every agent with the key.
func (a *Authority) CACert() *x509.Certificate { return a.cluster.cert }

// HasServerKey reports whether this authority was made with a server key.
func (a *Authority) HasServerKey() bool { return a.server != nil }

// ServerCACert is the server authority's certificate, the same on every
// server with the server key; nil without one.
func (a *Authority) ServerCACert() *x509.Certificate {
	if a.server == nil {
		return nil
	}
	return a.server.cert
}

// IsServerLeaf reports whether cert, the leaf of a peer whose chain a
// handshake verified, was minted by a server. With a server key, that is a
// leaf of the server authority. Without one, any holder of the cluster key
// can mint what a server presents, and every leaf of the cluster
// authority counts: such an authority cannot tell a server from an agent.
//
// Every authority trusted counts: those of accepted keys too.
func (a *Authority) IsServerLeaf(cert *x509.Certificate) bool {
	if a.server != nil {
		return a.serverCAs.signed(cert)
	}
	return a.clusterCAs.signed(cert)
}

// IsClusterLeaf reports whether cert was minted from the cluster key or
// from one of the accepted cluster keys: the leaf of any agent of the
// cluster, whatever it is.
func (a *Authority) IsClusterLeaf(cert *x509.Certificate) bool {
	return a.clusterCAs.signed(cert)
}

// Fingerprint is the fingerprint (see Fingerprint) of the cluster key this
// authority mints from.
func (a *Authority) Fingerprint() string { return caFingerprint(a.cluster.cert) }

// AcceptedFingerprints are the fingerprints of Config.AcceptKeys, in order.
func (a *Authority) AcceptedFingerprints() []string { return a.clusterCAs.fingerprints()[1:] }

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
	return a.leafLocked(a.cluster)
}

// ServerCertificate returns this server's leaf of the server authority,
// minting or renewing it as Certificate does. It is ErrNoServerKey without
// a server key.
func (a *Authority) ServerCertificate() (*tls.Certificate, error) {
	if a.server == nil {
		return nil, ErrNoServerKey
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.leafLocked(a.server)
}

// leafLocked returns the current leaf under iss, minting a new one when it
// is missing or past two thirds of its life. a.mu is held.
func (a *Authority) leafLocked(iss *issuer) (*tls.Certificate, error) {
	now := a.cfg.Now()
	if iss.leaf != nil && now.Sub(iss.leafBorn) < a.cfg.LeafTTL*2/3 {
		return iss.leaf, nil
	}
	leaf, err := a.mint(iss, now)
	if err != nil {
		return nil, err
	}
	iss.leaf, iss.leafBorn = leaf, now
	return leaf, nil
}

// mint makes a leaf with a fresh P-256 key, signed by iss.
func (a *Authority) mint(iss *issuer, now time.Time) (*tls.Certificate, error) {
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.cert, key.Public(), iss.key)
	if err != nil {
		return nil, fmt.Errorf("keytls: sign leaf: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: crypto.Signer(key), Leaf: leaf}, nil
}

// pools returns the roots a peer's chain may end at on a connection that
// any agent may open: the cluster authority, every trust source and, on a
// server, the server authority (other servers present their server leaf).
func (a *Authority) pools() []*x509.CertPool {
	a.mu.Lock()
	defer a.mu.Unlock()
	pools := []*x509.CertPool{a.clusterCAs.pool}
	if a.server != nil {
		pools = append(pools, a.serverCAs.pool)
	}
	for _, t := range a.trust {
		if p := t.TrustPool(); p != nil {
			pools = append(pools, p)
		}
	}
	return pools
}

// verify checks a peer's chain against pools: it must end at one of them.
// refusal is wrapped with ErrUntrusted in the error.
func (a *Authority) verify(raw [][]byte, usage x509.ExtKeyUsage, pools []*x509.CertPool, refusal error) error {
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
	if err := a.mismatch(certs[0], refusal); err != nil {
		return err
	}
	if refusal != nil {
		return fmt.Errorf("%w: %w: %q: %v", ErrUntrusted, refusal, certs[0].Subject.CommonName, firstErr)
	}
	return fmt.Errorf("%w: %q: %v", ErrUntrusted, certs[0].Subject.CommonName, firstErr)
}

// Names of the derived authorities, which a refused leaf's issuer carries
// when it was minted from a key of this scheme.
const (
	clusterCAName = "Meshwork cluster CA "
	serverCAName  = "Meshwork server CA "
)

// mismatch explains the refusal of a leaf minted from a key that this node
// neither uses nor accepts, naming both sides' keys by fingerprint; nil for
// any other leaf (another CA's, or one of a known authority refused for
// another reason, such as its age). refusal, when set, is wrapped too.
func (a *Authority) mismatch(leaf *x509.Certificate, refusal error) error {
	if len(leaf.AuthorityKeyId) == 0 {
		return nil
	}
	peer := kidFingerprint(leaf.AuthorityKeyId)
	var what string
	switch issuer := leaf.Issuer.CommonName; {
	case strings.HasPrefix(issuer, clusterCAName):
		if a.clusterCAs.has(leaf.AuthorityKeyId) {
			return nil
		}
		what = fmt.Sprintf("it holds cluster key %s, which this node neither uses (%s) nor accepts (%s)",
			peer, a.Fingerprint(), listOrNone(a.AcceptedFingerprints()))
	case strings.HasPrefix(issuer, serverCAName):
		if a.server == nil {
			what = fmt.Sprintf("it presents a leaf of server authority %s, and this node has no server key", peer)
			break
		}
		if a.serverCAs.has(leaf.AuthorityKeyId) {
			return nil
		}
		fps := a.serverCAs.fingerprints()
		what = fmt.Sprintf("it presents a leaf of server authority %s, derived from a server key and cluster key that this node neither uses (server authority %s) nor accepts (%s)",
			peer, fps[0], listOrNone(fps[1:]))
	default:
		return nil
	}
	if refusal != nil {
		return fmt.Errorf("%w: %w: %w: %q: %s", ErrUntrusted, ErrKeyMismatch, refusal, leaf.Subject.CommonName, what)
	}
	return fmt.Errorf("%w: %w: %q: %s", ErrUntrusted, ErrKeyMismatch, leaf.Subject.CommonName, what)
}

// listOrNone joins fingerprints, or says there are none.
func listOrNone(fps []string) string {
	if len(fps) == 0 {
		return "no other"
	}
	return strings.Join(fps, ", ")
}

// ServerConfig returns a TLS 1.3 server config that requires a trusted client
// certificate and offers protos by ALPN. Any agent of the cluster is
// trusted (its cluster-key leaf, a leaf of a trust source), and so is a
// server's leaf, on a server with the server key. Such a server names the
// server authority in its certificate request, so that other servers
// present their server leaf (ClientConfig) and are known as servers.
func (a *Authority) ServerConfig(protos ...string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: protos,
		ClientAuth: tls.RequireAnyClientCert, // verified below, against pools that may change
		// A resumed session is not verified again: turn resumption off,
		// so that every connection's certificate is checked by the rules
		// of its own config.
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.Certificate()
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return a.verify(raw, x509.ExtKeyUsageClientAuth, a.pools(), nil)
		},
	}
	if a.server != nil {
		// Named in the certificate request only (RequireAnyClientCert
		// verifies nothing with it). A client that picks its certificate
		// from a fixed list skips one of another CA, such as a mesh leaf;
		// this package's clients choose in GetClientCertificate.
		all := x509.NewCertPool()
		for _, c := range append(slices.Clone(a.clusterCAs.certs), a.serverCAs.certs...) {
			all.AddCert(c)
		}
		cfg.ClientCAs = all
	}
	return cfg
}

// ClientConfig returns a TLS 1.3 client config that presents this node's
// certificate, asks for proto by ALPN, and accepts only a trusted server.
// A server with the server key presents its server leaf instead to a peer
// that names the server authority in its certificate request (another
// server with the key), and its usual certificate to any other.
func (a *Authority) ClientConfig(proto string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: ServerName,
		// The chain is verified by VerifyPeerCertificate against the
		// current pools; the standard check would pin one pool forever.
		InsecureSkipVerify: true,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if a.server != nil && namesCA(cri.AcceptableCAs, a.server.cert) {
				return a.ServerCertificate()
			}
			return a.Certificate()
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return a.verify(raw, x509.ExtKeyUsageServerAuth, a.pools(), nil)
		},
	}
	if proto != "" {
		cfg.NextProtos = []string{proto}
	}
	return cfg
}

// namesCA reports whether a certificate request's acceptable CAs name ca.
func namesCA(acceptable [][]byte, ca *x509.Certificate) bool {
	for _, name := range acceptable {
		if bytes.Equal(name, ca.RawSubject) {
			return true
		}
	}
	return false
}

// PeerServerConfig is ServerConfig for connections between servers (Raft):
// with the server key, this server presents its server leaf and accepts
// only a peer whose chain ends at the server authority. Without one, it is
// ServerConfig: any agent with the cluster key is accepted.
func (a *Authority) PeerServerConfig(protos ...string) *tls.Config {
	if a.server == nil {
		return a.ServerConfig(protos...)
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             protos,
		ClientAuth:             tls.RequireAnyClientCert, // verified below
		ClientCAs:              a.serverCAs.pool,         // named in the request only
		SessionTicketsDisabled: true,                     // see ServerConfig
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.ServerCertificate()
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return a.verify(raw, x509.ExtKeyUsageClientAuth, []*x509.CertPool{a.serverCAs.pool}, ErrNotServer)
		},
	}
}

// PeerClientConfig is ClientConfig for connections between servers (Raft):
// with the server key, this server presents its server leaf and accepts
// only a peer whose chain ends at the server authority. Without one, it is
// ClientConfig.
func (a *Authority) PeerClientConfig(proto string) *tls.Config {
	if a.server == nil {
		return a.ClientConfig(proto)
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         ServerName,
		InsecureSkipVerify: true, // verified below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return a.ServerCertificate()
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return a.verify(raw, x509.ExtKeyUsageServerAuth, []*x509.CertPool{a.serverCAs.pool}, ErrNotServer)
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
