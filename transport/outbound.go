package transport

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/l7"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
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
	op, err := t.connect(ctx, connectReq{service: l.service, port: l.port, source: o.source, targets: t.splitOf(l.service)})
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
	op.ep.Success(t.lb.bal.Now() - op.start)
	t.m.connectSeconds.Observe(time.Since(o.start).Seconds())
	t.m.outOK.Inc()
	st, ep := op.st, op.ep
	return st, func() { st.Release(); ep.End() }, nil
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

// Destination implements l7.Router.
func (o *outboundCall) Destination() string { return o.l.service }

// Open implements l7.Router: one request's stream, routed by the
// destination's Route rules (else its default split) and balanced over
// the instances with latency measured per request.
func (o *outboundCall) Open(ctx context.Context, req policy.Request, trace wire.TraceContext, avoid []string) (*l7.Attempt, error) {
	t, l := o.t, o.l
	var targets []SplitTarget
	if t.deps.Routes != nil {
		targets = t.deps.Routes.RouteFor(l.service, req)
	} else {
		targets = t.splitOf(l.service)
	}
	rq := connectReq{service: l.service, port: l.port, source: o.source, targets: targets, perRequest: true, trace: trace}
	for _, a := range avoid {
		if k, ok := parseInstance(a); ok {
			rq.avoid = append(rq.avoid, k)
		}
	}
	op, err := t.connect(ctx, rq)
	if err != nil {
		t.log.Debug("request not sent", "service", l.service, "source", o.source, "err", err)
		return nil, err
	}
	st, ep := op.st, op.ep
	return &l7.Attempt{
		Stream:   st,
		Instance: op.key.node + "/" + op.key.id,
		Done: func(latency time.Duration, failed bool) {
			if failed {
				ep.Failure()
			} else {
				ep.Success(latency)
			}
			ep.End()
			st.Release()
		},
	}, nil
}

// parseInstance reads an Attempt.Instance back.
func parseInstance(s string) (epKey, bool) {
	node, id, ok := strings.Cut(s, "/")
	return epKey{node, id}, ok
}
