package balance

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// outlierFixture is a group of n endpoints on a virtual clock, with the
// events they emit.
type outlierFixture struct {
	clk *vclock
	b   *Balancer
	g   *Group
	eps []*Endpoint

	mu     sync.Mutex
	events []Event
}

func newOutlierFixture(t *testing.T, n int, pol OutlierPolicy) *outlierFixture {
	t.Helper()
	f := &outlierFixture{clk: &vclock{}}
	f.b = New(Config{}, 7, f.clk.now)
	f.b.OnEvent(func(e Event) {
		f.mu.Lock()
		f.events = append(f.events, e)
		f.mu.Unlock()
	})
	f.g = f.b.NewGroup("web")
	f.g.SetPolicy(pol)
	for i := range n {
		f.eps = append(f.eps, f.b.NewEndpointIn(f.g, fmt.Sprintf("node%d/web", i)))
	}
	return f
}

func (f *outlierFixture) fail(i, times int) {
	for range times {
		f.eps[i].Failure(ErrorAnswer)
	}
}

func (f *outlierFixture) get(i int) *Endpoint { return f.eps[i] }

func (f *outlierFixture) ejectedCount() int {
	n := 0
	for _, e := range f.eps {
		if e.Ejected() {
			n++
		}
	}
	return n
}

func (f *outlierFixture) last(t *testing.T) Event {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.events) == 0 {
		t.Fatal("no event")
	}
	return f.events[len(f.events)-1]
}

var testPolicy = OutlierPolicy{ConsecutiveErrors: 3, Interval: 10 * time.Second, BaseEjectionTime: time.Second, MaxEjectedPercent: 50}

func TestEjectionAfterConsecutiveErrors(t *testing.T) {
	f := newOutlierFixture(t, 2, testPolicy)
	f.fail(0, 2)
	if f.eps[0].Ejected() {
		t.Fatal("ejected after 2 of 3 errors")
	}
	f.eps[0].Success(time.Millisecond)
	f.fail(0, 2)
	if f.eps[0].Ejected() {
		t.Fatal("a success must reset the streak")
	}
	f.fail(0, 1)
	if !f.eps[0].Ejected() {
		t.Fatal("3 errors in a row must eject")
	}
	ev := f.last(t)
	if ev.Kind != Ejected || ev.Service != "web" || ev.Instance != "node0/web" || ev.Reason != "error_answer" ||
		ev.Duration != time.Second || ev.Ejections != 1 {
		t.Fatalf("event %+v", ev)
	}
	for range 100 {
		if got := f.b.Pick(2, f.get, nil); got != 1 {
			t.Fatal("picked the ejected instance")
		}
	}
	if got := f.b.Pick(2, f.get, func(i int) bool { return i == 1 }); got != 0 {
		t.Fatalf("with every other instance skipped, the ejected one must still be used; got %d", got)
	}
	f.clk.advance(time.Second)
	if f.eps[0].Ejected() {
		t.Fatal("the ejection must end after base_ejection_time")
	}
	if ev := f.last(t); ev.Kind != Returned || ev.Reason != "expired" || ev.Duration != time.Second {
		t.Fatalf("return event %+v", ev)
	}
	if f.g.Ejected() != 0 {
		t.Fatalf("group counts %d ejected after the return", f.g.Ejected())
	}
}

func TestEjectionTimeGrowsAndProbationReejects(t *testing.T) {
	f := newOutlierFixture(t, 2, testPolicy)
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}
	f.fail(0, 3)
	for i, d := range want {
		st := f.eps[0].State()
		if !st.Ejected || st.Remaining != d || st.Ejections != i+1 {
			t.Fatalf("ejection %d: state %+v, want %s out", i+1, st, d)
		}
		f.clk.advance(d - time.Millisecond)
		if !f.eps[0].Ejected() {
			t.Fatalf("ejection %d ended before %s", i+1, d)
		}
		f.clk.advance(time.Millisecond)
		if f.eps[0].Ejected() {
			t.Fatalf("ejection %d outlasted %s", i+1, d)
		}
		if st := f.eps[0].State(); !st.Probation {
			t.Fatalf("returned without probation: %+v", st)
		}
		// On probation one failure is enough.
		f.fail(0, 1)
		if i+1 < len(want) {
			if !f.eps[0].Ejected() {
				t.Fatal("a failure on probation must eject again")
			}
			if ev := f.last(t); !ev.Probation {
				t.Fatalf("ejection on probation not marked: %+v", ev)
			}
		}
	}
}

func TestIntervalWithoutErrorsResetsCount(t *testing.T) {
	f := newOutlierFixture(t, 2, testPolicy)
	f.fail(0, 3)
	f.clk.advance(time.Second)
	f.eps[0].Success(time.Millisecond)
	f.clk.advance(testPolicy.Interval)
	st := f.eps[0].State()
	if st.Probation || st.Ejections != 0 {
		t.Fatalf("after an interval without errors: %+v, want the count reset", st)
	}
	f.fail(0, 2)
	if f.eps[0].Ejected() {
		t.Fatal("after probation, one failure must not eject")
	}
	f.fail(0, 1)
	if st := f.eps[0].State(); st.Remaining != time.Second {
		t.Fatalf("ejection after a reset lasts %s, want base %s", st.Remaining, time.Second)
	}
}

