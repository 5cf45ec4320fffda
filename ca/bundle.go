package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Bundle is the trust bundle: the roots every agent trusts. During a root
// rotation it holds two roots. A Bundle is immutable once made.
type Bundle struct {
	// TrustDomain is the SPIFFE trust domain the roots vouch for.
	TrustDomain string
	// Roots are the trusted roots.
	Roots []*x509.Certificate
	// ActiveRoot is the fingerprint of the root new leaves chain to. An agent
	// whose leaf chains elsewhere asks for a new one.
	ActiveRoot string
	// Rotating is true between `meshwork ca rotate` and the old root's
	// retirement.
	Rotating bool
	// Generation orders bundles: a higher one is newer. The embedded CA uses
	// the state index of the CA state it was derived from.
	Generation uint64

	pool *x509.CertPool
}

func (b *Bundle) init() *Bundle {
	b.pool = x509.NewCertPool()
	for _, r := range b.Roots {
		b.pool.AddCert(r)
	}
	return b
}

// Pool returns the roots as a pool for x509.Verify.
func (b *Bundle) Pool() *x509.CertPool { return b.pool }

// Has reports whether the bundle trusts the root with fingerprint fp.
func (b *Bundle) Has(fp string) bool {
	for _, r := range b.Roots {
		if Fingerprint(r) == fp {
			return true
		}
	}
	return false
}

// BundleJSON is the wire and on-disk form of a Bundle.
type BundleJSON struct {
	TrustDomain string `json:"trust_domain"`
	// Roots is a PEM bundle.
	Roots      string `json:"roots"`
	ActiveRoot string `json:"active_root"`
	Rotating   bool   `json:"rotating,omitempty"`
	Generation uint64 `json:"generation"`
}

// JSON returns the wire form of b.
func (b *Bundle) JSON() BundleJSON {
	return BundleJSON{
		TrustDomain: b.TrustDomain,
		Roots:       string(EncodeCertificatesPEM(b.Roots...)),
		ActiveRoot:  b.ActiveRoot,
		Rotating:    b.Rotating,
		Generation:  b.Generation,
	}
}

// Bundle parses the wire form, checking that every root is a CA certificate
// and that the active root is among them.
func (j BundleJSON) Bundle() (*Bundle, error) {
	if err := ValidateTrustDomain(j.TrustDomain); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	roots, err := ParseCertificatesPEM([]byte(j.Roots))
	if err != nil {
		return nil, fmt.Errorf("bundle: roots: %w", err)
	}
	for i, r := range roots {
		if !r.IsCA || !r.BasicConstraintsValid {
			return nil, fmt.Errorf("%w: bundle: root %d (%s) is not a CA certificate", ErrBadRequest, i+1, r.Subject)
		}
	}
	b := &Bundle{TrustDomain: j.TrustDomain, Roots: roots, ActiveRoot: j.ActiveRoot, Rotating: j.Rotating, Generation: j.Generation}
	if j.ActiveRoot != "" && !b.Has(j.ActiveRoot) {
		return nil, fmt.Errorf("%w: bundle: active root %s is not among the roots", ErrBadRequest, j.ActiveRoot)
	}
	return b.init(), nil
}

// ParseBundleJSON decodes a bundle as stored at KeyBundle or sent by a server.
func ParseBundleJSON(data []byte) (*Bundle, error) {
	var j BundleJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("%w: bundle: %v", ErrBadRequest, err)
	}
	return j.Bundle()
}

// verifyChain checks that chain (leaf first) leads to a root of b at time
// now, and returns the leaf's identity in b's trust domain and the
// fingerprint of the root the first valid path reached.
func (b *Bundle) verifyChain(chain []*x509.Certificate, now time.Time) (Identity, string, error) {
	if len(chain) == 0 {
		return Identity{}, "", fmt.Errorf("%w: no certificate", ErrUntrusted)
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	paths, err := leaf.Verify(x509.VerifyOptions{
		Roots:         b.pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return Identity{}, "", fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	if leaf.IsCA {
		return Identity{}, "", fmt.Errorf("%w: the leaf is a CA certificate", ErrUntrusted)
	}
	id, err := ParseIdentity(b.TrustDomain, leaf.URIs)
	if err != nil {
		if !errors.Is(err, ErrTrustDomain) {
			err = fmt.Errorf("%w: %v", ErrTrustDomain, err)
		}
		return Identity{}, "", err
	}
	// Prefer the active root when both paths exist (during a rotation).
	root := Fingerprint(paths[0][len(paths[0])-1])
	for _, p := range paths {
		if fp := Fingerprint(p[len(p)-1]); fp == b.ActiveRoot {
			root = fp
		}
	}
	return id, root, nil
}

// BundleSource delivers trust bundles to a Manager.
//
// WatchBundle blocks until a bundle with a Generation above generation is
// available, or ctx ends (then it returns ctx's error). Passing 0 returns
// the current bundle as soon as there is one. Transient errors are returned
// and the caller retries. It is safe for concurrent use.
type BundleSource interface {
	WatchBundle(ctx context.Context, generation uint64) (*Bundle, error)
}

// StateBundleSource reads the bundle servers publish at KeyBundle.
type StateBundleSource struct {
	state StateStore
	td    string
}

// NewStateBundleSource returns a BundleSource over st that accepts only
// bundles of trust domain td.
func NewStateBundleSource(st StateStore, td string) *StateBundleSource {
	return &StateBundleSource{state: st, td: td}
}

// WatchBundle implements BundleSource.
func (s *StateBundleSource) WatchBundle(ctx context.Context, generation uint64) (*Bundle, error) {
	val, idx, err := s.state.Get(ctx, KeyBundle)
	for {
		if err != nil {
			return nil, fmt.Errorf("ca: watch bundle: %w", err)
		}
		if val != nil {
			b, perr := ParseBundleJSON(val)
			if perr != nil {
				return nil, fmt.Errorf("ca: watch bundle: %w", perr)
			}
			if b.TrustDomain != s.td {
				return nil, fmt.Errorf("ca: watch bundle: %w: the state holds trust domain %q, want %q", ErrTrustDomain, b.TrustDomain, s.td)
			}
			if b.Generation > generation {
				return b, nil
			}
		}
		val, idx, err = s.state.Watch(ctx, KeyBundle, idx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}
