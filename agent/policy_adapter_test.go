package agent

import (
	"testing"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport"
)

// readerOf parses docs into a policy reader with a deny fallback.
func readerOf(t *testing.T, docs string) policyReader {
	t.Helper()
	parsed, err := policy.Parse([]byte(docs))
	if err != nil {
		t.Fatal(err)
	}
	entries := make([]policy.Entry, len(parsed))
	for i, d := range parsed {
		entries[i] = policy.Entry{Document: d, CreateIndex: uint64(i + 1), ModifyIndex: uint64(i + 1)}
	}
	set := policy.NewSet(uint64(len(entries)), entries)
	return newPolicyReader(func() *policy.Set { return set }, "deny")
}

// TestPolicyReaderPerRequest covers what the data plane asks per request:
// the route's split, the default split, the protocol, and L7 intentions,
// which admit a per-request stream and deny a per-connection one.
func TestPolicyReaderPerRequest(t *testing.T) {
	p := readerOf(t, `
kind: ServiceDefaults
name: web
protocol: http
---
kind: Route
name: web
routes:
  - match: {headers: [{name: x-canary, exact: "1"}]}
    split: web-canary
    hedge: true
---
kind: Split
name: web-canary
service: web
splits: [{weight: 100, subset: {tags: [canary]}}]
---
kind: Split
name: web
splits:
  - {weight: 90, subset: {tags: [v1]}}
  - {weight: 10, subset: {tags: [v2]}}
---
kind: Intention
name: web
sources:
  - name: app
    permissions:
      - action: allow
        http: {path_prefix: /public}
`)
	if got := p.ProtocolOf("web"); got != "http" {
		t.Errorf("ProtocolOf(web) = %q", got)
	}
	header := func(name, value string) func(string) (string, bool) {
		return func(n string) (string, bool) {
			if n == name {
				return value, true
			}
			return "", false
		}
	}
	route, canary := p.RouteFor("web", policy.Request{Method: "GET", Path: "/", Header: header("x-canary", "1")})
	if route != "web-canary" || len(canary) != 1 || canary[0].Tags[0] != "canary" || canary[0].Weight != 100 {
		t.Errorf("marked request: route %q, %+v", route, canary)
	}
	if o := p.RouteOptionsFor("web", policy.Request{Method: "GET", Path: "/", Header: header("x-canary", "1")}); !o.Hedge || o.RetryNonIdempotent {
		t.Errorf("marked request: route options %+v, want hedge", o)
	}
	if o := p.RouteOptionsFor("web", policy.Request{Method: "GET", Path: "/", Header: header("x-other", "1")}); o != (policy.RouteOptions{}) {
		t.Errorf("unmarked request: route options %+v, want none", o)
	}
	route, plain := p.RouteFor("web", policy.Request{Method: "GET", Path: "/", Header: header("x-other", "1")})
	if route != "" || len(plain) != 2 || plain[0].Weight != 90 || plain[1].Tags[0] != "v2" {
		t.Errorf("unmarked request: route %q, %+v", route, plain)
	}

	app := transport.Source{Service: "app", Node: "n1"}
	if ok, why := p.Allowed(app, "web"); ok {
		t.Errorf("a per-connection stream passed an intention with permissions: %s", why)
	}
	if ok, why := p.AllowedStream(app, "web", true); !ok {
		t.Errorf("a per-request stream was refused: %s", why)
	}
	if ok, why := p.AllowedRequest(app, "web", policy.Request{Method: "GET", Path: "/public/a"}); !ok {
		t.Errorf("GET /public/a refused: %s", why)
	}
	if ok, _ := p.AllowedRequest(app, "web", policy.Request{Method: "GET", Path: "/admin"}); ok {
		t.Error("GET /admin allowed: no permission matches, and the fallback is deny")
	}
}

// TestPolicyReaderFault: the data plane gets a service's Fault document,
// else the "*" one, and nil for a service no Fault names when none is "*".
func TestPolicyReaderFault(t *testing.T) {
	p := readerOf(t, `
kind: Fault
name: api
abort: {percent: 10, http_status: 503}
`)
	if f := p.Fault("API"); f == nil || f.Abort == nil || f.Abort.Percent != 10 {
		t.Errorf("Fault(API) = %+v, want the api document", f)
	}
	if f := p.Fault("web"); f != nil {
		t.Errorf("Fault(web) = %+v, want nil", f)
	}
	p = readerOf(t, `
kind: Fault
name: "*"
delay: {percent: 1, fixed: 10ms}
`)
	if f := p.Fault("web"); f == nil || f.Delay == nil {
		t.Errorf("Fault(web) = %+v, want the \"*\" document", f)
	}
}
