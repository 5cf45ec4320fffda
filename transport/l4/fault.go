package l4

import (
	"context"
	"time"

	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// ReasonFaultInjected is the record's reason of a connection a Fault
// policy aborted, as the per-request handler names its aborts.
const ReasonFaultInjected = "fault_injected"

// Kinds of injected faults, the kind label of the faults counter.
const (
	faultAbort = "abort"
	faultDelay = "delay"
)

// injectFault applies the Fault of the stream's service to an admitted
// connection, before the service is dialled: a drawn delay holds the
// connection back (within the caller's budget, which ends it as it
// would end a slow dial), and a drawn abort accepts the stream and ends
// it at once, so that the calling application sees its connection closed
// before any byte, and the calling agent does not try another instance.
// A Fault with a header match never applies: a connection has no headers.
// It returns true when it ended the stream.
func (p *Proxy) injectFault(ctx context.Context, in *tunnel.Inbound, o *observe.Call) bool {
	svc := in.Target.Service
	d := p.deps.Fault(svc).Decide(nil, p.deps.FaultDraw)
	if d.Delay > 0 {
		p.m.faults.WithLabelValues(faultDelay, svc).Inc()
		if r := holdFor(ctx, d.Delay, in.Start, in.Header.Timeout); r != nil {
			if o != nil {
				o.MeshError = r.Code.String()
			}
			in.Refuse(*r)
			return true
		}
		if ctx.Err() != nil { // the agent is closing
			if o != nil {
				o.MeshError = wire.CodeShuttingDown.String()
			}
			in.Abort()
			return true
		}
	}
	if !d.Abort {
		return false
	}
	p.m.faults.WithLabelValues(faultAbort, svc).Inc()
	p.log.Debug("connection aborted by a fault policy", "service", svc, "source", in.Header.Source)
	if o != nil {
		o.MeshError = ReasonFaultInjected
	}
	// Accepted, then closed: a refusal could be tried on another
	// instance, and a reset could overtake the accepted status.
	if s, err := in.Accept(); err == nil {
		s.CancelRead(tunnel.AbortFailed)
		s.CloseWrite()
	}
	return true
}

// holdFor waits for delay, or until the caller's budget (from start) or
// ctx ends. It returns the refusal the connection gets when the budget
// ran out first.
func holdFor(ctx context.Context, delay time.Duration, start time.Time, budget time.Duration) *tunnel.Refusal {
	wait, cut := delay, false
	if budget > 0 {
		if left := time.Until(start.Add(budget)); left < wait {
			wait, cut = max(left, 0), true
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil
	}
	if cut {
		return &tunnel.Refusal{Code: wire.CodeDeadlineExceeded,
			Reason: "the caller's deadline passed during a delay injected by a Fault policy"}
	}
	return nil
}
