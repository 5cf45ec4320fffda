package l7

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/retrybudget"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// This file decides when a request is tried again, and hedges: the
// destination's Resilience retries (attempts, retry_on, per_try_timeout,
// budget) and its Route rule's retry_non_idempotent and hedge.
//
// A try that fails before any answer (the stream refused, reset, a
// per-try timeout) or whose answer matches retry_on is tried again on
// another instance, after a jittered backoff, while the request's
// deadline allows, its body was kept (MaxReplayBody), its method may run
// twice, and the destination's retry budget has room. The failed answer
// is discarded and its stream released; the last answer is relayed as it
// came. Connect failures are retried below, by the Router's connect, from
// the same budget.

// condition is a set of retry_on conditions, one bit each.
type condition uint16

const (
	condConnectFailure condition = 1 << iota
	condRefusedStream
	condReset
	cond5xx
	condGatewayError
	condRetriable4xx
	condGRPCUnavailable
	condGRPCResourceExhausted
	condGRPCCancelled
	condGRPCDeadlineExceeded
)

// neverSent are the failures that prove the request reached no app:
// any method may be retried after them.
const neverSent = condConnectFailure | condRefusedStream

var conditionBits = map[policy.RetryCondition]condition{
	policy.RetryConnectFailure:    condConnectFailure,
	policy.RetryRefusedStream:     condRefusedStream,
	policy.RetryReset:             condReset,
	policy.Retry5xx:               cond5xx,
	policy.RetryGatewayError:      condGatewayError,
	policy.RetryRetriable4xx:      condRetriable4xx,
	policy.RetryGRPCUnavailable:   condGRPCUnavailable,
	policy.RetryGRPCResExhausted:  condGRPCResourceExhausted,
	policy.RetryGRPCCancelled:     condGRPCCancelled,
	policy.RetryGRPCDeadlineExcdd: condGRPCDeadlineExceeded,
}

// Backoff between tries: full jitter over an exponential bound (25 ms,
// 50 ms, ...) capped at 250 ms, as the AWS architecture blog's "full
// jitter": tries of many callers spread out instead of landing together.
const (
	retryBackoffBase = 25 * time.Millisecond
	retryBackoffMax  = 250 * time.Millisecond
)

// retryPlan is what one request may do: read once from the policy.
type retryPlan struct {
	tries  int           // at most, the first included
	allow  condition     // of retry_on, what the request's method allows
	perTry time.Duration // 0: none
	budget *retrybudget.Budget
	hedge  bool // the route hedges this (idempotent) request
	// onNames keeps retry_on's order, which names a retry's reason.
	onNames []policy.RetryCondition
}

// plan reads the request's retry settings from its destination's
// Resilience and Route rule.
func (c *call) plan(preq policy.Request) retryPlan {
	rt := c.res.Retries
	if rt == nil {
		rt = policy.DefaultResilience.Retries
	}
	lim := policy.DefaultResilience.Retries.Budget
	if rt.Budget != nil {
		lim = rt.Budget
	}
	pl := retryPlan{
		tries:   1 + rt.Attempts,
		perTry:  time.Duration(rt.PerTryTimeout),
		onNames: rt.RetryOn,
		budget:  c.p.budgets.For(c.rt.Destination(), retrybudget.Limits{Percent: lim.Percent, MinPerSecond: lim.MinPerSecond}),
	}
	for _, name := range rt.RetryOn {
		pl.allow |= conditionBits[name]
	}
	if pl.tries > 1 {
		idempotent := policy.IdempotentMethod(c.r.Method)
		opts := c.p.deps.RouteOptions(c.rt.Destination(), preq)
		pl.hedge = opts.Hedge && idempotent && c.replay
		if !idempotent && !opts.RetryNonIdempotent {
			pl.allow &= neverSent
		}
	}
	return pl
}

// reason names the retry_on condition that lets a failure be retried,
// the label of meshwork_l7_retries_total.
func (pl *retryPlan) reason(failed condition) string {
	for _, name := range pl.onNames {
		if conditionBits[name]&failed != 0 {
			return string(name)
		}
	}
	return "other"
}

// answerConditions are the retry_on conditions an answer meets: its
// status, its trailers-only grpc-status, and connect-failure for the
// receiving agent's own 502 when it could not reach its app.
func answerConditions(status int, h http.Header, meshReason string) condition {
	var c condition
	switch {
	case status == http.StatusConflict:
		c |= condRetriable4xx
	case status >= 500 && status <= 599:
		c |= cond5xx
		if status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout {
			c |= condGatewayError
		}
		if status == http.StatusBadGateway && meshReason == ReasonConnectFailed {
			c |= condConnectFailure
		}
	}
	if v := h["Grpc-Status"]; len(v) > 0 {
		switch code, _ := strconv.Atoi(v[0]); code {
		case 1:
			c |= condGRPCCancelled
		case 4:
			c |= condGRPCDeadlineExceeded
		case 8:
			c |= condGRPCResourceExhausted
		case 14:
			c |= condGRPCUnavailable
		}
	}
	return c
}

