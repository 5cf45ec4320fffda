package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/internal/atomicfile"
)

// TLSIdentity is what the data plane needs from the CA to run mTLS listeners
// and dialers (QUIC or TCP). *Manager implements it.
//
// Contract:
//   - GetCertificate and GetClientCertificate return the current leaf. Put
//     them in tls.Config (not Certificates): every handshake then gets the
//     leaf current at that moment, so a renewal or a root rotation applies
//     without restarting listeners, and established connections are left
//     alone (TLS never re-checks a certificate after the handshake). They
//     fail with ErrNoCertificate before the first leaf. They never block.
//   - VerifyPeer checks a peer's chain (rawCerts as tls passes them to
//     VerifyPeerCertificate: leaf first) against the trust bundle current at
//     that moment, which holds two roots during a rotation, and returns the
//     peer's SPIFFE IDs (node first, then services). It refuses a chain that
//     does not lead to a root of the bundle (ErrUntrusted) and a leaf that is
//     not of the trust domain or not a mesh identity (ErrTrustDomain). Host
//     names are not checked: identities are SPIFFE IDs. It never blocks.
//   - Changes returns a channel closed at the next change of the leaf or the
//     bundle; call it again for the change after that. Consumers need not
//     act on it for TLS (the callbacks above are always current); it is for
//     caches of derived state and for tests.
//
// All methods are safe for concurrent use.
type TLSIdentity interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	VerifyPeer(rawCerts [][]byte) (spiffeIDs []string, err error)
	Changes() <-chan struct{}
}

var _ TLSIdentity = (*Manager)(nil)

// ManagerConfig configures the agent-side certificate manager.
type ManagerConfig struct {
	// TrustDomain is the SPIFFE trust domain. Required.
	TrustDomain string
	// Node is this agent's node name. Required.
	Node string
	// Services are the local services at start; see SetServices. Default
	// none.
	Services []string
	// DataDir keeps the leaf (key and chain, one file, mode 0600) and the
	// trust bundle across restarts. Default "": memory only.
	DataDir string
	// Token is the bootstrap token, used when there is no valid leaf.
	// Default none.
	Token string
	// RenewFraction is the part of a leaf's lifetime after which it is
	// renewed. Default 2/3.
	RenewFraction float64
	// Jitter brings renewal forward by a random part of the lifetime up to
	// Jitter, so that agents do not renew in step. Default 0.05.
	Jitter float64
	// RotationSpread is the longest random delay before renewing when the
	// bundle's active root changes, so that a rotation does not make every
	// agent call the servers at once. Default 30s.
	RotationSpread time.Duration
	// RetryMin and RetryMax bound the backoff after a failed issuance.
	// Defaults 500ms and 30s.
	RetryMin, RetryMax time.Duration
	// WithheldRetry is how soon a leaf that the CA issued without some of
	// the services asked for (policy does not let this node hold them) is
	// asked for again, so that a change of policy reaches the node before
	// its next renewal. Default 5m.
	WithheldRetry time.Duration
	// RequestTimeout bounds one issuance. Default 30s.
	RequestTimeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand returns numbers in [0, 1) for jitter. Default math/rand/v2.
	Rand func() float64
}

