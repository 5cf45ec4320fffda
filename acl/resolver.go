package acl

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is the ACL settings of an agent (`acl:` in its config file).
type Config struct {
	// Enabled turns enforcement on (`acl.enabled`). When off, every request
	// is allowed and tokens are not looked at. Default false.
	Enabled bool
	// DefaultPolicy decides what no rule covers (`acl.default_policy`):
	// DefaultDeny or DefaultAllow. Default DefaultDeny.
	DefaultPolicy DefaultPolicy
	// ExpiryLeeway is how long past its expiration time a token is still
	// accepted, for the skew between the clock that set the expiry and
	// this agent's. Default 1s; at most MaxExpiryLeeway.
	ExpiryLeeway time.Duration
	// CacheSize bounds the tokens whose authorizers are kept compiled.
	// Default 4096.
	CacheSize int
}

// MaxExpiryLeeway bounds Config.ExpiryLeeway: a few seconds cover the skew
// of clocks under NTP; more would keep an expired token alive.
const MaxExpiryLeeway = 5 * time.Second

const (
	defaultLeeway    = time.Second
	defaultCacheSize = 4096
	maxCacheSize     = 1 << 20
)

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.DefaultPolicy == "" {
		c.DefaultPolicy = DefaultDeny
	}
	if c.ExpiryLeeway == 0 {
		c.ExpiryLeeway = defaultLeeway
	}
	if c.CacheSize == 0 {
		c.CacheSize = defaultCacheSize
	}
	return c
}

// Validate checks the settings, naming the setting and the value.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.DefaultPolicy != DefaultDeny && c.DefaultPolicy != DefaultAllow:
		return fmt.Errorf("acl: config: default_policy %q: want %q or %q", truncate(string(c.DefaultPolicy)), DefaultDeny, DefaultAllow)
	case c.ExpiryLeeway < 0 || c.ExpiryLeeway > MaxExpiryLeeway:
		return fmt.Errorf("acl: config: expiry leeway %s: want between 0 and %s", c.ExpiryLeeway, MaxExpiryLeeway)
	case c.CacheSize < 0 || c.CacheSize > maxCacheSize:
		return fmt.Errorf("acl: config: cache size %d: want 0 (for %d) or up to %d", c.CacheSize, defaultCacheSize, maxCacheSize)
	}
	return nil
}

// Deps are a Resolver's collaborators.
type Deps struct {
	// Store is where tokens and policies are read. Required.
	Store Reader
	// Now is the clock expiry is checked against. Default time.Now.
	Now func() time.Time
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger is the resolver's logger. Default: discard.
	Logger *slog.Logger
}

// Resolver turns the secret a request presents into the Authorizer of its
// token. It compiles each token's policies once and caches the result,
// bounded by Config.CacheSize, until the store's index changes; the hot path
// is a hash of the secret, a read-locked map lookup and the expiry check.
// It is safe for concurrent use.
type Resolver struct {
	cfg   Config
	store Reader
	now   func() time.Time
	log   *slog.Logger
	m     *metrics

	mu      sync.RWMutex
	index   uint64 // the store index the cache holds resolutions for
	entries map[SecretHash]*resolved
}

// resolved is one cached resolution.
type resolved struct {
	authz   *Authorizer
	expires time.Time // zero: never
}

// NewResolver validates cfg and returns a resolver over deps.Store.
func NewResolver(cfg Config, deps Deps) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("acl: new resolver: Deps.Store is required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("acl: new resolver: %w", err)
	}
	return &Resolver{
		cfg:     cfg.withDefaults(),
		store:   deps.Store,
		now:     deps.Now,
		log:     deps.Logger,
		m:       m,
		entries: map[SecretHash]*resolved{},
	}, nil
}

// Enabled reports whether ACLs are enforced.
func (r *Resolver) Enabled() bool { return r.cfg.Enabled }

