package main

import (
	"testing"
	"time"

	"github.com/meshwork/meshwork/bench/internal/histogram"
)

func TestPercentilePoolsRoundsAndInterpolates(t *testing.T) {
	// Two rounds: 100 requests in 0.1–0.2 ms, then 100 in 1.0–1.1 ms.
	fast := []histogram.Bucket{{Start: 0.0001, End: 0.0002, Count: 100}}
	slow := []histogram.Bucket{{Start: 0.0010, End: 0.0011, Count: 100}}
	pooled := poolLatency([]*latency{{hist: fast, p99: 200 * time.Microsecond}, {hist: slow, p99: 1100 * time.Microsecond}})
	if want := 200 * time.Microsecond; pooled.p50 != want {
		t.Errorf("p50 %v, want %v (the top of the fast round)", pooled.p50, want)
	}
	if want := 1098 * time.Microsecond; pooled.p99 < want-time.Microsecond || pooled.p99 > want+time.Microsecond {
		t.Errorf("p99 %v, want %v (inside the slow round's bucket)", pooled.p99, want)
	}
	if pooled.p99Low != 200*time.Microsecond || pooled.p99High != 1100*time.Microsecond {
		t.Errorf("p99 of the rounds %v–%v, want 200µs–1.1ms", pooled.p99Low, pooled.p99High)
	}
	if got := histogram.Percentile(nil, 99); got != 0 {
		t.Errorf("percentile of no requests: %v, want 0", got)
	}
}

func TestPairedAddedIsTheMedianOfRoundDifferences(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	direct := []*latency{{p99: ms(1)}, {p99: ms(5)}, {p99: ms(1)}}
	tunnel := []*latency{{p99: ms(1.2)}, {p99: ms(9)}, {p99: ms(1.3)}}
	got := pairedAdded(tunnel, direct)
	if got == nil || got[2] != ms(0.3) {
		t.Fatalf("paired p99 %v, want the median difference 0.3ms", got)
	}
	if pairedAdded(tunnel, nil) != nil {
		t.Error("paired figures without direct rounds")
	}
}

func TestMedianRawKeepsItsRoundWhole(t *testing.T) {
	rs := []rawResult{{bps: 3e9, cpuPerGB: 3}, {bps: 1e9, cpuPerGB: 9}, {bps: 2e9, cpuPerGB: 5}}
	if got := medianRaw(rs); got.bps != 2e9 || got.cpuPerGB != 5 {
		t.Errorf("median round %+v, want the 2 Gbit/s round with its 5 s per GB", got)
	}
	if rs[0].bps != 3e9 {
		t.Error("medianRaw reordered its input, which pairs rounds by position")
	}
	if got := median([]float64{0.7, 1.2, 0.95}); got != 0.95 {
		t.Errorf("median %v, want 0.95", got)
	}
}
