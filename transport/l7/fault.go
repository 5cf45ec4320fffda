package l7

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/observe"
)

// Fault injection: the receiving agent applies the destination's Fault
// document to each request it has admitted and authorized, before the
// request reaches the app, so that an injected fault never lets through
// what an intention denies, and a caller sees it as it would see the app
// fail or slow down.

// FaultHeader marks an answer a Fault policy changed: "delay" when the
// request was held back, "abort" when the mesh answered instead of the app
// (that answer also carries ErrorHeader: fault_injected).
const FaultHeader = "X-Meshwork-Fault"

// Values of FaultHeader, and the kind label of the faults counter.
const (
	faultAbort = "abort"
	faultDelay = "delay"
)

// faultPlan is what a Fault does to one request: nothing (the zero value),
// a delay, an abort, or a delay then an abort.
type faultPlan struct {
	delay      time.Duration
	abort      bool
	httpStatus int // of an abort, for HTTP callers
	grpcStatus int // of an abort, for gRPC callers
}

// planFault draws what f does to a request whose headers header gives
// (policy.Fault.Decide), with the abort's statuses.
func planFault(f *policy.Fault, header func(string) (string, bool), draw func() float64) faultPlan {
	d := f.Decide(header, draw)
	fp := faultPlan{delay: d.Delay, abort: d.Abort}
	if d.Abort {
		fp.httpStatus, fp.grpcStatus = f.Abort.Statuses()
	}
	return fp
}

// marks is the value of FaultHeader for the plan's answer.
func (fp faultPlan) marks() []string {
	switch {
	case fp.delay > 0 && fp.abort:
		return []string{faultDelay, faultAbort}
	case fp.abort:
		return []string{faultAbort}
	case fp.delay > 0:
		return []string{faultDelay}
	}
	return nil
}

// wait holds the request for the plan's delay. When ctx ends first (the
// caller's deadline, which a delay does not extend, or the caller gone) it
// returns the answer the request gets instead, as the app's slowness
// would have given it.
func (fp faultPlan) wait(ctx context.Context) *meshError {
	if fp.delay <= 0 {
		return nil
	}
	t := time.NewTimer(fp.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
	}
	if dl, ok := ctx.Deadline(); errors.Is(ctx.Err(), context.DeadlineExceeded) || (ok && !time.Now().Before(dl)) {
		return timeoutError(true, "the caller's deadline passed during a delay injected by a Fault policy")
	}
	return &meshError{http.StatusBadGateway, ReasonUpstreamReset, "the caller left during a delay injected by a Fault policy"}
}

// abortError is the mesh's answer to an aborted request. Its grpc-status
// is the plan's, which abortResponse and recordAbort set.
func (fp faultPlan) abortError() *meshError {
	return &meshError{fp.httpStatus, ReasonFaultInjected, "aborted by a Fault policy"}
}

// abortResponse is the answer to a request the plan aborts: the Fault's
// HTTP status, or for gRPC a trailers-only answer with its grpc-status,
// marked by ErrorHeader and FaultHeader.
func (fp faultPlan) abortResponse(req *http.Request, grpc bool) *http.Response {
	resp := fp.abortError().response(req, grpc)
	if grpc {
		resp.Header["Grpc-Status"] = []string{strconv.Itoa(fp.grpcStatus)}
	}
	resp.Header[FaultHeader] = fp.marks()
	return resp
}

// recordAbort records the answer to an aborted request.
func (fp faultPlan) recordAbort(o *observe.Call, grpc bool) {
	recordMeshError(o, fp.abortError(), grpc)
	if grpc {
		o.GRPCStatus = fp.grpcStatus
	}
}

// planFor draws what the Fault of svc, if any, does to req.
func (p *Proxy) planFor(svc string, req *http.Request) faultPlan {
	f := p.deps.Fault(svc)
	if f == nil {
		return faultPlan{}
	}
	fp := planFault(f, headerOf(req.Header), p.deps.FaultDraw)
	if fp.delay > 0 {
		p.m.faults.WithLabelValues(faultDelay, svc).Inc()
	}
	if fp.abort {
		p.m.faults.WithLabelValues(faultAbort, svc).Inc()
	}
	return fp
}
