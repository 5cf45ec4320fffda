package balance

import (
	"sync/atomic"
	"time"
)

// FailureKind is what went wrong with a call to an instance.
type FailureKind uint8

// The failures that count towards ejection.
const (
	// ConnectFailure: no stream could be opened to the instance.
	ConnectFailure FailureKind = iota + 1
	// ErrorAnswer: the instance's answer was a 5xx (the app's, or the
	// 502/503/504 its agent gave for it), or the exchange broke or timed
	// out before an answer.
	ErrorAnswer
)

// String is the kind's name in events, logs and status.
func (k FailureKind) String() string {
	switch k {
	case ConnectFailure:
		return "connect_failure"
	case ErrorAnswer:
		return "error_answer"
	}
	return "unknown"
}

// OutlierPolicy is how a group ejects its failing instances; the
// Resilience document's outlier_detection section.
//
// An instance is ejected after ConsecutiveErrors failures with no success
// between them, for BaseEjectionTime times the number of times it was
// ejected (at most MaxEjectionTime). When the period ends it comes back on
// probation for Interval: one failure then ejects it again, for the next,
// longer period; Interval without a failure ends the probation and resets
// the count, so that the next ejection is short again.
//
// An ejection that would put more than MaxEjectedPercent of the group's
// instances out at once does not happen, even when every instance fails
// (unlike Envoy, which always allows one): the failures keep counting,
// and the instance is ejected at its next failure once there is room. An
// ejection that leaves nothing to pick would gain nothing anyway: Pick
// uses ejected instances when no other is left.
type OutlierPolicy struct {
	ConsecutiveErrors int
	Interval          time.Duration
	BaseEjectionTime  time.Duration
	MaxEjectedPercent int
}

// DefaultOutlier is the policy of a group none was set for; the values of
// policy.DefaultResilience.
var DefaultOutlier = OutlierPolicy{
	ConsecutiveErrors: 5,
	Interval:          10 * time.Second,
	BaseEjectionTime:  30 * time.Second,
	MaxEjectedPercent: 50,
}

// MaxEjectionTime caps one ejection period (Envoy's max_ejection_time
// default), unless BaseEjectionTime is longer: an instance that keeps
// failing is tried again at least this often.
const MaxEjectionTime = 5 * time.Minute

// completed fills in the zero fields with DefaultOutlier's.
func (p OutlierPolicy) completed() OutlierPolicy {
	if p.ConsecutiveErrors <= 0 {
		p.ConsecutiveErrors = DefaultOutlier.ConsecutiveErrors
	}
	if p.Interval <= 0 {
		p.Interval = DefaultOutlier.Interval
	}
	if p.BaseEjectionTime <= 0 {
		p.BaseEjectionTime = DefaultOutlier.BaseEjectionTime
	}
	p.MaxEjectedPercent = min(max(p.MaxEjectedPercent, 0), 100)
	return p
}

// ejectionTime is the period of an instance's n-th ejection in a row.
func (p OutlierPolicy) ejectionTime(n int) time.Duration {
	limit := max(MaxEjectionTime, p.BaseEjectionTime)
	if n <= 0 || p.BaseEjectionTime > limit/time.Duration(n) {
		return limit
	}
	return p.BaseEjectionTime * time.Duration(n)
}

// Group is the instances of one service: the unit whose share of ejected
// instances MaxEjectedPercent bounds, and which an OutlierPolicy governs.
// Safe for concurrent use.
type Group struct {
	b       *Balancer
	name    string
	policy  atomic.Pointer[OutlierPolicy]
	size    atomic.Int64 // endpoints in the group
	ejected atomic.Int64 // of which ejected now
}

// NewGroup returns an empty group named name (its service) under
// DefaultOutlier.
func (b *Balancer) NewGroup(name string) *Group {
	g := &Group{b: b, name: name}
	p := DefaultOutlier
	g.policy.Store(&p)
	return g
}

