package transport

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/balance"
	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/l7"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/spans"
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
	if id, err := spiffeid.Parse(t.cfg.TrustDomain, call.source); err == nil && id.Kind == spiffeid.KindService {
		call.sourceService = id.Name
	}
	// The destination's max_connections bounds the applications'
	// connections, L4 and L7 alike: over it the application sees a reset,
	// at once.
	br, err := t.acquire(l.service, t.resilience(l.service), breaker.Connections)
	if err != nil {
		t.m.outbound.WithLabelValues("circuit_open").Inc()
		t.log.Debug("outbound connection refused", "service", l.service, "source", call.source, "err", err)
		c.SetLinger(0)
		c.Close()
		return
	}
	defer br.Release(breaker.Connections)
	t.handlerFor(l.service).ServeConn(t.ctx, c, call)
}

// outboundCall is the tunnel.Connector of one application connection: it
// routes, balances and retries within ConnectTimeout, and counts and logs
// the result. It is also the l7.Router of the connection's requests, and
// keeps the record of the connection (l4.Recorded) when it is carried
// whole.
type outboundCall struct {
	t             *Transport
	l             *outListener
	start         time.Time // when the connection was accepted
	source        string    // the identity claimed for the caller
	sourceService string    // the caller's service; "" for a node identity

	rec      observe.Call // the record of the connection, when carried whole
	hasRec   bool         // rec is started
	observed bool         // an observer gets rec: Connect fills in all of it
}

// Record implements l4.Recorded: the connection's record, with its client
// span, which the stream's header names as the parent of the receiving
// side's.
func (o *outboundCall) Record() *observe.Call {
	o.observed = true
	return o.record()
}

// record starts the connection's record. Its client span is made whether
// or not anyone observes it: the trace context travels anyway. A
// connection carries no traceparent: its span starts a trace.
func (o *outboundCall) record() *observe.Call {
	if !o.hasRec {
		o.hasRec = true
		o.rec = observe.Call{Direction: observe.Outbound, Protocol: observe.TCP, Start: o.start, GRPCStatus: -1}
		o.Describe(&o.rec)
		o.rec.Trace, _ = spans.Client(wire.TraceContext{}, o.t.cfg.TraceSampleRate)
	}
	return &o.rec
}

// Describe implements l7.Router.
func (o *outboundCall) Describe(c *observe.Call) {
	c.Source, c.SourceIdentity = o.sourceService, o.source
	c.Destination, c.DestinationIdentity = o.l.service, o.l.destID
}

// Connect implements tunnel.Connector.
func (o *outboundCall) Connect(ctx context.Context) (*tunnel.Stream, func(), error) {
	t, l := o.t, o.l
	rec := o.record()
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ConnectTimeout)
	rq := connectReq{service: l.service, port: l.port, source: o.source, targets: t.splitOf(l.service), trace: traceOf(rec.Trace),
		session: l4.SessionFrom(ctx)}
	op, err := t.connect(ctx, rq, &rec.Attempts)
	cancel()
	if err != nil {
		result := "failed"
		switch {
		case errors.Is(err, ErrNoInstance):
			result = "no_instance"
		case errors.Is(err, ErrRefused):
			result = "refused"
		case errors.Is(err, breaker.ErrCircuitOpen):
			result = "circuit_open"
		}
		rec.MeshError = refusalReason(err)
		t.m.outbound.WithLabelValues(result).Inc()
		t.log.Info("outbound connection failed", "service", l.service, "port", l.port, "source", o.source, "err", err)
		return nil, nil, err
	}
	if o.observed {
		rec.Instance = op.key.node + "/" + op.key.id
	}
	op.ep.Success(t.lb.bal.Now() - op.start)
	t.m.connectSeconds.Observe(time.Since(o.start).Seconds())
	t.m.outOK.Inc()
	st, ep := op.st, op.ep
	return st, func() { st.Release(); ep.End() }, nil
}

// traceOf is the wire trace context that names a client span as the
// parent.
func traceOf(ids observe.TraceIDs) wire.TraceContext {
	tc := wire.TraceContext{TraceID: ids.TraceID, ParentID: ids.SpanID}
	if ids.Sampled {
		tc.Flags = 1
	}
	return tc
}

// refusalReason is the reason a connection's record gives for a connect
// that failed: the x-meshwork-error reasons of L7 where one fits, else
// the receiving agent's refusal code.
func refusalReason(err error) string {
	var re *RefusedError
	switch {
	case errors.Is(err, ErrNoInstance):
		return l7.ReasonNoInstance
	case errors.Is(err, breaker.ErrCircuitOpen):
		return l7.ReasonCircuitOpen
	case errors.As(err, &re) && re.Code == wire.CodeUnauthorized:
		return l7.ReasonDenied
	case errors.As(err, &re):
		return re.Code.String()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return l7.ReasonTimeout
	}
	return l7.ReasonConnectFailed
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
	var route string
	var targets []SplitTarget
	if t.deps.Routes != nil {
		route, targets = t.deps.Routes.RouteFor(l.service, req)
	} else {
		targets = t.splitOf(l.service)
	}
	rq := connectReq{service: l.service, port: l.port, source: o.source, targets: targets, perRequest: true, trace: trace}
	for _, a := range avoid {
		if k, ok := parseInstance(a); ok {
			rq.avoid = append(rq.avoid, k)
		}
	}
	op, err := t.connect(ctx, rq, nil)
	if err != nil {
		t.log.Debug("request not sent", "service", l.service, "source", o.source, "err", err)
		return nil, err
	}
	st, ep := op.st, op.ep
	return &l7.Attempt{
		Stream:   st,
		Instance: op.key.node + "/" + op.key.id,
		Route:    route,
		Latency:  ep,
		Done: func(latency time.Duration, failed bool) {
			if failed {
				ep.Failure(balance.ErrorAnswer)
			} else {
				ep.Success(latency)
				ep.ObserveLatency(latency)
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
