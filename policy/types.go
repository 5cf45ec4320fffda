// Package policy holds the typed policy documents of the mesh: their YAML
// form, their strict validation, and an immutable Set with the queries the
// data plane asks on its hot path (who may call whom, how traffic is split,
// which protocol and resilience settings apply).
//
// It is a leaf package: it knows nothing of Raft or of the network. The
// raftstore package replicates documents; the transport package reads a *Set.
//
// Every document has a kind and a name:
//
//	ServiceDefaults          name = service or "*"      protocol
//	Route                    name = service             L7 matches, each pointing to a Split
//	Split                    name = split               weights over subsets of a service
//	Resilience               name = service or "*"      retries, timeouts, circuit breaker, outlier ejection
//	Fault                    name = service or "*"      requests aborted or delayed on purpose, for tests
//	Intention                name = destination or "*"  sources allowed or denied
//	IntentionDefaults        name = "default"           the mesh-wide action when no intention matches
//	ServiceIdentity          name = service or "*"      the nodes that may hold the service's identity
//	ServiceIdentityDefaults  name = "default"           whether any node or none may hold an identity no ServiceIdentity covers
//
// Names are matched case-insensitively, as the catalog matches service names.
package policy

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Kind is the type of a document, the value of its `kind:` key.
type Kind string

// The document kinds.
const (
	KindServiceDefaults   Kind = "ServiceDefaults"
	KindRoute             Kind = "Route"
	KindSplit             Kind = "Split"
	KindResilience        Kind = "Resilience"
	KindFault             Kind = "Fault"
	KindIntention         Kind = "Intention"
	KindIntentionDefaults Kind = "IntentionDefaults"
	KindServiceIdentity   Kind = "ServiceIdentity"
	// KindServiceIdentityDefaults is the mesh-wide switch for services that
	// no ServiceIdentity document covers.
	KindServiceIdentityDefaults Kind = "ServiceIdentityDefaults"
)

// Kinds lists every kind, in the order documents are listed.
var Kinds = []Kind{KindServiceDefaults, KindRoute, KindSplit, KindResilience, KindFault, KindIntention, KindIntentionDefaults, KindServiceIdentity, KindServiceIdentityDefaults}

// ParseKind returns the kind called s, matched case-insensitively so that the
// CLI accepts `split` as well as `Split`.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if strings.EqualFold(string(k), s) {
			return k, nil
		}
	}
	return "", fmt.Errorf("%w: kind %q is unknown (want one of %s)", ErrInvalid, s, kindList())
}

func kindList() string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// Wildcard is the name of a document that applies to every service that has
// no document of its own (ServiceDefaults, Resilience, Fault, Intention), and the
// source of an intention that matches every caller.
const Wildcard = "*"

// DefaultsName is the only name an IntentionDefaults or a
// ServiceIdentityDefaults document may have.
const DefaultsName = "default"

// Spec is the kind-specific body of a document. It is implemented by
// *ServiceDefaults, *Route, *Split, *Resilience, *Fault, *Intention,
// *IntentionDefaults, *ServiceIdentity and *ServiceIdentityDefaults.
type Spec interface {
	// Kind is the kind this spec belongs to.
	Kind() Kind
	validate(v *validator)
}

// Document is one policy document: a kind, a name and the body of that kind.
// Its JSON and YAML forms are flat: `kind`, `name`, then the spec's fields.
type Document struct {
	Kind Kind
	Name string
	// Spec is never nil in a parsed document, and its Kind() is Kind.
	Spec Spec
}

// Key identifies a document.
type Key struct {
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
}

// String is "Kind/name".
func (k Key) String() string { return string(k.Kind) + "/" + k.Name }

// Normal returns the key as stored: names are compared case-insensitively.
func (k Key) Normal() Key { return Key{Kind: k.Kind, Name: strings.ToLower(k.Name)} }

// Key returns the document's key.
func (d *Document) Key() Key { return Key{Kind: d.Kind, Name: d.Name} }

// Entry is a stored document with the Raft indexes that created and last
// modified it. ModifyIndex is what a compare-and-set update names.
type Entry struct {
	Document
	CreateIndex uint64
	ModifyIndex uint64
}

// Protocol is the application protocol of a service.
type Protocol string

// Protocols. Only tcp is proxied per connection; the others per request.
const (
	ProtocolTCP   Protocol = "tcp"
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTP2 Protocol = "http2"
	ProtocolGRPC  Protocol = "grpc"
)

