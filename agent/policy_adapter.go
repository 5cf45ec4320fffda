package agent

import (
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport"
)

// policyReader answers the data plane's policy questions from the replicated
// policy, read lock-free on every call (raftstore.Node.Policy is an atomic
// load), so a change applies to the next stream without a restart.
type policyReader struct {
	current  func() *policy.Set // raftstore.Node.Policy
	fallback policy.Action
}

// newPolicyReader makes the reader; defaultPolicy is tunnel.default_policy,
// the verdict when neither an Intention nor the IntentionDefaults document
// decides.
func newPolicyReader(current func() *policy.Set, defaultPolicy string) policyReader {
	fb := policy.Deny
	if defaultPolicy == string(policy.Allow) {
		fb = policy.Allow
	}
	return policyReader{current: current, fallback: fb}
}

// Allowed implements transport.Authorizer. A caller proven to be a service
// is judged by its service name. A caller with only a node identity (a
// process on that node that runs as no registered service's user) has no
// service name: it matches only Intentions whose source is "*", then the
// IntentionDefaults document, then tunnel.default_policy. So "allow web
// from *" admits it, and naming a source service never does.
//
// A service identity counts only if its node may hold it now
// (ServiceIdentity documents): the certificate may predate a change of
// policy, and is valid for up to a day, so the data plane checks again.
func (p policyReader) Allowed(src transport.Source, dst string) (bool, string) {
	return p.AllowedStream(src, dst, false)
}

// AllowedStream implements tunnel.StreamAuthorizer: as Allowed, except that
// a stream carrying one request passes an intention that decides each
// request (L7 permissions); the receiving agent then decides the request
// with AllowedRequest. A per-connection stream to such a destination is
// denied.
func (p policyReader) AllowedStream(src transport.Source, dst string, perRequest bool) (bool, string) {
	set := p.current()
	if src.Service != "" {
		if ok, why := set.MayHold(src.Node, src.Service); !ok {
			return false, "the caller's node may not hold its service identity: " + why
		}
	}
	return set.Intentions().WithFallback(p.fallback).AllowedStream(src.Service, dst, perRequest)
}

// AllowedRequest implements l7.RequestAuthorizer: the intention that
// decides src's calls to dst, its permissions tried in order.
func (p policyReader) AllowedRequest(src transport.Source, dst string, req policy.Request) (bool, string) {
	return p.current().Intentions().WithFallback(p.fallback).AllowedRequest(src.Service, dst, req)
}

// ProtocolOf implements transport.ProtocolSource with ServiceDefaults.
func (p policyReader) ProtocolOf(service string) string {
	return string(p.current().ProtocolFor(service))
}

// Resilience gives the Resilience settings of calls to service.
func (p policyReader) Resilience(service string) *policy.Resilience {
	return p.current().ResilienceFor(service)
}

// Fault gives the Fault document that applies to requests to the local
// service, or nil.
func (p policyReader) Fault(service string) *policy.Fault {
	return p.current().FaultFor(service)
}

// RouteFor implements transport.RouteSource: the Split of the first Route
// rule of service that matches req, else the service's default Split. A
// Route rule has no name of its own: the Split it sends to names it.
func (p policyReader) RouteFor(service string, req policy.Request) (string, []transport.SplitTarget) {
	set := p.current()
	if r := set.RouteFor(service); r != nil {
		if name, ok := r.Match(req); ok {
			if sp := set.SplitNamed(name); sp != nil {
				return name, splitTargets(sp, service)
			}
		}
	}
	return "", splitTargets(set.SplitFor(service), service)
}

// RouteOptionsFor implements transport.RouteOptionSource: the retry
// options of the first Route rule of service that matches req.
func (p policyReader) RouteOptionsFor(service string, req policy.Request) policy.RouteOptions {
	if r := p.current().RouteFor(service); r != nil {
		if rule := r.Rule(req); rule != nil {
			return rule.Options()
		}
	}
	return policy.RouteOptions{}
}

// MayHold implements transport.IdentityPolicy: a calling agent sends a
// service's connections only to instances whose node may hold the
// service's identity (ServiceIdentity documents, ServiceIdentityDefaults).
func (p policyReader) MayHold(node, service string) (bool, string) {
	return p.current().MayHold(node, service)
}

// SplitFor implements transport.SplitSource with the service's default
// Split document.
func (p policyReader) SplitFor(service string) []transport.SplitTarget {
	return splitTargets(p.current().SplitFor(service), service)
}

// splitTargets converts a Split document of service to the data plane's
// targets; nil for none.
func splitTargets(sp *policy.Split, service string) []transport.SplitTarget {
	if sp == nil || len(sp.Splits) == 0 {
		return nil
	}
	target := ""
	if s := sp.ServiceOf(service); s != service {
		target = s
	}
	out := make([]transport.SplitTarget, 0, len(sp.Splits))
	for _, s := range sp.Splits {
		out = append(out, transport.SplitTarget{Service: target, Tags: s.Subset.Tags, Meta: s.Subset.Meta, Weight: uint32(max(s.Weight, 0))})
	}
	return out
}
