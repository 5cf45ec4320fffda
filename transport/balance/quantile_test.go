package balance

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestLatencyQuantilesP95(t *testing.T) {
	tests := []struct {
		name   string
		sample func(r *rand.Rand) time.Duration
		want   time.Duration // the true p95
	}{
		{"uniform 1-2ms", func(r *rand.Rand) time.Duration {
			return time.Millisecond + time.Duration(r.Int64N(int64(time.Millisecond)))
		}, 1950 * time.Microsecond},
		{"5% at 200ms", func(r *rand.Rand) time.Duration {
			if r.IntN(100) < 4 {
				return 200 * time.Millisecond
			}
			return 3 * time.Millisecond
		}, 3 * time.Millisecond},
		{"10% at 200ms", func(r *rand.Rand) time.Duration {
			if r.IntN(100) < 10 {
				return 200 * time.Millisecond
			}
			return 3 * time.Millisecond
		}, 200 * time.Millisecond},
		{"constant 40us", func(*rand.Rand) time.Duration { return 40 * time.Microsecond }, 40 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q LatencyQuantiles
			r := rand.New(rand.NewPCG(1, 2))
			now := time.Second
			for range 5000 {
				q.Observe(now, tt.sample(r))
			}
			got, ok := q.Quantile(now, 0.95)
			if !ok {
				t.Fatal("no estimate after 5000 samples")
			}
			// Bucket tops: never below the truth, at most 25 % above.
			if got < tt.want || float64(got) > 1.25*float64(tt.want) {
				t.Fatalf("p95 = %v, want %v to %v", got, tt.want, time.Duration(1.25*float64(tt.want)))
			}
		})
	}
}

func TestLatencyQuantilesNeedSamples(t *testing.T) {
	var q LatencyQuantiles
	for i := range MinQuantileSamples - 1 {
		q.Observe(time.Second, time.Millisecond)
		if _, ok := q.Quantile(time.Second, 0.95); ok {
			t.Fatalf("an estimate after %d samples", i+1)
		}
	}
	q.Observe(time.Second, time.Millisecond)
	if _, ok := q.Quantile(time.Second, 0.95); !ok {
		t.Fatalf("no estimate after %d samples", MinQuantileSamples)
	}
}

// TestLatencyQuantilesDecay checks that an instance that became slow is
// known as slow within a few half-lives, and that an idle estimate
// expires.
func TestLatencyQuantilesDecay(t *testing.T) {
	var q LatencyQuantiles
	now := time.Second
	for range 1000 {
		q.Observe(now, time.Millisecond)
	}
	now += 3 * HalfLife // old counts weigh 1/8: 125
	for range 1000 {
		q.Observe(now, 100*time.Millisecond)
	}
	if got, _ := q.Quantile(now, 0.5); got < 100*time.Millisecond {
		t.Fatalf("median after the slowdown = %v, want the new 100ms", got)
	}
	now += 40 * HalfLife
	if got, ok := q.Quantile(now, 0.95); ok {
		t.Fatalf("an idle estimate still answers %v", got)
	}
}

func TestEndpointP95(t *testing.T) {
	var clk time.Duration
	b := New(Config{}, 1, func() time.Duration { return clk })
	e := b.NewEndpoint()
	for range 100 {
		e.ObserveLatency(2 * time.Millisecond)
	}
	if p, ok := e.P95(); !ok || p < 2*time.Millisecond || p > 2500*time.Microsecond {
		t.Fatalf("P95 = %v %v, want about 2ms", p, ok)
	}
}

func BenchmarkLatencyObserve(b *testing.B) {
	var q LatencyQuantiles
	for i := 0; b.Loop(); i++ {
		q.Observe(time.Second, time.Duration(i%5000)*time.Microsecond)
	}
}