// IsL7 reports whether the protocol is proxied per request.
func (p Protocol) IsL7() bool { return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC }

// ServiceDefaults sets the protocol of a service.
type ServiceDefaults struct {
	// Protocol is tcp when empty.
	Protocol Protocol `yaml:"protocol" json:"protocol,omitempty"`
}

// Route sends requests of an L7 service to splits by path prefix, header and
// method. Rules are tried in order and the first that matches wins; a
// request matching none goes to the service's own Split, or to all of its
// instances.
type Route struct {
	Routes []RouteRule `yaml:"routes" json:"routes"`
}

// RouteRule is one match and where it sends the request.
type RouteRule struct {
	Match RouteMatch `yaml:"match" json:"match"`
	// Split names the Split document that receives the matching requests.
	Split string `yaml:"split" json:"split"`
	// RetryNonIdempotent lets the matching requests be retried under the
	// destination's retries whatever their method: the route's owner
	// vouches that a POST or PATCH there may run twice. Without it those
	// methods are retried only when the request surely never reached an
	// app (connect-failure, refused-stream).
	RetryNonIdempotent bool `yaml:"retry_non_idempotent" json:"retry_non_idempotent,omitempty"`
	// Hedge sends a second try of a matching idempotent request to
	// another instance when the first has not answered within that
	// instance's p95 latency; the first answer wins. Hedges draw from the
	// destination's retry budget.
	Hedge bool `yaml:"hedge" json:"hedge,omitempty"`
}

// RouteOptions are the per-request retry options of the Route rule a
// request matched; the zero value is a request no rule marks.
type RouteOptions struct {
	RetryNonIdempotent bool
	Hedge              bool
}

// Options returns the rule's retry options.
func (r *RouteRule) Options() RouteOptions {
	return RouteOptions{RetryNonIdempotent: r.RetryNonIdempotent, Hedge: r.Hedge}
}

