package acl

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// benchSetup is a store of 10,000 tokens and 50 policies, and the secret of
// a token linking five of them (exact and prefix rules in several
// sections), as a CI or agent token would.
func benchSetup(b *testing.B) (*MemStore, string) {
	b.Helper()
	s := NewMemStore()
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		p := newPolicy(b, fmt.Sprintf("p%d", i), fmt.Sprintf(
			"  service: {svc-%d: write, web-%d: read}\n  service_prefix: {'': read, db-: deny, team-%d-: write}\n  node_prefix: {'': read, edge-: deny}\n  policy: {Split: write, '*': read}\n  intention_prefix: {'team-%d-': write}\n  agent: read\n", i, i, i, i))
		if _, err := s.SetPolicy(ctx, p, 0); err != nil {
			b.Fatal(err)
		}
	}
	var secret string
	for i := 0; i < 10_000; i++ {
		spec := TokenSpec{Description: "bench"}
		if i == 5_000 {
			for j := 0; j < 5; j++ {
				spec.Policies = append(spec.Policies, PolicyLink{Name: fmt.Sprintf("p%d", j*7)})
			}
		} else {
			spec.Policies = []PolicyLink{{Name: fmt.Sprintf("p%d", i%50)}}
		}
		tok, sec, err := NewToken(spec, t0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.SetToken(ctx, tok, 0); err != nil {
			b.Fatal(err)
		}
		if i == 5_000 {
			secret = sec
		}
	}
	return s, secret
}

func benchResolver(b *testing.B, s Reader) *Resolver {
	b.Helper()
	r, err := NewResolver(Config{Enabled: true}, Deps{Store: s, Now: time.Now})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkAPICheck is the whole cost ACLs add to one API call: read the
// token from the request's header, hash it, find the cached authorizer (the
// store's index is read to know the cache is current), check expiry, and
// decide. The budget is about 5 µs.
func BenchmarkAPICheck(b *testing.B) {
	s, secret := benchSetup(b)
	cases := []struct {
		name   string
		header http.Header
		res    Resource
		obj    string
		want   Access
	}{
		{"token/service-write", http.Header{HeaderToken: {secret}}, ResourceService, "svc-7", Write},
		{"token/service-prefix-read", http.Header{HeaderToken: {secret}}, ResourceService, "billing-api", Read},
		{"bearer/policy-write", http.Header{"Authorization": {"Bearer " + secret}}, ResourcePolicy, "Split", Write},
		{"anonymous/catalog-read", http.Header{}, ResourceService, "web", Read},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			r := benchResolver(b, s)
			b.ReportAllocs()
			for b.Loop() {
				sec, err := TokenFromHeader(c.header)
				if err != nil {
					b.Fatal(err)
				}
				a, err := r.Resolve(sec)
				if err != nil {
					b.Fatal(err)
				}
				if err := a.Check(c.res, c.obj, c.want); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("token/parallel", func(b *testing.B) {
		r := benchResolver(b, s)
		h := http.Header{HeaderToken: {secret}}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				sec, err := TokenFromHeader(h)
				if err != nil {
					b.Error(err)
					return
				}
				a, err := r.Resolve(sec)
				if err != nil || a.Check(ResourceService, "svc-7", Write) != nil {
					b.Error("denied")
					return
				}
			}
		})
	})
	// A denial allocates its error; it is the slow path of a refused call.
	b.Run("token/denied", func(b *testing.B) {
		r := benchResolver(b, s)
		h := http.Header{HeaderToken: {secret}}
		b.ReportAllocs()
		for b.Loop() {
			sec, _ := TokenFromHeader(h)
			a, err := r.Resolve(sec)
			if err != nil {
				b.Fatal(err)
			}
			if a.Check(ResourceService, "db-main", Write) == nil {
				b.Fatal("allowed")
			}
		}
	})
}

// BenchmarkResolveMiss is the first request of a token after a change of
// the store: look the token and its five policies up and compile them.
func BenchmarkResolveMiss(b *testing.B) {
	s, secret := benchSetup(b)
	r := benchResolver(b, s)
	key := HashSecret(secret)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.resolve(key, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecide is the decision alone, on a compiled authorizer.
func BenchmarkDecide(b *testing.B) {
	s, secret := benchSetup(b)
	a, err := benchResolver(b, s).Resolve(secret)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !a.Allowed(ResourceService, "team-0-billing", Write) {
			b.Fatal("denied")
		}
	}
}

// BenchmarkHashSecret and BenchmarkCheckSecret are the two steps of
// BenchmarkAPICheck that look at the secret itself.
func BenchmarkHashSecret(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		HashSecret(canary)
	}
}

func BenchmarkCheckSecret(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckSecret("bench", canary); err != nil {
			b.Fatal(err)
		}
	}
}