func TestEjectionCapNeverExceeded(t *testing.T) {
	for _, tc := range []struct {
		n, percent, want int
	}{
		{n: 3, percent: 50, want: 1},
		{n: 4, percent: 50, want: 2},
		{n: 10, percent: 50, want: 5},
		{n: 10, percent: 100, want: 10},
		{n: 2, percent: 50, want: 1},
		{n: 1, percent: 50, want: 0},
		{n: 5, percent: 0, want: 0},
	} {
		t.Run(fmt.Sprintf("%d_at_%d%%", tc.n, tc.percent), func(t *testing.T) {
			pol := testPolicy
			pol.MaxEjectedPercent = tc.percent
			f := newOutlierFixture(t, tc.n, pol)
			// Every instance fails, round after round, while time moves
			// through ejections, returns and probations.
			for round := range 200 {
				for i := range f.eps {
					f.fail(i, 1)
					if got := f.g.Ejected(); got*100 > tc.percent*tc.n {
						t.Fatalf("round %d: %d of %d ejected, over %d%%", round, got, tc.n, tc.percent)
					}
				}
				if round == 10 {
					if got := f.ejectedCount(); got != tc.want {
						t.Fatalf("%d of %d ejected, want the cap %d", got, tc.n, tc.want)
					}
				}
				f.clk.advance(300 * time.Millisecond)
			}
		})
	}
}

func TestCapFreedSlotGoesToNextFailure(t *testing.T) {
	f := newOutlierFixture(t, 2, testPolicy)
	f.fail(0, 3)
	f.fail(1, 3)
	if !f.eps[0].Ejected() || f.eps[1].Ejected() {
		t.Fatal("want only the first of two ejected at 50%")
	}
	f.clk.advance(time.Second)
	f.eps[0].Success(time.Millisecond) // returns and holds up
	f.fail(1, 1)
	if !f.eps[1].Ejected() {
		t.Fatal("an instance held back by the cap must be ejected at its next failure once there is room")
	}
}

func TestPolicyChangeApplies(t *testing.T) {
	f := newOutlierFixture(t, 4, testPolicy)
	pol := testPolicy
	pol.ConsecutiveErrors = 1
	f.g.SetPolicy(pol)
	f.fail(0, 1)
	if !f.eps[0].Ejected() {
		t.Fatal("a lowered consecutive_errors must apply to the next failure")
	}
}

func TestRemovedWhileEjected(t *testing.T) {
	f := newOutlierFixture(t, 0, testPolicy)
	tb := NewTable[string](f.b)
	a := tb.GetIn("a", f.g, "a")
	tb.GetIn("b", f.g, "b")
	if f.g.Size() != 2 {
		t.Fatalf("group size %d, want 2", f.g.Size())
	}
	for range 3 {
		a.Failure(ConnectFailure)
	}
	if f.g.Ejected() != 1 {
		t.Fatal("not ejected")
	}
	if ev := f.last(t); ev.Reason != "connect_failure" {
		t.Fatalf("reason %q", ev.Reason)
	}
	tb.Retain(func(k string) bool { return k != "a" })
	if f.g.Ejected() != 0 || f.g.Size() != 1 {
		t.Fatalf("after removal: %d ejected of %d", f.g.Ejected(), f.g.Size())
	}
	if ev := f.last(t); ev.Kind != Returned || ev.Reason != "removed" {
		t.Fatalf("event %+v", ev)
	}
}

func TestEjectionTimeCapped(t *testing.T) {
	p := OutlierPolicy{BaseEjectionTime: time.Minute}.completed()
	if got := p.ejectionTime(100); got != MaxEjectionTime {
		t.Fatalf("100th ejection lasts %s, want %s", got, MaxEjectionTime)
	}
	p = OutlierPolicy{BaseEjectionTime: time.Hour}.completed()
	if got := p.ejectionTime(3); got != time.Hour {
		t.Fatalf("a base above the cap: %s, want the base", got)
	}
}

func TestConcurrentFailuresRespectCap(t *testing.T) {
	f := newOutlierFixture(t, 8, OutlierPolicy{ConsecutiveErrors: 1, BaseEjectionTime: time.Hour, MaxEjectedPercent: 25})
	var wg sync.WaitGroup
	for i := range f.eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				f.eps[i].Failure(ErrorAnswer)
			}
		}()
	}
	wg.Wait()
	if got := f.g.Ejected(); got != 2 {
		t.Fatalf("%d of 8 ejected at 25%%, want 2", got)
	}
}

// BenchmarkCallFeedback is what each call costs the balancer with nothing
// failing: start, success, end, as transport reports a request.
func BenchmarkCallFeedback(b *testing.B) {
	bal := New(Config{}, 1, nil)
	e := bal.NewEndpointIn(bal.NewGroup("web"), "n/web")
	b.ReportAllocs()
	for b.Loop() {
		e.Start()
		e.Success(time.Millisecond)
		e.End()
	}
}

// An instance back from ejection competes with a new instance's estimate,
// not with the failure penalties that ejected it: it gets picked again
// while its healthy peer has a real latency.
func TestReturnedInstanceIsPickedAgain(t *testing.T) {
	f := newOutlierFixture(t, 2, testPolicy)
	f.eps[1].Success(5 * time.Millisecond) // the healthy peer: 5 ms
	f.fail(0, 3)
	if !f.eps[0].Ejected() {
		t.Fatal("3 errors in a row must eject")
	}
	f.clk.advance(time.Second) // the ejection ends; 1 s is far less than Decay
	picked := 0
	for range 100 {
		if f.b.Pick(2, f.get, nil) == 0 {
			picked++
		}
	}
	if picked == 0 {
		t.Fatal("the instance back from ejection is never picked: its failure penalties outlived the ejection")
	}
}