func (c *ManagerConfig) setDefaults() {
	if c.RenewFraction == 0 {
		c.RenewFraction = DefaultRenewFraction
	}
	if c.Jitter == 0 {
		c.Jitter = DefaultJitter
	}
	if c.RotationSpread == 0 {
		c.RotationSpread = DefaultRotationSpread
	}
	if c.RetryMin == 0 {
		c.RetryMin = 500 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.WithheldRetry == 0 {
		c.WithheldRetry = 5 * time.Minute
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
}

// Validate checks c after defaults.
func (c ManagerConfig) Validate() error {
	c.setDefaults()
	if err := ValidateTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("%w: TrustDomain: %v", ErrInvalidConfig, err)
	}
	if err := ValidateName("node", c.Node); err != nil {
		return fmt.Errorf("%w: Node: %v", ErrInvalidConfig, err)
	}
	for _, s := range c.Services {
		if err := ValidateName("service", s); err != nil {
			return fmt.Errorf("%w: Services: %v", ErrInvalidConfig, err)
		}
	}
	if c.RenewFraction <= 0.1 || c.RenewFraction >= 0.95 {
		return fmt.Errorf("%w: RenewFraction %v: want between 0.1 and 0.95", ErrInvalidConfig, c.RenewFraction)
	}
	if c.Jitter < 0 || c.Jitter >= c.RenewFraction-0.05 {
		return fmt.Errorf("%w: Jitter %v: want between 0 and RenewFraction-0.05", ErrInvalidConfig, c.Jitter)
	}
	if c.RotationSpread < 0 {
		return fmt.Errorf("%w: RotationSpread %s: want at least 0", ErrInvalidConfig, c.RotationSpread)
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("%w: RetryMin %s, RetryMax %s: want 0 < RetryMin <= RetryMax", ErrInvalidConfig, c.RetryMin, c.RetryMax)
	}
	return nil
}

// ManagerDeps are the collaborators of a Manager.
type ManagerDeps struct {
	// Issuer signs the leaves: an *RPCClient on client agents,
	// Server.LocalIssuer on servers and in --dev, a *StepCA with provider
	// step-ca. Required.
	Issuer Issuer
	// Bundles delivers the trust bundle: a *StateBundleSource over the
	// replicated state, or the *StepCA. Required.
	Bundles BundleSource
	// Logger receives the manager's logs. Default: discarded.
	Logger *slog.Logger
	// Registerer receives the manager's metrics. Default: none.
	Registerer prometheus.Registerer
	// AgentToken returns the secret of this agent's ACL token
	// (acl.tokens.agent), sent with every sign and renew request so that
	// servers decide by it which services the leaf names. It is called for
	// each request, so a changed token applies to the next one. Default:
	// none sent.
	AgentToken func() string
}

// Manager holds this agent's identity: an ECDSA P-256 key made here (only a
// CSR leaves the host) and a leaf certificate, renewed before it expires and
// re-issued when the local services or the bundle's active root change. It
// implements TLSIdentity for the data plane.
//
// Lifecycle: NewManager validates; Start loads the leaf and bundle kept in
// DataDir and starts the goroutines that obtain, renew and follow them; Ready
// is closed once a leaf and a bundle are held; Close stops the goroutines.
type Manager struct {
	cfg  ManagerConfig
	deps ManagerDeps
	log  *slog.Logger
	met  *managerMetrics

	cur    atomic.Pointer[leafState]
	bundle atomic.Pointer[Bundle]

	mu          sync.Mutex
	services    []string
	token       string
	changed     chan struct{}
	rotationDue time.Time
	lastErr     error
	started     bool
	closed      bool
	cancel      context.CancelFunc

	kick      chan struct{}
	ready     chan struct{}
	readyOnce sync.Once
	wg        sync.WaitGroup
}

// leafState is one installed leaf.
type leafState struct {
	cert     *tls.Certificate
	leaf     *x509.Certificate
	chain    []*x509.Certificate
	id       Identity
	asked    []string // the services asked for; id.Services lacks those withheld
	root     string   // fingerprint of the root the chain reached when installed
	received time.Time
	renewAt  time.Time
}

// withheld lists the services asked for that the leaf does not name.
func (ls *leafState) withheld() []string {
	var out []string
	for _, s := range ls.asked {
		if _, ok := slices.BinarySearch(ls.id.Services, s); !ok {
			out = append(out, s)
		}
	}
	return out
}

// NewManager validates cfg and allocates a Manager. It starts nothing.
func NewManager(cfg ManagerConfig, deps ManagerDeps) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ca: manager: %w", err)
	}
	if deps.Issuer == nil || deps.Bundles == nil {
		return nil, fmt.Errorf("ca: manager: %w: Issuer and Bundles are required", ErrInvalidConfig)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Manager{
		cfg:      cfg,
		deps:     deps,
		log:      log,
		services: normServices(cfg.Services),
		token:    cfg.Token,
		changed:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		ready:    make(chan struct{}),
	}
	met, err := newManagerMetrics(deps.Registerer, m)
	if err != nil {
		return nil, fmt.Errorf("ca: manager: %w", err)
	}
	m.met = met
	return m, nil
}

func (m *Manager) now() time.Time { return m.cfg.Now() }

