package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/cli-utils/token"
	"github.com/smallstep/cli-utils/token/provision"
	"go.step.sm/crypto/jose"
)

// ServerDeps are the collaborators of a Server.
type ServerDeps struct {
	// State is the replicated state. Required.
	State StateStore
	// Logger receives the CA's logs. Default: discarded.
	Logger *slog.Logger
	// Registerer receives the CA's metrics. Default: none.
	Registerer prometheus.Registerer
	// LiveNodes lists the nodes gossip sees alive. A root rotation waits for
	// these nodes only; without it, it waits for every node whose latest leaf
	// has not expired. Optional; called from the maintenance goroutine.
	LiveNodes func() []string
	// AuthorizeServices may refuse a node some services (for instance those
	// the catalog does not show on it). Optional: by default a node may
	// claim any service it hosts.
	AuthorizeServices func(node string, services []string) error
	// ServicePolicy says whether node may hold the identity of service, and
	// why (the ServiceIdentity policy documents). A service it refuses is
	// left out of the leaf, which still names the node and its other
	// services, so that a node keeps its identity when policy turns against
	// one of its services. Optional: by default a node may hold every
	// service it asks for. Called for every service of every leaf; it must
	// not block.
	ServicePolicy func(node, service string) (allowed bool, reason string)
	// AuthorizeToken decides, from the agent token a sign or renew request
	// carries, whether the node may have a leaf at all and which of its
	// services it may hold (see TokenAuthorizer; ACLTokens over the ACL
	// resolver). Services it refuses are withheld as ServicePolicy's are; a
	// node it refuses gets no leaf. Optional: without it (ACLs disabled)
	// tokens are not looked at. A server's own leaf, signed in process, is
	// not asked about: the server holds the CA's keys.
	AuthorizeToken TokenAuthorizer
	// PeerTLS returns the TLS state of an RPC request, for an RPC server
	// that hides it from r.TLS (raftstore.PeerTLS). Default: r.TLS.
	PeerTLS func(r *http.Request) (tls.ConnectionState, bool)
}

// Server is the embedded CA of a server agent. Any server signs: signing is
// local CPU work on state every server holds, and everything that must be
// decided once (the bootstrap of the CA, a token's single use, the steps of a
// rotation) is a compare-and-set through the Raft leader. So no leader is
// needed to sign except for those writes, the load spreads over the servers,
// and a failover changes nothing for the CA.
//
// Lifecycle: NewServer validates; Start launches the goroutine that creates
// the CA state at the first bootstrap (exactly once, by CAS) or loads it, and
// follows its changes; Ready is closed once it can sign; Close stops it.
// All methods are safe for concurrent use.
type Server struct {
	cfg   ServerConfig
	deps  ServerDeps
	state StateStore
	log   *slog.Logger
	m     *serverMetrics
	db    *stateDB

	cur       atomic.Pointer[signer]
	loadMu    sync.Mutex
	loaded    chan struct{} // closed and replaced each time cur changes
	ready     chan struct{}
	readyOnce sync.Once
	kick      chan struct{}

	// clearSince is when this server first saw no node pending in the
	// rotation towards clearFor; only the maintenance goroutine uses them.
	clearSince time.Time
	clearFor   string

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// signer is one loaded generation of the CA state with its smallstep
// authority.
type signer struct {
	*loadedState
	auth   *authority.Authority
	bundle *Bundle
}

// NewServer validates cfg and allocates a Server. It starts nothing.
func NewServer(cfg ServerConfig, deps ServerDeps) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ca: server: %w", err)
	}
	if deps.State == nil {
		return nil, fmt.Errorf("ca: server: %w: ServerDeps.State is nil", ErrInvalidConfig)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := newServerMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ca: server: %w", err)
	}
	if cfg.Now != nil {
		m.now = cfg.Now
	}
	s := &Server{
		cfg:    cfg,
		deps:   deps,
		state:  deps.State,
		log:    log,
		m:      m,
		db:     &stateDB{state: deps.State, now: cfg.Now, timeout: cfg.StateTimeout},
		ready:  make(chan struct{}),
		kick:   make(chan struct{}, 1),
		loaded: make(chan struct{}),
	}
	return s, nil
}

