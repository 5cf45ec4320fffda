package transport

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// handleOutbound carries one application connection through the mesh
// with the handler of its destination's protocol.
func (t *Transport) handleOutbound(c *net.TCPConn, l *outListener) {
	defer t.wg.Done()
	flight := t.tun.Flight()
	flight.Add()
	defer flight.Done()
	call := &outboundCall{t: t, l: l, start: time.Now(), source: l.source}
	if call.source == "" {
		call.source = t.sourceOf(c)
	}
	t.handlerFor(l.service).ServeConn(t.ctx, c, call)
}

// outboundCall is the tunnel.Connector of one application connection: it
// routes, balances and retries within ConnectTimeout, and counts and logs
// the result.
type outboundCall struct {
	t      *Transport
	l      *outListener
	start  time.Time // when the connection was accepted
	source string    // the identity claimed for the caller
}

// Connect implements tunnel.Connector.
func (o *outboundCall) Connect(ctx context.Context) (*tunnel.Stream, func(), error) {
	t, l := o.t, o.l
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ConnectTimeout)
	s, done, err := t.connect(ctx, l.service, l.port, o.source)
	cancel()
	if err != nil {
		result := "failed"
		switch {
		case errors.Is(err, ErrNoInstance):
			result = "no_instance"
		case errors.Is(err, ErrRefused):
			result = "refused"
		}
		t.m.outbound.WithLabelValues(result).Inc()
		t.log.Info("outbound connection failed", "service", l.service, "port", l.port, "source", o.source, "err", err)
		return nil, nil, err
	}
	t.m.connectSeconds.Observe(time.Since(o.start).Seconds())
	t.m.outOK.Inc()
	return s, done, nil
}

// sourceOf finds the identity of a VIP caller: the local service running
// as the caller's uid, else this node.
func (t *Transport) sourceOf(c *net.TCPConn) string {
	ls := t.local.Load()
	if len(ls.byUID) == 0 {
		return t.nodeID // nothing to map to: spare the netlink round trip
	}
	uid, err := t.deps.PeerUID(c)
	if err != nil {
		t.log.Debug("caller uid unknown; using the node identity", "remote", c.RemoteAddr().String(), "err", err)
		return t.nodeID
	}
	if svc, ok := ls.byUID[uid]; ok {
		return spiffeid.Service(t.cfg.TrustDomain, svc)
	}
	return t.nodeID
}
