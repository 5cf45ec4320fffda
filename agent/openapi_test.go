package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/agent/httpapi"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/httpjson"
	"github.com/meshwork/meshwork/internal/testnet"
)

// openAPIPath is the API's description, which this test holds to the agent.
var openAPIPath = filepath.Join("..", "api", "openapi.yaml")

// loadOpenAPI loads and validates api/openapi.yaml.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(openAPIPath)
	if err != nil {
		t.Fatalf("load %s: %v", openAPIPath, err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", openAPIPath, err)
	}
	return doc
}

// documented is one operation of the document.
type documented struct {
	path, method string
	op           *openapi3.Operation
}

func documentedOps(doc *openapi3.T) map[string]documented {
	out := map[string]documented{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			out[method+" "+path] = documented{path: path, method: method, op: op}
		}
	}
	return out
}

// apiRequest is one request of the test, sent as it is written.
type apiRequest struct {
	token       string // "" sends none
	rawToken    string // sent as X-Meshwork-Token without a check
	query       string
	contentType string
	body        string
}

func send(t *testing.T, method, url string, in apiRequest) (*http.Request, *http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url+in.query, strings.NewReader(in.body))
	if err != nil {
		t.Fatal(err)
	}
	if in.body != "" {
		req.Header.Set("Content-Type", cmpOr(in.contentType, "application/json"))
	}
	acl.SetToken(req.Header, in.token)
	if in.rawToken != "" {
		req.Header.Set("X-Meshwork-Token", in.rawToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The request again, with its body, for the validator.
	req, _ = http.NewRequest(method, url+in.query, strings.NewReader(in.body))
	if in.body != "" {
		req.Header.Set("Content-Type", cmpOr(in.contentType, "application/json"))
	}
	return req, resp, b
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// validateAnswer checks an answer against the document: its status must be
// one the operation lists, and its headers and body must match the
// schema of that response.
func validateAnswer(ctx context.Context, doc *openapi3.T, d documented, values map[string]string, req *http.Request, resp *http.Response, body []byte) error {
	params := map[string]string{}
	for _, p := range pathParams(d.path) {
		params[p] = values[p]
	}
	route := &routers.Route{Spec: doc, Path: d.path, PathItem: doc.Paths.Value(d.path), Method: d.method, Operation: d.op}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(ctx, in)
}

// validateRequest checks a request the test sends as valid against the
// document, so that the examples the test relies on are ones the document
// allows.
func validateRequest(ctx context.Context, doc *openapi3.T, d documented, values map[string]string, req *http.Request) error {
	params := map[string]string{}
	for _, p := range pathParams(d.path) {
		params[p] = values[p]
	}
	route := &routers.Route{Spec: doc, Path: d.path, PathItem: doc.Paths.Value(d.path), Method: d.method, Operation: d.op}
	return openapi3filter.ValidateRequest(ctx, &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true},
	})
}

// pathParams names the {wildcards} of a path template.
func pathParams(path string) []string {
	var out []string
	for _, m := range wildcard.FindAllStringSubmatch(path, -1) {
		out = append(out, m[1])
	}
	return out
}

func fill(path string, values map[string]string) string {
	return wildcard.ReplaceAllStringFunc(path, func(w string) string {
		return values[wildcard.FindStringSubmatch(w)[1]]
	})
}

func init() {
	// The snapshot is a gzip stream: the validator takes it as a file.
	openapi3filter.RegisterBodyDecoder("application/gzip", openapi3filter.FileBodyDecoder)
}

