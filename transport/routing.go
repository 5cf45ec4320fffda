package transport

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/balance"
	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/retrybudget"
	"github.com/meshwork/meshwork/transport/spans"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// routing is the balancer's state of the instances connections are sent
// to.
type routing struct {
	bal        *balance.Balancer
	eps        *balance.Table[epKey]
	groups     sync.Map // lower-case service -> *balance.Group, its ejection policy and cap
	skipLogged sync.Map // epKey -> *atomic.Int64: unix ns of the last log of a skip
	// budgets caps retries per destination service: connect retries here
	// and the L7 proxy's retries and hedges draw from the same budget.
	budgets *retrybudget.Set
}

// routeOptions gives the L7 proxy the retry options of a request's Route
// rule, when the RouteSource knows them.
func (t *Transport) routeOptions(service string, req policy.Request) policy.RouteOptions {
	if src, ok := t.deps.Routes.(RouteOptionSource); ok {
		return src.RouteOptionsFor(service, req)
	}
	return policy.RouteOptions{}
}

// budgetOf is the retry budget of service, with the limits of res, its
// Resilience as the connect already read it.
func (t *Transport) budgetOf(service string, res *policy.Resilience) *retrybudget.Budget {
	lim := policy.DefaultResilience.Retries.Budget
	if rt := res.Retries; rt != nil && rt.Budget != nil {
		lim = rt.Budget
	}
	return t.lb.budgets.For(service, retrybudget.Limits{Percent: lim.Percent, MinPerSecond: lim.MinPerSecond})
}

// subset is where a connection goes: a service, maybe narrowed by a split.
type subset struct {
	service string
	tags    []string
	meta    map[string]string
}

// firstTag is the tag the catalog indexes by; the others are filtered.
func (s subset) firstTag() string {
	if len(s.tags) == 0 {
		return ""
	}
	return s.tags[0]
}

// matches reports whether an instance belongs to the subset.
func (s subset) matches(svc *catalog.Service) bool {
	for _, tg := range s.tags {
		if !svc.HasTag(tg) {
			return false
		}
	}
	return metaMatches(svc, s.meta)
}

// splitOf returns the default traffic split of service; nil for none.
func (t *Transport) splitOf(service string) []SplitTarget {
	if t.deps.Splits == nil {
		return nil
	}
	return t.deps.Splits.SplitFor(service)
}

// route applies a traffic split (targets; none sends to every instance of
// service), drawing one subset by weight for this connection or request.
func (t *Transport) route(snap *catalog.Snapshot, service string, targets []SplitTarget) subset {
	if len(targets) == 0 {
		return subset{service: service}
	}
	var stack [8]uint32
	weights := stack[:0]
	for _, tg := range targets {
		w := tg.Weight
		// A subset with no healthy instance gets nothing: its share goes to
		// the others rather than failing connections.
		if w > 0 && !hasMatch(snap, subsetOf(service, tg)) {
			w = 0
		}
		weights = append(weights, w)
	}
	i := t.lb.bal.Weighted(weights)
	if i < 0 {
		return subset{service: service}
	}
	return subsetOf(service, targets[i])
}

func subsetOf(service string, tg SplitTarget) subset {
	s := subset{service: tg.Service, tags: tg.Tags, meta: tg.Meta}
	if s.service == "" {
		s.service = service
	}
	return s
}

func hasMatch(snap *catalog.Snapshot, sub subset) bool {
	for _, in := range snap.Passing(sub.service, sub.firstTag()) {
		if sub.matches(in.Service) {
			return true
		}
	}
	return false
}

func metaMatches(svc *catalog.Service, want map[string]string) bool {
	for k, v := range want {
		if svc.Meta[k] != v {
			return false
		}
	}
	return true
}