// IdempotentMethod reports whether a request of method may run twice
// with the effect of once (RFC 9110 9.2.2): GET, HEAD, OPTIONS, TRACE,
// PUT and DELETE.
func IdempotentMethod(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// RouteMatch holds conditions that must all be true. An empty match matches
// every request. Routes and the permissions of intentions share it.
type RouteMatch struct {
	// PathExact, when set, is the whole path a request must have (without
	// the query), compared byte for byte. It must start with "/", and a
	// match sets it or PathPrefix, not both.
	PathExact string `yaml:"path_exact" json:"path_exact,omitempty"`
	// PathPrefix must start with "/". Empty matches any path.
	PathPrefix string `yaml:"path_prefix" json:"path_prefix,omitempty"`
	// Headers must all be present with exactly these values.
	Headers []HeaderMatch `yaml:"headers" json:"headers,omitempty"`
	// Methods, when set, lists the HTTP methods that match: upper-case
	// tokens, compared case-sensitively as HTTP methods are.
	Methods []string `yaml:"methods" json:"methods,omitempty"`
}

// IsEmpty reports whether the match sets no condition, and so matches every
// request.
func (m *RouteMatch) IsEmpty() bool {
	return m.PathExact == "" && m.PathPrefix == "" && len(m.Headers) == 0 && len(m.Methods) == 0
}

// HeaderMatch is an exact header value match. Names are case-insensitive.
type HeaderMatch struct {
	Name  string `yaml:"name" json:"name"`
	Exact string `yaml:"exact" json:"exact"`
}

// Split spreads the traffic of a service over subsets of its instances.
// The Split named like a service is that service's default split.
type Split struct {
	// Service is the service whose instances are split. It defaults to the
	// document's name.
	Service string `yaml:"service" json:"service,omitempty"`
	// Splits' weights are whole percents and sum to 100.
	Splits []SplitTarget `yaml:"splits" json:"splits"`
}

// SplitTarget is one weighted subset.
type SplitTarget struct {
	// Weight is a whole percent, 0 to 100.
	Weight int    `yaml:"weight" json:"weight"`
	Subset Subset `yaml:"subset" json:"subset"`
}

// Subset chooses instances that carry every tag and every meta pair listed.
// An empty subset is every instance.
type Subset struct {
	Tags []string          `yaml:"tags" json:"tags,omitempty"`
	Meta map[string]string `yaml:"meta" json:"meta,omitempty"`
}

// Resilience sets how callers treat a destination service. Each section left
// out falls back to the "*" document's, then to DefaultResilience.
type Resilience struct {
	Retries          *Retries          `yaml:"retries" json:"retries,omitempty"`
	Timeouts         *Timeouts         `yaml:"timeouts" json:"timeouts,omitempty"`
	CircuitBreaker   *CircuitBreaker   `yaml:"circuit_breaker" json:"circuit_breaker,omitempty"`
	OutlierDetection *OutlierDetection `yaml:"outlier_detection" json:"outlier_detection,omitempty"`
}

// RetryCondition is a failure after which a request may be retried.
type RetryCondition string

// Retry conditions. connect-failure and refused-stream also apply to tcp.
const (
	RetryConnectFailure    RetryCondition = "connect-failure"
	RetryRefusedStream     RetryCondition = "refused-stream"
	RetryReset             RetryCondition = "reset"
	Retry5xx               RetryCondition = "5xx"
	RetryGatewayError      RetryCondition = "gateway-error" // 502, 503, 504
	RetryRetriable4xx      RetryCondition = "retriable-4xx" // 409
	RetryGRPCUnavailable   RetryCondition = "unavailable"
	RetryGRPCResExhausted  RetryCondition = "resource-exhausted"
	RetryGRPCCancelled     RetryCondition = "cancelled"
	RetryGRPCDeadlineExcdd RetryCondition = "deadline-exceeded"
)

var retryConditions = []RetryCondition{RetryConnectFailure, RetryRefusedStream, RetryReset, Retry5xx,
	RetryGatewayError, RetryRetriable4xx, RetryGRPCUnavailable, RetryGRPCResExhausted, RetryGRPCCancelled, RetryGRPCDeadlineExcdd}

// Retries bounds how a failed request is tried again.
type Retries struct {
	// Attempts is the number of retries after the first try, 0 to 10.
	Attempts int `yaml:"attempts" json:"attempts"`
	// RetryOn lists the failures that are retried.
	RetryOn []RetryCondition `yaml:"retry_on" json:"retry_on,omitempty"`
	// PerTryTimeout bounds each try; 0 means only the request timeout applies.
	PerTryTimeout Duration `yaml:"per_try_timeout" json:"per_try_timeout,omitempty"`
	// Budget caps retries as a share of requests, so that retries cannot
	// multiply the load on a struggling service.
	Budget *RetryBudget `yaml:"budget" json:"budget,omitempty"`
}

// RetryBudget allows retries up to Percent of the requests of the last ten
// seconds, and at least MinPerSecond retries per second.
type RetryBudget struct {
	Percent      int `yaml:"percent" json:"percent"`
	MinPerSecond int `yaml:"min_per_second" json:"min_per_second"`
}

// Timeouts bound the phases of a call. Zero means no limit (except Connect).
type Timeouts struct {
	Connect Duration `yaml:"connect" json:"connect,omitempty"`
	Request Duration `yaml:"request" json:"request,omitempty"`
	Idle    Duration `yaml:"idle" json:"idle,omitempty"`
}

// CircuitBreaker bounds the load one caller sends to a service. Zero means
// the default.
type CircuitBreaker struct {
	MaxConnections int `yaml:"max_connections" json:"max_connections,omitempty"`
	MaxPending     int `yaml:"max_pending" json:"max_pending,omitempty"`
	MaxRequests    int `yaml:"max_requests" json:"max_requests,omitempty"`
}

// OutlierDetection ejects an instance after consecutive errors, for
// BaseEjectionTime times the number of times it was ejected.
type OutlierDetection struct {
	ConsecutiveErrors int      `yaml:"consecutive_errors" json:"consecutive_errors"`
	Interval          Duration `yaml:"interval" json:"interval,omitempty"`
	BaseEjectionTime  Duration `yaml:"base_ejection_time" json:"base_ejection_time,omitempty"`
	MaxEjectedPercent int      `yaml:"max_ejected_percent" json:"max_ejected_percent"`
}

// Fault injects failures into the requests a service receives, so that
// operators (and the mesh's own tests) can see how callers cope. The
// receiving agent applies it to each request of an http, http2 or grpc
// service after the request was authorized, before it reaches the app; to a
// tcp service it applies per connection. It is a testing tool: a Fault left
// in place fails real traffic.
type Fault struct {
	// Abort answers a share of the requests with an error instead of the
	// app's answer.
	Abort *FaultAbort `yaml:"abort" json:"abort,omitempty"`
	// Delay holds a share of the requests back before they reach the app.
	// A request drawn for both is delayed, then aborted.
	Delay *FaultDelay `yaml:"delay" json:"delay,omitempty"`
	// Match, when set, limits the fault to requests that carry its
	// headers. A tcp service has no headers: a Fault with a match never
	// applies to it.
	Match *FaultMatch `yaml:"match" json:"match,omitempty"`
}

// FaultAbort is the abort part of a Fault.
type FaultAbort struct {
	// Percent is the share of requests aborted, 0 to 100; decimals allowed.
	Percent float64 `yaml:"percent" json:"percent"`
	// HTTPStatus is the status of an aborted HTTP request, 400 to 599.
	// 0 means DefaultFaultHTTPStatus.
	HTTPStatus int `yaml:"http_status" json:"http_status,omitempty"`
	// GRPCStatus is the grpc-status of an aborted gRPC request, 1 to 16.
	// 0 means DefaultFaultGRPCStatus.
	GRPCStatus int `yaml:"grpc_status" json:"grpc_status,omitempty"`
}

// Defaults of an abort that sets only one of its statuses.
const (
	DefaultFaultHTTPStatus = 503 // Service Unavailable
	DefaultFaultGRPCStatus = 14  // UNAVAILABLE
)

// Statuses returns the HTTP status and the grpc-status of an aborted
// request, defaults applied.
func (a *FaultAbort) Statuses() (httpStatus, grpcStatus int) {
	httpStatus, grpcStatus = a.HTTPStatus, a.GRPCStatus
	if httpStatus == 0 {
		httpStatus = DefaultFaultHTTPStatus
	}
	if grpcStatus == 0 {
		grpcStatus = DefaultFaultGRPCStatus
	}
	return httpStatus, grpcStatus
}

// FaultDelay is the delay part of a Fault.
type FaultDelay struct {
	// Percent is the share of requests delayed, 0 to 100; decimals allowed.
	Percent float64 `yaml:"percent" json:"percent"`
	// Fixed is how long a delayed request is held, more than 0 and at most
	// MaxFaultDelay. A request's deadline still applies: a delay past it
	// ends as the deadline does.
	Fixed Duration `yaml:"fixed" json:"fixed"`
}

// FaultMatch lists the headers a request must carry, each with exactly the
// value given (names case-insensitive), for the Fault to apply to it.
type FaultMatch struct {
	Headers []HeaderMatch `yaml:"headers" json:"headers"`
}

// Applies reports whether the fault applies to a request whose headers
// header gives (nil: a request without headers, such as a tcp
// connection). It allocates nothing.
func (f *Fault) Applies(header func(name string) (string, bool)) bool {
	if f.Match == nil {
		return true
	}
	for _, h := range f.Match.Headers {
		if header == nil {
			return false
		}
		if v, ok := header(h.Name); !ok || v != h.Exact {
			return false
		}
	}
	return true
}

// FaultDecision is what a Fault does to one request or connection: the
// zero value is nothing.
type FaultDecision struct {
	// Delay is how long it is held back; 0 for none.
	Delay time.Duration
	// Abort is whether the mesh answers it (or, for a tcp connection,
	// closes it) instead of the app.
	Abort bool
}

// Decide draws what f does to a request whose headers header gives (nil
// for a tcp connection). draw returns a number in [0, 1) and must be safe
// for the caller's concurrency. The delay and the abort are drawn each on
// its own, so that over many requests each applies to its percent of them;
// a percent of 0 or 100 draws nothing. A nil f decides nothing.
func (f *Fault) Decide(header func(name string) (string, bool), draw func() float64) FaultDecision {
	var d FaultDecision
	if f == nil || !f.Applies(header) {
		return d
	}
	if f.Delay != nil && drawn(f.Delay.Percent, draw) {
		d.Delay = f.Delay.Fixed.D()
	}
	if f.Abort != nil && drawn(f.Abort.Percent, draw) {
		d.Abort = true
	}
	return d
}

// drawn reports whether a request falls in percent of requests.
func drawn(percent float64, draw func() float64) bool {
	switch {
	case percent <= 0:
		return false
	case percent >= 100:
		return true
	}
	return draw()*100 < percent
}

// Action is what an intention does.
type Action string

// Actions.
const (
	Allow Action = "allow"
	Deny  Action = "deny"
)

// Intention lists which sources may call the destination service named by
// the document (or every destination, for "*").
type Intention struct {
	Sources []IntentionSource `yaml:"sources" json:"sources"`
}

// IntentionSource is one source service ("*" for any) and what it may do:
// either an Action for all of its traffic, or Permissions that decide each
// request (L7), never both.
type IntentionSource struct {
	Name string `yaml:"name" json:"name"`
	// Action decides every connection and request from the source. Empty
	// when Permissions are set.
	Action Action `yaml:"action" json:"action,omitempty"`
	// Permissions decide each request to a per-request destination: the
	// first whose HTTP match holds decides; when none does, the
	// IntentionDefaults document (else the agent's default) decides. A
	// per-connection stream from the source is denied, so that it cannot
	// bypass them. At most MaxPermissions.
	Permissions []Permission `yaml:"permissions" json:"permissions,omitempty"`
	Description string       `yaml:"description" json:"description,omitempty"`
}

// Permission is one L7 rule of an intention source: requests matching HTTP
// get Action.
type Permission struct {
	Action Action `yaml:"action" json:"action"`
	// HTTP must set at least one condition: a permission that matches
	// every request is the source's action.
	HTTP RouteMatch `yaml:"http" json:"http"`
}

// IntentionDefaults is the mesh-wide action when no intention matches.
type IntentionDefaults struct {
	Action Action `yaml:"action" json:"action"`
}

// ServiceIdentity lists the nodes that may hold the identity of the service
// named by the document, spiffe://<trust-domain>/svc/<service>: the CA names
// only those nodes for the service in their certificates, and receiving
// agents honour the claim only from them, and calling agents send the
// service's traffic only to them. The "*" document applies to every service
// that has no document of its own. A service with neither is decided by the
// ServiceIdentityDefaults document: by default any node may hold it whose
// agent token may write the service (any node that registers it, with ACLs
// disabled).
type ServiceIdentity struct {
	// Nodes are node names, or patterns in which '*' stands for any run of
	// characters ("web-*"). Matched case-insensitively. An empty list lets
	// no node hold the identity.
	Nodes []string `yaml:"nodes" json:"nodes"`
}

// ServiceIdentityDefaults is the mesh-wide mode for the identity of a service
// that has no ServiceIdentity document of its own and that no "*" document
// covers. It is a document of its own kind, as IntentionDefaults is, so that
// turning the mesh to default deny is one document with one name, and so
// that a "*" ServiceIdentity keeps its meaning of a default list of nodes.
type ServiceIdentityDefaults struct {
	// Mode is allow (any node may hold such an identity, as without the
	// document) or deny (no node may).
	Mode Action `yaml:"mode" json:"mode"`
}

// Kind implements Spec.
func (*ServiceDefaults) Kind() Kind { return KindServiceDefaults }

// Kind implements Spec.
func (*Route) Kind() Kind { return KindRoute }

// Kind implements Spec.
func (*Split) Kind() Kind { return KindSplit }

// Kind implements Spec.
func (*Resilience) Kind() Kind { return KindResilience }

// Kind implements Spec.
func (*Fault) Kind() Kind { return KindFault }

// Kind implements Spec.
func (*Intention) Kind() Kind { return KindIntention }

// Kind implements Spec.
func (*IntentionDefaults) Kind() Kind { return KindIntentionDefaults }

// Kind implements Spec.
func (*ServiceIdentity) Kind() Kind { return KindServiceIdentity }

// Kind implements Spec.
func (*ServiceIdentityDefaults) Kind() Kind { return KindServiceIdentityDefaults }

// newSpec returns an empty spec of kind k, or nil for an unknown kind.
func newSpec(k Kind) Spec {
	switch k {
	case KindServiceDefaults:
		return &ServiceDefaults{}
	case KindRoute:
		return &Route{}
	case KindSplit:
		return &Split{}
	case KindResilience:
		return &Resilience{}
	case KindFault:
		return &Fault{}
	case KindIntention:
		return &Intention{}
	case KindIntentionDefaults:
		return &IntentionDefaults{}
	case KindServiceIdentity:
		return &ServiceIdentity{}
	case KindServiceIdentityDefaults:
		return &ServiceIdentityDefaults{}
	}
	return nil
}

// Duration is a time.Duration written as a string such as "1.5s" in YAML and
// JSON. A bare number is refused, so that "5" cannot mean 5 nanoseconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String is the Go duration syntax.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"5s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }
