package retrybudget

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// virtualClock is a clock tests move by hand.
type virtualClock struct{ t atomic.Int64 }

func (c *virtualClock) now() time.Duration      { return time.Duration(c.t.Load()) }
func (c *virtualClock) advance(d time.Duration) { c.t.Add(int64(d)) }

// withdrawAll withdraws until refused, at most limit times, and returns
// how many were allowed.
func withdrawAll(b *Budget, limit int) int {
	n := 0
	for n < limit && b.Withdraw() {
		n++
	}
	return n
}

func TestBudgetShareOfRequests(t *testing.T) {
	tests := []struct {
		name     string
		limits   Limits
		requests int
		want     int
	}{
		{"twenty percent", Limits{Percent: 20}, 1000, 200},
		{"floor only", Limits{MinPerSecond: 3}, 0, 30},
		{"share plus floor", Limits{Percent: 10, MinPerSecond: 1}, 500, 60},
		{"nothing allowed", Limits{}, 1000, 0},
		{"all of them", Limits{Percent: 100}, 7, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var clk virtualClock
			b := New(tt.limits, clk.now)
			for range tt.requests {
				b.Deposit()
			}
			if got := withdrawAll(b, 10*tt.requests+1000); got != tt.want {
				t.Fatalf("allowed %d retries, want %d (stats %+v)", got, tt.want, b.Stats())
			}
		})
	}
}

// TestBudgetWindowSlides checks that requests earn retries for ten
// seconds only, and that retries made stop counting after ten seconds.
func TestBudgetWindowSlides(t *testing.T) {
	var clk virtualClock
	b := New(Limits{Percent: 50}, clk.now)
	for range 100 {
		b.Deposit()
	}
	if got := withdrawAll(b, 1000); got != 50 {
		t.Fatalf("allowed %d, want 50", got)
	}
	clk.advance(5 * time.Second)
	for range 20 {
		b.Deposit()
	}
	// 120 requests in the window earn 60; 50 are spent.
	if got := withdrawAll(b, 1000); got != 10 {
		t.Fatalf("after 5s: allowed %d, want 10", got)
	}
	// The first second's 100 requests and 50 retries leave the window;
	// the 20 requests and 10 retries of second 5 stay.
	clk.advance(5 * time.Second)
	if st := b.Stats(); st.Requests != 20 || st.Retries != 10 || st.Allowed != 10 {
		t.Fatalf("after 10s: stats %+v, want 20 requests, 10 retries, 10 allowed", st)
	}
	if b.Withdraw() {
		t.Fatal("a retry over the budget was allowed")
	}
	clk.advance(5 * time.Second)
	if st := b.Stats(); st.Requests != 0 || st.Retries != 0 {
		t.Fatalf("after 15s: stats %+v, want an empty window", st)
	}
}

// TestBudgetConcurrent draws from one budget from many goroutines: the
// retries allowed never exceed the share, whatever the interleaving.
func TestBudgetConcurrent(t *testing.T) {
	var clk virtualClock
	b := New(Limits{Percent: 20}, clk.now)
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				b.Deposit()
				if b.Withdraw() {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 1600 {
		t.Fatalf("allowed %d retries of 8000 requests at 20%%, want 1600", got)
	}
}

func TestSetPerServiceAndMetrics(t *testing.T) {
	var clk virtualClock
	reg := prometheus.NewRegistry()
	s, err := NewSet(clk.now, reg)
	if err != nil {
		t.Fatal(err)
	}
	web := s.For("web", Limits{Percent: 100})
	if s.For("WEB", Limits{Percent: 100}) != web {
		t.Fatal("service names are not compared case-insensitively")
	}
	api := s.For("api", Limits{Percent: 100})
	web.Deposit()
	if !web.Withdraw() || api.Withdraw() {
		t.Fatal("one service's requests earned another's retries")
	}
	// New limits apply to the budget that already counts.
	s.For("web", Limits{Percent: 100, MinPerSecond: 1})
	if got := withdrawAll(web, 100); got != 10 {
		t.Fatalf("after the limits changed: allowed %d more, want 10", got)
	}
	var m dto.Metric
	if err := s.m.exhausted.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 2 {
		t.Fatalf("%s = %v, want 2", MetricExhausted, got)
	}
}

func BenchmarkDeposit(b *testing.B) {
	bud := New(Limits{Percent: 20}, nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bud.Deposit()
		}
	})
}
