// Package clock is the one shape of injected clock in Meshwork: components
// that schedule or compare times take a Clock in their Deps, the wall clock
// (Real) in production and a Manual clock in tests that must decide exactly
// when a timer fires or how much time has passed.
package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Clock is a time source: Real in production, a Manual clock in tests that
// need expiry, reaping or a retry to happen at an exact moment.
// Implementations are safe for concurrent use.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine (or, for a Manual clock, in the
	// goroutine that advances the clock) once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started; it reports whether it
	// did. It does not wait for a call already running.
	Stop() bool
}

// Real is the wall clock.
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Manual is a Clock that moves only when Advance is called, so that a test
// decides exactly when timers fire. It ships in the product, as memberlist's
// MockNetwork does, so that any package's tests can use it.
type Manual struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*manualTimer
	seq     uint64
	changed chan struct{} // closed and replaced when the set of timers changes
}

type manualTimer struct {
	c       *Manual
	at      time.Time
	seq     uint64
	f       func()
	stopped bool
}

// NewManual returns a clock standing at start.
func NewManual(start time.Time) *Manual {
	return &Manual{now: start, changed: make(chan struct{})}
}

// Now returns the clock's current time.
func (c *Manual) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arranges for f to run when Advance moves the clock d or more.
func (c *Manual) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &manualTimer{c: c, at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	c.notifyLocked()
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.stopped {
		return false
	}
	t.stopped = true
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			break
		}
	}
	t.c.notifyLocked()
	return true
}

func (c *Manual) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Advance moves the clock by d and runs, in order of their deadlines and in
// the caller's goroutine, every timer that falls due, including timers those
// calls set within the window.
func (c *Manual) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.Slice(c.timers, func(i, j int) bool {
			if !c.timers[i].at.Equal(c.timers[j].at) {
				return c.timers[i].at.Before(c.timers[j].at)
			}
			return c.timers[i].seq < c.timers[j].seq
		})
		if len(c.timers) == 0 || c.timers[0].at.After(end) {
			c.now = end
			c.mu.Unlock()
			return
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		t.stopped = true
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.notifyLocked()
		c.mu.Unlock()
		t.f()
	}
}

// Pending returns the number of timers waiting to fire.
func (c *Manual) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitPending blocks until at least n timers are waiting, or ctx ends. Tests
// use it to know that a goroutine has armed its timer before they Advance.
func (c *Manual) WaitPending(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		have, ch := len(c.timers), c.changed
		c.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// After returns a channel that is closed once d has passed on c, and the
// timer that closes it, so that a loop can wait on the injected clock and a
// context at once:
//
//	done, t := clock.After(c, d)
//	select {
//	case <-done:
//	case <-ctx.Done():
//		t.Stop()
//	}
func After(c Clock, d time.Duration) (<-chan struct{}, Timer) {
	ch := make(chan struct{})
	t := c.AfterFunc(d, func() { close(ch) })
	return ch, t
}