// TestOpenAPIMatchesTheAgent holds api/openapi.yaml to a real server agent
// with every component mounted (servers, CA, ACLs, gossip keyring, policy,
// tunnel): the document is valid; the routes it describes are exactly
// those the agent mounts, with the ACL requirement and deprecation each
// states; every path refuses a method it does not serve with 405 and Allow;
// a request that must fail fails on every route with a documented status
// and the one error shape; and real answers of nearly every route match
// their schemas.
func TestOpenAPIMatchesTheAgent(t *testing.T) {
	doc := loadOpenAPI(t)
	ops := documentedOps(doc)
	errorSchema := doc.Components.Schemas["Error"]
	if errorSchema == nil {
		t.Fatal("the document has no Error schema")
	}

	// The codes the document names are the codes the handlers use.
	var enum []string
	for _, v := range errorSchema.Value.Properties["code"].Value.Enum {
		enum = append(enum, v.(string))
	}
	var codes []string
	for _, c := range httpjson.Codes {
		codes = append(codes, c.Code)
	}
	slices.Sort(enum)
	slices.Sort(codes)
	if !slices.Equal(enum, codes) {
		t.Errorf("the Error schema's codes %v are not httpjson.Codes %v", enum, codes)
	}

	mgmt, err := acl.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := newConfig(t, "oas1", true, "127.250.0.0/16")
	cfg.ACL.Enabled = true
	cfg.ACL.Tokens.InitialManagement = mgmt
	cfg.Encrypt = key
	a := startAgent(t, cfg)
	base := "http://" + a.HTTPAddr()
	ctx := context.Background()
	m := api.NewClient(a.HTTPAddr()).WithToken(mgmt)
	testnet.Eventually(t, wait, "the initial management token", func() error {
		_, err := m.Self(ctx)
		return err
	})
	a.waitTunnel(t) // the agent holds its leaf
	if err := m.RegisterService(ctx, api.ServiceDefinition{Name: "web", Port: 80, Tags: []string{"v1"},
		Check: &api.CheckDefinition{ID: "web-ttl", TTL: api.Duration(time.Minute)}}); err != nil {
		t.Fatal(err)
	}

	// (b) The routes mounted are the routes documented, both ways, each
	// with its ACL requirement and its deprecation.
	routes := a.http.Routes()
	mounted := map[string]bool{}
	for _, r := range routes {
		mounted[r.Pattern] = true
		d, ok := ops[r.Pattern]
		if !ok {
			t.Errorf("%s is mounted but not in %s", r.Pattern, openAPIPath)
			continue
		}
		// "<this node>" in the document stands for the agent's own name.
		got, _ := d.op.Extensions["x-meshwork-acl"].(string)
		if strings.ReplaceAll(got, "<this node>", cfg.Node) != r.Need.String() {
			t.Errorf("%s: x-meshwork-acl %q, but the agent requires %q", r.Pattern, got, r.Need)
		}
		successor, _ := d.op.Extensions["x-meshwork-successor"].(string)
		if d.op.Deprecated != (r.Successor != "") || successor != r.Successor {
			t.Errorf("%s: deprecated %v with successor %q in the document, the agent's successor %q", r.Pattern, d.op.Deprecated, successor, r.Successor)
		}
	}
	for p := range ops {
		if !mounted[p] {
			t.Errorf("%s is in %s but the agent does not mount it", p, openAPIPath)
		}
	}

	values := map[string]string{"id": "web", "name": "web", "kind": "ServiceDefaults", "accessor": acl.AnonymousAccessorID, "node": cfg.Node}
	checkError := func(what string, resp *http.Response, body []byte, status int, code string) {
		t.Helper()
		var eb httpjson.ErrorBody
		if err := errorSchema.Value.VisitJSON(jsonValue(body)); err != nil {
			t.Errorf("%s: the body does not match the Error schema: %v\n%s", what, err, body)
		}
		if err := json.Unmarshal(body, &eb); err != nil || resp.StatusCode != status || eb.Code != code {
			t.Errorf("%s: %d %s, want %d with code %q", what, resp.StatusCode, body, status, code)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: error answered as %q", what, ct)
		}
	}

	// 405 on every documented path, for a method it does not serve, with
	// Allow naming at least the documented ones; 404 for a path that is
	// none.
	paths := map[string][]string{}
	for _, d := range ops {
		paths[d.path] = append(paths[d.path], d.method)
	}
	for path, methods := range paths {
		url := base + fill(path, map[string]string{"id": "x", "name": "x", "kind": "x", "accessor": "x", "node": "x"})
		_, resp, body := send(t, "PATCH", url, apiRequest{token: mgmt})
		checkError("PATCH "+path, resp, body, http.StatusMethodNotAllowed, httpjson.CodeMethodNotAllowed)
		allow := strings.Split(resp.Header.Get("Allow"), ", ")
		for _, want := range methods {
			if !slices.Contains(allow, want) {
				t.Errorf("PATCH %s: Allow %q lacks %s", path, resp.Header.Get("Allow"), want)
			}
		}
	}
	for _, p := range []string{"/v1/nope", "/v1/ca/nope", "/v1/operator/keyring/nope", "/"} {
		_, resp, body := send(t, "GET", base+p, apiRequest{token: mgmt})
		checkError("GET "+p, resp, body, http.StatusNotFound, httpjson.CodeUnknownEndpoint)
	}

	// (c) A request that must fail, on every route: the anonymous token,
	// which denies by default, unless the route says otherwise here.
	bodies := map[string]string{
		"PUT /v1/agent/service/register":  `{"name": "web", "port": 81}`,
		"PUT /v1/agent/check/update/{id}": `{"status": "passing"}`,
		"PUT /v1/policy":                  `{"kind": "ServiceDefaults", "name": "web", "protocol": "http"}`,
		"PUT /v1/acl/token":               `{"description": "x"}`,
		"PUT /v1/acl/token/{accessor}":    `{"description": "x"}`,
		"PUT /v1/acl/policy":              `{"name": "x", "rules": {}}`,
		"PUT /v1/acl/policy/{id}":         `{"name": "x", "rules": {}}`,
		"PUT /v1/ca/token":                `{"node": "web-9"}`,
		"POST /v1/ca/token":               `{"node": "web-9"}`,
	}
	keyBody := `{"key": "` + key + `"}`
	for _, p := range []string{"PUT /v1/operator/keyring/install", "PUT /v1/operator/keyring/use", "DELETE /v1/operator/keyring", "POST /v1/operator/keyring", "PUT /v1/operator/keyring"} {
		bodies[p] = keyBody
	}
	stranger, _ := acl.NewSecret()
	type failure struct {
		in     apiRequest
		values map[string]string
		status int
		code   string
	}
	failures := map[string]failure{
		// What the anonymous token may call fails another way.
		"GET /v1/catalog/services":       {in: apiRequest{query: "?index=abc"}, status: 400, code: httpjson.CodeInvalid},
		"GET /v1/catalog/nodes":          {in: apiRequest{query: "?wait=soon"}, status: 400, code: httpjson.CodeInvalid},
		"GET /v1/catalog/service/{name}": {in: apiRequest{query: "?index=-1"}, status: 400, code: httpjson.CodeInvalid},
		"GET /v1/health/service/{name}":  {in: apiRequest{query: "?passing=maybe"}, status: 400, code: httpjson.CodeInvalid},
		"GET /v1/agent/services":         {in: apiRequest{rawToken: "not-a-token"}, status: 400, code: httpjson.CodeMalformedToken},
		"GET /v1/agent/checks":           {in: apiRequest{rawToken: "not-a-token"}, status: 400, code: httpjson.CodeMalformedToken},
		"GET /v1/agent/members":          {in: apiRequest{token: stranger}, status: 403, code: httpjson.CodeTokenNotFound},
		"GET /v1/agent/service/{id}":     {in: apiRequest{token: mgmt}, values: map[string]string{"id": "nope"}, status: 404, code: httpjson.CodeNotFound},
		"PUT /v1/acl/bootstrap":          {status: 409, code: httpjson.CodeBootstrapDone},
		"GET /v1/acl/token/self":         {in: apiRequest{token: stranger}, status: 403, code: httpjson.CodeTokenNotFound},
		"GET /v1/policy":                 {in: apiRequest{query: "?kind=Nope"}, status: 400, code: httpjson.CodeInvalid},
		"GET /v1/agent/maintenance":      {in: apiRequest{rawToken: "not-a-token"}, status: 400, code: httpjson.CodeMalformedToken},
		"GET /v1/ui/topology":            {in: apiRequest{rawToken: "not-a-token"}, status: 400, code: httpjson.CodeMalformedToken},
		// Leave fails for want of agent:write: a token that may leave
		// would stop the agent under test.
		"PUT /v1/agent/leave": {status: 403, code: httpjson.CodePermissionDenied},
		// And a handler's own refusals, with a token that may call it.
		"PUT /v1/agent/service/register":         {in: apiRequest{token: mgmt, body: `{"name": "web", "port": "80"}`}, status: 400, code: httpjson.CodeInvalid},
		"PUT /v1/agent/check/pass/{id}":          {in: apiRequest{token: mgmt}, values: map[string]string{"id": "nope"}, status: 404, code: httpjson.CodeNotFound},
		"GET /v1/policy/{kind}/{name}":           {in: apiRequest{token: mgmt}, values: map[string]string{"name": "nope"}, status: 404, code: httpjson.CodeNotFound},
		"PUT /v1/policy":                         {in: apiRequest{token: mgmt, body: `{"kind": "ServiceDefaults", "name": "web", "protocol": "smtp"}`}, status: 400, code: httpjson.CodeInvalid},
		"GET /v1/acl/token/{accessor}":           {in: apiRequest{token: mgmt}, values: map[string]string{"accessor": "00000000-0000-4000-8000-000000000000"}, status: 404, code: httpjson.CodeNotFound},
		"PUT /v1/acl/policy":                     {in: apiRequest{token: mgmt, body: `{"name": "x", "rules": {"service": {"web": "sing"}}}`}, status: 400, code: httpjson.CodeInvalid},
		"PUT /v1/ca/token":                       {in: apiRequest{token: mgmt, body: `{"node": "a/b"}`}, status: 400, code: httpjson.CodeInvalid},
		"PUT /v1/operator/keyring/install":       {in: apiRequest{token: mgmt, body: `{"key": "abc"}`}, status: 400, code: httpjson.CodeInvalid},
		"DELETE /v1/operator/keyring":            {in: apiRequest{token: mgmt, body: keyBody}, status: 400, code: httpjson.CodePrimaryKey},
		"PUT /v1/snapshot":                       {in: apiRequest{token: mgmt, body: "not a snapshot", contentType: "application/gzip"}, status: 400, code: httpjson.CodeBadSnapshot},
		"PUT /v1/agent/maintenance":              {in: apiRequest{token: mgmt, query: "?enable=maybe"}, status: 400, code: httpjson.CodeInvalid},
		"PUT /v1/agent/service/maintenance/{id}": {in: apiRequest{token: mgmt, query: "?enable=true"}, values: map[string]string{"id": "nope"}, status: 404, code: httpjson.CodeNotFound},
		"PUT /v1/agent/force-leave/{node}":       {in: apiRequest{token: mgmt}, values: map[string]string{"node": "nope"}, status: 404, code: httpjson.CodeNotFound},
		"GET /v1/agent/monitor":                  {in: apiRequest{token: mgmt, query: "?loglevel=loud"}, status: 400, code: httpjson.CodeInvalid},
	}
	// More refusals of the routes that have several, each a status the
	// document must list.
	more := []struct {
		pattern string
		failure
	}{
		{"PUT /v1/agent/maintenance", failure{in: apiRequest{query: "?enable=true"}, status: 403, code: httpjson.CodePermissionDenied}},
		{"PUT /v1/agent/maintenance", failure{in: apiRequest{token: mgmt}, status: 400, code: httpjson.CodeInvalid}},
		{"PUT /v1/agent/maintenance", failure{in: apiRequest{token: mgmt, query: "?enable=true&reason=" + strings.Repeat("x", 513)}, status: 400, code: httpjson.CodeInvalid}},
		{"PUT /v1/agent/maintenance", failure{in: apiRequest{token: mgmt, query: "?enable=true&reason=a%0Ab"}, status: 400, code: httpjson.CodeInvalid}},
		{"PUT /v1/agent/service/maintenance/{id}", failure{in: apiRequest{query: "?enable=true"}, status: 403, code: httpjson.CodePermissionDenied}},
		{"PUT /v1/agent/service/maintenance/{id}", failure{in: apiRequest{token: mgmt, query: "?enable=1x"}, status: 400, code: httpjson.CodeInvalid}},
		{"PUT /v1/agent/force-leave/{node}", failure{status: 403, code: httpjson.CodePermissionDenied}},
		{"PUT /v1/agent/force-leave/{node}", failure{in: apiRequest{token: mgmt}, status: 409, code: httpjson.CodeConflict}}, // the agent itself is alive
		{"GET /v1/agent/monitor", failure{status: 403, code: httpjson.CodePermissionDenied}},
	}
	// The one route that nothing makes fail: the trust bundle is open, and
	// this agent holds one (its 405 was checked above).
	noFailure := map[string]string{
		"GET /v1/ca/roots":  "open, and answered whenever the CA has a bundle",
		"GET /ui/":          "open: the UI's files (ui/ui_test.go tests its 404s)",
		"GET /v1/ui/config": "open: whether ACLs are on",
	}
	expectFailure := func(r httpapi.Route, f failure) {
		t.Helper()
		d := ops[r.Pattern]
		if d.op == nil {
			return // reported above
		}
		vals := map[string]string{}
		for k, v := range values {
			vals[k] = v
		}
		if strings.HasPrefix(r.Pattern, "PUT /v1/agent/check/") {
			vals["id"] = "web-ttl"
		}
		for k, v := range f.values {
			vals[k] = v
		}
		req, resp, body := send(t, d.method, base+fill(d.path, vals), f.in)
		checkError(r.Pattern, resp, body, f.status, f.code)
		if marked := resp.Header.Get(httpjson.DeprecationHeader) != ""; marked != (r.Successor != "") {
			t.Errorf("%s: Deprecation header %q on a route whose successor is %q", r.Pattern, resp.Header.Get(httpjson.DeprecationHeader), r.Successor)
		}
		if err := validateAnswer(ctx, doc, d, vals, req, resp, body); err != nil {
			t.Errorf("%s: the error answer does not match the document: %v", r.Pattern, err)
		}
	}
	byPattern := map[string]httpapi.Route{}
	for _, r := range routes {
		byPattern[r.Pattern] = r
		if noFailure[r.Pattern] != "" {
			continue
		}
		f, ok := failures[r.Pattern]
		if !ok {
			f = failure{in: apiRequest{body: bodies[r.Pattern]}, status: 403, code: httpjson.CodePermissionDenied}
		}
		expectFailure(r, f)
	}
	for _, m := range more {
		r, ok := byPattern[m.pattern]
		if !ok {
			t.Errorf("%s: not mounted", m.pattern)
			continue
		}
		expectFailure(r, m.failure)
	}

	// (d) Real answers, with the management token, against their schemas;
	// the requests against theirs.
	for _, tc := range []struct {
		pattern  string
		in       apiRequest
		values   map[string]string
		contains string // in the compacted answer, so that the schema met what it describes
	}{
		{pattern: "GET /v1/agent/self"},
		{pattern: "GET /v1/agent/members"},
		{pattern: "GET /v1/agent/services"},
		{pattern: "GET /v1/agent/service/{id}"},
		{pattern: "GET /v1/agent/checks"},
		{pattern: "PUT /v1/agent/service/register", in: apiRequest{body: `{"name": "api", "port": 81, "tags": ["v2"], "meta": {"team": "a"}, "check": {"id": "api-ttl", "ttl": "1m"}}`}},
		{pattern: "PUT /v1/agent/check/pass/{id}", in: apiRequest{query: "?note=ok"}, values: map[string]string{"id": "web-ttl"}},
		{pattern: "PUT /v1/agent/check/update/{id}", in: apiRequest{body: `{"status": "passing", "output": "fine"}`}, values: map[string]string{"id": "api-ttl"}},
		{pattern: "GET /v1/agent/tunnel"},
		{pattern: "GET /v1/catalog/services", in: apiRequest{query: "?index=1&wait=1s"}},
		{pattern: "GET /v1/catalog/nodes"},
		{pattern: "GET /v1/catalog/service/{name}", in: apiRequest{query: "?tag=v1"}},
		{pattern: "GET /v1/health/service/{name}", in: apiRequest{query: "?passing"}},
		{pattern: "PUT /v1/policy", in: apiRequest{body: `{"kind": "ServiceDefaults", "name": "web", "protocol": "http"}`}},
		{pattern: "GET /v1/policy", in: apiRequest{query: "?kind=ServiceDefaults"}},
		{pattern: "GET /v1/policy/status"},
		{pattern: "GET /v1/policy/{kind}/{name}", in: apiRequest{query: "?consistent"}},
		{pattern: "DELETE /v1/policy/{kind}/{name}"},
		{pattern: "PUT /v1/acl/policy", in: apiRequest{body: `{"name": "web-read", "description": "reads web", "rules": {"service": {"web": "read"}, "agent": "read"}}`}},
		{pattern: "GET /v1/acl/policies"},
		{pattern: "GET /v1/acl/policy/{id}", values: map[string]string{"id": "web-read"}},
		{pattern: "PUT /v1/acl/token", in: apiRequest{body: `{"description": "reads web", "policies": [{"name": "web-read"}], "ttl": "1h"}`}},
		{pattern: "GET /v1/acl/tokens"},
		{pattern: "GET /v1/acl/token/self"},
		{pattern: "GET /v1/acl/token/{accessor}"},
		{pattern: "GET /v1/ca/roots"},
		{pattern: "GET /v1/ca/leaf"},
		{pattern: "PUT /v1/ca/token", in: apiRequest{body: `{"node": "web-9", "ttl": "5m"}`}},
		{pattern: "POST /v1/ca/token", in: apiRequest{body: `{"node": "web-8"}`}},
		{pattern: "GET /v1/operator/keyring"},
		{pattern: "PUT /v1/operator/keyring/install", in: apiRequest{body: keyBody}},
		{pattern: "GET /v1/operator/raft/peers"},
		{pattern: "GET /v1/snapshot"},
		{pattern: "GET /v1/metrics"},
		{pattern: "GET /v1/ui/topology"},
		{pattern: "GET /v1/ui/config"},
		// Maintenance last, since it takes the node out of service.
		{pattern: "PUT /v1/agent/maintenance", in: apiRequest{query: "?enable=true&reason=kernel+upgrade"}, contains: `"node":{"reason":"kernel upgrade"`},
		{pattern: "PUT /v1/agent/service/maintenance/{id}", in: apiRequest{query: "?enable=true"}, contains: `"services":[{"service_id":"web","service_name":"web"`},
		{pattern: "GET /v1/agent/maintenance", contains: `"services":[{"service_id":"web"`},
		{pattern: "GET /v1/agent/checks", contains: `"type":"maintenance"`},
		{pattern: "PUT /v1/agent/service/maintenance/{id}", in: apiRequest{query: "?enable=false"}, contains: `"services":[]`},
		{pattern: "PUT /v1/agent/maintenance", in: apiRequest{query: "?enable=false"}, contains: `"node":null`},
	} {
		d, ok := ops[tc.pattern]
		if !ok {
			t.Errorf("%s: not in the document", tc.pattern)
			continue
		}
		vals := map[string]string{}
		for k, v := range values {
			vals[k] = v
		}
		for k, v := range tc.values {
			vals[k] = v
		}
		in := tc.in
		in.token = mgmt
		req, resp, body := send(t, d.method, base+fill(d.path, vals), in)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s", tc.pattern, resp.StatusCode, body)
			continue
		}
		if err := validateRequest(ctx, doc, d, vals, req); err != nil {
			t.Errorf("%s: the test's request does not match the document: %v", tc.pattern, err)
		}
		// validateRequest read the body; the response's check reads it again.
		req, _ = http.NewRequest(d.method, base+fill(d.path, vals)+in.query, bytes.NewReader([]byte(in.body)))
		if err := validateAnswer(ctx, doc, d, vals, req, resp, body); err != nil {
			t.Errorf("%s: the answer does not match the document: %v\n%s", tc.pattern, err, truncate(body))
		}
		var compact bytes.Buffer
		if tc.contains != "" && (json.Compact(&compact, body) != nil || !strings.Contains(compact.String(), tc.contains)) {
			t.Errorf("%s: the answer lacks %s:\n%s", tc.pattern, tc.contains, truncate(body))
		}
	}

	// The monitor's answer is a stream: its head, and its first line
	// once the agent logs one, not its end.
	checkMonitor(t, ctx, doc, ops, base, mgmt, func() {
		if err := m.RegisterService(ctx, api.ServiceDefinition{Name: "logged", Port: 82}); err != nil {
			t.Error(err)
		}
	})
}

