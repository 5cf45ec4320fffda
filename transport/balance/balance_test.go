package balance

import (
	"container/heap"
	"fmt"
	"testing"
	"time"
)

// vclock is a virtual clock the tests move by hand.
type vclock struct{ t time.Duration }

func (c *vclock) now() time.Duration      { return c.t }
func (c *vclock) advance(d time.Duration) { c.t += d }

// completion is a request in flight in the simulation.
type completion struct {
	at time.Duration
	ep *Endpoint
}

type completions []completion

func (c completions) Len() int           { return len(c) }
func (c completions) Less(i, j int) bool { return c[i].at < c[j].at }
func (c completions) Swap(i, j int)      { c[i], c[j] = c[j], c[i] }
func (c *completions) Push(x any)        { *c = append(*c, x.(completion)) }
func (c *completions) Pop() any {
	old := *c
	x := old[len(old)-1]
	*c = old[:len(old)-1]
	return x
}

// simulate offers one request every interval for rounds rounds to instances
// with the given latencies, each request holding its instance for its
// latency, and returns how many each instance got.
func simulate(t *testing.T, latencies []time.Duration, interval time.Duration, rounds int, seed uint64) []int {
	t.Helper()
	clk := &vclock{}
	b := New(Config{}, seed, clk.now)
	eps := make([]*Endpoint, len(latencies))
	for i := range eps {
		eps[i] = b.NewEndpoint()
	}
	counts := make([]int, len(eps))
	var inflight completions
	for range rounds {
		clk.advance(interval)
		for inflight.Len() > 0 && inflight[0].at <= clk.t {
			heap.Pop(&inflight).(completion).ep.End()
		}
		i := b.Pick(len(eps), func(i int) *Endpoint { return eps[i] }, nil)
		counts[i]++
		eps[i].Start()
		eps[i].Success(latencies[i])
		heap.Push(&inflight, completion{at: clk.t + latencies[i], ep: eps[i]})
	}
	return counts
}

func TestPrefersFastInstance(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		latencies []time.Duration
		interval  time.Duration
		minFast   float64 // share of the fast instance (index 0)
		minOthers float64 // least share of any slow instance
	}{
		// Two instances: P2C always sees both, so the fast one wins until its
		// queue makes it dearer; the slow one still gets the overflow.
		{"two, light load", []time.Duration{1 * ms, 10 * ms}, 2 * ms, 0.90, 0},
		{"two, heavy load spills over", []time.Duration{1 * ms, 10 * ms}, 100 * time.Microsecond, 0.70, 0.005},
		// Three: the fast one is drawn 2/3 of the time and must win then.
		{"three", []time.Duration{1 * ms, 8 * ms, 8 * ms}, ms, 0.62, 0.05},
		{"five", []time.Duration{2 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms}, ms, 0.38, 0.05},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const rounds = 20000
			counts := simulate(t, tc.latencies, tc.interval, rounds, 42)
			fast := float64(counts[0]) / rounds
			uniform := 1 / float64(len(counts))
			t.Logf("counts %v (fast share %.3f, uniform %.3f)", counts, fast, uniform)
			if fast < tc.minFast {
				t.Errorf("fast instance got %.3f of picks, want ≥ %.2f", fast, tc.minFast)
			}
			for i, c := range counts[1:] {
				if share := float64(c) / rounds; share < tc.minOthers {
					t.Errorf("slow instance %d got %.4f, want ≥ %.2f (the in-flight penalty must spill load)", i+1, share, tc.minOthers)
				}
			}
		})
	}
}

func TestInFlightPenalty(t *testing.T) {
	clk := &vclock{}
	b := New(Config{}, 1, clk.now)
	fast, slow := b.NewEndpoint(), b.NewEndpoint()
	fast.Success(time.Millisecond)
	slow.Success(5 * time.Millisecond)
	eps := []*Endpoint{fast, slow}
	get := func(i int) *Endpoint { return eps[i] }
	if got := b.Pick(2, get, nil); got != 0 {
		t.Fatalf("idle: picked %d, want the fast one", got)
	}
	for range 10 {
		fast.Start()
	}
	if got := b.Pick(2, get, nil); got != 1 {
		t.Fatalf("fast one has 10 in flight (cost %v vs %v): picked %d, want the slow one", fast, slow, got)
	}
}

