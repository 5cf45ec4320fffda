// Package balance chooses among the healthy instances of a service: a
// power-of-two-choices pick over a peak-EWMA latency estimate with a penalty
// for work in flight (the scheme of Finagle and Linkerd), outlier ejection
// of instances that keep failing (outlier.go), and weighted picks for
// traffic splits.
//
// It knows nothing of networks: callers report when work starts, how long a
// connect took and whether it failed, and ask for a pick among candidates.
// Everything is safe for concurrent use.
package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes the estimator. The zero value is completed by defaults.
type Config struct {
	// Decay is the time constant of the EWMA: an observation weighs
	// 1-exp(-Δt/Decay) against the old estimate, and an idle estimate decays
	// towards zero with it, so that a slow instance is tried again after a
	// while. Default: 10s (Finagle and Linkerd use 10s).
	Decay time.Duration
	// DefaultRTT is the estimate of an instance with no observation yet.
	// Default: 1ms, a LAN connect through two agents.
	DefaultRTT time.Duration
	// FailurePenalty is the latency a failed attempt counts as. Peak
	// sensitivity makes it the estimate at once. Default: 1s.
	FailurePenalty time.Duration
}

func (c *Config) setDefaults() {
	if c.Decay <= 0 {
		c.Decay = 10 * time.Second
	}
	if c.DefaultRTT <= 0 {
		c.DefaultRTT = time.Millisecond
	}
	if c.FailurePenalty <= 0 {
		c.FailurePenalty = time.Second
	}
}

// Clock returns monotonic time as a duration since an arbitrary origin.
// Tests pass a virtual clock.
type Clock func() time.Duration

// SystemClock is the monotonic wall clock.
func SystemClock() Clock {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}

// Balancer makes picks. It holds the random source and the clock that all
// its endpoints share.
type Balancer struct {
	cfg   Config
	now   Clock
	mu    sync.Mutex // guards rng
	rng   *rand.Rand
	decay float64 // cfg.Decay in ns

	events   func(Event) // nil: none; set by OnEvent before use
	fallback *Group      // of endpoints made without a group
}

// New returns a balancer. seed fixes the random choices (tests use it);
// clock nil means SystemClock.
func New(cfg Config, seed uint64, clock Clock) *Balancer {
	cfg.setDefaults()
	if clock == nil {
		clock = SystemClock()
	}
	b := &Balancer{
		cfg:   cfg,
		now:   clock,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		decay: float64(cfg.Decay),
	}
	b.fallback = b.NewGroup("")
	return b
}

// Now reads the balancer's clock; callers time connects with it so that a
// virtual clock drives the whole feedback loop in tests.
func (b *Balancer) Now() time.Duration { return b.now() }

// NewEndpoint returns the state of a new instance with no group: it is
// ejected by DefaultOutlier among the other endpoints made this way.
func (b *Balancer) NewEndpoint() *Endpoint { return b.newEndpoint(b.fallback, "") }

// NewEndpointIn returns the state of a new instance, named name in events,
// of group g (its service), whose OutlierPolicy ejects it.
func (b *Balancer) NewEndpointIn(g *Group, name string) *Endpoint { return b.newEndpoint(g, name) }

func (b *Balancer) newEndpoint(g *Group, name string) *Endpoint {
	g.size.Add(1)
	return &Endpoint{b: b, g: g, name: name, cost: float64(b.cfg.DefaultRTT), stamp: b.now()}
}

// Endpoint is the load state of one instance: its latency estimate, the work
// in flight and its ejection state. Safe for concurrent use.
type Endpoint struct {
	b       *Balancer
	g       *Group
	name    string
	pending atomic.Int64

	mu    sync.Mutex
	cost  float64       // peak-EWMA latency, ns
	stamp time.Duration // time of the last update
	out   outlierState  // guarded by mu, but for out.ejectedUntil
	gone  bool          // left its table: no longer counted in g

	latency LatencyQuantiles // request latency, for hedging (quantile.go)
}

// Start records the start of work on the endpoint (a connect, then the
// connection it carries). Call End when it ends.
func (e *Endpoint) Start() { e.pending.Add(1) }

// End records the end of work begun with Start.
func (e *Endpoint) End() { e.pending.Add(-1) }

// Pending is the work in flight.
func (e *Endpoint) Pending() int64 { return e.pending.Load() }

// Success records a call that took rtt (a connect, or a request to its
// answer), and ends the failure streak.
func (e *Endpoint) Success(rtt time.Duration) {
	e.mu.Lock()
	e.observe(float64(rtt))
	es := e.success()
	e.mu.Unlock()
	e.emit(es)
}

// Failure records a failed call of the given kind: it counts as
// FailurePenalty, and enough of them in a row eject the endpoint
// (outlier.go).
func (e *Endpoint) Failure(kind FailureKind) {
	e.mu.Lock()
	e.observe(float64(e.b.cfg.FailurePenalty))
	es := e.failure(kind)
	e.mu.Unlock()
	e.emit(es)
}