// connectReq is what connect needs to know of one connection or request.
type connectReq struct {
	service string // the destination service
	port    int    // 0: each instance's main port
	source  string // the identity claimed for the caller
	// targets is the traffic split to apply; nil sends to every instance.
	targets []SplitTarget
	// perRequest opens a pipelined stream marked as carrying one HTTP
	// request (tunnel.OpenPipelined), whose status the caller reads.
	perRequest bool
	// avoid lists instances not to pick, as earlier tries of a request.
	avoid []epKey
	// trace is the trace context for the header; zero starts a new trace.
	trace wire.TraceContext
	// res is service's Resilience, read once by connect.
	res *policy.Resilience
	// budget is the retry budget of service; connect looks it up when nil.
	budget *retrybudget.Budget
	// session, for a connection, names it in the header (wire.ExtSession)
	// and learns the service and port it reached, so that it can be held
	// across a restart (l4/hold.go).
	session *l4.Session
}

// opened is a stream connect opened: the stream, the instance's balancer
// state (Start was called) and the instance.
type opened struct {
	attempts int // instances a stream was tried on, this one included
	st       *tunnel.Stream
	ep       *balance.Endpoint
	key      epKey
	start    time.Duration // when the open began, on the balancer's clock
}

// connect opens a stream to an instance of rq.service: for a connection,
// an accepted stream; for a request, a pipelined one. It tries up to
// ConnectAttempts instances (connectOnce), and tries again while ctx lasts
// when every one failed as a restarting agent does.
//
// An instance gets the stream only if it may serve its service: the
// IdentityPolicy lets its node hold the service's identity, and the
// certificate its agent presented on our connection to it holds that
// identity. Any other instance is skipped (logged and counted) without
// using up an attempt, and the balancer picks among the rest.
//
// The attempts it made are in opened, or with an error in *attempts when
// attempts is not nil.
//
// Each instance tried after the first is a retry that draws from the
// service's retry budget; with the budget spent, connect fails with the
// last failure. A connection's connect counts as a request of the budget
// (a request's counts in the L7 proxy). The waits for restarting agents
// do not draw from it.
func (t *Transport) connect(ctx context.Context, rq connectReq, attempts *int) (*opened, error) {
	// Waiting for a stream is bounded by the destination's max_pending.
	rq.res = t.resilience(rq.service)
	br, err := t.acquire(rq.service, rq.res, breaker.Pending)
	if err != nil {
		return nil, err
	}
	defer br.Release(breaker.Pending)
	if rq.budget == nil {
		rq.budget = t.budgetOf(rq.service, rq.res)
	}
	if !rq.perRequest {
		rq.budget.Deposit()
	}
	wait := restartBackoff
	for {
		op, restarting, err := t.connectOnce(ctx, rq, attempts)
		if err == nil || !restarting {
			return op, err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, err
		}
		t.m.attemptFailures.WithLabelValues("waiting_for_restart").Inc()
		t.log.Debug("every instance is restarting or unreachable; trying again", "service", rq.service, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, err
		}
		wait = min(2*wait, maxRestartBackoff)
	}
}

// When every instance a connection may go to is restarting (its agent
// refuses as shutting down, or cannot be reached), the connection tries
// again, backing off, until its connect timeout: an agent restarted by
// systemctl restart or upgraded in place serves again within a second, and
// the app should see a delay, not a failure (docs/restart.md). The
// backoff stays short because every new connection waits through it: with
// 400 ms, a restart of 270 ms kept callers waiting 0.6 s. A try while the
// peer's dial backs off costs no packet.
const (
	restartBackoff    = 50 * time.Millisecond
	maxRestartBackoff = 100 * time.Millisecond
)

// restartingFailure reports whether err is what an instance whose agent
// restarts answers: a refusal while it shuts down, a connection lost, or
// no connection at all.
func restartingFailure(err error) bool {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Code == wire.CodeShuttingDown
	}
	return errors.Is(err, ErrPeerUnreachable) || errors.Is(err, tunnel.ErrConnLost)
}

