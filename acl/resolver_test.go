package acl

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// clock is a settable clock for expiry tests.
type clock struct{ ns atomic.Int64 }

func newClock(at time.Time) *clock {
	c := &clock{}
	c.set(at)
	return c
}

func (c *clock) set(at time.Time)    { c.ns.Store(at.UnixNano()) }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

func newResolver(t testing.TB, cfg Config, s Reader, c *clock, reg prometheus.Registerer) *Resolver {
	t.Helper()
	cfg.Enabled = true
	r, err := NewResolver(cfg, Deps{Store: s, Now: c.now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestResolveExpiryWithLeeway(t *testing.T) {
	s := NewMemStore()
	mustSetPolicy(t, s, newPolicy(t, "ro", "  service_prefix: {'': read}\n"))
	tok, secret := mustToken(t, s, time.Hour, t0, "ro")
	exp := tok.ExpirationTime

	tests := []struct {
		name    string
		leeway  time.Duration
		at      time.Time
		expired bool
	}{
		{"well before", 0, t0, false},
		{"at the expiry", 0, exp, false},
		{"past a 1ns leeway", time.Nanosecond, exp.Add(2 * time.Nanosecond), true},
		{"within the default leeway", 0, exp.Add(time.Second), false},
		{"past the default leeway", 0, exp.Add(time.Second + time.Millisecond), true},
		{"within a 5s leeway", 5 * time.Second, exp.Add(5 * time.Second), false},
		{"4s past with the default leeway", 0, exp.Add(4 * time.Second), true},
		{"past a 5s leeway", 5 * time.Second, exp.Add(5*time.Second + 1), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock(tc.at)
			r := newResolver(t, Config{ExpiryLeeway: tc.leeway}, s, c, nil)
			// Twice: the first resolution fills the cache, the second
			// comes from it; expiry must hold for both.
			for i := 0; i < 2; i++ {
				_, err := r.Resolve(secret)
				if tc.expired {
					if !errors.Is(err, ErrTokenExpired) || !strings.Contains(err.Error(), tok.AccessorID) {
						t.Fatalf("resolution %d: %v, want ErrTokenExpired naming the accessor", i, err)
					}
				} else if err != nil {
					t.Fatalf("resolution %d: %v", i, err)
				}
			}
		})
	}
	t.Run("a cached token expires as the clock moves", func(t *testing.T) {
		c := newClock(exp.Add(-time.Minute))
		r := newResolver(t, Config{}, s, c, nil)
		if _, err := r.Resolve(secret); err != nil {
			t.Fatal(err)
		}
		c.add(time.Minute + 2*time.Second)
		if _, err := r.Resolve(secret); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults", Config{}, ""},
		{"allow", Config{DefaultPolicy: DefaultAllow}, ""},
		{"bad default", Config{DefaultPolicy: "permit"}, `default_policy "permit": want "deny" or "allow"`},
		{"leeway too long", Config{ExpiryLeeway: 10 * time.Second}, "expiry leeway 10s: want between 0 and 5s"},
		{"negative cache", Config{CacheSize: -1}, "cache size -1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAnonymousRights(t *testing.T) {
	s := NewMemStore()
	for _, def := range []DefaultPolicy{DefaultDeny, DefaultAllow} {
		t.Run(string(def), func(t *testing.T) {
			r := newResolver(t, Config{DefaultPolicy: def}, s, newClock(t0), nil)
			a, err := r.Resolve("")
			if err != nil {
				t.Fatal(err)
			}
			if a.AccessorID() != AnonymousAccessorID {
				t.Fatalf("accessor %q", a.AccessorID())
			}
			// Catalog reads are open either way.
			for _, c := range []check{
				{ResourceService, "web", Read, true},
				{ResourceNode, "n1", Read, true},
			} {
				if a.Allowed(c.res, c.name, c.want) != c.allow {
					t.Errorf("%s:%s on %q", c.res, c.want, c.name)
				}
			}
			// Beyond them, the default policy decides: the builtin
			// policy grants nothing else, and denies nothing.
			for _, c := range []check{
				{ResourceService, "web", Write, false},
				{ResourceNode, "n1", Write, false},
				{ResourceAgent, "", Read, false},
				{ResourcePolicy, "Split", Read, false},
				{ResourceIntention, "web", Read, false},
				{ResourceOperator, OperatorKeyring, Read, false},
				{ResourceOperator, OperatorSnapshot, Read, false},
				{ResourceCA, CAToken, Write, false},
				{ResourceCA, CARoots, Read, false},
				{ResourceACL, "", Read, false},
			} {
				// Service and node writes match the builtin's read rule,
				// so they stay denied even under default allow.
				want := def == DefaultAllow && c.res != ResourceService && c.res != ResourceNode
				if a.Allowed(c.res, c.name, c.want) != want {
					t.Errorf("%s:%s on %q: want allowed=%v", c.res, c.want, c.name, want)
				}
			}
		})
	}
	t.Run("relinked to nothing", func(t *testing.T) {
		s := NewMemStore()
		anon, _ := s.Token(AnonymousAccessorID)
		c := cloneToken(anon)
		c.Policies = nil
		if _, err := s.SetToken(context.Background(), c, 0); err != nil {
			t.Fatal(err)
		}
		r := newResolver(t, Config{}, s, newClock(t0), nil)
		a, err := r.Resolve("")
		if err != nil {
			t.Fatal(err)
		}
		if a.Allowed(ResourceService, "web", Read) {
			t.Fatal("the anonymous token still reads the catalog")
		}
	})
}

func TestResolveErrors(t *testing.T) {
	s := NewMemStore()
	r := newResolver(t, Config{}, s, newClock(t0), nil)
	unknown, _ := NewSecret()
	if _, err := r.Resolve(unknown); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("unknown secret: %v", err)
	}
	if _, err := r.Resolve("00000000-0000-0000-0000-000000000002"); !errors.Is(err, ErrMalformedToken) {
		t.Errorf("an accessor ID as secret: %v", err)
	}
	if _, err := r.Resolve(strings.Repeat("x", 1<<20)); !errors.Is(err, ErrMalformedToken) {
		t.Errorf("a huge secret: %v", err)
	}
}

func TestResolveDisabled(t *testing.T) {
	r, err := NewResolver(Config{}, Deps{Store: NewMemStore()})
	if err != nil {
		t.Fatal(err)
	}
	// Not even a malformed token is looked at.
	a, err := r.Resolve("garbage")
	if err != nil || !a.Allowed(ResourceACL, "", Write) {
		t.Fatalf("disabled: %v", err)
	}
}

func TestManagementToken(t *testing.T) {
	s := NewMemStore()
	_, secret, err := Bootstrap(context.Background(), s, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, Config{}, s, newClock(t0), nil)
	a, err := r.Resolve(secret)
	if err != nil {
		t.Fatal(err)
	}
	for res := Resource(1); res < numResources; res++ {
		if err := a.Check(res, "x", Write); err != nil {
			t.Errorf("management %s:write: %v", res, err)
		}
	}
}

// A change of the store reaches the next request: the cache is dropped
// when the index changes, and a deleted token stops working at once.
func TestResolveSeesChanges(t *testing.T) {
	ctx := context.Background()
	s := NewMemStore()
	p := mustSetPolicy(t, s, newPolicy(t, "p", "  service: {web: read}\n"))
	tok, secret := mustToken(t, s, 0, t0, "p")
	reg := prometheus.NewPedanticRegistry()
	r := newResolver(t, Config{}, s, newClock(t0), reg)

	a, err := r.Resolve(secret)
	if err != nil || a.Allowed(ResourceService, "web", Write) {
		t.Fatalf("before: %v", err)
	}
	if _, err := r.Resolve(secret); err != nil {
		t.Fatal(err)
	}
	if hits := value(t, r.m.hit); hits != 1 {
		t.Fatalf("%v cache hits, want 1", hits)
	}

	c := clonePolicy(p)
	c.Rules.Service = map[string]Access{"web": Write}
	if _, err := s.SetPolicy(ctx, c, 0); err != nil {
		t.Fatal(err)
	}
	a, err = r.Resolve(secret)
	if err != nil || !a.Allowed(ResourceService, "web", Write) {
		t.Fatalf("after the policy changed: %v", err)
	}

	if err := s.DeleteToken(ctx, tok.AccessorID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(secret); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("after the token was deleted: %v", err)
	}
	if n := value(t, r.m.invalidations); n < 1 {
		t.Fatalf("%v invalidations", n)
	}
}

// A restore to an older state takes effect even though the state's own
// index goes back: tokens made after the snapshot stop working.
func TestResolveAfterRestore(t *testing.T) {
	s := NewMemStore()
	mustSetPolicy(t, s, newPolicy(t, "p", "  agent: read\n"))
	snap := s.Dump()
	_, secret := mustToken(t, s, 0, t0, "p")
	r := newResolver(t, Config{}, s, newClock(t0), nil)
	if _, err := r.Resolve(secret); err != nil {
		t.Fatal(err)
	}
	before := s.Index()
	if err := s.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if s.Index() <= before {
		t.Fatalf("index %d after a restore from %d", s.Index(), before)
	}
	if _, err := r.Resolve(secret); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("a token younger than the snapshot: %v", err)
	}
}

func TestResolverCacheBounded(t *testing.T) {
	s := NewMemStore()
	mustSetPolicy(t, s, newPolicy(t, "p", "  agent: read\n"))
	var secrets []string
	for i := 0; i < 20; i++ {
		_, sec := mustToken(t, s, 0, t0, "p")
		secrets = append(secrets, sec)
	}
	r := newResolver(t, Config{CacheSize: 5}, s, newClock(t0), nil)
	for _, sec := range secrets {
		if _, err := r.Resolve(sec); err != nil {
			t.Fatal(err)
		}
	}
	r.mu.RLock()
	n := len(r.entries)
	r.mu.RUnlock()
	if n != 5 || value(t, r.m.cached) != 5 {
		t.Fatalf("%d entries cached, want 5", n)
	}
	// Every token still resolves, cached or not.
	for _, sec := range secrets {
		if a, err := r.Resolve(sec); err != nil || !a.Allowed(ResourceAgent, "", Read) {
			t.Fatal(err)
		}
	}
}

// Many goroutines resolving while the store changes: run with -race.
func TestResolveConcurrent(t *testing.T) {
	ctx := context.Background()
	s := NewMemStore()
	p := mustSetPolicy(t, s, newPolicy(t, "p", "  agent: read\n"))
	_, secret := mustToken(t, s, 0, t0, "p")
	r := newResolver(t, Config{}, s, newClock(t0), nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				a, err := r.Resolve(secret)
				if err != nil || !a.Allowed(ResourceAgent, "", Read) {
					t.Errorf("resolve: %v", err)
					return
				}
			}
		}()
	}
	go func() {
		defer close(stop)
		for i := 0; i < 200; i++ {
			c := clonePolicy(p)
			c.Description = "rev " + itoa(i)
			if _, err := s.SetPolicy(ctx, c, 0); err != nil {
				t.Errorf("SetPolicy: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	<-stop
}

func TestMetricNames(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s := NewMemStore()
	r := newResolver(t, Config{}, s, newClock(t0), reg)
	if _, err := r.Resolve(""); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{MetricResolutions: true, MetricCachedTokens: true, MetricCacheInvalidations: true}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "meshwork_acl_") {
			t.Errorf("%s lacks the meshwork_acl_ prefix", mf.GetName())
		}
		delete(want, mf.GetName())
	}
	if len(want) > 0 {
		t.Errorf("not registered: %v", want)
	}
}

// value reads a counter or gauge.
func value(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
