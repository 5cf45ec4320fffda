package policy

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, src string) []Document {
	t.Helper()
	docs, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return docs
}

func TestParseExample(t *testing.T) {
	src, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := mustParse(t, string(src))
	if len(docs) != 9 {
		t.Fatalf("got %d documents, want 9", len(docs))
	}
	if d := docs[8].Spec.(*ServiceIdentityDefaults); docs[8].Kind != KindServiceIdentityDefaults || docs[8].Name != DefaultsName || d.Mode != Deny {
		t.Fatalf("service identity defaults decoded wrongly: %+v", docs[8])
	}
	if si := docs[7].Spec.(*ServiceIdentity); docs[7].Kind != KindServiceIdentity || !reflect.DeepEqual(si.Nodes, []string{"web-*", "edge-1"}) {
		t.Fatalf("service identity decoded wrongly: %+v", docs[7])
	}
	sp := docs[1].Spec.(*Split)
	if docs[1].Kind != KindSplit || docs[1].Name != "web" || sp.Splits[1].Weight != 10 || sp.Splits[1].Subset.Meta["version"] != "2" {
		t.Fatalf("split decoded wrongly: %+v", docs[1])
	}
	res := docs[4].Spec.(*Resilience)
	if res.Retries.PerTryTimeout.D() != 500*time.Millisecond || res.Timeouts.Idle.D() != 5*time.Minute || res.CircuitBreaker.MaxPending != 50 {
		t.Fatalf("resilience decoded wrongly: %+v %+v %+v", res.Retries, res.Timeouts, res.CircuitBreaker)
	}
	in := docs[5].Spec.(*Intention)
	if mon := in.Sources[1]; mon.Name != "monitor" || mon.Action != "" || len(mon.Permissions) != 2 ||
		mon.Permissions[0].Action != Allow || mon.Permissions[0].HTTP.PathExact != "/healthz" ||
		!reflect.DeepEqual(mon.Permissions[0].HTTP.Methods, []string{"GET", "HEAD"}) ||
		mon.Permissions[1].Action != Deny || mon.Permissions[1].HTTP.PathPrefix != "/" {
		t.Fatalf("intention permissions decoded wrongly: %+v", in.Sources[1])
	}
	rt := docs[3].Spec.(*Route)
	if rt.Routes[0].Match.Headers[0].Exact != "1" || rt.Routes[0].Split != "web-canary" {
		t.Fatalf("route decoded wrongly: %+v", rt)
	}
}

