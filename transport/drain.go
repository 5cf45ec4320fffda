package transport

import (
	"context"
	"fmt"
	"sync"
)

// Drain begins a graceful stop. It closes the VIP and upstream listeners,
// so that local applications' new connections are refused at once; it
// refuses new inbound streams with shutting_down, a status on which the
// calling agent tries another instance; and it waits until the connections
// and streams already carried end, or ctx is done. The QUIC connections stay
// up meanwhile. Close, which must follow, cuts whatever is left.
//
// The agent drains after it has left the gossip cluster, when its peers no
// longer choose it.
func (t *Transport) Drain(ctx context.Context) error {
	if !t.started.Load() || t.closed.Load() {
		return nil
	}
	// Under reconcileMu, so that no reconciliation in progress opens a
	// listener after this closes them.
	t.reconcileMu.Lock()
	t.draining.Store(true)
	t.reconcileMu.Unlock()
	t.closeListeners()

	n := t.flight.count()
	if n == 0 {
		t.log.Info("tunnel drained: nothing in flight")
		return nil
	}
	t.log.Info("draining the tunnel", "in_flight", n)
	if err := t.flight.wait(ctx); err != nil {
		left := t.flight.count()
		t.log.Warn("drain ended with connections in flight", "in_flight", left, "err", err)
		return fmt.Errorf("transport: drain: %d connections or streams still in flight: %w", left, err)
	}
	t.log.Info("tunnel drained")
	return nil
}

// Draining reports whether Drain has begun.
func (t *Transport) Draining() bool { return t.draining.Load() }

// closeListeners closes every VIP and upstream listener. Connections
// already accepted are not touched.
func (t *Transport) closeListeners() {
	t.lnMu.Lock()
	defer t.lnMu.Unlock()
	for bind, l := range t.listeners {
		l.close()
		delete(t.listeners, bind)
		t.m.listeners.WithLabelValues(l.kind).Dec()
	}
}

// inFlight counts the application connections and inbound streams being
// carried, for Drain to wait on.
type inFlight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n falls to 0; nil while n is 0
}

func (f *inFlight) add() {
	f.mu.Lock()
	if f.n == 0 {
		f.zero = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
}

func (f *inFlight) done() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		close(f.zero)
		f.zero = nil
	}
	f.mu.Unlock()
}

func (f *inFlight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// wait returns once nothing is in flight, or with ctx's error.
func (f *inFlight) wait(ctx context.Context) error {
	f.mu.Lock()
	zero := f.zero
	f.mu.Unlock()
	if zero == nil {
		return nil
	}
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