// checkMonitor opens GET /v1/agent/monitor, makes the agent log with
// trigger, and validates the answer with the first line streamed.
func checkMonitor(t *testing.T, ctx context.Context, doc *openapi3.T, ops map[string]documented, base, token string, trigger func()) {
	t.Helper()
	const pattern = "GET /v1/agent/monitor"
	d, ok := ops[pattern]
	if !ok {
		t.Errorf("%s: not in the document", pattern)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	url := base + d.path + "?loglevel=info"
	req, err := http.NewRequestWithContext(ctx, d.method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	acl.SetToken(req.Header, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", pattern, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Errorf("%s: %d %s", pattern, resp.StatusCode, b)
		return
	}
	trigger()
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	if err != nil {
		t.Errorf("%s: no line streamed: %v", pattern, err)
		return
	}
	vreq, _ := http.NewRequest(d.method, url, nil)
	if err := validateRequest(ctx, doc, d, nil, vreq); err != nil {
		t.Errorf("%s: the test's request does not match the document: %v", pattern, err)
	}
	if err := validateAnswer(ctx, doc, d, nil, vreq, resp, line); err != nil {
		t.Errorf("%s: the answer does not match the document: %v\n%s", pattern, err, line)
	}
}

func jsonValue(b []byte) any {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Sprintf("not JSON: %q", b)
	}
	return v
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "..."
	}
	return string(b)
}
