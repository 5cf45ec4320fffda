package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/smallstep/certificates/api"
	stepca "github.com/smallstep/certificates/ca"
	"github.com/smallstep/cli-utils/token"
	"github.com/smallstep/cli-utils/token/provision"
	"go.step.sm/crypto/jose"
)

// StepCAConfig configures provider "step-ca": leaves come from an external
// step-ca through smallstep's ca client, authorized by tokens of one of its
// JWK provisioners that each agent makes itself.
type StepCAConfig struct {
	// URL is the step-ca's address, such as https://ca.example:9000.
	// Required.
	URL string `yaml:"url"`
	// RootFingerprint is the SHA-256 of the step-ca root in hex (`step
	// certificate fingerprint root_ca.crt`). The client trusts only that
	// root. Required.
	RootFingerprint string `yaml:"root_fingerprint"`
	// Provisioner is the name of the JWK provisioner. Required.
	Provisioner string `yaml:"provisioner"`
	// PasswordFile holds the password of the provisioner's key (mode 0600).
	// Required.
	PasswordFile string `yaml:"password_file"`
	// KeyFile holds the provisioner's encrypted private JWK. Default "": the
	// encrypted key is fetched from the CA, as `step ca token` does.
	KeyFile string `yaml:"key_file"`
	// RootsRefresh is how often the roots are fetched again. Default 1h.
	RootsRefresh time.Duration `yaml:"roots_refresh"`

	// TrustDomain is copied from the ca section. Required.
	TrustDomain string `yaml:"-"`
	// LeafTTL is copied from the ca section; the provisioner's maximum
	// (24h unless configured) must allow it. Default 24h.
	LeafTTL time.Duration `yaml:"-"`
	// Logger receives the provider's logs. Default: discarded.
	Logger *slog.Logger `yaml:"-" json:"-"`
}

// Validate checks the fields read from the configuration file; its error
// is the first wrong one.
func (c StepCAConfig) Validate() error {
	if p := c.problems(); len(p) > 0 {
		return p[0]
	}
	return nil
}

// StepCA is the Issuer and BundleSource of provider "step-ca". Nothing is
// contacted before the first Issue or WatchBundle. It is safe for concurrent
// use.
type StepCA struct {
	cfg      StepCAConfig
	password []byte
	log      *slog.Logger

	mu        sync.Mutex
	client    *stepca.Client
	prov      *stepca.Provisioner // when the key is fetched from the CA
	jwk       *jose.JSONWebKey    // when it is read from KeyFile
	bundle    *Bundle
	fetchedAt time.Time
}

var (
	_ Issuer       = (*StepCA)(nil)
	_ BundleSource = (*StepCA)(nil)
)

// NewStepCA validates cfg and reads the password file (and the key file).
func NewStepCA(cfg StepCAConfig) (*StepCA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ca: step-ca: %w", err)
	}
	if err := ValidateTrustDomain(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("ca: step-ca: %w: TrustDomain: %v", ErrInvalidConfig, err)
	}
	if cfg.LeafTTL == 0 {
		cfg.LeafTTL = DefaultLeafTTL
	}
	if cfg.RootsRefresh == 0 {
		cfg.RootsRefresh = time.Hour
	}
	cfg.RootFingerprint = strings.ToLower(cfg.RootFingerprint)
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	pw, err := os.ReadFile(cfg.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("ca: step-ca: %w: ca.step_ca.password_file: %v", ErrInvalidConfig, err)
	}
	s := &StepCA{cfg: cfg, password: []byte(strings.TrimRight(string(pw), "\r\n")), log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.KeyFile != "" {
		k, err := jose.ReadKey(cfg.KeyFile, jose.WithPassword(s.password))
		if err != nil {
			return nil, fmt.Errorf("ca: step-ca: %w: ca.step_ca.key_file: %v", ErrInvalidConfig, err)
		}
		s.jwk = k
	}
	return s, nil
}

func (s *StepCA) selfAuthorizing() bool { return true }

// getClient returns the ca client, made on first use: making it fetches the
// root and checks its fingerprint.
func (s *StepCA) getClient() (*stepca.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	c, err := stepca.NewClient(s.cfg.URL, stepca.WithRootSHA256(s.cfg.RootFingerprint), stepca.WithTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("ca: step-ca %s: %w: %v", s.cfg.URL, ErrNotReady, err)
	}
	s.client = c
	return c, nil
}