// Start launches the CA's goroutines and returns at once: the CA becomes
// ready (see Ready) when the state store answers, which may take until the
// Raft cluster has a leader.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("ca: server: start: %w", ErrClosed)
	}
	if s.started {
		return nil
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(2)
	go s.watchLoop(ctx)
	go s.maintainLoop(ctx)
	return nil
}

// Close stops the goroutines and waits for them. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	if sg := s.cur.Swap(nil); sg != nil {
		sg.auth.CloseForReload()
	}
	return nil
}

// Ready is closed once the CA has loaded its state and can sign.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// WaitReady blocks until the CA is ready or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ca: wait ready: %w: %w", ErrNotReady, ctx.Err())
	}
}

// Bundle returns the current trust bundle, or nil before the CA is ready.
func (s *Server) Bundle() *Bundle {
	if sg := s.cur.Load(); sg != nil {
		return sg.bundle
	}
	return nil
}

// awaitLoaded waits until this server has loaded a state for which ok
// holds, so that what it serves from memory (Bundle, RotationStatus) shows
// a write it has just made to the replicated state.
func (s *Server) awaitLoaded(ctx context.Context, ok func(*authorityState) bool) error {
	for {
		s.loadMu.Lock()
		sg, changed := s.cur.Load(), s.loaded
		s.loadMu.Unlock()
		if sg != nil && ok(sg.raw) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Server) signer() (*signer, error) {
	sg := s.cur.Load()
	if sg == nil {
		return nil, ErrNotReady
	}
	return sg, nil
}

// watchLoop creates the CA state if it is absent, loads it, and reloads it
// whenever it changes.
func (s *Server) watchLoop(ctx context.Context) {
	defer s.wg.Done()
	var idx uint64
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	watch := false
	for ctx.Err() == nil {
		var val []byte
		var newIdx uint64
		var err error
		if watch {
			val, newIdx, err = s.state.Watch(ctx, KeyAuthority, idx)
		} else {
			val, newIdx, err = s.state.Get(ctx, KeyAuthority)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("ca state unavailable", "err", err)
			watch = false
			bo.wait(ctx)
			continue
		}
		if val == nil {
			if err := s.bootstrap(ctx); err != nil && !isConflict(err) {
				s.log.Warn("ca bootstrap failed", "err", err)
				bo.wait(ctx)
			}
			watch = false
			continue
		}
		watch = true
		if newIdx == idx {
			continue
		}
		idx = newIdx
		if err := s.apply(ctx, val, newIdx); err != nil {
			s.m.stateErrors.Inc()
			s.log.Error("ca state not loaded", "index", newIdx, "err", err)
			continue
		}
		bo.reset()
	}
}

// bootstrap creates the CA: a root, an intermediate and the bootstrap
// provisioner, stored with CAS at index 0 so that exactly one server's CA
// wins when several start at once.
func (s *Server) bootstrap(ctx context.Context) error {
	now := s.cfg.Now()
	root, rootKey, err := newRoot(s.cfg.TrustDomain, 1, now, s.cfg.RootTTL)
	if err != nil {
		return fmt.Errorf("ca: bootstrap: %w", err)
	}
	st := &authorityState{Version: stateVersion, TrustDomain: s.cfg.TrustDomain, Generation: 1}
	sealedRoot, err := s.sealKey(purposeRootKey, rootKey)
	if err != nil {
		return fmt.Errorf("ca: bootstrap: %w", err)
	}
	st.Roots = []rootEntry{{Generation: 1, Cert: root.Raw, SealedKey: sealedRoot}}
	if st.Issuer, err = s.newIssuer(1, root, rootKey, nil, nil, now); err != nil {
		return fmt.Errorf("ca: bootstrap: %w", err)
	}
	if st.Provisioner, err = s.newProvisioner(); err != nil {
		return fmt.Errorf("ca: bootstrap: %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("ca: bootstrap: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StateTimeout)
	defer cancel()
	if err := s.state.CAS(ctx, KeyAuthority, b, 0); err != nil {
		return fmt.Errorf("ca: bootstrap: %w", err)
	}
	s.log.Info("ca created", "trust_domain", s.cfg.TrustDomain, "root", Fingerprint(root))
	return nil
}

func (s *Server) sealKey(purpose string, k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := marshalKey(k)
	if err != nil {
		return nil, err
	}
	return seal(s.cfg.StateKey, purpose, der)
}

// newIssuer makes an intermediate of generation gen signed by root and, when
// crossRoot is set, the same intermediate cross-signed by crossRoot.
func (s *Server) newIssuer(gen int, root *x509.Certificate, rootKey *ecdsa.PrivateKey, crossRoot *x509.Certificate, crossKey *ecdsa.PrivateKey, now time.Time) (issuerEntry, error) {
	key, err := newKey()
	if err != nil {
		return issuerEntry{}, err
	}
	tmpl, err := intermediateTemplate(s.cfg.TrustDomain, gen, key.Public(), now.Add(-time.Hour), now.Add(s.cfg.IntermediateTTL))
	if err != nil {
		return issuerEntry{}, err
	}
	inter, err := signCA(tmpl, root, key.Public(), rootKey)
	if err != nil {
		return issuerEntry{}, err
	}
	e := issuerEntry{Chain: [][]byte{inter.Raw}, Root: Fingerprint(root)}
	if crossRoot != nil {
		xt := *tmpl
		if xt.SerialNumber, err = serial(); err != nil {
			return issuerEntry{}, err
		}
		cross, err := signCA(&xt, crossRoot, key.Public(), crossKey)
		if err != nil {
			return issuerEntry{}, err
		}
		e.Chain = append(e.Chain, cross.Raw)
	}
	if e.SealedKey, err = s.sealKey(purposeIssuerKey, key); err != nil {
		return issuerEntry{}, err
	}
	return e, nil
}

// newProvisioner makes the JWK provisioner of bootstrap tokens.
func (s *Server) newProvisioner() (provisionerEntry, error) {
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return provisionerEntry{}, err
	}
	if jwk.KeyID, err = jose.Thumbprint(jwk); err != nil {
		return provisionerEntry{}, err
	}
	priv, err := json.Marshal(jwk)
	if err != nil {
		return provisionerEntry{}, err
	}
	pub := jwk.Public()
	pubJSON, err := json.Marshal(&pub)
	if err != nil {
		return provisionerEntry{}, err
	}
	sealed, err := seal(s.cfg.StateKey, purposeProvisionerKey, priv)
	if err != nil {
		return provisionerEntry{}, err
	}
	return provisionerEntry{Name: s.cfg.ProvisionerName, PublicKey: pubJSON, SealedKey: sealed}, nil
}

// apply loads a new generation of the state and publishes its bundle.
func (s *Server) apply(ctx context.Context, val []byte, idx uint64) error {
	st, err := decodeAuthorityState(val)
	if err != nil {
		return err
	}
	if st.TrustDomain != s.cfg.TrustDomain {
		return fmt.Errorf("%w: the CA state is for trust domain %q, this server is configured for %q", ErrInvalidConfig, st.TrustDomain, s.cfg.TrustDomain)
	}
	ls, err := loadState(st, idx, s.cfg.StateKey)
	if err != nil {
		return err
	}
	sg, err := s.newSigner(ls)
	if err != nil {
		return err
	}
	if old := s.cur.Swap(sg); old != nil {
		old.auth.CloseForReload()
	}
	s.loadMu.Lock()
	close(s.loaded)
	s.loaded = make(chan struct{})
	s.loadMu.Unlock()
	s.m.setState(sg)
	s.readyOnce.Do(func() { close(s.ready) })
	s.log.Info("ca state loaded", "index", idx, "active_root", st.Issuer.Root, "roots", len(st.Roots), "rotating", st.Rotation != nil)
	if err := s.publishBundle(ctx, sg); err != nil {
		s.log.Warn("ca bundle not published", "err", err)
	}
	s.kickMaintenance()
	return nil
}

// newSigner builds the smallstep authority of one state generation.
func (s *Server) newSigner(ls *loadedState) (*signer, error) {
	jwk := &provisioner.JWK{Type: "JWK", Name: ls.raw.Provisioner.Name, Key: ls.provPublic}
	cfg := &config.Config{
		DNSNames: []string{ls.raw.TrustDomain},
		AuthorityConfig: &config.AuthConfig{
			Provisioners: provisioner.List{jwk},
			// The ledger is replicated: a token issued before this server
			// loaded the state is still good, and still used only once.
			DisableIssuedAtCheck: true,
			Backdate:             &provisioner.Duration{Duration: backdateFor(s.cfg.LeafTTL)},
		},
	}
	auth, err := authority.NewEmbedded(
		authority.WithConfig(cfg),
		authority.WithX509RootCerts(ls.roots...),
		authority.WithX509SignerChain(ls.chain, ls.issuerKey),
		authority.WithX509Enforcers(issuerBound{issuer: ls.chain[0]}),
		authority.WithDatabase(s.db),
		authority.WithQuietInit(),
	)
	if err != nil {
		return nil, fmt.Errorf("ca: embedded authority: %w", err)
	}
	return &signer{loadedState: ls, auth: auth, bundle: ls.bundle()}, nil
}

// publishBundle writes the public bundle of sg at KeyBundle unless a bundle
// of the same or a later generation is there already.
func (s *Server) publishBundle(ctx context.Context, sg *signer) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StateTimeout)
	defer cancel()
	b, err := json.Marshal(sg.bundle.JSON())
	if err != nil {
		return err
	}
	for range casAttempts {
		val, idx, err := s.state.Get(ctx, KeyBundle)
		if err != nil {
			return err
		}
		if val != nil {
			var cur BundleJSON
			if json.Unmarshal(val, &cur) == nil && cur.Generation >= sg.bundle.Generation {
				return nil
			}
		}
		err = s.state.CAS(ctx, KeyBundle, b, idx)
		if err == nil || !isConflict(err) {
			return err
		}
	}
	return ErrConflict
}

