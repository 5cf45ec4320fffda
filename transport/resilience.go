package transport

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/balance"
	"github.com/meshwork/meshwork/transport/breaker"
)

// resilience returns the Resilience settings of calls to service.
func (t *Transport) resilience(service string) *policy.Resilience {
	if t.deps.Resilience == nil {
		return &policy.DefaultResilience
	}
	return t.deps.Resilience(service)
}

// acquire takes one unit of service's limit l in res (service's
// Resilience), or returns an error wrapping breaker.ErrCircuitOpen that
// names the service and the limit.
func (t *Transport) acquire(service string, res *policy.Resilience, l breaker.Limit) (*breaker.Breaker, error) {
	b := t.breakers.For(service)
	if max := breaker.Max(res.CircuitBreaker, l); !b.Acquire(l, max) {
		return nil, fmt.Errorf("%w: %s: %s %d reached", breaker.ErrCircuitOpen, service, l, max)
	}
	return b, nil
}

// group returns the ejection group of service, its policy brought up to
// date with res, the service's Resilience (nil: look it up).
func (t *Transport) group(service string, res *policy.Resilience) *balance.Group {
	key := strings.ToLower(service)
	v, ok := t.lb.groups.Load(key)
	if !ok {
		v, _ = t.lb.groups.LoadOrStore(key, t.lb.bal.NewGroup(service))
	}
	g := v.(*balance.Group)
	if res == nil {
		res = t.resilience(service)
	}
	if od := res.OutlierDetection; od != nil {
		pct := od.MaxEjectedPercent
		if pct == 0 {
			// docs/policy.md: a zero field takes the default, which
			// ResilienceFor fills in for the durations only.
			pct = policy.DefaultResilience.OutlierDetection.MaxEjectedPercent
		}
		g.SetPolicy(balance.OutlierPolicy{
			ConsecutiveErrors: od.ConsecutiveErrors,
			Interval:          time.Duration(od.Interval),
			BaseEjectionTime:  time.Duration(od.BaseEjectionTime),
			MaxEjectedPercent: pct,
		})
	}
	return g
}

// endpoint returns the balancer state of instance in, in the group of its
// service g.
func (t *Transport) endpoint(in *catalog.Instance, g *balance.Group) *balance.Endpoint {
	k := keyOf(in)
	return t.lb.eps.GetIn(k, g, k.node+"/"+k.id)
}

// outlierEvent logs and counts an ejection or a return.
func (t *Transport) outlierEvent(e balance.Event) {
	switch e.Kind {
	case balance.Ejected:
		t.m.ejections.WithLabelValues(e.Service).Inc()
		t.m.ejected.WithLabelValues(e.Service).Inc()
		t.log.Info("instance ejected", "service", e.Service, "instance", e.Instance, "reason", e.Reason,
			"duration", e.Duration, "ejections", e.Ejections, "probation", e.Probation)
	case balance.Returned:
		t.m.ejected.WithLabelValues(e.Service).Dec()
		t.log.Info("instance returned from ejection", "service", e.Service, "instance", e.Instance, "reason", e.Reason,
			"duration", e.Duration, "ejections", e.Ejections)
	}
}

// OutlierStatus is one instance ejected now or on probation.
type OutlierStatus struct {
	Service  string `json:"service"`
	Instance string `json:"instance"` // node/service ID
	Ejected  bool   `json:"ejected"`
	// Remaining is how much longer the instance is out, as "12s".
	Remaining string `json:"remaining,omitempty"`
	// Ejections counts its ejections in a row, this one included.
	Ejections int `json:"ejections"`
	// Probation is true when it is back but one more failure ejects it.
	Probation bool `json:"probation"`
}

// outliers lists the instances ejected or on probation, in a stable order.
func (t *Transport) outliers() []OutlierStatus {
	var out []OutlierStatus
	t.lb.eps.Range(func(_ epKey, ep *balance.Endpoint) bool {
		st := ep.State()
		if !st.Ejected && !st.Probation {
			return true
		}
		os := OutlierStatus{Service: ep.Group().Name(), Instance: ep.Name(), Ejected: st.Ejected,
			Ejections: st.Ejections, Probation: st.Probation}
		if st.Ejected {
			os.Remaining = st.Remaining.Round(time.Millisecond).String()
		}
		out = append(out, os)
		return true
	})
	slices.SortFunc(out, func(a, b OutlierStatus) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.Instance, b.Instance))
	})
	return out
}