// connectOnce tries the instances of rq once, up to ConnectAttempts of
// them. restarting reports that every attempt failed as an instance whose
// agent restarts fails (restartingFailure).
func (t *Transport) connectOnce(ctx context.Context, rq connectReq, attempts *int) (_ *opened, restarting bool, _ error) {
	snap := t.deps.Catalog.Current()
	sub := t.route(snap, rq.service, rq.targets)
	cands := snap.Passing(sub.service, sub.firstTag())
	if len(cands) == 0 {
		return nil, false, fmt.Errorf("%w: %s", ErrNoInstance, sub.service)
	}
	res := rq.res
	if sub.service != rq.service {
		res = nil // a split to another service: that one's policy
	}
	grp := t.group(sub.service, res)
	port := rq.port
	portFor := func(in *catalog.Instance) int {
		switch {
		case port == 0:
			return in.Service.Port
		case in.Service.HasPort(port):
			return port
		case !strings.EqualFold(sub.service, rq.service):
			// A split to another service keeps the connection but not
			// necessarily the port number: use that service's main port.
			return in.Service.Port
		}
		return 0
	}
	var tried []int
	skip := func(i int) bool {
		for _, x := range tried {
			if x == i {
				return true
			}
		}
		in := &cands[i]
		if len(rq.avoid) > 0 && len(cands)-len(tried) > 1 {
			k := keyOf(in)
			for _, a := range rq.avoid {
				if a == k {
					return true
				}
			}
		}
		return in.Member.TunnelPort <= 0 || !in.Member.IP.IsValid() || portFor(in) == 0 || !sub.matches(in.Service)
	}
	hdr := wire.Header{Source: rq.source, Trace: rq.trace}
	if hdr.Trace.IsZero() {
		_, hdr.Trace = spans.Client(wire.TraceContext{}, t.cfg.TraceSampleRate)
	}
	open := t.tun.OpenStream
	if rq.perRequest {
		hdr.Extensions = httpExtension
		open = t.tun.OpenPipelined
	} else if rq.session != nil {
		hdr.Extensions = []wire.Extension{{Type: wire.ExtSession, Value: rq.session.ID[:]}}
	}
	var lastErr, lastSkip error
	retriedGone := false
	restarting = true
	for attempt := 0; attempt < t.cfg.ConnectAttempts; {
		if err := ctx.Err(); err != nil {
			if lastErr == nil {
				lastErr = err
			}
			break
		}
		if lastErr != nil && !rq.budget.Withdraw() {
			// A retry over the service's budget: the failure stands.
			t.m.attemptFailures.WithLabelValues("retry_budget_exhausted").Inc()
			break
		}
		i := t.lb.bal.Pick(len(cands), func(i int) *balance.Endpoint {
			return t.endpoint(&cands[i], grp)
		}, skip)
		if i < 0 {
			break
		}
		in := &cands[i]
		if t.deps.IdentityPolicy != nil {
			if ok, why := t.deps.IdentityPolicy.MayHold(in.Member.Node, in.Service.Name); !ok {
				lastSkip = t.skipInstance(in, &skipError{reason: skipNodeNotAllowed, detail: why})
				tried = append(tried, i)
				continue
			}
		}
		ep := t.endpoint(in, grp)
		hdr.Service = in.Service.Name
		hdr.Port = uint16(portFor(in))
		if dl, ok := ctx.Deadline(); ok {
			hdr.Timeout = max(time.Until(dl), time.Microsecond)
		}
		ep.Start()
		t0 := t.lb.bal.Now()
		st, err := open(ctx, peerOf(in), &hdr)
		if attempts != nil {
			*attempts = attempt + 1
		}
		if err == nil {
			if rq.session != nil {
				rq.session.Service, rq.session.Port = hdr.Service, hdr.Port
			}
			return &opened{st: st, ep: ep, key: keyOf(in), start: t0, attempts: attempt + 1}, false, nil
		}
		ep.End()
		if nh, ok := errors.AsType[*tunnel.NotHolderError](err); ok {
			lastSkip = t.skipInstance(in, &skipError{reason: skipNoIdentity, detail: nh.Error()})
			tried = append(tried, i)
			continue
		}
		attempt++
		lastErr = err
		restarting = restarting && restartingFailure(err)
		var re *RefusedError
		if errors.As(err, &re) && !re.Code.Retryable() {
			t.m.attemptFailures.WithLabelValues(re.Code.String()).Inc()
			return nil, false, err // policy and identity refusals are final
		}
		if errors.Is(err, tunnel.ErrConnLost) && !retriedGone {
			// Not the instance's fault: try it again on a fresh connection.
			retriedGone = true
			t.m.attemptFailures.WithLabelValues("connection_lost").Inc()
			t.log.Debug("connection to peer lost; retrying on a new one", "node", in.Member.Node, "err", err)
			continue
		}
		ep.Failure(balance.ConnectFailure)
		tried = append(tried, i)
		t.m.attemptFailures.WithLabelValues(failureReason(err)).Inc()
		t.log.Debug("connect attempt failed", "service", hdr.Service, "node", in.Member.Node, "attempt", attempt, "err", err)
	}
	switch {
	case lastErr != nil:
		return nil, restarting && ctx.Err() == nil, lastErr
	case lastSkip != nil:
		lastErr = fmt.Errorf("%w: %s: no instance may serve it; last skipped: %w", ErrNoInstance, sub.service, lastSkip)
	default:
		lastErr = fmt.Errorf("%w: %s (none reachable on port %d)", ErrNoInstance, sub.service, port)
	}
	return nil, false, lastErr
}

