package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

func mustNew(t *testing.T, p string) *Allocator {
	t.Helper()
	a, err := New(netip.MustParsePrefix(p))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestNewRefusesBadRanges(t *testing.T) {
	for _, p := range []string{"10.0.0.0/8", "::1/128", "127.0.0.0/8", "127.0.5.0/24", "127.240.0.0/25", "0.0.0.0/0"} {
		t.Run(p, func(t *testing.T) {
			if _, err := New(netip.MustParsePrefix(p)); !errors.Is(err, ErrPrefix) {
				t.Fatalf("err = %v, want ErrPrefix", err)
			}
		})
	}
	if _, err := New(DefaultPrefix); err != nil {
		t.Fatalf("default range refused: %v", err)
	}
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("svc-%d", i)
	}
	return out
}

func TestStableAndDeterministic(t *testing.T) {
	a := mustNew(t, "127.240.0.0/12")
	if _, _, err := a.Sync([]string{"web", "API", "db"}); err != nil {
		t.Fatal(err)
	}
	web, ok := a.VIP("WEB")
	if !ok || !a.Prefix().Contains(web) {
		t.Fatalf("VIP(WEB) = %v, %v", web, ok)
	}
	if web != a.Candidate("web", 0) {
		t.Errorf("without a collision the VIP must be the home address")
	}
	if name, ok := a.ServiceAt(web); !ok || name != "web" {
		t.Errorf("ServiceAt(%v) = %q, %v", web, name, ok)
	}
	if name, _ := a.ServiceAt(mustVIP(t, a, "api")); name != "API" {
		t.Errorf("ServiceAt must return the catalog's spelling, got %q", name)
	}

	// Another host seeing the same names in another order agrees.
	b := mustNew(t, "127.240.0.0/12")
	if _, _, err := b.Sync([]string{"db", "web", "API"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"web", "api", "db"} {
		if mustVIP(t, a, n) != mustVIP(t, b, n) {
			t.Errorf("%s: hosts disagree", n)
		}
	}

	// Adding many services moves none of the existing ones.
	added, removed, err := a.Sync(append(names(500), "web", "API", "db"))
	if err != nil || len(added) != 500 || len(removed) != 0 {
		t.Fatalf("Sync: added %d removed %d err %v", len(added), len(removed), err)
	}
	if mustVIP(t, a, "web") != web {
		t.Error("web moved when others were added")
	}
}

func mustVIP(t *testing.T, a *Allocator, name string) netip.Addr {
	t.Helper()
	ip, ok := a.VIP(name)
	if !ok {
		t.Fatalf("no VIP for %s", name)
	}
	return ip
}

func TestCollisionsStayStable(t *testing.T) {
	// A /24 holds 254 usable addresses: 200 names collide a lot.
	a := mustNew(t, "127.250.1.0/24")
	first := names(200)
	if _, _, err := a.Sync(first); err != nil {
		t.Fatal(err)
	}
	before := a.All()
	seen := map[netip.Addr]string{}
	collided := 0
	for n, ip := range before {
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s and %s share %v", n, other, ip)
		}
		seen[ip] = n
		if ip != a.Candidate(n, 0) {
			collided++
		}
	}
	if collided == 0 {
		t.Fatal("the test range is meant to force collisions")
	}
	// Removing half and adding others must not move the survivors.
	next := append(append([]string(nil), first[:100]...), "late-1", "late-2")
	if _, _, err := a.Sync(next); err != nil {
		t.Fatal(err)
	}
	for _, n := range first[:100] {
		if mustVIP(t, a, n) != before[n] {
			t.Errorf("%s moved from %v", n, before[n])
		}
	}
	if _, ok := a.VIP(first[150]); ok {
		t.Error("a removed service kept its VIP")
	}
	if n, ok := a.ServiceAt(before[first[150]]); ok && n == first[150] {
		t.Error("a removed service still answers ServiceAt")
	}
	// A departed service that returns gets its address back when free.
	if _, _, err := a.Sync(append(next, first[150])); err != nil {
		t.Fatal(err)
	}
	if got := mustVIP(t, a, first[150]); got != before[first[150]] {
		t.Errorf("returning service got %v, had %v", got, before[first[150]])
	}
}

func TestExhaustion(t *testing.T) {
	a := mustNew(t, "127.250.2.0/24")
	if _, _, err := a.Sync(names(300)); !errors.Is(err, ErrFull) {
		t.Fatalf("err = %v, want ErrFull", err)
	}
	if len(a.All()) != 0 {
		t.Error("a failed Sync must leave the mapping unchanged")
	}
}

func TestConcurrentReads(t *testing.T) {
	a := mustNew(t, "127.240.0.0/12")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if ip, ok := a.VIP("svc-1"); ok {
					if n, ok := a.ServiceAt(ip); ok && n != "svc-1" {
						t.Errorf("ServiceAt(%v) = %s", ip, n)
					}
				}
			}
		}()
	}
	for i := range 50 {
		if _, _, err := a.Sync(names(10 + i%5)); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

// The DNS server's VIPResolver, restated so that this package need not
// import it.
var _ interface {
	VIP(service string) (netip.Addr, bool)
	ServiceAt(ip netip.Addr) (string, bool)
} = (*Allocator)(nil)
