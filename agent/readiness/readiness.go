// Package readiness decides whether an agent is ready to carry the mesh's
// traffic: it has joined the cluster through gossip (or serves from the
// catalog it restored from disk until it has), it has a catalog to answer
// from, it holds a certificate that is valid now, and it has the policy
// from the servers. Each check is a
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
	CheckCatalog     = "catalog"
	CheckCertificate = "certificate"
	CheckPolicy      = "policy"
)

// CatalogState is where the agent's catalog comes from at one moment.
type CatalogState struct {
	// Synced is true once gossip has merged another member's full state:
	// the catalog is then gossip's view of the cluster.
	Synced bool
	// RestoredAt is when the catalog restored from disk at start, which
	// the agent still answers from, was saved; the zero time when the
	// agent answers from gossip's view alone.
	RestoredAt time.Time
}

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
// with no other member. An agent that restarted and serves from the
// catalog it restored from disk passes too, until gossip syncs or the
// restored catalog expires: it answers DNS and routes to the last known
// instances, which is what a load balancer in front of it should keep
// sending traffic to. Any other agent alone has not joined, whatever it
// was before, since it can reach no service and no server.
//
// aliveOthers returns how many members other than this one gossip sees
// alive; alone is true for a server that bootstraps alone; catalog
// returns where the catalog comes from.
func Gossip(aliveOthers func() int, alone bool, catalog func() CatalogState) Check {
	return Check{Name: CheckGossip, Probe: func(now time.Time) (bool, string) {
		n := aliveOthers()
		switch {
		case n == 1:
			return true, "joined: 1 other member alive"
		case n > 1:
			return true, fmt.Sprintf("joined: %d other members alive", n)
		case alone:
			return true, "a server that bootstraps alone (bootstrap_expect 1) is a cluster of its own"
		}
		if at := catalog().RestoredAt; !at.IsZero() {
			return true, fmt.Sprintf("not joined yet: serving the catalog restored from disk (%s old) until gossip syncs", age(now, at))
		}
		return false, "not joined: no other member alive (check retry_join, the gossip port and the encrypt key)"
	}}
}

// Catalog is the check that the agent has a catalog to answer DNS and
// route from: gossip has synced it with another member, or it restored
// the catalog it saved before a restart (which passes, and says how old
// it is and that gossip has not synced), or it is a server that
// bootstraps alone, whose catalog is itself. An agent with none of these
// answers nothing but its own services.
func Catalog(catalog func() CatalogState, alone bool) Check {
	return Check{Name: CheckCatalog, Probe: func(now time.Time) (bool, string) {
		st := catalog()
		switch {
		case st.Synced:
			return true, "synced with the cluster through gossip"
		case !st.RestoredAt.IsZero():
			return true, fmt.Sprintf("restored from disk, %s old, gossip not yet synced", age(now, st.RestoredAt))
		case alone:
			return true, "a server that bootstraps alone (bootstrap_expect 1) holds the whole catalog"
		}
		return false, "empty: gossip not yet synced with any member, and no catalog restored from disk (none saved, too old or unreadable: see the agent's log)"
	}}
}

// age is how long ago t was at now, rounded for a reason; never negative.
func age(now, t time.Time) time.Duration { return max(now.Sub(t), 0).Round(time.Second) }

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
		return true, fmt.Sprintf("policy loaded; last heard from a server %s ago", age(now, lc))
	}}
}
