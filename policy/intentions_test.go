package policy

import (
	"fmt"
	"strings"
	"testing"
)

// headers returns a Request.Header over a fixed set of headers, with
// case-insensitive names as net/http's Header.Get has.
func headers(kv ...string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for i := 0; i+1 < len(kv); i += 2 {
			if strings.EqualFold(kv[i], name) {
				return kv[i+1], true
			}
		}
		return "", false
	}
}

func TestRouteMatchConditions(t *testing.T) {
	tests := []struct {
		name  string
		match RouteMatch
		req   Request
		want  bool
	}{
		{"empty matches all", RouteMatch{}, Request{Method: "PATCH", Path: "/anything"}, true},
		{"exact path", RouteMatch{PathExact: "/admin"}, Request{Method: "GET", Path: "/admin"}, true},
		{"exact path is not a prefix", RouteMatch{PathExact: "/admin"}, Request{Method: "GET", Path: "/admin/"}, false},
		{"exact path is case-sensitive", RouteMatch{PathExact: "/admin"}, Request{Method: "GET", Path: "/Admin"}, false},
		{"exact path shorter", RouteMatch{PathExact: "/admin"}, Request{Method: "GET", Path: "/adm"}, false},
		{"prefix", RouteMatch{PathPrefix: "/api/"}, Request{Path: "/api/v1"}, true},
		{"prefix missing", RouteMatch{PathPrefix: "/api/"}, Request{Path: "/ap"}, false},
		{"method listed", RouteMatch{Methods: []string{"GET", "HEAD"}}, Request{Method: "HEAD", Path: "/"}, true},
		{"method not listed", RouteMatch{Methods: []string{"GET", "HEAD"}}, Request{Method: "POST", Path: "/"}, false},
		{"method is case-sensitive", RouteMatch{Methods: []string{"GET"}}, Request{Method: "get", Path: "/"}, false},
		{"header exact", RouteMatch{Headers: []HeaderMatch{{Name: "X-Canary", Exact: "1"}}},
			Request{Path: "/", Header: headers("x-canary", "1")}, true},
		{"header value differs", RouteMatch{Headers: []HeaderMatch{{Name: "x-canary", Exact: "1"}}},
			Request{Path: "/", Header: headers("x-canary", "10")}, false},
		{"header empty value present", RouteMatch{Headers: []HeaderMatch{{Name: "x-canary", Exact: ""}}},
			Request{Path: "/", Header: headers("x-canary", "")}, true},
		{"header empty value absent", RouteMatch{Headers: []HeaderMatch{{Name: "x-canary", Exact: ""}}},
			Request{Path: "/", Header: headers()}, false},
		{"no header function", RouteMatch{Headers: []HeaderMatch{{Name: "x-canary", Exact: "1"}}},
			Request{Path: "/"}, false},
		{"all headers needed", RouteMatch{Headers: []HeaderMatch{{Name: "a", Exact: "1"}, {Name: "b", Exact: "2"}}},
			Request{Path: "/", Header: headers("a", "1")}, false},
		{"every condition holds", RouteMatch{PathExact: "/x", Methods: []string{"PUT"}, Headers: []HeaderMatch{{Name: "a", Exact: "1"}}},
			Request{Method: "PUT", Path: "/x", Header: headers("A", "1")}, true},
		{"one condition fails", RouteMatch{PathExact: "/x", Methods: []string{"PUT"}, Headers: []HeaderMatch{{Name: "a", Exact: "1"}}},
			Request{Method: "POST", Path: "/x", Header: headers("A", "1")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.match.matches(&tc.req); got != tc.want {
				t.Fatalf("matches(%+v) = %v, want %v", tc.req, got, tc.want)
			}
		})
	}
}