// newToken makes a one-time JWK token for the given subject and SANs.
func (s *StepCA) newToken(subject string, sans []string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jwk != nil {
		jti := make([]byte, 32)
		if _, err := randRead(jti); err != nil {
			return "", err
		}
		now := time.Now()
		tok, err := provision.New(subject,
			token.WithJWTID(fmt.Sprintf("%x", jti)),
			token.WithKid(s.jwk.KeyID),
			token.WithIssuer(s.cfg.Provisioner),
			token.WithAudience(s.cfg.URL+"/1.0/sign"),
			token.WithValidity(now, now.Add(5*time.Minute)),
			token.WithSANS(sans),
			token.WithSHA(s.cfg.RootFingerprint),
		)
		if err != nil {
			return "", err
		}
		return tok.SignedString(s.jwk.Algorithm, s.jwk.Key)
	}
	if s.prov == nil {
		p, err := stepca.NewProvisioner(s.cfg.Provisioner, "", s.cfg.URL, s.password, stepca.WithRootSHA256(s.cfg.RootFingerprint))
		if err != nil {
			return "", fmt.Errorf("provisioner %q: %w", s.cfg.Provisioner, err)
		}
		s.prov = p
	}
	return s.prov.Token(subject, sans...)
}

// Issue implements Issuer: a fresh token per leaf, then /1.0/sign.
func (s *StepCA) Issue(ctx context.Context, req IssueRequest) (*Issued, error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, fmt.Errorf("ca: step-ca: %w: csr: %v", ErrBadRequest, err)
	}
	id, err := ParseIdentity(s.cfg.TrustDomain, csr.URIs)
	if err != nil {
		return nil, fmt.Errorf("ca: step-ca: csr: %w", err)
	}
	c, err := s.getClient()
	if err != nil {
		return nil, err
	}
	// The token's SANs must be exactly the CSR's: step-ca checks it.
	tok, err := s.newToken(spiffeid.Node(id.TrustDomain, id.Node), id.IDs())
	if err != nil {
		return nil, fmt.Errorf("ca: step-ca: token: %w", err)
	}
	resp, err := c.SignWithContext(ctx, &api.SignRequest{
		CsrPEM:   api.NewCertificateRequest(csr),
		OTT:      tok,
		NotAfter: api.NewTimeDuration(time.Now().Add(s.cfg.LeafTTL)),
	})
	if err != nil {
		return nil, fmt.Errorf("ca: step-ca: sign: %w", stepError(err))
	}
	var chain []*x509.Certificate
	for _, c := range resp.CertChainPEM {
		chain = append(chain, c.Certificate)
	}
	if len(chain) == 0 && resp.ServerPEM.Certificate != nil {
		chain = []*x509.Certificate{resp.ServerPEM.Certificate}
		if resp.CaPEM.Certificate != nil {
			chain = append(chain, resp.CaPEM.Certificate)
		}
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("ca: step-ca: sign: %w: empty answer", ErrBadRequest)
	}
	b, err := s.roots(ctx, false)
	if err != nil {
		return nil, err
	}
	return &Issued{Chain: chain, Bundle: b}, nil
}

// stepError maps a step-ca refusal to the package's sentinels.
func stepError(err error) error {
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) {
		switch sc.StatusCode() {
		case 401:
			return fmt.Errorf("%w: %v", ErrBadToken, err)
		case 400:
			return fmt.Errorf("%w: %v", ErrBadRequest, err)
		case 403:
			return fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
	}
	return err
}

// roots returns the step-ca roots as a bundle, fetched again when older
// than RootsRefresh or when force is set. Generation grows when they change.
func (s *StepCA) roots(ctx context.Context, force bool) (*Bundle, error) {
	s.mu.Lock()
	b, at := s.bundle, s.fetchedAt
	s.mu.Unlock()
	if b != nil && !force && time.Since(at) < s.cfg.RootsRefresh {
		return b, nil
	}
	c, err := s.getClient()
	if err != nil {
		return nil, err
	}
	resp, err := c.RootsWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: step-ca: roots: %w", err)
	}
	var roots []*x509.Certificate
	for _, r := range resp.Certificates {
		roots = append(roots, r.Certificate)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("ca: step-ca: roots: %w: none", ErrBadRequest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	gen := uint64(1)
	if s.bundle != nil {
		gen = s.bundle.Generation
		if !sameCerts(s.bundle.Roots, roots) {
			gen++
		}
	}
	if s.bundle == nil || gen != s.bundle.Generation {
		s.bundle = (&Bundle{TrustDomain: s.cfg.TrustDomain, Roots: roots, Generation: gen}).init()
	}
	s.fetchedAt = time.Now()
	return s.bundle, nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// WatchBundle implements BundleSource by polling the roots every
// RootsRefresh.
func (s *StepCA) WatchBundle(ctx context.Context, generation uint64) (*Bundle, error) {
	force := false
	for {
		b, err := s.roots(ctx, force)
		if err != nil {
			return nil, err
		}
		if b.Generation > generation {
			return b, nil
		}
		t := time.NewTimer(s.cfg.RootsRefresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		force = true
	}
}