// observe folds rtt (ns) into the estimate; e.mu is held. Peak sensitivity:
// a sample above the estimate replaces it, so that a slowdown shows at
// once, while improvements are believed gradually.
func (e *Endpoint) observe(rtt float64) {
	now := e.b.now()
	if rtt > e.cost {
		e.cost = rtt
	} else {
		w := math.Exp(-float64(max(now-e.stamp, 0)) / e.b.decay)
		e.cost = e.cost*w + rtt*(1-w)
	}
	e.stamp = now
}

// Cost is the endpoint's load: the decayed latency estimate times the work
// in flight plus one. Lower is better.
func (e *Endpoint) Cost() float64 {
	e.mu.Lock()
	now := e.b.now()
	w := math.Exp(-float64(max(now-e.stamp, 0)) / e.b.decay)
	est := e.cost * w
	e.mu.Unlock()
	pending := float64(max(e.pending.Load(), 0))
	if est < 1 && pending > 0 {
		// A decayed-to-nothing estimate must not hide a queue.
		return float64(e.b.cfg.DefaultRTT) + pending
	}
	return est * (pending + 1)
}

// String is for debugging.
func (e *Endpoint) String() string {
	return fmt.Sprintf("cost=%.0fns pending=%d", e.Cost(), e.Pending())
}

// maxStack is how many candidates Pick sorts through without allocating.
const maxStack = 32

// Pick chooses one of n candidates, whose endpoints endpoint(i) returns,
// skipping those for which skip(i) is true (skip may be nil). It returns -1
// when every candidate is skipped. Ejected candidates are avoided unless all
// the others are skipped too, so that a pool never empties itself. Among
// the rest it draws two at random and returns the cheaper (power of two
// choices).
func (b *Balancer) Pick(n int, endpoint func(i int) *Endpoint, skip func(i int) bool) int {
	var stack [maxStack]int
	live := stack[:0]
	var ejected []int
	for i := range n {
		if skip != nil && skip(i) {
			continue
		}
		if endpoint(i).Ejected() {
			ejected = append(ejected, i)
			continue
		}
		live = append(live, i)
	}
	if len(live) == 0 {
		live = ejected
	}
	switch len(live) {
	case 0:
		return -1
	case 1:
		return live[0]
	}
	b.mu.Lock()
	x := b.rng.IntN(len(live))
	y := b.rng.IntN(len(live) - 1)
	b.mu.Unlock()
	if y >= x {
		y++
	}
	i, j := live[x], live[y]
	if endpoint(j).Cost() < endpoint(i).Cost() {
		return j
	}
	return i
}

// Weighted returns an index drawn with probability weights[i]/Σweights,
// or -1 when every weight is zero.
func (b *Balancer) Weighted(weights []uint32) int {
	var total uint64
	for _, w := range weights {
		total += uint64(w)
	}
	if total == 0 {
		return -1
	}
	b.mu.Lock()
	r := b.rng.Uint64N(total)
	b.mu.Unlock()
	for i, w := range weights {
		if r < uint64(w) {
			return i
		}
		r -= uint64(w)
	}
	return len(weights) - 1 // unreachable
}

// Table holds the endpoint state of many instances by key, and forgets the
// instances that leave the catalog. Reads take no lock.
type Table[K comparable] struct {
	b *Balancer
	m sync.Map // K -> *Endpoint
}

// NewTable returns an empty table whose endpoints belong to b.
func NewTable[K comparable](b *Balancer) *Table[K] { return &Table[K]{b: b} }

// Get returns the endpoint of k, creating it on first use with no group.
func (t *Table[K]) Get(k K) *Endpoint {
	if v, ok := t.m.Load(k); ok {
		return v.(*Endpoint)
	}
	return t.store(k, t.b.NewEndpoint())
}

// GetIn returns the endpoint of k, creating it on first use in group g
// with name for its events. An instance belongs to one group for life.
func (t *Table[K]) GetIn(k K, g *Group, name string) *Endpoint {
	if v, ok := t.m.Load(k); ok {
		return v.(*Endpoint)
	}
	return t.store(k, t.b.NewEndpointIn(g, name))
}

func (t *Table[K]) store(k K, e *Endpoint) *Endpoint {
	v, loaded := t.m.LoadOrStore(k, e)
	if loaded {
		e.leave() // lost the race: uncount it
	}
	return v.(*Endpoint)
}

// Retain forgets every key for which keep is false, so that an instance
// that left and comes back starts afresh rather than with stale state.
// An ejected instance that leaves is counted as returned.
func (t *Table[K]) Retain(keep func(K) bool) (removed int) {
	t.m.Range(func(k, v any) bool {
		if !keep(k.(K)) {
			t.m.Delete(k)
			v.(*Endpoint).leave()
			removed++
		}
		return true
	})
	return removed
}

// Range calls f for each endpoint held until f returns false.
func (t *Table[K]) Range(f func(K, *Endpoint) bool) {
	t.m.Range(func(k, v any) bool { return f(k.(K), v.(*Endpoint)) })
}

// Len counts the endpoints held.
func (t *Table[K]) Len() int {
	n := 0
	t.m.Range(func(any, any) bool { n++; return true })
	return n
}
