package clock

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestManualRunsTimersInDeadlineOrder(t *testing.T) {
	start := time.Unix(1000, 0)
	c := NewManual(start)
	var fired []string
	c.AfterFunc(3*time.Second, func() { fired = append(fired, "3s") })
	c.AfterFunc(time.Second, func() {
		fired = append(fired, "1s")
		// Set within the window: runs in the same Advance.
		c.AfterFunc(time.Second, func() { fired = append(fired, "1s+1s") })
	})
	stopped := c.AfterFunc(2*time.Second, func() { fired = append(fired, "stopped") })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop of a pending timer = false, or a second Stop = true")
	}

	c.Advance(2500 * time.Millisecond)
	if got, want := strings.Join(fired, ","), "1s,1s+1s"; got != want {
		t.Fatalf("fired %s after 2.5s, want %s", got, want)
	}
	if !c.Now().Equal(start.Add(2500 * time.Millisecond)) {
		t.Fatalf("Now = %v, want start+2.5s", c.Now())
	}
	if c.Pending() != 1 {
		t.Fatalf("Pending = %d, want 1", c.Pending())
	}
	c.Advance(time.Second)
	if got, want := strings.Join(fired, ","), "1s,1s+1s,3s"; got != want {
		t.Fatalf("fired %s after 3.5s, want %s", got, want)
	}
}

func TestAfterClosesOnceDue(t *testing.T) {
	c := NewManual(time.Unix(0, 0))
	done, _ := After(c, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	c.Advance(59 * time.Second)
	select {
	case <-done:
		t.Fatal("closed before the minute passed")
	default:
	}
	c.Advance(time.Second)
	select {
	case <-done:
	default:
		t.Fatal("not closed once the minute passed")
	}

	// Stopped before it is due: never closed.
	done, timer := After(c, time.Second)
	timer.Stop()
	c.Advance(time.Hour)
	select {
	case <-done:
		t.Fatal("a stopped After closed")
	default:
	}
}

func TestRealAfter(t *testing.T) {
	done, _ := After(Real, time.Millisecond)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Real After did not fire within 10s")
	}
}