// Start loads the leaf and bundle kept in DataDir and starts the goroutines.
// It returns ErrNoCredentials when there is no valid leaf, no token, and an
// issuer that needs one of them.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("ca: manager: start: %w", ErrClosed)
	}
	if m.started {
		return nil
	}
	if m.cfg.DataDir != "" {
		if err := m.load(); err != nil {
			return fmt.Errorf("ca: manager: start: %w", err)
		}
	}
	if m.cur.Load() == nil && m.token == "" {
		if sa, ok := m.deps.Issuer.(selfAuthorizing); !ok || !sa.selfAuthorizing() {
			return fmt.Errorf("ca: manager: start: %w: run `meshwork ca token %s` on a server and give the agent the token", ErrNoCredentials, m.cfg.Node)
		}
	}
	m.started = true
	ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.wg.Add(2)
	go m.bundleLoop(ctx)
	go m.renewLoop(ctx)
	return nil
}

// Close stops the goroutines and waits for them. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.wg.Wait()
	return nil
}

// Ready is closed once the manager holds a leaf and a trust bundle.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// WaitReady blocks until Ready or ctx ends; the error then says why the
// last issuance failed.
func (m *Manager) WaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		m.mu.Lock()
		last := m.lastErr
		m.mu.Unlock()
		if last != nil {
			return fmt.Errorf("ca: manager: %w: %w (last error: %v)", ErrNoCertificate, ctx.Err(), last)
		}
		return fmt.Errorf("ca: manager: %w: %w", ErrNoCertificate, ctx.Err())
	}
}

// SetServices sets the local services. When they differ from those of the
// current leaf, a new leaf is requested at once.
func (m *Manager) SetServices(services []string) error {
	for _, s := range services {
		if err := ValidateName("service", s); err != nil {
			return fmt.Errorf("ca: set services: %w", err)
		}
	}
	if len(services) > maxServices {
		return fmt.Errorf("ca: set services: %w: %d services, at most %d", ErrBadRequest, len(services), maxServices)
	}
	m.mu.Lock()
	m.services = normServices(services)
	m.mu.Unlock()
	m.poke()
	return nil
}

func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Changes implements TLSIdentity.
func (m *Manager) Changes() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

func (m *Manager) notify() {
	m.mu.Lock()
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	if m.cur.Load() != nil && m.bundle.Load() != nil {
		m.readyOnce.Do(func() { close(m.ready) })
	}
}

// GetCertificate implements TLSIdentity.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if l := m.cur.Load(); l != nil {
		return l.cert, nil
	}
	return nil, fmt.Errorf("ca: %w", ErrNoCertificate)
}

// GetClientCertificate implements TLSIdentity.
func (m *Manager) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if l := m.cur.Load(); l != nil {
		return l.cert, nil
	}
	return nil, fmt.Errorf("ca: %w", ErrNoCertificate)
}

// maxPeerChain bounds the chain VerifyPeer parses.
const maxPeerChain = 8

// VerifyPeer implements TLSIdentity.
func (m *Manager) VerifyPeer(rawCerts [][]byte) ([]string, error) {
	b := m.bundle.Load()
	if b == nil {
		return nil, fmt.Errorf("ca: verify peer: %w: no trust bundle yet", ErrUntrusted)
	}
	if len(rawCerts) == 0 || len(rawCerts) > maxPeerChain {
		return nil, fmt.Errorf("ca: verify peer: %w: chain of %d certificates", ErrUntrusted, len(rawCerts))
	}
	chain := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("ca: verify peer: %w: certificate %d: %v", ErrUntrusted, i, err)
		}
		chain[i] = c
	}
	id, _, err := b.verifyChain(chain, m.now())
	if err != nil {
		return nil, fmt.Errorf("ca: verify peer: %w", err)
	}
	return id.IDs(), nil
}

func (m *Manager) verifyRaw(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	_, err := m.VerifyPeer(rawCerts)
	return err
}

// ServerTLSConfig returns a TLS 1.3 server config that presents the current
// leaf and requires and verifies a mesh client certificate. Add NextProtos.
func (m *Manager) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		GetCertificate:        m.GetCertificate,
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: m.verifyRaw,
	}
}

// ClientTLSConfig returns a TLS 1.3 client config that presents the current
// leaf and verifies the server against the bundle (not its host name: mesh
// identities are SPIFFE IDs, which VerifyPeer checks). Add NextProtos.
func (m *Manager) ClientTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		GetClientCertificate:  m.GetClientCertificate,
		InsecureSkipVerify:    true, //nolint:gosec // VerifyPeerCertificate verifies against the mesh bundle
		VerifyPeerCertificate: m.verifyRaw,
	}
}