// Token makes a one-time bootstrap token for node, valid for ttl (0 means
// ServerConfig.TokenTTL; at most one hour). The token is a smallstep JWK
// provisioner token: issuer the provisioner name, subject the node, audience
// https://<trust-domain>/1.0/sign, the node's SPIFFE ID as its only SAN, a
// random ID, and the active root's fingerprint as "sha" so that the agent can
// pin the root it bootstraps against.
func (s *Server) Token(ctx context.Context, node string, ttl time.Duration) (string, time.Time, error) {
	sg, err := s.signer()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: token: %w", err)
	}
	if err := ValidateName("node", node); err != nil {
		return "", time.Time{}, fmt.Errorf("ca: token: %w", err)
	}
	if ttl == 0 {
		ttl = s.cfg.TokenTTL
	}
	if ttl < 10*time.Second || ttl > MaxTokenTTL {
		return "", time.Time{}, fmt.Errorf("ca: token: %w: ttl %s: want between 10s and %s", ErrBadRequest, ttl, MaxTokenTTL)
	}
	privJSON, err := open(s.cfg.StateKey, purposeProvisionerKey, sg.raw.Provisioner.SealedKey)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: token: %w", err)
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(privJSON, &jwk); err != nil {
		return "", time.Time{}, fmt.Errorf("ca: token: provisioner key: %w", err)
	}
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("ca: token: %w", err)
	}
	now := s.cfg.Now()
	exp := now.Add(ttl)
	tok, err := provision.New(node,
		token.WithJWTID(hex.EncodeToString(id[:])),
		token.WithKid(jwk.KeyID),
		token.WithIssuer(sg.raw.Provisioner.Name),
		token.WithAudience(tokenAudience(sg.raw.TrustDomain)),
		token.WithValidity(now, exp),
		token.WithIssuedAt(now),
		token.WithSANS([]string{spiffeid.Node(sg.raw.TrustDomain, node)}),
		token.WithSHA(sg.raw.Issuer.Root),
	)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: token: %w", err)
	}
	signed, err := tok.SignedString(jwk.Algorithm, jwk.Key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: token: %w", err)
	}
	s.m.tokens.Inc()
	s.log.Info("ca bootstrap token made", "node", node, "expires", exp)
	return signed, exp, nil
}