// send works out the request's budget, readies it, and sends it through
// the mesh, trying again as its retryPlan allows. On success the answer's
// body streams from the instance; end must be called once it is read.
func (c *call) send() (*http.Response, *meshError) {
	ctx, cancel, me := c.budget()
	c.cancel = cancel
	if me != nil {
		return nil, me
	}
	c.ctx = ctx
	if me := c.admit(); me != nil {
		return nil, me
	}
	if me := c.prepare(); me != nil {
		return nil, me
	}
	if c.res.Timeouts != nil {
		c.idle = time.Duration(c.res.Timeouts.Idle)
	}
	r := c.r
	preq := policy.Request{Method: r.Method, Path: r.URL.Path, Header: headerOf(r.Header)}
	pl := c.plan(preq)
	c.hedging = pl.hedge
	pl.budget.Deposit()
	var avoid []string
	for retry := 0; ; retry++ {
		tr := c.attempt(ctx, &pl, preq, avoid)
		failed := tr.failure()
		if failed&pl.allow == 0 || c.obs.Attempts >= pl.tries || !c.replay || ctx.Err() != nil {
			return c.accept(tr)
		}
		wait := backoff(retry)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			return c.accept(tr) // no time left for another try
		}
		reason := pl.reason(failed & pl.allow)
		if !pl.budget.Withdraw() {
			c.p.m.budgetExhausted.Inc()
			c.p.log.Debug("retry not made: the retry budget is spent", "service", c.rt.Destination(), "reason", reason)
			return c.accept(tr)
		}
		c.p.m.retries.WithLabelValues(reason).Inc()
		if tr.att != nil {
			c.p.log.Debug("request tried again", "service", c.rt.Destination(), "reason", reason, "instance", tr.att.Instance, "attempt", c.obs.Attempts)
			avoid = append(avoid, tr.att.Instance)
		}
		tr.discard(c.p)
		if !sleepCtx(ctx, wait) {
			return nil, timeoutError(c.caller, "the deadline passed while waiting to try again")
		}
	}
}

// backoff is the wait before retry n (0 for the first): full jitter.
func backoff(n int) time.Duration {
	ceil := min(retryBackoffBase<<min(n, 8), retryBackoffMax)
	return rand.N(ceil + 1)
}

// sleepCtx waits d, or less if ctx ends first; it reports whether the
// whole wait passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// tryContext is the context of one try: ctx bounded by per_try_timeout,
// and cancellable when cancellable is set (a hedged try).
func tryContext(ctx context.Context, perTry time.Duration, cancellable bool) (context.Context, context.CancelFunc) {
	switch {
	case perTry > 0:
		return context.WithTimeout(ctx, perTry)
	case cancellable:
		return context.WithCancel(ctx)
	}
	return ctx, nil
}

// attempt makes one try, or a hedged pair of them, and returns the
// answer (or failure) that won.
func (c *call) attempt(ctx context.Context, pl *retryPlan, preq policy.Request, avoid []string) *tryResult {
	if pl.hedge && c.obs.Attempts+1 < pl.tries {
		return c.hedged(ctx, pl, preq, avoid)
	}
	tctx, tcancel := tryContext(ctx, pl.perTry, false)
	c.obs.Attempts++
	// One try at a time: each reuses the call's result, the last one
	// being discarded before the next starts.
	c.single = tryResult{}
	tr := c.try(tctx, preq, avoid, nil, &c.single)
	tr.cancel = tcancel
	tr.perTryExpired = pl.perTry > 0 && tr.me != nil && expired(tctx) && !expired(ctx)
	return tr
}