// TrustPool returns the roots of the current bundle (nil before the first),
// for TLS code that keeps its own trust list (keytls AddTrust).
func (m *Manager) TrustPool() *x509.CertPool {
	if b := m.bundle.Load(); b != nil {
		return b.pool
	}
	return nil
}

// Bundle returns the current trust bundle, or nil before the first.
func (m *Manager) Bundle() *Bundle { return m.bundle.Load() }

// LeafInfo describes the current leaf, never its key.
type LeafInfo struct {
	// IDs are the SPIFFE IDs, node first.
	IDs       []string  `json:"ids"`
	Serial    string    `json:"serial"`
	Issuer    string    `json:"issuer"`
	Root      string    `json:"root"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	RenewAt   time.Time `json:"renew_at"`
	// ExpiresIn is NotAfter minus now, in seconds.
	ExpiresIn float64 `json:"expires_in_seconds"`
	// Withheld are the services this agent asked to be named for that the
	// CA left out, because policy does not let this node hold them.
	Withheld []string `json:"withheld,omitempty"`
	// Chain is the PEM chain, leaf first.
	Chain string `json:"chain"`
}

// Leaf describes the current leaf; ErrNoCertificate before the first.
func (m *Manager) Leaf() (LeafInfo, error) {
	l := m.cur.Load()
	if l == nil {
		return LeafInfo{}, fmt.Errorf("ca: leaf: %w", ErrNoCertificate)
	}
	return LeafInfo{
		IDs:       l.id.IDs(),
		Serial:    l.leaf.SerialNumber.Text(16),
		Issuer:    l.leaf.Issuer.String(),
		Root:      l.root,
		NotBefore: l.leaf.NotBefore,
		NotAfter:  l.leaf.NotAfter,
		RenewAt:   l.renewAt,
		ExpiresIn: l.leaf.NotAfter.Sub(m.now()).Seconds(),
		Withheld:  l.withheld(),
		Chain:     string(EncodeCertificatesPEM(l.chain...)),
	}, nil
}

// bundleLoop follows the bundle source.
func (m *Manager) bundleLoop(ctx context.Context) {
	defer m.wg.Done()
	bo := backoff{min: m.cfg.RetryMin, max: m.cfg.RetryMax}
	for ctx.Err() == nil {
		var gen uint64
		if b := m.bundle.Load(); b != nil {
			gen = b.Generation
		}
		b, err := m.deps.Bundles.WatchBundle(ctx, gen)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.log.Warn("ca bundle unavailable", "err", err)
			bo.wait(ctx)
			continue
		}
		bo.reset()
		if b.TrustDomain != m.cfg.TrustDomain {
			m.log.Error("ca bundle of another trust domain ignored", "trust_domain", b.TrustDomain)
			bo.wait(ctx)
			continue
		}
		m.setBundle(b)
	}
}

// setBundle installs b if it is newer than the current bundle.
func (m *Manager) setBundle(b *Bundle) bool {
	for {
		old := m.bundle.Load()
		if old != nil && b.Generation <= old.Generation {
			return false
		}
		if m.bundle.CompareAndSwap(old, b) {
			break
		}
	}
	if m.cfg.DataDir != "" {
		if data, err := json.Marshal(b.JSON()); err == nil {
			if err := atomicfile.Write(filepath.Join(m.cfg.DataDir, bundleFile), data, 0o644); err != nil {
				m.log.Warn("ca bundle not saved", "err", err)
			}
		}
	}
	m.log.Info("ca trust bundle updated", "generation", b.Generation, "roots", len(b.Roots), "active_root", b.ActiveRoot, "rotating", b.Rotating)
	m.notify()
	m.poke()
	return true
}

// nextIssue says when the next leaf is due, and why.
func (m *Manager) nextIssue() (time.Time, string) {
	now := m.now()
	l := m.cur.Load()
	if l == nil {
		return now, "bootstrap"
	}
	if !l.leaf.NotAfter.After(now) {
		return now, "expired"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Equal(m.services, l.asked) {
		return now, "services changed"
	}
	if len(l.id.Services) < len(l.asked) {
		if at := l.received.Add(m.cfg.WithheldRetry); at.Before(l.renewAt) {
			return at, "services withheld"
		}
	}
	if b := m.bundle.Load(); b != nil && b.ActiveRoot != "" && l.root != b.ActiveRoot {
		if m.rotationDue.IsZero() {
			m.rotationDue = now.Add(time.Duration(m.cfg.Rand() * float64(m.cfg.RotationSpread)))
		}
		if m.rotationDue.Before(l.renewAt) {
			return m.rotationDue, "active root changed"
		}
		return l.renewAt, "renewal"
	}
	m.rotationDue = time.Time{}
	return l.renewAt, "renewal"
}

// renewLoop obtains the first leaf and every next one.
func (m *Manager) renewLoop(ctx context.Context) {
	defer m.wg.Done()
	bo := backoff{min: m.cfg.RetryMin, max: m.cfg.RetryMax}
	var retryAt time.Time
	for {
		at, why := m.nextIssue()
		if at.Before(retryAt) {
			at = retryAt
		}
		if d := at.Sub(m.now()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-m.kick:
				t.Stop()
				continue
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err := m.issue(ctx, why); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.met.renewals.WithLabelValues("error").Inc()
			m.mu.Lock()
			m.lastErr = err
			m.mu.Unlock()
			delay := bo.next()
			retryAt = m.now().Add(delay)
			m.log.Warn("ca leaf not obtained", "reason", why, "retry_in", delay, "err", err)
			continue
		}
		retryAt = time.Time{}
		bo.reset()
	}
}

// issue obtains and installs a new leaf with a new key.
func (m *Manager) issue(ctx context.Context, why string) error {
	m.mu.Lock()
	services := m.services
	tok := m.token
	m.mu.Unlock()
	id, err := NewIdentity(m.cfg.TrustDomain, m.cfg.Node, services)
	if err != nil {
		return err
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	csr, err := newCSR(id, key)
	if err != nil {
		return err
	}
	req := IssueRequest{CSR: csr, Bundle: m.bundle.Load()}
	if m.deps.AgentToken != nil {
		req.AgentToken = m.deps.AgentToken()
	}
	if l := m.cur.Load(); l != nil && l.leaf.NotAfter.After(m.now()) {
		req.Current = l.cert
	} else {
		req.Token = tok
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	is, err := m.deps.Issuer.Issue(rctx, req)
	if err != nil {
		return err
	}
	ls, b, err := m.check(is, id, key)
	if err != nil {
		return fmt.Errorf("ca: issued leaf refused: %w", err)
	}
	if withheld := ls.withheld(); len(withheld) > 0 {
		m.log.Warn("ca leaf issued without some services: policy or this agent's token does not let this node hold them",
			"withheld", withheld, "ask_again_in", m.cfg.WithheldRetry)
	}
	if m.cfg.DataDir != "" {
		if err := m.saveLeaf(ls, key); err != nil {
			return fmt.Errorf("ca: save leaf: %w", err)
		}
	}
	if req.Token != "" {
		m.mu.Lock()
		m.token = "" // used up
		m.mu.Unlock()
	}
	if b != nil {
		m.setBundle(b)
	}
	// Counted before install, so that whoever sees the new leaf also sees
	// it counted.
	m.met.renewals.WithLabelValues("ok").Inc()
	m.install(ls)
	m.log.Info("ca leaf installed", "reason", why, "ids", id.IDs(), "not_after", ls.leaf.NotAfter, "renew_at", ls.renewAt, "root", ls.root)
	return nil
}

// check verifies an issued chain: our key, the identity we asked for (the
// CA may leave out services that policy withholds, nothing else), and a
// path to the newest bundle we know (ours or the one the CA sent).
func (m *Manager) check(is *Issued, id Identity, key *ecdsa.PrivateKey) (*leafState, *Bundle, error) {
	if is == nil || len(is.Chain) == 0 {
		return nil, nil, fmt.Errorf("%w: empty chain", ErrBadRequest)
	}
	leaf := is.Chain[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, nil, fmt.Errorf("%w: the leaf is not for our key", ErrBadRequest)
	}
	got, err := ParseIdentity(m.cfg.TrustDomain, leaf.URIs)
	if err != nil {
		return nil, nil, err
	}
	if got.TrustDomain != id.TrustDomain || got.Node != id.Node || !subset(got.Services, id.Services) {
		return nil, nil, fmt.Errorf("%w: the leaf names %v, we asked for %v", ErrBadRequest, got.IDs(), id.IDs())
	}
	b := m.bundle.Load()
	var newer *Bundle
	if nb := is.Bundle; nb != nil && nb.TrustDomain == m.cfg.TrustDomain && (b == nil || nb.Generation > b.Generation) {
		b, newer = nb, nb
	}
	if b == nil {
		return nil, nil, fmt.Errorf("%w: no trust bundle to check the leaf against", ErrUntrusted)
	}
	_, root, err := b.verifyChain(is.Chain, m.now())
	if err != nil {
		return nil, nil, err
	}
	ls := m.leafState(is.Chain, key, got, root)
	ls.asked = id.Services
	return ls, newer, nil
}

// subset reports whether every element of a is in b; both are sorted.
func subset(a, b []string) bool {
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			return false
		}
	}
	return true
}

// leafState describes an installed leaf that names id, as if id were what
// was asked for; check sets asked when the CA withheld services.
func (m *Manager) leafState(chain []*x509.Certificate, key *ecdsa.PrivateKey, id Identity, root string) *leafState {
	leaf := chain[0]
	cert := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	now := m.now()
	life := leaf.NotAfter.Sub(now)
	frac := m.cfg.RenewFraction - m.cfg.Jitter*m.cfg.Rand()
	return &leafState{
		cert: cert, leaf: leaf, chain: chain, id: id, asked: id.Services, root: root,
		received: now,
		renewAt:  now.Add(time.Duration(float64(life) * frac)),
	}
}

func (m *Manager) install(ls *leafState) {
	m.cur.Store(ls)
	m.mu.Lock()
	m.rotationDue = time.Time{}
	m.lastErr = nil
	m.mu.Unlock()
	m.notify()
}

// Files in DataDir.
const (
	leafFile   = "leaf.pem"
	bundleFile = "bundle.json"
)

// saveLeaf writes the key and the chain in one file, so that they can never
// disagree after a crash; mode 0600 from its creation.
func (m *Manager) saveLeaf(ls *leafState, key *ecdsa.PrivateKey) error {
	der, err := marshalKey(key)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	b.Write(EncodeCertificatesPEM(ls.chain...))
	return atomicfile.Write(filepath.Join(m.cfg.DataDir, leafFile), b.Bytes(), 0o600)
}

// load reads the leaf and the bundle kept in DataDir. A missing file is no
// error; a leaf that expired, belongs to another node or does not match its
// key is ignored with a log line.
func (m *Manager) load() error {
	if data, err := os.ReadFile(filepath.Join(m.cfg.DataDir, bundleFile)); err == nil {
		b, err := ParseBundleJSON(data)
		if err != nil || b.TrustDomain != m.cfg.TrustDomain {
			m.log.Warn("ca saved bundle ignored", "err", err)
		} else {
			m.bundle.Store(b)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data, err := os.ReadFile(filepath.Join(m.cfg.DataDir, leafFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ls, err := m.parseSavedLeaf(data)
	if err != nil {
		m.log.Warn("ca saved leaf ignored", "err", err)
		return nil
	}
	m.cur.Store(ls)
	if m.bundle.Load() != nil {
		m.readyOnce.Do(func() { close(m.ready) })
	}
	m.log.Info("ca saved leaf loaded", "ids", ls.id.IDs(), "not_after", ls.leaf.NotAfter)
	return nil
}

func (m *Manager) parseSavedLeaf(data []byte) (*leafState, error) {
	blk, rest := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: want a PRIVATE KEY block first", leafFile)
	}
	key, err := parseKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", leafFile, err)
	}
	chain, err := ParseCertificatesPEM(rest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", leafFile, err)
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("%s: key and certificate do not match", leafFile)
	}
	id, err := ParseIdentity(m.cfg.TrustDomain, chain[0].URIs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", leafFile, err)
	}
	if id.Node != m.cfg.Node {
		return nil, fmt.Errorf("%s: the leaf is node %q's, this is %q", leafFile, id.Node, m.cfg.Node)
	}
	if !chain[0].NotAfter.After(m.now()) {
		return nil, fmt.Errorf("%s: the leaf expired at %s", leafFile, chain[0].NotAfter)
	}
	root := ""
	if b := m.bundle.Load(); b != nil {
		if _, r, err := b.verifyChain(chain, m.now()); err == nil {
			root = r
		}
	}
	return m.leafState(chain, key, id, root), nil
}