func tokenAudience(td string) string { return "https://" + td + "/1.0/sign" }

// tokenClaims are the claims of a bootstrap token.
type tokenClaims struct {
	jose.Claims
	SANs []string `json:"sans,omitempty"`
	SHA  string   `json:"sha,omitempty"`
}

// verifyToken checks the token's signature and claims before it may reach
// the ledger, so that garbage never costs a replicated write.
// tokenClockSkew is how far apart the clocks of the server that made a
// bootstrap token and the one that checks it may be. Servers run NTP; a
// minute (jose's default) would let a token outlive its expiry by that much.
const tokenClockSkew = 2 * time.Second

func (s *Server) verifyToken(sg *signer, tok string) (*tokenClaims, error) {
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		return nil, fmt.Errorf("%w: not a signed JWT: %v", ErrBadToken, err)
	}
	var c tokenClaims
	if err := jwt.Claims(sg.provPublic, &c); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadToken, err)
	}
	if err := c.ValidateWithLeeway(jose.Expected{Issuer: sg.raw.Provisioner.Name, Time: s.cfg.Now()}, tokenClockSkew); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if !slices.Contains(c.Audience, tokenAudience(sg.raw.TrustDomain)) {
		return nil, fmt.Errorf("%w: audience %v is not this trust domain's CA", ErrBadToken, []string(c.Audience))
	}
	if c.ID == "" {
		return nil, fmt.Errorf("%w: no token ID (jti)", ErrBadToken)
	}
	if err := ValidateName("node", c.Subject); err != nil {
		return nil, fmt.Errorf("%w: subject: %v", ErrBadToken, err)
	}
	return &c, nil
}