// Resolve returns the authorizer of the token whose secret is presented, or
// of the anonymous token when secret is "". With ACLs disabled it allows
// everything and does not look at the secret. Errors wrap
// ErrMalformedToken, ErrTokenNotFound or ErrTokenExpired, or a failure of
// the store.
func (r *Resolver) Resolve(secret string) (*Authorizer, error) {
	if !r.cfg.Enabled {
		return allowAll, nil
	}
	var key SecretHash // zero for the anonymous token
	if secret != "" {
		if err := CheckSecret("the token", secret); err != nil {
			r.m.malformed.Inc()
			return nil, fmt.Errorf("acl: resolve: %w", err)
		}
		key = HashSecret(secret)
	}
	index := r.store.Index()
	r.mu.RLock()
	e := r.entries[key]
	fresh := r.index == index
	r.mu.RUnlock()
	if e != nil && fresh {
		r.m.hit.Inc()
		return r.admit(e)
	}
	e, err := r.resolve(key, secret == "")
	if err != nil {
		return nil, err
	}
	r.m.miss.Inc()
	r.remember(key, index, e)
	return r.admit(e)
}

// admit checks the expiry, which is never cached.
func (r *Resolver) admit(e *resolved) (*Authorizer, error) {
	if !e.expires.IsZero() && r.now().After(e.expires.Add(r.cfg.ExpiryLeeway)) {
		r.m.expired.Inc()
		return nil, fmt.Errorf("acl: resolve: %w: token %s expired at %s", ErrTokenExpired, e.authz.accessorID, e.expires.UTC().Format(time.RFC3339))
	}
	return e.authz, nil
}

// resolve reads a token and its policies from the store and compiles them.
func (r *Resolver) resolve(key SecretHash, anonymous bool) (*resolved, error) {
	var (
		tok *Token
		err error
	)
	if anonymous {
		tok, err = r.store.Token(AnonymousAccessorID)
		if errors.Is(err, ErrNotFound) {
			tok, err = builtinAnonymous(), nil
		}
	} else {
		tok, err = r.store.TokenBySecret(key)
		// The store found it by its hash; compare the whole hash again in
		// constant time, whatever index the store keeps.
		if err == nil && !tok.SecretHash.Equal(key) {
			err = ErrNotFound
		}
		if errors.Is(err, ErrNotFound) {
			r.m.notFound.Inc()
			return nil, fmt.Errorf("acl: resolve: %w", ErrTokenNotFound)
		}
	}
	if err != nil {
		r.m.storeErrors.Inc()
		return nil, fmt.Errorf("acl: resolve: %w", err)
	}
	e := &resolved{expires: tok.ExpirationTime}
	if tok.Type == TypeManagement {
		e.authz = &Authorizer{accessorID: tok.AccessorID, allowAll: true}
		return e, nil
	}
	policies := make([]*Policy, 0, len(tok.Policies))
	for _, l := range tok.Policies {
		var p *Policy
		switch {
		case l.ID == BuiltinCatalogReadPolicyID:
			p, err = r.store.Policy(l.ID)
			if errors.Is(err, ErrNotFound) {
				p, err = builtinCatalogRead(), nil
			}
		case l.ID != "":
			p, err = r.store.Policy(l.ID)
		default:
			p, err = r.store.PolicyByName(l.Name)
		}
		if errors.Is(err, ErrNotFound) {
			// The state refuses to delete a linked policy, so this is a
			// store that lost one: the token gets nothing from it.
			r.log.Warn("acl token links a missing policy", "accessor", tok.AccessorID, "policy_id", l.ID, "policy", l.Name)
			continue
		}
		if err != nil {
			r.m.storeErrors.Inc()
			return nil, fmt.Errorf("acl: resolve: token %s: %w", tok.AccessorID, err)
		}
		policies = append(policies, p)
	}
	e.authz = compile(tok.AccessorID, policies, r.cfg.DefaultPolicy)
	return e, nil
}

// remember caches e for key, if the store has not changed since index was
// read: a resolution that raced a change is used once and not kept.
func (r *Resolver) remember(key SecretHash, index uint64, e *resolved) {
	if r.store.Index() != index {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.index != index {
		if len(r.entries) > 0 {
			r.m.invalidations.Inc()
		}
		r.entries = make(map[SecretHash]*resolved, len(r.entries))
		r.index = index
	}
	if _, ok := r.entries[key]; !ok && len(r.entries) >= r.cfg.CacheSize {
		// Evict one entry at random (map order): no pattern of requests can
		// pin the cache, and a miss costs only a recompile.
		for k := range r.entries {
			delete(r.entries, k)
			break
		}
	}
	r.entries[key] = e
	r.m.cached.Set(float64(len(r.entries)))
}
