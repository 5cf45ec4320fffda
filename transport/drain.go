package transport

import (
	"context"
	"fmt"
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
	t.lns.reconcileMu.Lock()
	t.tun.SetDraining()
	t.lns.reconcileMu.Unlock()
	t.closeListeners()

	n := t.tun.Flight().Count()
	if n == 0 {
		t.log.Info("tunnel drained: nothing in flight")
		return nil
	}
	t.log.Info("draining the tunnel", "in_flight", n)
	if err := t.tun.Flight().Wait(ctx); err != nil {
		left := t.tun.Flight().Count()
		t.log.Warn("drain ended with connections in flight", "in_flight", left, "err", err)
		return fmt.Errorf("transport: drain: %d connections or streams still in flight: %w", left, err)
	}
	t.log.Info("tunnel drained")
	return nil
}

// Draining reports whether Drain has begun.
func (t *Transport) Draining() bool { return t.tun.Draining() }