// SignWithToken is the bootstrap path: it trades a one-time token and a CSR
// for a leaf. The token must be for the node the CSR names; it is consumed
// through smallstep's AuthDB UseToken hook, whose ledger is replicated.
// agentToken is the secret of the agent's ACL token ("" for none), for
// ServerDeps.AuthorizeToken; it is checked before the bootstrap token is
// consumed, so that a refused agent may try again with the same one.
func (s *Server) SignWithToken(ctx context.Context, tok string, csr *x509.CertificateRequest, agentToken string) (*Issued, error) {
	start := time.Now()
	is, err := s.signWithToken(ctx, tok, csr, agentToken)
	s.m.observe("token", start, err)
	return is, err
}

func (s *Server) signWithToken(ctx context.Context, tok string, csr *x509.CertificateRequest, agentToken string) (*Issued, error) {
	sg, err := s.signer()
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	id, err := ParseIdentity(sg.raw.TrustDomain, csr.URIs)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: csr: %w", err)
	}
	claims, err := s.verifyToken(sg, tok)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	if claims.Subject != id.Node {
		return nil, fmt.Errorf("ca: sign: %w: the token is for node %q, the CSR asks for node %q", ErrBadToken, claims.Subject, id.Node)
	}
	if err := s.authorizeServices(id); err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	grant, err := s.authorizeToken(id, agentToken)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	actx := provisioner.NewContextWithMethod(ctx, provisioner.SignMethod)
	if _, err := sg.auth.Authorize(actx, tok); err != nil {
		if errors.Is(err, ErrTokenUsed) {
			return nil, fmt.Errorf("ca: sign: %w", ErrTokenUsed)
		}
		return nil, fmt.Errorf("ca: sign: %w: %v", ErrBadToken, err)
	}
	return s.issue(ctx, sg, csr, id, grant)
}

// Renew is the renewal path: peer is the chain the agent presented over
// mTLS. It must verify against the current bundle and name the node the CSR
// asks for; the services may change (that is how a new set of local services
// reaches the certificate). agentToken is the secret of the agent's ACL
// token ("" for none), for ServerDeps.AuthorizeToken: the services a renewed
// leaf names are decided again at each renewal.
func (s *Server) Renew(ctx context.Context, peer []*x509.Certificate, csr *x509.CertificateRequest, agentToken string) (*Issued, error) {
	start := time.Now()
	is, err := s.renew(ctx, peer, csr, agentToken)
	s.m.observe("renew", start, err)
	return is, err
}