// httpExtension marks a stream as carrying one request.
var httpExtension = []wire.Extension{{Type: wire.ExtHTTP}}

// Reasons an instance is skipped, the label of MetricSkipped.
const (
	// skipNoIdentity: the certificate the instance's agent presented does
	// not hold the service's identity.
	skipNoIdentity = "certificate_lacks_service"
	// skipNodeNotAllowed: the IdentityPolicy does not let the instance's
	// node hold the service's identity.
	skipNodeNotAllowed = "node_not_allowed"
)

// skipError is an instance passed over because it may not serve the
// service; connect tries another.
type skipError struct {
	reason string // skipNoIdentity or skipNodeNotAllowed
	detail string
}

func (e *skipError) Error() string { return e.reason + ": " + e.detail }

// skipLogEvery limits the log of skips to one line per instance per period:
// an instance that may not serve keeps being skipped for every connection.
const skipLogEvery = 30 * time.Second

// skipInstance counts and logs an instance that connect passed over, and
// returns the error for connect's answer.
func (t *Transport) skipInstance(in *catalog.Instance, se *skipError) error {
	t.m.skippedBy(se.reason).Inc()
	err := fmt.Errorf("instance %s on node %s: %w", in.Service.ID, in.Member.Node, se)
	k := keyOf(in)
	v, ok := t.lb.skipLogged.Load(k)
	if !ok {
		v, _ = t.lb.skipLogged.LoadOrStore(k, new(atomic.Int64))
	}
	last := v.(*atomic.Int64)
	now := time.Now().UnixNano()
	if prev := last.Load(); (prev == 0 || now-prev >= int64(skipLogEvery)) && last.CompareAndSwap(prev, now) {
		t.log.Warn("instance skipped: it may not serve the service", "service", in.Service.Name, "instance", in.Service.ID,
			"node", in.Member.Node, "reason", se.reason, "detail", se.detail)
	}
	return err
}

// peerOf names the agent of instance in.
func peerOf(in *catalog.Instance) tunnel.Peer {
	return tunnel.Peer{Node: in.Member.Node, Addr: netip.AddrPortFrom(in.Member.IP.Unmap(), uint16(in.Member.TunnelPort))}
}

func keyOf(in *catalog.Instance) epKey {
	return epKey{strings.ToLower(in.Member.Node), in.Service.ID}
}

func failureReason(err error) string {
	var re *RefusedError
	switch {
	case errors.As(err, &re):
		return re.Code.String()
	case errors.Is(err, ErrPeerUnreachable):
		return "peer_unreachable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "stream_error"
}
