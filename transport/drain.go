package transport

import (
	"context"
	"fmt"
	"net"

	"github.com/meshwork/meshwork/transport/l4"
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
	t.stopTakingNew()
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

// stopTakingNew closes the VIP and upstream listeners and refuses new
// inbound streams. Idempotent.
func (t *Transport) stopTakingNew() {
	// Under reconcileMu, so that no reconciliation in progress opens a
	// listener after this closes them.
	t.lns.reconcileMu.Lock()
	t.tun.SetDraining()
	t.lns.reconcileMu.Unlock()
	t.closeListeners()
}

// Hold begins a drain, as Drain does, and holds the connections it
// carries for this agent's successor (l4.Proxy.Hold): each peer pauses its
// side, and the held connections are returned to hand over with their
// state; the successor resumes them (Resume). Connections that cannot be
// held are left to Drain. Per-request (HTTP) connections are never held:
// their requests in flight end within the drain.
func (t *Transport) Hold(ctx context.Context) []l4.HeldConn {
	if !t.started.Load() || t.closed.Load() {
		return nil
	}
	t.stopTakingNew()
	return t.handlers.l4.Hold(ctx)
}

// Resume carries on a connection a predecessor of this agent held, with
// the state it handed over, on its own goroutine: it returns at once. The
// connection is reset when it cannot be resumed, with a log line.
func (t *Transport) Resume(st l4.HeldState, c *net.TCPConn) {
	flight := t.tun.Flight()
	flight.Add()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer flight.Done()
		if err := t.handlers.l4.Resume(t.ctx, st, c); err != nil {
			t.log.Warn("held connection not resumed; reset", "service", st.Service, "peer_node", st.PeerNode, "err", err)
		}
	}()
}