func (s *Server) renew(ctx context.Context, peer []*x509.Certificate, csr *x509.CertificateRequest, agentToken string) (*Issued, error) {
	sg, err := s.signer()
	if err != nil {
		return nil, fmt.Errorf("ca: renew: %w", err)
	}
	pid, _, err := sg.bundle.verifyChain(peer, s.cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("ca: renew: %w: client certificate: %w", ErrUnauthorized, err)
	}
	id, err := ParseIdentity(sg.raw.TrustDomain, csr.URIs)
	if err != nil {
		return nil, fmt.Errorf("ca: renew: csr: %w", err)
	}
	if id.Node != pid.Node {
		return nil, fmt.Errorf("ca: renew: %w: the certificate is node %q's, the CSR asks for node %q", ErrUnauthorized, pid.Node, id.Node)
	}
	if err := s.authorizeServices(id); err != nil {
		return nil, fmt.Errorf("ca: renew: %w", err)
	}
	grant, err := s.authorizeToken(id, agentToken)
	if err != nil {
		return nil, fmt.Errorf("ca: renew: %w", err)
	}
	return s.issue(ctx, sg, csr, id, grant)
}

// signLocal signs for this server's own node, in process.
func (s *Server) signLocal(ctx context.Context, csr *x509.CertificateRequest) (*Issued, error) {
	start := time.Now()
	is, err := s.signLocal1(ctx, csr)
	s.m.observe("local", start, err)
	return is, err
}

func (s *Server) signLocal1(ctx context.Context, csr *x509.CertificateRequest) (*Issued, error) {
	if err := s.WaitReady(ctx); err != nil {
		return nil, err
	}
	sg, err := s.signer()
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	id, err := ParseIdentity(sg.raw.TrustDomain, csr.URIs)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: csr: %w", err)
	}
	if id.Node != s.cfg.Node {
		return nil, fmt.Errorf("ca: sign: %w: the local issuer signs for node %q only, not %q", ErrUnauthorized, s.cfg.Node, id.Node)
	}
	return s.issue(ctx, sg, csr, id, nil)
}

func (s *Server) authorizeServices(id Identity) error {
	if s.deps.AuthorizeServices == nil || len(id.Services) == 0 {
		return nil
	}
	if err := s.deps.AuthorizeServices(id.Node, id.Services); err != nil {
		return fmt.Errorf("%w: services %v: %v", ErrUnauthorized, id.Services, err)
	}
	return nil
}