func TestRouteMatchPathExact(t *testing.T) {
	docs := mustParse(t, `
kind: Route
name: web
routes:
  - match: {path_exact: /login}
    split: web-auth
  - match: {path_prefix: /login}
    split: web-v2
`)
	r := docs[0].Spec.(*Route)
	for path, want := range map[string]string{"/login": "web-auth", "/login/x": "web-v2", "/loginx": "web-v2", "/": ""} {
		got, ok := r.Match(Request{Method: "GET", Path: path})
		if got != want || ok != (want != "") {
			t.Errorf("Match(%s) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

// l7Set is the policy of the per-request intention tests: web's calls to
// api are decided per request; db decides every source per request; the
// "*" intention lets monitor read /healthz anywhere else.
const l7Set = `
kind: Intention
name: api
sources:
  - name: web
    permissions:
      - action: allow
        http: {path_prefix: /public, methods: [GET]}
      - action: deny
        http: {path_exact: /admin}
      - action: allow
        http: {headers: [{name: x-role, exact: ops}]}
  - name: batch
    action: allow
  - name: "*"
    action: deny
---
kind: Intention
name: "*"
sources:
  - name: monitor
    permissions:
      - action: allow
        http: {path_exact: /healthz, methods: [GET]}
---
kind: Intention
name: db
sources:
  - name: "*"
    permissions:
      - action: deny
        http: {methods: [DELETE]}
`

func setOf(t testing.TB, src string) *Set {
	t.Helper()
	docs, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	entries := make([]Entry, len(docs))
	for i, d := range docs {
		entries[i] = Entry{Document: d}
	}
	return NewSet(1, entries)
}

func TestAllowedRequest(t *testing.T) {
	s := setOf(t, l7Set)
	withDefaults := setOf(t, l7Set+"---\nkind: IntentionDefaults\nname: default\naction: deny\n")
	get := func(path string, kv ...string) Request {
		return Request{Method: "GET", Path: path, Header: headers(kv...)}
	}
	tests := []struct {
		name     string
		set      *Set
		src, dst string
		req      Request
		fallback Action
		want     bool
		reason   string
	}{
		{"first permission allows", s, "web", "api", get("/public/a"), Deny, true,
			`intention "api" source "web" permission 0: allow`},
		{"names are case-insensitive", s, "WEB", "Api", get("/public/a"), Deny, true,
			`intention "api" source "web" permission 0: allow`},
		{"exact path denies before a later allow", s, "web", "api", get("/admin", "x-role", "ops"), Allow, false,
			`intention "api" source "web" permission 1: deny`},
		{"exact path does not cover a longer path", s, "web", "api", get("/admin/", "x-role", "ops"), Deny, true,
			`intention "api" source "web" permission 2: allow`},
		{"method must match", s, "web", "api", Request{Method: "POST", Path: "/public/a"}, Deny, false,
			`intention "api" source "web": no permission matches; agent default: deny`},
		{"no match, fallback allow", s, "web", "api", get("/private"), Allow, true,
			`intention "api" source "web": no permission matches; agent default: allow`},
		{"no match, no headers at all", s, "web", "api", Request{Method: "GET", Path: "/x"}, Deny, false,
			"no permission matches"},
		{"no match, IntentionDefaults beats the fallback", withDefaults, "web", "api", get("/private"), Allow, false,
			`intention "api" source "web": no permission matches; IntentionDefaults: deny`},
		{"a source with an action decides every request", s, "batch", "api", get("/admin"), Deny, true,
			`intention "api" source "batch": allow`},
		{"the wildcard source of the destination", s, "other", "api", get("/public/a"), Allow, false,
			`intention "api" source "*": deny`},
		{"the destination's wildcard source beats the wildcard intention", s, "monitor", "db", get("/healthz"), Deny, false,
			`intention "db" source "*": no permission matches; agent default: deny`},
		{"a wildcard source's permission", s, "monitor", "db", Request{Method: "DELETE", Path: "/rows"}, Allow, false,
			`intention "db" source "*" permission 0: deny`},
		{"the wildcard intention's permission", s, "monitor", "cache", get("/healthz"), Deny, true,
			`intention "*" source "monitor" permission 0: allow`},
		{"the wildcard intention, no permission matches", s, "monitor", "cache", get("/metrics"), Deny, false,
			`intention "*" source "monitor": no permission matches; agent default: deny`},
		{"no intention", s, "web", "cache", get("/"), Deny, false,
			"no intention matches and no IntentionDefaults; agent default: deny"},
		{"no intention, fallback allow", s, "web", "cache", get("/"), Allow, true,
			"no intention matches and no IntentionDefaults; agent default: allow"},
		{"no intention, IntentionDefaults", withDefaults, "web", "cache", get("/"), Allow, false,
			"no intention matches; IntentionDefaults: deny"},
		{"a caller without a service matches only *", s, "", "db", get("/"), Allow, true,
			`intention "db" source "*": no permission matches; agent default: allow`},
		{"a caller without a service is denied by *", s, "", "api", get("/public/a"), Allow, false,
			`intention "api" source "*": deny`},
		{"a caller without a service, wildcard permission", s, "", "db", Request{Method: "DELETE", Path: "/"}, Allow, false,
			`intention "db" source "*" permission 0: deny`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := tc.set.Intentions().WithFallback(tc.fallback).AllowedRequest(tc.src, tc.dst, tc.req)
			if ok != tc.want || !strings.Contains(why, tc.reason) {
				t.Fatalf("AllowedRequest = %v, %q; want %v, %q", ok, why, tc.want, tc.reason)
			}
		})
	}
}

func TestAllowedStream(t *testing.T) {
	s := setOf(t, l7Set)
	tests := []struct {
		name       string
		src, dst   string
		fallback   Action
		l4, l7     bool
		l4r, l7r   string
		sameReason bool
	}{
		{"permissions deny a per-connection stream", "web", "api", Allow, false, true,
			`intention "api" source "web" decides each request (permissions): a per-connection stream is denied`,
			`intention "api" source "web" has permissions: requests are decided one by one`, false},
		{"a wildcard source with permissions", "batch", "db", Allow, false, true,
			`intention "db" source "*" decides each request`, `intention "db" source "*" has permissions`, false},
		{"an action decides both", "batch", "api", Deny, true, true,
			`intention "api" source "batch": allow`, `intention "api" source "batch": allow`, true},
		{"a deny action denies both", "other", "api", Allow, false, false,
			`intention "api" source "*": deny`, `intention "api" source "*": deny`, true},
		{"no intention", "web", "cache", Allow, true, true,
			"agent default: allow", "agent default: allow", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := s.Intentions().WithFallback(tc.fallback)
			ok, why := in.Allowed(tc.src, tc.dst)
			if ok != tc.l4 || !strings.Contains(why, tc.l4r) {
				t.Errorf("Allowed = %v, %q; want %v, %q", ok, why, tc.l4, tc.l4r)
			}
			ok2, why2 := in.AllowedStream(tc.src, tc.dst, false)
			if ok2 != ok || why2 != why {
				t.Errorf("AllowedStream(per connection) = %v, %q; want Allowed's %v, %q", ok2, why2, ok, why)
			}
			ok3, why3 := in.AllowedStream(tc.src, tc.dst, true)
			if ok3 != tc.l7 || !strings.Contains(why3, tc.l7r) {
				t.Errorf("AllowedStream(per request) = %v, %q; want %v, %q", ok3, why3, tc.l7, tc.l7r)
			}
			if (why3 == why) != tc.sameReason {
				t.Errorf("per-connection and per-request reasons: %q and %q", why, why3)
			}
		})
	}
}

// TestAllowedRequestAllocs pins that the per-request decision allocates
// nothing, on every path: it runs on every request the mesh carries.
func TestAllowedRequestAllocs(t *testing.T) {
	in := setOf(t, l7Set).Intentions()
	hdr := headers("x-role", "ops", "accept", "*/*")
	for _, tc := range []struct {
		name     string
		src, dst string
		req      Request
	}{
		{"permission allows", "web", "api", Request{Method: "GET", Path: "/public/x", Header: hdr}},
		{"header permission allows", "web", "api", Request{Method: "POST", Path: "/x", Header: hdr}},
		{"permission denies", "web", "api", Request{Method: "GET", Path: "/admin", Header: hdr}},
		{"no permission matches", "web", "api", Request{Method: "POST", Path: "/x"}},
		{"action", "batch", "api", Request{Method: "GET", Path: "/"}},
		{"no intention", "web", "cache", Request{Method: "GET", Path: "/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(200, func() { in.AllowedRequest(tc.src, tc.dst, tc.req) }); n != 0 {
				t.Errorf("AllowedRequest: %v allocations, want 0", n)
			}
			if n := testing.AllocsPerRun(200, func() { in.AllowedStream(tc.src, tc.dst, true) }); n != 0 {
				t.Errorf("AllowedStream: %v allocations, want 0", n)
			}
		})
	}
}

// BenchmarkAllowedRequest measures the per-request decision: a source with
// an action, the first permission, the last of MaxPermissions, and a
// request no permission matches.
func BenchmarkAllowedRequest(b *testing.B) {
	var many strings.Builder
	many.WriteString("kind: Intention\nname: api\nsources:\n- name: web\n  permissions:\n")
	for i := 0; i < MaxPermissions-1; i++ {
		fmt.Fprintf(&many, "  - {action: deny, http: {path_prefix: /p%d/, methods: [POST], headers: [{name: x-p, exact: \"%d\"}]}}\n", i, i)
	}
	many.WriteString("  - {action: allow, http: {path_exact: /last}}\n- name: batch\n  action: allow\n")
	s := setOf(b, many.String())
	in := s.Intentions()
	hdr := headers("x-p", "none", "accept", "*/*")
	for _, bc := range []struct {
		name string
		src  string
		req  Request
	}{
		{"action", "batch", Request{Method: "GET", Path: "/x", Header: hdr}},
		{"last of 64 permissions", "web", Request{Method: "GET", Path: "/last", Header: hdr}},
		{"no permission of 64 matches", "web", Request{Method: "POST", Path: "/p1/x", Header: hdr}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				in.AllowedRequest(bc.src, "api", bc.req)
			}
		})
	}
	small := setOf(b, l7Set).Intentions()
	b.Run("first permission", func(b *testing.B) {
		req := Request{Method: "GET", Path: "/public/x", Header: hdr}
		b.ReportAllocs()
		for b.Loop() {
			small.AllowedRequest("web", "api", req)
		}
	})
}
