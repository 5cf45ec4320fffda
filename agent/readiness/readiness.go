// Package readiness decides whether an agent is ready to carry the mesh's
// traffic: it has joined the cluster through gossip, it holds a certificate
// that is valid now, and it has the policy from the servers. Each check is a
// probe of state the agent already keeps, read without blocking, so that a
// probe from a load balancer or from systemd never waits on the network.
//
// The checks are pure functions of that state and the time, and are
// table-tested; the agent wires them to its gossip layer, its certificate
// manager and its policy copy (agent/telemetry.go), and the telemetry
// listener (agent/telemetryhttp) and the API serve the Report.
package readiness

import (
	"fmt"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/clock"
)

// Names of the checks, in the order a Report lists them.
const (
	CheckGossip      = "gossip"
	CheckCertificate = "certificate"
	CheckPolicy      = "policy"
)

// Check is one readiness check.
type Check struct {
	// Name names the check in the report and in the metrics.
	Name string
	// Probe reports whether the check passes at now, and why. It must be
	// safe for concurrent use and must not block.
	Probe func(now time.Time) (ok bool, reason string)
}

// Checker runs the checks. It is safe for concurrent use.
type Checker struct {
	clock  clock.Clock
	checks []Check
}

// New returns a Checker that runs checks, in order, at the time clk gives
// (clock.Real when nil).
func New(clk clock.Clock, checks ...Check) *Checker {
	if clk == nil {
		clk = clock.Real
	}
	return &Checker{clock: clk, checks: checks}
}

// Report runs every check now. The agent is ready when every check passes;
// a Checker with no checks is ready.
func (c *Checker) Report() api.Readiness {
	now := c.clock.Now()
	out := api.Readiness{Ready: true, Checks: make([]api.ReadinessCheck, 0, len(c.checks))}
	for _, ch := range c.checks {
		ok, reason := ch.Probe(now)
		out.Ready = out.Ready && ok
		out.Checks = append(out.Checks, api.ReadinessCheck{Name: ch.Name, OK: ok, Reason: reason})
	}
	return out
}

// Gossip is the check that the agent has joined the cluster: at least one
// other member is alive as gossip sees it. A server that bootstraps alone
// (bootstrap_expect 1, which --dev is) is a cluster of its own and passes
// with no other member; any other agent alone has not joined, whatever it
// was before, since it can reach no service and no server.
//
// aliveOthers returns how many members other than this one gossip sees
// alive; alone is true for a server that bootstraps alone.
func Gossip(aliveOthers func() int, alone bool) Check {
	return Check{Name: CheckGossip, Probe: func(time.Time) (bool, string) {
		n := aliveOthers()
		switch {
		case n == 1:
			return true, "joined: 1 other member alive"
		case n > 1:
			return true, fmt.Sprintf("joined: %d other members alive", n)
		case alone:
			return true, "a server that bootstraps alone (bootstrap_expect 1) is a cluster of its own"
		}
		return false, "not joined: no other member alive (check retry_join, the gossip port and the encrypt key)"
	}}
}

// Certificate is the check that the agent holds a leaf certificate that is
// valid at the time of the check: after its NotBefore and before its
// NotAfter. leaf returns the current leaf's validity, or an error when there
// is none yet.
func Certificate(leaf func() (notBefore, notAfter time.Time, err error)) Check {
	return Check{Name: CheckCertificate, Probe: func(now time.Time) (bool, string) {
		nb, na, err := leaf()
		switch {
		case err != nil:
			return false, "no certificate: " + err.Error()
		case now.Before(nb):
			return false, fmt.Sprintf("certificate not valid before %s (%s from now; is the clock right?)", nb.UTC().Format(time.RFC3339), nb.Sub(now).Round(time.Second))
		case !now.Before(na):
			return false, fmt.Sprintf("certificate expired at %s (%s ago; renewal failing?)", na.UTC().Format(time.RFC3339), now.Sub(na).Round(time.Second))
		}
		return true, fmt.Sprintf("certificate valid until %s (%s left)", na.UTC().Format(time.RFC3339), na.Sub(now).Round(time.Second))
	}}
}

// Policy is the check that the agent has the policy from the servers: a
// server has sent it, or confirmed it, at least once. lastContact returns
// when that last happened, the zero time when never. A policy kept on disk
// from an earlier contact counts: an agent restarted during a server
// outage enforces the last policy it had, and that is what the servers
// would have it do. How old the contact is only shows in the reason; a
// stale policy is an alert (meshwork_policy_staleness_seconds), not a
// reason to take the agent out of service.
func Policy(lastContact func() time.Time) Check {
	return Check{Name: CheckPolicy, Probe: func(now time.Time) (bool, string) {
		lc := lastContact()
		if lc.IsZero() {
			return false, "no policy yet: no server has sent it (are the servers reachable, is there a leader?)"
		}
		ago := max(now.Sub(lc), 0).Round(time.Second)
		return true, fmt.Sprintf("policy loaded; last heard from a server %s ago", ago)
	}}
}