// authorizeToken asks ServerDeps.AuthorizeToken about the agent token of a
// request for id. It returns nil, nil without the hook.
func (s *Server) authorizeToken(id Identity, secret string) (*TokenGrant, error) {
	if s.deps.AuthorizeToken == nil {
		return nil, nil
	}
	g, err := s.deps.AuthorizeToken(id.Node, id.Services, secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return &g, nil
}

// withhold returns id without the services that the agent token (grant,
// nil for none) or ServicePolicy do not let its node hold, and logs and
// counts each one left out.
func (s *Server) withhold(id Identity, grant *TokenGrant) Identity {
	if (s.deps.ServicePolicy == nil && grant.none()) || len(id.Services) == 0 {
		return id
	}
	kept := make([]string, 0, len(id.Services))
	for _, svc := range id.Services {
		if why, refused := grant.refused(svc); refused {
			s.m.withheld.WithLabelValues(withheldByToken).Inc()
			s.log.Warn("service identity withheld from leaf", "node", id.Node, "service", svc, "by", withheldByToken, "accessor_id", grant.AccessorID, "reason", why)
			continue
		}
		if s.deps.ServicePolicy != nil {
			if ok, why := s.deps.ServicePolicy(id.Node, svc); !ok {
				s.m.withheld.WithLabelValues(withheldByPolicy).Inc()
				s.log.Warn("service identity withheld from leaf", "node", id.Node, "service", svc, "by", withheldByPolicy, "reason", why)
				continue
			}
		}
		kept = append(kept, svc)
	}
	if len(kept) == 0 {
		kept = nil
	}
	id.Services = kept
	return id
}

// issue signs csr through the smallstep authority and records the leaf in
// the state. The csr must ask for exactly the authorized identity asked;
// the leaf names asked less the services that the agent token (grant) or
// ServicePolicy withhold. The record is written before the leaf is
// returned, so that a rotation never believes a node is done when it is
// not.
func (s *Server) issue(ctx context.Context, sg *signer, csr *x509.CertificateRequest, asked Identity, grant *TokenGrant) (*Issued, error) {
	now := s.cfg.Now()
	id := s.withhold(asked, grant)
	chain, err := sg.auth.SignWithContext(ctx, csr, provisioner.SignOptions{},
		leafTemplate{id: id},
		csrValidator{id: asked},
		validity{now: now, lifetime: s.cfg.LeafTTL, backdate: backdateFor(s.cfg.LeafTTL)},
	)
	if err != nil {
		// The mesh's own validators' errors (ErrBadRequest, ErrUnauthorized,
		// ErrTrustDomain) come through smallstep's wrapping intact.
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	rec := leafRecord{
		Serial:   chain[0].SerialNumber.Text(16),
		Root:     sg.raw.Issuer.Root,
		NotAfter: chain[0].NotAfter,
		IssuedAt: now,
		Services: id.Services,
	}
	if err := s.recordLeaf(ctx, id.Node, rec); err != nil {
		return nil, fmt.Errorf("ca: sign: record leaf: %w", err)
	}
	if sg.raw.Rotation != nil {
		s.kickMaintenance()
	}
	return &Issued{Chain: chain, Bundle: sg.bundle}, nil
}

// recordLeaf stores rec at KeyLeafPrefix+node and, for a node's first
// leaf, adds the node to its shard of KeyNodes. A renewal costs one read and
// one write of the node's own key, whatever the size of the mesh.
func (s *Server) recordLeaf(ctx context.Context, node string, rec leafRecord) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StateTimeout)
	defer cancel()
	b, _ := json.Marshal(rec)
	created := false
	if err := casLoop(ctx, s.state, KeyLeafPrefix+node, func(old []byte) ([]byte, bool, error) {
		created = old == nil
		if old != nil {
			var prev leafRecord
			// Never let a leaf issued earlier (a slower concurrent request)
			// overwrite the record of a later one.
			if json.Unmarshal(old, &prev) == nil && prev.IssuedAt.After(rec.IssuedAt) {
				return nil, false, nil
			}
		}
		return b, true, nil
	}); err != nil || !created {
		return err
	}
	return casLoop(ctx, s.state, nodesKey(node), func(old []byte) ([]byte, bool, error) {
		var nodes []string
		if old != nil {
			if err := json.Unmarshal(old, &nodes); err != nil {
				return nil, false, fmt.Errorf("node list is malformed: %w", err)
			}
		}
		i, found := slices.BinarySearch(nodes, node)
		if found {
			return nil, false, nil
		}
		nodes = slices.Insert(nodes, i, node)
		nb, _ := json.Marshal(nodes)
		return nb, true, nil
	})
}

// nodeShards spreads the node list over keys.
const nodeShards = 64

// nodesKey is the shard of KeyNodes that lists node.
func nodesKey(node string) string {
	sum := sha256.Sum256([]byte(node))
	return fmt.Sprintf("%s/%02x", KeyNodes, sum[0]%nodeShards)
}

// casLoop applies update to key's value until its CAS succeeds. update
// returns the new value and whether to write at all.
func casLoop(ctx context.Context, st StateStore, key string, update func(old []byte) ([]byte, bool, error)) error {
	for range casAttempts {
		val, idx, err := st.Get(ctx, key)
		if err != nil {
			return err
		}
		nv, write, err := update(val)
		if err != nil || !write {
			return err
		}
		err = st.CAS(ctx, key, nv, idx)
		if err == nil || !isConflict(err) {
			return err
		}
	}
	return fmt.Errorf("%s: %w after %d attempts", key, ErrConflict, casAttempts)
}

func isConflict(err error) bool { return errors.Is(err, ErrConflict) }

func (s *Server) kickMaintenance() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