// hedged sends the request to one instance and, when that instance has
// not answered within its p95 latency, to another one too (budget
// allowing). The first answer wins; the other try is cancelled, its
// stream closed, and released in the background. A failure, or an answer
// to be retried, does not win while the other try may still answer.
func (c *call) hedged(ctx context.Context, pl *retryPlan, preq policy.Request, avoid []string) *tryResult {
	results := make(chan *tryResult, 2)
	opened := make(chan *Attempt, 1)
	var cancels [2]context.CancelFunc
	perTry := pl.perTry // not pl: the tries outlive this call
	launch := func(i int, avoid []string, onOpen func(*Attempt)) {
		tctx, tcancel := tryContext(ctx, perTry, true)
		// The loser is cancelled with errHedgeLost, so that its instance
		// is not blamed for an answer nobody waited for.
		lctx, lose := context.WithCancelCause(tctx)
		cancels[i] = func() { lose(errHedgeLost) }
		c.obs.Attempts++
		go func() {
			tr := c.try(lctx, preq, avoid, onOpen, new(tryResult))
			tr.cancel = func() { lose(nil); tcancel() }
			tr.hedge = i == 1
			tr.perTryExpired = perTry > 0 && tr.me != nil && expired(tctx) && !expired(ctx)
			results <- tr
		}()
	}
	launch(0, avoid, func(att *Attempt) { opened <- att })
	inFlight := 1
	var timer <-chan time.Time
	for {
		select {
		case att := <-opened:
			if att.Latency == nil {
				continue
			}
			p95, ok := att.Latency.P95()
			if !ok {
				continue // too few samples to know the tail
			}
			if dl, has := ctx.Deadline(); has && time.Until(dl) <= p95 {
				continue
			}
			t := time.NewTimer(p95)
			defer t.Stop()
			timer = t.C
			// The hedge avoids the first try's instance.
			avoid = append(avoid[:len(avoid):len(avoid)], att.Instance)
		case <-timer:
			timer = nil
			if !pl.budget.Withdraw() {
				c.p.m.budgetExhausted.Inc()
				continue
			}
			launch(1, avoid, nil)
			inFlight++
		case tr := <-results:
			inFlight--
			if inFlight > 0 && (tr.me != nil || tr.failure()&pl.allow != 0) {
				tr.discard(c.p)
				continue
			}
			if cancels[1] != nil {
				result := "lost"
				if tr.hedge {
					result = "won"
				}
				c.p.m.hedges.WithLabelValues(result).Inc()
			}
			if inFlight > 0 {
				other := 1
				if tr.hedge {
					other = 0
				}
				cancels[other]()
				go func() { (<-results).discard(c.p) }()
			}
			return tr
		}
	}
}

// errHedgeLost cancels the try of a hedged request that did not answer
// first.
var errHedgeLost = errors.New("l7: the other try of the hedged request answered first")

// hedgeLost reports whether ctx, a try's, was cancelled because the other
// try of its hedged request answered first.
func hedgeLost(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errHedgeLost) }

// failure is the set of retry_on conditions the try's outcome meets; 0
// for an answer nobody retries.
func (tr *tryResult) failure() condition {
	switch {
	case tr.me == nil:
		return answerConditions(tr.resp.StatusCode, tr.resp.Header, tr.meshReason)
	case tr.perTryExpired:
		// Envoy's reading: a try that timed out answered 504.
		return cond5xx | condGatewayError
	}
	return tr.failed
}

// discard ends a try whose answer is not relayed: its body is drained
// when short, else its stream is cut; the stream is released either way.
func (tr *tryResult) discard(p *Proxy) {
	if tr.me == nil {
		if tr.verbatim {
			// Verbatim: only the status was read; read the rest of the
			// head so that the body can be drained.
			if resp, err := http.ReadResponse(tr.br, tr.resp.Request); err == nil {
				tr.resp = resp
			}
		}
		tr.stream.SetReadDeadline(time.Now().Add(drainWait))
		n, err := io.Copy(io.Discard, io.LimitReader(tr.resp.Body, drainLimit+1))
		if err != nil || n > drainLimit {
			tr.stream.Abort(tunnel.AbortFailed)
		}
		// A retried answer is the instance's failure; a hedge's late
		// answer is not.
		tr.finish(tr.failure() != 0)
	}
	if tr.cancel != nil {
		tr.cancel()
	}
}

// A discarded answer's body is read to its end when that takes at most
// drainLimit bytes and drainWait; a longer one is cut.
const (
	drainLimit = 64 << 10
	drainWait  = 100 * time.Millisecond
)

// accept makes tr the request's outcome: its answer is relayed, or its
// failure answered by the mesh.
func (c *call) accept(tr *tryResult) (*http.Response, *meshError) {
	if tr.me != nil {
		if tr.cancel != nil {
			tr.cancel()
		}
		return nil, tr.me
	}
	c.br, c.stream, c.failed = tr.br, tr.stream, tr.resp.StatusCode >= 500
	c.obs.Status, c.obs.Route, c.obs.Instance = tr.resp.StatusCode, tr.att.Route, tr.att.Instance
	if tr.meshReason != "" {
		c.obs.MeshError = tr.meshReason
	}
	c.won = tr
	c.tryCancel = tr.cancel
	return tr.resp, nil
}
