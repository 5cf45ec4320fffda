// Package retrybudget caps the retries a calling agent makes to a
// service, as Finagle and Linkerd do: retries are allowed up to a share of
// the requests of the last ten seconds, plus a small floor per second, so
// that a failing service gets at most that much extra load from retries
// instead of a multiple of its traffic (a retry storm).
//
// There is one Budget per destination service on each calling agent
// (Set). Deposit, on every request, is a lock-free add; Withdraw, on every
// retry, sums the window under a small lock so that concurrent retries
// cannot overdraw it. Everything is safe for concurrent use.
package retrybudget

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Clock returns monotonic time as a duration since an arbitrary origin,
// the shape of balance.Clock. Tests pass a virtual clock.
type Clock func() time.Duration

// SystemClock is the monotonic wall clock.
func SystemClock() Clock {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}

// Window is how far back requests earn retries: ten seconds, as in
// Linkerd and Finagle, counted in one-second slots.
const (
	Window = 10 * time.Second
	slots  = int64(Window / time.Second)
)

// Limits are a budget's settings, policy's retries.budget.
type Limits struct {
	// Percent of the window's requests that may be retried, 0 to 100.
	Percent int
	// MinPerSecond retries are allowed per second of the window whatever
	// the traffic, so that a quiet service can still be retried.
	MinPerSecond int
}

// Budget is the retry budget of one destination service.
type Budget struct {
	now    Clock
	limits atomic.Pointer[Limits]
	denied prometheus.Counter // nil: not counted

	// Each slot packs a second number (high 32 bits) with a count (low 32
	// bits), so that moving a slot on to a new second and counting in it
	// is one compare-and-swap.
	requests [slots]atomic.Uint64
	retries  [slots]atomic.Uint64

	mu sync.Mutex // serializes Withdraw's check and count
}

// New returns an empty budget with limits l; clock nil means SystemClock.
func New(l Limits, clock Clock) *Budget {
	if clock == nil {
		clock = SystemClock()
	}
	b := &Budget{now: clock}
	b.SetLimits(l)
	return b
}

// SetLimits changes the budget's settings; what it counted is kept.
func (b *Budget) SetLimits(l Limits) {
	if cur := b.limits.Load(); cur != nil && *cur == l {
		return
	}
	b.limits.Store(&l)
}

// Limits returns the budget's settings.
func (b *Budget) Limits() Limits { return *b.limits.Load() }

// second is the slot clock: whole seconds since the clock's origin.
func (b *Budget) second() uint64 { return uint64(b.now() / time.Second) }

// add counts one in the slot of second sec.
func add(slot *atomic.Uint64, sec uint64) {
	tag := sec << 32
	for {
		v := slot.Load()
		next := tag | 1
		if v&^0xffffffff == tag {
			next = v + 1
		}
		if slot.CompareAndSwap(v, next) {
			return
		}
	}
}

// sum adds up the counts of the slots within the window ending at sec.
func sum(ring *[slots]atomic.Uint64, sec uint64) int64 {
	var n int64
	for i := range ring {
		v := ring[i].Load()
		if s := v >> 32; s <= sec && sec-s < uint64(slots) {
			n += int64(v & 0xffffffff)
		}
	}
	return n
}

// Deposit counts a request (a first try, not a retry). It takes no lock.
func (b *Budget) Deposit() {
	sec := b.second()
	add(&b.requests[sec%uint64(slots)], sec)
}

// Withdraw reports whether one more retry (or hedge) fits the budget,
// and counts it when it does.
func (b *Budget) Withdraw() bool {
	l := b.limits.Load()
	sec := b.second()
	b.mu.Lock()
	allowed := b.allowance(l, sec)
	ok := sum(&b.retries, sec) < allowed
	if ok {
		add(&b.retries[sec%uint64(slots)], sec)
	}
	b.mu.Unlock()
	if !ok && b.denied != nil {
		b.denied.Inc()
	}
	return ok
}

// allowance is how many retries the window allows at second sec:
// Percent of its requests plus MinPerSecond for each of its seconds.
func (b *Budget) allowance(l *Limits, sec uint64) int64 {
	return sum(&b.requests, sec)*int64(l.Percent)/100 + int64(l.MinPerSecond)*slots
}

// Stats is what a budget counted in its window.
type Stats struct {
	Requests, Retries, Allowed int64
}

// Stats returns the window's counts.
func (b *Budget) Stats() Stats {
	sec := b.second()
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Requests: sum(&b.requests, sec), Retries: sum(&b.retries, sec), Allowed: b.allowance(b.limits.Load(), sec)}
}

// Set holds the budgets of the services an agent calls, created on first
// use and kept (a few hundred bytes each) while the agent runs. Reads take
// no lock.
type Set struct {
	now     Clock
	budgets sync.Map // lower-case service -> *Budget
	m       *metrics
}

// NewSet returns an empty set whose budgets read clock (nil:
// SystemClock) and whose metrics go to reg (nil: kept private).
func NewSet(clock Clock, reg prometheus.Registerer) (*Set, error) {
	if clock == nil {
		clock = SystemClock()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Set{now: clock, m: m}, nil
}

// For returns the budget of service with limits l, creating it on first
// use and updating its limits when the policy changed them.
func (s *Set) For(service string, l Limits) *Budget {
	key := service
	if strings.ToLower(service) != service {
		key = strings.ToLower(service)
	}
	if v, ok := s.budgets.Load(key); ok {
		b := v.(*Budget)
		b.SetLimits(l)
		return b
	}
	b := New(l, s.now)
	b.denied = s.m.exhausted
	v, _ := s.budgets.LoadOrStore(key, b)
	return v.(*Budget)
}