func TestParseRefusesWithFieldPath(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"negative weight", "kind: Split\nname: web\nsplits:\n- weight: 105\n  subset: {tags: [a]}\n- weight: -5\n",
			`Split "web": splits[0].weight: 105 must be between 0 and 100`},
		{"negative weight second", "kind: Split\nname: web\nsplits:\n- weight: 100\n- weight: -5\n",
			`Split "web": splits[1].weight: -5 must be between 0 and 100`},
		{"weights sum", "kind: Split\nname: web\nsplits:\n- weight: 50\n- weight: 40\n",
			`Split "web": splits: weights sum to 90, they must sum to 100`},
		{"unknown key", "kind: Split\nname: web\nsplits:\n- wieght: 100\n",
			`Split "web": splits[0].wieght: unknown key (did you mean "weight"?) (line 4)`},
		{"unknown top key", "kind: ServiceDefaults\nname: web\nprotocl: http\n",
			`ServiceDefaults "web": protocl: unknown key (did you mean "protocol"?)`},
		{"bad protocol", "kind: ServiceDefaults\nname: web\nprotocol: udp\n",
			`ServiceDefaults "web": protocol: "udp" is unknown (want tcp, http, http2 or grpc)`},
		{"bare number duration", "kind: Resilience\nname: web\ntimeouts:\n  connect: 5\n",
			`Resilience "web": timeouts.connect: int 5 must be a duration string such as "5s"`},
		{"bad duration", "kind: Resilience\nname: web\ntimeouts:\n  connect: fast\n",
			`Resilience "web": timeouts.connect: "fast" is not a duration`},
		{"negative duration", "kind: Resilience\nname: web\ntimeouts:\n  idle: -1s\n",
			`Resilience "web": timeouts.idle: -1s must not be negative`},
		{"attempts range", "kind: Resilience\nname: web\nretries:\n  attempts: 11\n",
			`Resilience "web": retries.attempts: 11 must be between 0 and 10`},
		{"retry condition", "kind: Resilience\nname: web\nretries:\n  attempts: 1\n  retry_on: [5xx, sometimes]\n",
			`Resilience "web": retries.retry_on[1]: "sometimes" is unknown`},
		{"string for int", "kind: Resilience\nname: web\ncircuit_breaker:\n  max_connections: many\n",
			`Resilience "web": circuit_breaker.max_connections: want a whole number, got string "many"`},
		{"empty resilience", "kind: Resilience\nname: web\n",
			`Resilience "web": sets nothing`},
		{"intention action", "kind: Intention\nname: web\nsources:\n- name: api\n  action: maybe\n",
			`Intention "web": sources[0].action: "maybe" must be allow or deny`},
		{"intention dup source", "kind: Intention\nname: web\nsources:\n- {name: api, action: allow}\n- {name: API, action: deny}\n",
			`Intention "web": sources[1].name: "API" is already listed at sources[0]`},
		{"defaults name", "kind: IntentionDefaults\nname: mesh\naction: deny\n",
			`IntentionDefaults "mesh": name: "mesh": an IntentionDefaults document must be named "default"`},
		{"identity defaults name", "kind: ServiceIdentityDefaults\nname: web\nmode: deny\n",
			`ServiceIdentityDefaults "web": name: "web": a ServiceIdentityDefaults document must be named "default"`},
		{"identity defaults mode missing", "kind: ServiceIdentityDefaults\nname: default\n",
			`ServiceIdentityDefaults "default": mode: required: allow (any node may hold an identity no ServiceIdentity covers) or deny (no node may)`},
		{"identity defaults mode", "kind: ServiceIdentityDefaults\nname: default\nmode: strict\n",
			`ServiceIdentityDefaults "default": mode: "strict" must be allow or deny`},
		{"identity defaults unknown key", "kind: ServiceIdentityDefaults\nname: default\naction: deny\n",
			`ServiceIdentityDefaults "default": action: unknown key`},
		{"identity nodes missing", "kind: ServiceIdentity\nname: web\n",
			`ServiceIdentity "web": nodes: required: the nodes that may hold the identity, or [] for none`},
		{"identity node pattern", "kind: ServiceIdentity\nname: web\nnodes: [web-1, \"web/2\"]\n",
			`ServiceIdentity "web": nodes[1]: "web/2" must be a node name`},
		{"identity empty pattern", "kind: ServiceIdentity\nname: web\nnodes: [\"\"]\n",
			`ServiceIdentity "web": nodes[0]: must not be empty`},
		{"identity dup pattern", "kind: ServiceIdentity\nname: web\nnodes: [web-*, WEB-*]\n",
			`ServiceIdentity "web": nodes[1]: "WEB-*" is already listed at nodes[0]`},
		{"identity name", "kind: ServiceIdentity\nname: \"web.v2\"\nnodes: []\n",
			`ServiceIdentity "web.v2": name: "web.v2" must be a service name`},
		{"route path", "kind: Route\nname: web\nroutes:\n- match: {path_prefix: api}\n  split: web\n",
			`Route "web": routes[0].match.path_prefix: "api" must start with "/"`},
		{"route split missing", "kind: Route\nname: web\nroutes:\n- match: {methods: [get]}\n",
			`Route "web": routes[0].match.methods[0]: "get" must be an upper-case HTTP method`},
		{"route method lower case", "kind: Route\nname: web\nroutes:\n- match: {methods: [GET, post]}\n  split: s\n",
			`Route "web": routes[0].match.methods[1]: "post" must be an upper-case HTTP method such as GET (methods compare case-sensitively): write "POST"`},
		{"route method not a token", "kind: Route\nname: web\nroutes:\n- match: {methods: [\"GET /\"]}\n  split: s\n",
			`Route "web": routes[0].match.methods[0]: "GET /" must be an upper-case HTTP method such as GET`},
		{"route method empty", "kind: Route\nname: web\nroutes:\n- match: {methods: [\"\"]}\n  split: s\n",
			`Route "web": routes[0].match.methods[0]: "" must be an upper-case HTTP method`},
		{"route hedge of POST only", "kind: Route\nname: web\nroutes:\n- match: {methods: [POST, PATCH]}\n  split: s\n  hedge: true\n",
			`Route "web": routes[0].hedge: hedges only idempotent requests (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), and methods [POST PATCH] lists none`},
		{"route retry flag not a bool", "kind: Route\nname: web\nroutes:\n- match: {}\n  split: s\n  retry_non_idempotent: sometimes\n",
			`Route "web": routes[0].retry_non_idempotent`},
		{"route header name", "kind: Route\nname: web\nroutes:\n- match: {headers: [{name: \"x canary\", exact: \"1\"}]}\n  split: s\n",
			`Route "web": routes[0].match.headers[0].name: "x canary" is not an HTTP header name`},
		{"route pseudo-header", "kind: Route\nname: web\nroutes:\n- match: {headers: [{name: \":authority\", exact: a}]}\n  split: s\n",
			`Route "web": routes[0].match.headers[0].name: ":authority" is not an HTTP header name`},
		{"route path exact", "kind: Route\nname: web\nroutes:\n- match: {path_exact: admin}\n  split: s\n",
			`Route "web": routes[0].match.path_exact: "admin" must start with "/"`},
		{"route path exact and prefix", "kind: Route\nname: web\nroutes:\n- match: {path_exact: /a, path_prefix: /}\n  split: s\n",
			`Route "web": routes[0].match.path_exact: set path_exact or path_prefix, not both`},
		{"intention action missing", "kind: Intention\nname: web\nsources:\n- name: api\n",
			`Intention "web": sources[0].action: required: allow or deny (or permissions, to decide each request)`},
		{"intention action and permissions", "kind: Intention\nname: web\nsources:\n- name: api\n  action: allow\n  permissions: [{action: deny, http: {path_exact: /x}}]\n",
			`Intention "web": sources[0]: sets both action and permissions`},
		{"permission action missing", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions: [{http: {path_exact: /x}}]\n",
			`Intention "web": sources[0].permissions[0].action: required: allow or deny`},
		{"permission action", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions: [{http: {path_exact: /x}}, {action: permit, http: {path_exact: /y}}]\n",
			`Intention "web": sources[0].permissions[1].action: "permit" must be allow or deny`},
		{"permission http missing", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions: [{action: allow}]\n",
			`Intention "web": sources[0].permissions[0].http: required: at least one of path_exact, path_prefix, methods or headers`},
		{"permission http empty", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions: [{action: allow, http: {}}]\n",
			`Intention "web": sources[0].permissions[0].http: required: at least one of`},
		{"permission path", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions: [{action: allow, http: {path_prefix: api}}]\n",
			`Intention "web": sources[0].permissions[0].http.path_prefix: "api" must start with "/"`},
		{"permission method", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions: [{action: allow, http: {methods: [get]}}]\n",
			`Intention "web": sources[0].permissions[0].http.methods[0]: "get" must be an upper-case HTTP method`},
		{"permission header", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions: [{action: allow, http: {headers: [{name: \"\", exact: a}]}}]\n",
			`Intention "web": sources[0].permissions[0].http.headers[0].name: "" is not an HTTP header name`},
		{"permission unknown key", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions: [{action: allow, http: {path: /x}}]\n",
			`Intention "web": sources[0].permissions[0].http.path: unknown key`},
		{"too many permissions", "kind: Intention\nname: web\nsources:\n- name: api\n  permissions:\n" +
			strings.Repeat("  - {action: allow, http: {path_exact: /x}}\n", MaxPermissions+1),
			`Intention "web": sources[0].permissions: 65 permissions, at most 64`},
		{"unknown kind", "kind: Gateway\nname: web\n",
			`document 1 (line 1): kind: "Gateway" is unknown`},
		{"no kind", "name: web\n", `document 1 (line 1): kind: required`},
		{"no name", "kind: Split\nsplits: []\n", `Split (document 1, line 1): name: required`},
		{"bad name", "kind: ServiceDefaults\nname: \"web app\"\n",
			`ServiceDefaults "web app": name: "web app" must be a service name`},
		{"not a mapping", "- 1\n- 2\n", `document 1 (line 1): a document must be a mapping`},
		{"alias", "kind: Split\nname: web\nsplits:\n- &a {weight: 100}\n- *a\n",
			`Split "web": splits[0]: YAML anchors and aliases are not supported`},
		{"duplicate key", "kind: ServiceDefaults\nname: web\nprotocol: http\nprotocol: tcp\n",
			`ServiceDefaults "web": protocol: appears twice (line 4)`},
		{"malformed", "kind: [\n", `document 1: malformed YAML`},
		{"empty", "", `no document found`},
		{"duplicate document", "kind: ServiceDefaults\nname: web\n---\nkind: ServiceDefaults\nname: WEB\n",
			`ServiceDefaults "WEB": appears twice in the input (also document 1)`},
		{"second document named", "kind: ServiceDefaults\nname: web\n---\nkind: Split\nname: x\nsplits: [{weight: 7}]\n",
			`Split "x": splits: weights sum to 7`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := Parse([]byte(tc.src))
			if err == nil {
				t.Fatalf("accepted: %+v", docs)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n  %v\nwant it to contain\n  %s", err, tc.want)
			}
		})
	}
}

func TestParseJSON(t *testing.T) {
	docs := mustParse(t, `[{"kind":"ServiceDefaults","name":"web","protocol":"grpc"},{"kind":"IntentionDefaults","name":"default","action":"allow"}]`)
	if len(docs) != 2 || docs[0].Spec.(*ServiceDefaults).Protocol != ProtocolGRPC {
		t.Fatalf("got %+v", docs)
	}
	if _, err := Parse([]byte(`{"kind":"ServiceDefaults","name":"web","protocol":"grpc","x":1}`)); err == nil || !strings.Contains(err.Error(), "x: unknown key") {
		t.Fatalf("unknown JSON field: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	src, _ := os.ReadFile("testdata/example.yaml")
	docs := mustParse(t, string(src))

	// YAML out and back.
	y, err := EncodeYAML(docs)
	if err != nil {
		t.Fatal(err)
	}
	again := mustParse(t, string(y))
	if !reflect.DeepEqual(docs, again) {
		t.Fatalf("YAML round trip differs:\n%s", y)
	}

	// Names that YAML would read as a number, a boolean or null stay strings.
	for _, name := range []string{"0", "1e3", "true", "null", "0x1f"} {
		src := `{"kind":"Intention","name":"` + name + `","sources":[{"name":"` + name + `","action":"deny"}]}`
		doc := mustParse(t, src)
		y, err := EncodeYAML(doc)
		if err != nil {
			t.Fatal(err)
		}
		if again := mustParse(t, string(y)); !reflect.DeepEqual(doc, again) {
			t.Fatalf("YAML round trip of name %q differs:\n%s", name, y)
		}
	}

	// JSON out and back, with indexes.
	entries := make([]Entry, len(docs))
	for i, d := range docs {
		entries[i] = Entry{Document: d, CreateIndex: uint64(i + 1), ModifyIndex: uint64(i + 10)}
	}
	set := NewSet(42, entries)
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var back Set
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Digest() != set.Digest() || back.Index() != 42 {
		t.Fatalf("JSON round trip differs: %s", b)
	}
	if e, _ := back.Get(KindSplit, "WEB"); e == nil || e.ModifyIndex != 11 {
		t.Fatalf("Get after round trip = %+v", e)
	}
	// And the JSON form of a document is itself valid input.
	one, _ := json.Marshal(docs[4])
	if got := mustParse(t, string(one)); !reflect.DeepEqual(got[0], docs[4]) {
		t.Fatalf("JSON document does not parse back: %s", one)
	}
}

func TestSetQueries(t *testing.T) {
	src, _ := os.ReadFile("testdata/example.yaml")
	docs := mustParse(t, string(src))
	docs = append(docs, mustParse(t, `
kind: Resilience
name: "*"
timeouts: {request: 30s}
circuit_breaker: {max_connections: 7}
---
kind: ServiceDefaults
name: "*"
protocol: http2
`)...)
	entries := make([]Entry, len(docs))
	for i, d := range docs {
		entries[i] = Entry{Document: d}
	}
	s := NewSet(5, entries)

	if got := s.ProtocolFor("WEB"); got != ProtocolHTTP {
		t.Errorf("ProtocolFor(web) = %s", got)
	}
	if got := s.ProtocolFor("other"); got != ProtocolHTTP2 {
		t.Errorf("ProtocolFor(other) = %s, want the * default", got)
	}
	if got := Empty().ProtocolFor("x"); got != ProtocolTCP {
		t.Errorf("empty ProtocolFor = %s", got)
	}
	if sp := s.SplitFor("web"); sp == nil || len(sp.Splits) != 2 {
		t.Errorf("SplitFor(web) = %+v", sp)
	}
	if sp := s.SplitFor("api"); sp != nil {
		t.Errorf("SplitFor(api) = %+v, want nil", sp)
	}
	r := s.ResilienceFor("web")
	if r.Retries.Attempts != 3 || r.Timeouts.Request.D() != 5*time.Second || r.CircuitBreaker.MaxConnections != 100 {
		t.Errorf("ResilienceFor(web) = %+v", r)
	}
	r = s.ResilienceFor("api")
	if r.Timeouts.Request.D() != 30*time.Second || r.Timeouts.Connect != DefaultResilience.Timeouts.Connect ||
		r.CircuitBreaker.MaxConnections != 7 || r.CircuitBreaker.MaxPending != 1024 || r.Retries != DefaultResilience.Retries {
		t.Errorf("ResilienceFor(api) = %+v %+v %+v", r.Timeouts, r.CircuitBreaker, r.Retries)
	}
	name, ok := s.RouteFor("web").Match(Request{Method: "GET", Path: "/api/x", Header: func(h string) (string, bool) {
		if strings.EqualFold(h, "x-canary") {
			return "1", true
		}
		return "", false
	}})
	if !ok || name != "web-canary" {
		t.Errorf("route match = %q %v", name, ok)
	}
	if _, ok := s.RouteFor("web").Match(Request{Method: "DELETE", Path: "/api/x"}); ok {
		t.Error("route matched a method it does not list")
	}
	sub := s.SplitFor("web").Splits[0].Subset
	if !sub.Matches([]string{"V1", "x"}, nil) || sub.Matches([]string{"v2"}, nil) {
		t.Error("subset tag matching is wrong")
	}
	if c := s.Counts(); c[KindSplit] != 2 || c[KindResilience] != 2 {
		t.Errorf("Counts = %v", c)
	}
}

func TestIntentions(t *testing.T) {
	docs := mustParse(t, `
kind: Intention
name: web
sources:
  - {name: api, action: allow}
  - {name: "*", action: deny}
---
kind: Intention
name: "*"
sources:
  - {name: monitor, action: allow}
---
kind: Intention
name: db
sources:
  - {name: web, action: allow}
`)
	entries := make([]Entry, len(docs))
	for i, d := range docs {
		entries[i] = Entry{Document: d}
	}
	s := NewSet(1, entries)
	tests := []struct {
		src, dst string
		fallback Action
		want     bool
		reason   string
	}{
		{"api", "web", Deny, true, `intention "web" source "api": allow`},
		{"API", "Web", Deny, true, `intention "web" source "api": allow`},
		{"batch", "web", Allow, false, `intention "web" source "*": deny`},
		{"monitor", "db", Deny, true, `intention "*" source "monitor": allow`},
		{"batch", "db", Deny, false, `agent default: deny`},
		{"batch", "db", Allow, true, `agent default: allow`},
	}
	for _, tc := range tests {
		t.Run(tc.src+"->"+tc.dst, func(t *testing.T) {
			ok, why := s.Intentions().WithFallback(tc.fallback).Allowed(tc.src, tc.dst)
			if ok != tc.want || !strings.Contains(why, tc.reason) {
				t.Fatalf("Allowed = %v, %q; want %v, %q", ok, why, tc.want, tc.reason)
			}
		})
	}
	// IntentionDefaults beats the agent fallback.
	def := mustParse(t, "kind: IntentionDefaults\nname: default\naction: deny\n")[0]
	s2 := NewSet(2, append(entries, Entry{Document: def}))
	if ok, why := s2.Intentions().WithFallback(Allow).Allowed("batch", "db"); ok || !strings.Contains(why, "IntentionDefaults: deny") {
		t.Fatalf("IntentionDefaults ignored: %v %q", ok, why)
	}
}

func TestMayHold(t *testing.T) {
	docs := mustParse(t, `
kind: ServiceIdentity
name: web
nodes: [web-*, edge-1, "*-canary-*"]
---
kind: ServiceIdentity
name: db
nodes: []
`)
	entries := make([]Entry, len(docs))
	for i, d := range docs {
		entries[i] = Entry{Document: d}
	}
	s := NewSet(1, entries)
	wild := mustParse(t, "kind: ServiceIdentity\nname: \"*\"\nnodes: [core*]\n")[0]
	sw := NewSet(2, append(append([]Entry(nil), entries...), Entry{Document: wild}))
	withMode := func(mode string, extra ...Entry) *Set {
		d := mustParse(t, "kind: ServiceIdentityDefaults\nname: default\nmode: "+mode+"\n")[0]
		return NewSet(3, append(append(append([]Entry(nil), entries...), extra...), Entry{Document: d}))
	}
	deny, allow := withMode("deny"), withMode("allow")
	denyWild := withMode("deny", Entry{Document: wild})
	tests := []struct {
		name          string
		set           *Set
		node, service string
		want          bool
		reason        string
	}{
		{"prefix pattern", s, "web-3", "web", true, `ServiceIdentity "web" lists "web-*"`},
		{"case-insensitive", s, "WEB-3", "Web", true, `lists "web-*"`},
		{"exact name", s, "edge-1", "web", true, `lists "edge-1"`},
		{"exact name is not a prefix", s, "edge-10", "web", false, `ServiceIdentity "web" does not list node "edge-10"`},
		{"inner pattern", s, "eu-canary-2", "web", true, `lists "*-canary-*"`},
		{"pattern needs its middle", s, "eu-canary", "web", false, "does not list"},
		{"prefix must be whole", s, "webby", "web", false, "does not list"},
		{"empty list holds nobody", s, "web-1", "db", false, `ServiceIdentity "db" does not list`},
		{"no document", s, "anyone", "api", true, "no ServiceIdentity document"},
		{"wildcard document", sw, "core7", "api", true, `ServiceIdentity "*" lists "core*"`},
		{"wildcard refuses", sw, "edge-1", "api", false, `ServiceIdentity "*" does not list node "edge-1"`},
		{"own document beats wildcard", sw, "web-1", "web", true, `ServiceIdentity "web"`},
		{"deny mode refuses a service without a document", deny, "anyone", "api", false, `no ServiceIdentity document for "api"; ServiceIdentityDefaults: deny`},
		{"deny mode leaves listed services alone", deny, "web-1", "web", true, `ServiceIdentity "web" lists "web-*"`},
		{"deny mode leaves unlisted nodes refused", deny, "db-1", "web", false, `ServiceIdentity "web" does not list node "db-1"`},
		{"wildcard document beats deny mode", denyWild, "core1", "api", true, `ServiceIdentity "*" lists "core*"`},
		{"allow mode", allow, "anyone", "api", true, `no ServiceIdentity document for "api"; ServiceIdentityDefaults: allow`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := tc.set.MayHold(tc.node, tc.service)
			if ok != tc.want || !strings.Contains(why, tc.reason) {
				t.Fatalf("MayHold(%s, %s) = %v, %q; want %v, %q", tc.node, tc.service, ok, why, tc.want, tc.reason)
			}
		})
	}
}

func TestMatchNode(t *testing.T) {
	tests := []struct {
		pattern, node string
		want          bool
	}{
		{"a", "a", true}, {"a", "b", false}, {"*", "", true}, {"*", "x", true},
		{"a*", "a", true}, {"*a", "a", true}, {"a*a", "a", false}, {"a*a", "aa", true},
		{"a**b", "ab", true}, {"*b*", "abc", true}, {"*b*", "ac", false},
		{"x*y*z", "xyz", true}, {"x*y*z", "xzy", false}, {"x*y*z", "x1y2z", true},
	}
	for _, tc := range tests {
		if got := matchNode(tc.pattern, tc.node); got != tc.want {
			t.Errorf("matchNode(%q, %q) = %v, want %v", tc.pattern, tc.node, got, tc.want)
		}
	}
}

func TestCheckReferences(t *testing.T) {
	docs := mustParse(t, "kind: Route\nname: web\nroutes:\n- match: {}\n  split: canary\n")
	none := func(Kind, string) (*Document, bool) { return nil, false }
	err := CheckReferences([]*Document{&docs[0]}, none)
	if err == nil || !strings.Contains(err.Error(), `Route "web": routes[0].split: Split "canary" does not exist`) {
		t.Fatalf("dangling reference: %v", err)
	}
	some := func(k Kind, n string) (*Document, bool) { return &Document{}, k == KindSplit && n == "canary" }
	if err := CheckReferences([]*Document{&docs[0]}, some); err != nil {
		t.Fatal(err)
	}
}

func TestValidateBuiltDocument(t *testing.T) {
	d := Document{Kind: KindSplit, Name: "web", Spec: &Split{Splits: []SplitTarget{{Weight: 60}}}}
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "sum to 60") {
		t.Fatalf("Validate = %v", err)
	}
	d = Document{Kind: KindRoute, Name: "web", Spec: &Split{}}
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Validate mismatched = %v", err)
	}
}

func TestRouteRuleOptions(t *testing.T) {
	docs := mustParse(t, `
kind: Route
name: web
routes:
  - match: {path_prefix: /orders, methods: [POST]}
    split: web
    retry_non_idempotent: true
  - match: {path_prefix: /search}
    split: web
    hedge: true
  - match: {}
    split: web
`)
	r := docs[0].Spec.(*Route)
	tests := []struct {
		method, path string
		want         RouteOptions
	}{
		{"POST", "/orders/1", RouteOptions{RetryNonIdempotent: true}},
		{"GET", "/orders/1", RouteOptions{}},
		{"GET", "/search", RouteOptions{Hedge: true}},
		{"GET", "/", RouteOptions{}},
	}
	for _, tt := range tests {
		rule := r.Rule(Request{Method: tt.method, Path: tt.path, Header: func(string) (string, bool) { return "", false }})
		if rule == nil {
			t.Fatalf("%s %s matched no rule", tt.method, tt.path)
		}
		if got := rule.Options(); got != tt.want {
			t.Errorf("%s %s: options %+v, want %+v", tt.method, tt.path, got, tt.want)
		}
	}
	for m, want := range map[string]bool{"GET": true, "PUT": true, "DELETE": true, "HEAD": true, "OPTIONS": true, "TRACE": true, "POST": false, "PATCH": false, "get": false} {
		if IdempotentMethod(m) != want {
			t.Errorf("IdempotentMethod(%q) = %v, want %v", m, !want, want)
		}
	}
}