// Name is the group's service.
func (g *Group) Name() string { return g.name }

// SetPolicy makes p the group's policy from the next failure on. Setting
// the policy in place costs a comparison, so that callers can pass the
// current policy on every call and a change applies without a restart.
func (g *Group) SetPolicy(p OutlierPolicy) {
	p = p.completed()
	if *g.policy.Load() == p {
		return
	}
	g.policy.Store(&p)
}

// Policy is the group's policy now.
func (g *Group) Policy() OutlierPolicy { return *g.policy.Load() }

// Size counts the group's instances the balancer holds state for.
func (g *Group) Size() int { return int(g.size.Load()) }

// Ejected counts the group's instances ejected now. An ejection that has
// run out is counted until the endpoint is next looked at (a Pick, a
// call's result, State).
func (g *Group) Ejected() int { return int(g.ejected.Load()) }

// tryEject takes one ejection slot if the cap allows it.
func (g *Group) tryEject(percent int) bool {
	for {
		n, size := g.ejected.Load(), g.size.Load()
		if (n+1)*100 > int64(percent)*size {
			return false
		}
		if g.ejected.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// EventKind tells an ejection from a return.
type EventKind uint8

// The events of ejection.
const (
	// Ejected: the instance is out for Event.Duration.
	Ejected EventKind = iota + 1
	// Returned: the instance's ejection ended after Event.Duration, or it
	// left the catalog while ejected.
	Returned
)

// Event is an instance ejected or returned, for logs and metrics.
type Event struct {
	Kind     EventKind
	Service  string // the group's name
	Instance string // the endpoint's name
	// Reason is, for an ejection, the kind of the last failure
	// (FailureKind.String); for a return, "expired" or "removed".
	Reason string
	// Duration is the ejection's period (Ejected) or how long it lasted
	// (Returned).
	Duration time.Duration
	// Ejections is the instance's ejections in a row, this one included.
	Ejections int
	// Probation is true for an ejection of an instance on probation.
	Probation bool
}

// OnEvent makes f receive every ejection and return. Call it before the
// balancer is used; f is called without locks held, on the caller's
// goroutine, and must not block.
func (b *Balancer) OnEvent(f func(Event)) { b.events = f }

// outlierState is an endpoint's ejection state; Endpoint.mu guards it but
// for ejectedUntil, which Pick reads without the lock.
type outlierState struct {
	failures       int           // consecutive failures
	ejections      int           // ejections in a row
	ejectedAt      time.Duration // start of the current ejection
	probationUntil time.Duration // end of the probation; 0: none
	ejectedUntil   atomic.Int64  // clock time in ns; 0: not ejected
}

// events are what one call to an endpoint caused: at most a return and an
// ejection.
type events struct {
	n  int
	ev [2]Event
}

func (es *events) add(e Event) {
	es.ev[es.n] = e
	es.n++
}

func (e *Endpoint) emit(es events) {
	if f := e.b.events; f != nil {
		for _, ev := range es.ev[:es.n] {
			f(ev)
		}
	}
}

// settle ends an ejection that ran out and a probation that did; e.mu is
// held.
func (e *Endpoint) settle(now time.Duration, es *events) {
	o := &e.out
	if until := o.ejectedUntil.Load(); until != 0 && int64(now) >= until {
		o.ejectedUntil.Store(0)
		e.g.ejected.Add(-1)
		o.probationUntil = max(now+e.g.policy.Load().Interval, 1)
		// It comes back with a new instance's estimate: the failure
		// penalties that led to the ejection would otherwise keep it
		// from every pick for tens of seconds (they decay over Decay),
		// and probation would see no traffic to judge it by.
		e.cost, e.stamp = float64(e.b.cfg.DefaultRTT), now
		es.add(Event{Kind: Returned, Service: e.g.name, Instance: e.name, Reason: "expired",
			Duration: now - o.ejectedAt, Ejections: o.ejections})
	}
	if o.probationUntil != 0 && now >= o.probationUntil {
		o.probationUntil, o.ejections = 0, 0
	}
}

// success ends the failure streak; e.mu is held.
func (e *Endpoint) success() events {
	var es events
	if e.out.ejectedUntil.Load() != 0 || e.out.probationUntil != 0 {
		e.settle(e.b.now(), &es) // else there is nothing to settle
	}
	e.out.failures = 0
	return es
}

// failure counts a failure and ejects when the policy says so and the
// group's cap allows; e.mu is held.
func (e *Endpoint) failure(kind FailureKind) events {
	var es events
	now := e.b.now()
	e.settle(now, &es)
	o := &e.out
	if o.ejectedUntil.Load() != 0 || e.gone {
		// A call sent to an ejected instance (nothing else was left)
		// does not lengthen its ejection.
		return es
	}
	o.failures++
	pol := e.g.policy.Load()
	probation := o.probationUntil != 0
	if !probation && o.failures < pol.ConsecutiveErrors {
		return es
	}
	if !e.g.tryEject(pol.MaxEjectedPercent) {
		return es
	}
	o.ejections++
	d := pol.ejectionTime(o.ejections)
	o.ejectedAt, o.failures, o.probationUntil = now, 0, 0
	o.ejectedUntil.Store(int64(now + d))
	es.add(Event{Kind: Ejected, Service: e.g.name, Instance: e.name, Reason: kind.String(),
		Duration: d, Ejections: o.ejections, Probation: probation})
	return es
}

// leave takes the endpoint out of its group's counts when its table
// forgets it.
func (e *Endpoint) leave() {
	var es events
	e.mu.Lock()
	if !e.gone {
		e.gone = true
		e.g.size.Add(-1)
		if e.out.ejectedUntil.Load() != 0 {
			e.out.ejectedUntil.Store(0)
			e.g.ejected.Add(-1)
			es.add(Event{Kind: Returned, Service: e.g.name, Instance: e.name, Reason: "removed",
				Duration: e.b.now() - e.out.ejectedAt, Ejections: e.out.ejections})
		}
	}
	e.mu.Unlock()
	e.emit(es)
}

// Ejected reports whether the endpoint is ejected now. It takes no lock
// unless an ejection has just run out.
func (e *Endpoint) Ejected() bool {
	until := e.out.ejectedUntil.Load()
	if until == 0 {
		return false
	}
	if int64(e.b.now()) < until {
		return true
	}
	var es events
	e.mu.Lock()
	e.settle(e.b.now(), &es)
	ejected := e.out.ejectedUntil.Load() != 0
	e.mu.Unlock()
	e.emit(es)
	return ejected
}

// EndpointState is an endpoint's ejection state, for status output.
type EndpointState struct {
	// Ejected is true while the instance is out; Remaining is how much
	// longer.
	Ejected   bool
	Remaining time.Duration
	// Ejections counts its ejections in a row (the multiplier of the
	// next period); Probation is true while one more failure ejects it.
	Ejections int
	Probation bool
	// Failures counts its consecutive failures.
	Failures int
}

// State reports the endpoint's ejection state now.
func (e *Endpoint) State() EndpointState {
	var es events
	e.mu.Lock()
	now := e.b.now()
	e.settle(now, &es)
	st := EndpointState{Ejections: e.out.ejections, Probation: e.out.probationUntil != 0, Failures: e.out.failures}
	if until := e.out.ejectedUntil.Load(); until != 0 {
		st.Ejected, st.Remaining = true, time.Duration(until)-now
	}
	e.mu.Unlock()
	e.emit(es)
	return st
}

// Group is the endpoint's group; Name its name in events.
func (e *Endpoint) Group() *Group { return e.g }

// Name is the endpoint's name in events.
func (e *Endpoint) Name() string { return e.name }