func TestPeakAndDecay(t *testing.T) {
	clk := &vclock{}
	b := New(Config{Decay: 10 * time.Second}, 1, clk.now)
	e := b.NewEndpoint()
	e.Success(time.Millisecond)
	e.Success(50 * time.Millisecond)
	if c := e.Cost(); c != float64(50*time.Millisecond) {
		t.Fatalf("a slower sample must replace the estimate at once: cost %v", c)
	}
	clk.advance(time.Second)
	e.Success(time.Millisecond)
	if c := e.Cost(); c <= float64(40*time.Millisecond) || c >= float64(50*time.Millisecond) {
		t.Fatalf("a faster sample must be believed gradually: cost %.0f", c)
	}
	clk.advance(200 * time.Second)
	if c := e.Cost(); c >= float64(time.Microsecond) {
		t.Fatalf("an idle estimate must decay towards zero: cost %.0f", c)
	}
	e.Start()
	if c := e.Cost(); c < float64(time.Millisecond) {
		t.Fatalf("a decayed estimate must not hide work in flight: cost %.0f", c)
	}
}

// chiSquare returns Σ (observed-expected)²/expected.
func chiSquare(counts []int, weights []uint32) float64 {
	var total, wsum float64
	for i := range counts {
		total += float64(counts[i])
		wsum += float64(weights[i])
	}
	var x2 float64
	for i, c := range counts {
		exp := total * float64(weights[i]) / wsum
		if exp == 0 {
			continue
		}
		d := float64(c) - exp
		x2 += d * d / exp
	}
	return x2
}

func TestWeightedHonoursWeights(t *testing.T) {
	// Critical values of χ² at p = 0.001.
	critical := map[int]float64{1: 10.83, 2: 13.82, 3: 16.27}
	tests := []struct {
		weights []uint32
	}{
		{[]uint32{90, 10}},
		{[]uint32{70, 20, 10}},
		{[]uint32{1, 1, 1, 1}},
		{[]uint32{50, 0, 50}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.weights), func(t *testing.T) {
			b := New(Config{}, 2024, nil)
			const n = 20000
			counts := make([]int, len(tc.weights))
			for range n {
				counts[b.Weighted(tc.weights)]++
			}
			df := -1
			for i, w := range tc.weights {
				if w > 0 {
					df++
				} else if counts[i] != 0 {
					t.Fatalf("weight 0 picked %d times", counts[i])
				}
			}
			if x2 := chiSquare(counts, tc.weights); x2 > critical[df] {
				t.Errorf("counts %v: χ² = %.2f > %.2f", counts, x2, critical[df])
			}
		})
	}
	if got := New(Config{}, 1, nil).Weighted([]uint32{0, 0}); got != -1 {
		t.Errorf("all-zero weights: got %d, want -1", got)
	}
}

func TestTableRetain(t *testing.T) {
	b := New(Config{}, 1, nil)
	tb := NewTable[string](b)
	a := tb.Get("a")
	a.Failure(ConnectFailure)
	tb.Get("b")
	if tb.Get("a") != a {
		t.Fatal("Get must return the same endpoint for a key")
	}
	if n := tb.Retain(func(k string) bool { return k == "b" }); n != 1 {
		t.Fatalf("removed %d, want 1", n)
	}
	if tb.Len() != 1 || tb.Get("a") == a {
		t.Fatal("a removed key must come back with fresh state")
	}
}

func BenchmarkPick(b *testing.B) {
	bal := New(Config{}, 1, nil)
	eps := make([]*Endpoint, 8)
	for i := range eps {
		eps[i] = bal.NewEndpoint()
	}
	get := func(i int) *Endpoint { return eps[i] }
	b.ReportAllocs()
	for b.Loop() {
		bal.Pick(len(eps), get, nil)
	}
}
