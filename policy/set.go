package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Set is the whole policy at one Raft index. It is immutable: readers share
// it without locks, and nothing reachable from it may be modified.
type Set struct {
	index   uint64
	entries map[Key]*Entry // by Key.Normal()
	byKind  map[Kind][]*Entry
	intents intentionTable
}

// NewSet builds the set at index from entries. Entries are trusted (they were
// validated when written); a later entry with the same key replaces an
// earlier one. It takes ownership of entries.
func NewSet(index uint64, entries []Entry) *Set {
	s := &Set{index: index, entries: make(map[Key]*Entry, len(entries)), byKind: map[Kind][]*Entry{}}
	for i := range entries {
		s.entries[entries[i].Key().Normal()] = &entries[i]
	}
	for _, e := range s.entries {
		s.byKind[e.Kind] = append(s.byKind[e.Kind], e)
	}
	for _, list := range s.byKind {
		sort.Slice(list, func(i, j int) bool { return strings.ToLower(list[i].Name) < strings.ToLower(list[j].Name) })
	}
	s.intents = newIntentionTable(s.byKind[KindIntention], s.entries[Key{KindIntentionDefaults, DefaultsName}])
	return s
}

// Empty is a set with no documents at index 0.
func Empty() *Set { return NewSet(0, nil) }

// Index is the Raft index of the last change the set includes.
func (s *Set) Index() uint64 { return s.index }

// Len is the number of documents.
func (s *Set) Len() int { return len(s.entries) }

// Get returns the document kind/name.
func (s *Set) Get(kind Kind, name string) (*Entry, bool) {
	e, ok := s.entries[Key{kind, strings.ToLower(name)}]
	return e, ok
}

// List returns the documents of kind, sorted by name, or every document
// (grouped by kind in the order of Kinds) when kind is empty. The slice is
// the caller's; the entries are shared.
func (s *Set) List(kind Kind) []*Entry {
	if kind != "" {
		return append([]*Entry(nil), s.byKind[kind]...)
	}
	out := make([]*Entry, 0, len(s.entries))
	for _, k := range Kinds {
		out = append(out, s.byKind[k]...)
	}
	return out
}

// Counts returns the number of documents of each kind.
func (s *Set) Counts() map[Kind]int {
	m := make(map[Kind]int, len(Kinds))
	for _, k := range Kinds {
		m[k] = len(s.byKind[k])
	}
	return m
}

// Entries returns copies of every entry, for serialising the set.
func (s *Set) Entries() []Entry {
	list := s.List("")
	out := make([]Entry, len(list))
	for i, e := range list {
		out[i] = *e
	}
	return out
}

// Digest is a hash of the set's content and index. Two agents with the same
// digest enforce the same policy.
func (s *Set) Digest() string {
	h := sha256.New()
	fmt.Fprintf(h, "index=%d\n", s.index)
	for _, e := range s.List("") {
		b, _ := json.Marshal(e)
		h.Write(b)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// MarshalJSON writes {"index": N, "entries": [...]}.
func (s *Set) MarshalJSON() ([]byte, error) {
	return json.Marshal(setJSON{Index: s.index, Entries: s.Entries()})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Set) UnmarshalJSON(b []byte) error {
	var j setJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = *NewSet(j.Index, j.Entries)
	return nil
}

type setJSON struct {
	Index   uint64  `json:"index"`
	Entries []Entry `json:"entries"`
}

// lookup returns the spec of kind for name, falling back to the "*"
// document when fallback is true.
func (s *Set) lookup(kind Kind, name string, fallback bool) Spec {
	if e, ok := s.entries[Key{kind, strings.ToLower(name)}]; ok {
		return e.Spec
	}
	if fallback {
		if e, ok := s.entries[Key{kind, Wildcard}]; ok {
			return e.Spec
		}
	}
	return nil
}

// ProtocolFor returns the protocol of service: its ServiceDefaults, else the
// "*" ServiceDefaults, else tcp.
func (s *Set) ProtocolFor(service string) Protocol {
	if sd, ok := s.lookup(KindServiceDefaults, service, true).(*ServiceDefaults); ok && sd.Protocol != "" {
		return sd.Protocol
	}
	return ProtocolTCP
}

// SplitFor returns the default split of service (the Split named like it),
// or nil when traffic goes to every instance.
func (s *Set) SplitFor(service string) *Split {
	sp, _ := s.lookup(KindSplit, service, false).(*Split)
	return sp
}

// SplitNamed returns the Split called name, as a route points to it.
func (s *Set) SplitNamed(name string) *Split {
	sp, _ := s.lookup(KindSplit, name, false).(*Split)
	return sp
}

// RouteFor returns the routes of service, or nil.
func (s *Set) RouteFor(service string) *Route {
	r, _ := s.lookup(KindRoute, service, false).(*Route)
	return r
}

// FaultFor returns the Fault document of service, else the "*" one, else
// nil: most services have none.
func (s *Set) FaultFor(service string) *Fault {
	if len(s.byKind[KindFault]) == 0 {
		return nil // the usual case, asked on every inbound request
	}
	f, _ := s.lookup(KindFault, service, true).(*Fault)
	return f
}

// ServiceOf returns the service a split sends traffic to: its service field,
// else the split's name.
func (sp *Split) ServiceOf(splitName string) string {
	if sp.Service != "" {
		return sp.Service
	}
	return splitName
}

// Request is what a route rule or an intention's permission matches on.
type Request struct {
	// Method is the HTTP method as sent, compared case-sensitively.
	Method string
	// Path is the URL path without the query, as the app will see it.
	// Matching compares it byte for byte: the caller decides what form it
	// is in (decoded or not, cleaned or not) and must use the same form for
	// every request.
	Path string
	// Header returns the value of a header (case-insensitive name), and
	// whether it is present. Nil means no headers.
	Header func(name string) (string, bool)
}

// Match returns the name of the split that receives req, and false when no
// rule matches.
func (r *Route) Match(req Request) (string, bool) {
	if rule := r.Rule(req); rule != nil {
		return rule.Split, true
	}
	return "", false
}

// Rule returns the first rule that matches req, or nil.
func (r *Route) Rule(req Request) *RouteRule {
	for i := range r.Routes {
		if r.Routes[i].Match.matches(&req) {
			return &r.Routes[i]
		}
	}
	return nil
}

func (m *RouteMatch) matches(req *Request) bool {
	if m.PathExact != "" && req.Path != m.PathExact {
		return false
	}
	if m.PathPrefix != "" && !strings.HasPrefix(req.Path, m.PathPrefix) {
		return false
	}
	if len(m.Methods) > 0 {
		ok := false
		for _, meth := range m.Methods {
			if meth == req.Method {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, h := range m.Headers {
		if req.Header == nil {
			return false
		}
		v, ok := req.Header(h.Name)
		if !ok || v != h.Exact {
			return false
		}
	}
	return true
}

// Matches reports whether an instance with tags and meta belongs to the
// subset. Tags compare case-insensitively, as the catalog's do.
func (sub *Subset) Matches(tags []string, meta map[string]string) bool {
	for _, want := range sub.Tags {
		found := false
		for _, t := range tags {
			if strings.EqualFold(t, want) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for k, v := range sub.Meta {
		if meta[k] != v {
			return false
		}
	}
	return true
}

// DefaultResilience is what applies where no Resilience document sets a
// section. Its values follow common proxy defaults: one retry on connect
// failures only, a 20% budget, a 5s connect timeout, no request timeout, a
// one hour idle timeout, generous breakers, and ejection after 5 errors.
var DefaultResilience = Resilience{
	Retries: &Retries{
		Attempts: 1,
		RetryOn:  []RetryCondition{RetryConnectFailure, RetryRefusedStream},
		Budget:   &RetryBudget{Percent: 20, MinPerSecond: 10},
	},
	Timeouts: &Timeouts{
		Connect: Duration(5 * time.Second),
		Idle:    Duration(time.Hour),
	},
	CircuitBreaker: &CircuitBreaker{MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024},
	OutlierDetection: &OutlierDetection{
		ConsecutiveErrors: 5,
		Interval:          Duration(10 * time.Second),
		BaseEjectionTime:  Duration(30 * time.Second),
		MaxEjectedPercent: 50,
	},
}

// ResilienceFor returns the effective settings for calls to service. Each
// section comes from the service's document, else from the "*" document,
// else from DefaultResilience; within the circuit breaker and timeouts a zero
// field takes the default's value. The result is shared and must not be
// modified.
func (s *Set) ResilienceFor(service string) *Resilience {
	own, _ := s.lookup(KindResilience, service, false).(*Resilience)
	wild, _ := s.lookup(KindResilience, Wildcard, false).(*Resilience)
	if own == nil && wild == nil {
		return &DefaultResilience
	}
	out := DefaultResilience
	pick := func(f func(r *Resilience) bool) *Resilience {
		if own != nil && f(own) {
			return own
		}
		if wild != nil && f(wild) {
			return wild
		}
		return nil
	}
	if r := pick(func(r *Resilience) bool { return r.Retries != nil }); r != nil {
		out.Retries = r.Retries
	}
	if r := pick(func(r *Resilience) bool { return r.Timeouts != nil }); r != nil {
		t := *r.Timeouts
		if t.Connect == 0 {
			t.Connect = DefaultResilience.Timeouts.Connect
		}
		if t.Idle == 0 {
			t.Idle = DefaultResilience.Timeouts.Idle
		}
		out.Timeouts = &t
	}
	if r := pick(func(r *Resilience) bool { return r.CircuitBreaker != nil }); r != nil {
		cb := *r.CircuitBreaker
		d := DefaultResilience.CircuitBreaker
		if cb.MaxConnections == 0 {
			cb.MaxConnections = d.MaxConnections
		}
		if cb.MaxPending == 0 {
			cb.MaxPending = d.MaxPending
		}
		if cb.MaxRequests == 0 {
			cb.MaxRequests = d.MaxRequests
		}
		out.CircuitBreaker = &cb
	}
	if r := pick(func(r *Resilience) bool { return r.OutlierDetection != nil }); r != nil {
		o := *r.OutlierDetection
		d := DefaultResilience.OutlierDetection
		if o.Interval == 0 {
			o.Interval = d.Interval
		}
		if o.BaseEjectionTime == 0 {
			o.BaseEjectionTime = d.BaseEjectionTime
		}
		out.OutlierDetection = &o
	}
	return &out
}

// Intentions answers who may call whom. It is a view of a Set.
type Intentions struct {
	set *Set
	// Fallback is the action when no intention matches and there is no
	// IntentionDefaults document. It is Deny unless the caller chose.
	Fallback Action
}

// Intentions returns the intention view of the set, with a Deny fallback.
func (s *Set) Intentions() Intentions { return Intentions{set: s, Fallback: Deny} }

// WithFallback returns the view with another fallback action (Allow in
// development mode).
func (in Intentions) WithFallback(a Action) Intentions { in.Fallback = a; return in }

// Allowed reports whether src may open a per-connection (L4) stream to
// dst, and why, in words fit for a log line. The most specific match wins:
//  1. the Intention for dst, source src;
//  2. the Intention for dst, source "*";
//  3. the Intention "*", source src;
//  4. the Intention "*", source "*";
//  5. the IntentionDefaults document;
//  6. the fallback.
//
// A deciding source with permissions denies: it decides each request, and
// a per-connection stream would carry requests past them.
func (in Intentions) Allowed(src, dst string) (bool, string) {
	return in.AllowedStream(src, dst, false)
}

// AllowedStream is Allowed for a stream that carries either one connection
// (perRequest false) or requests that AllowedRequest decides one by one
// (perRequest true). A deciding source with permissions admits the latter
// and denies the former.
func (in Intentions) AllowedStream(src, dst string, perRequest bool) (bool, string) {
	rule, ok := in.set.intents.decide(src, dst)
	switch {
	case !ok:
		return in.otherwise()
	case rule.src.Action != "":
		return rule.src.Action == Allow, rule.reason
	case perRequest:
		return true, rule.streamReason
	default:
		return false, rule.reason
	}
}

// AllowedRequest reports whether src may send req to dst, and why, in words
// fit for a log line and for the body of a 403. The deciding source is
// chosen as Allowed chooses it. A source with an action decides by it; one
// with permissions by the first permission whose match holds, and when
// none does, IntentionDefaults, else the fallback, decides. It allocates
// nothing: it runs on every request.
func (in Intentions) AllowedRequest(src, dst string, req Request) (bool, string) {
	rule, ok := in.set.intents.decide(src, dst)
	if !ok {
		return in.otherwise()
	}
	if rule.src.Action != "" {
		return rule.src.Action == Allow, rule.reason
	}
	for i := range rule.src.Permissions {
		if p := &rule.src.Permissions[i]; p.HTTP.matches(&req) {
			return p.Action == Allow, rule.permReasons[i]
		}
	}
	t := &in.set.intents
	if t.defaults != "" {
		return t.defaults == Allow, rule.noMatchDefaults
	}
	if in.Fallback == Allow {
		return true, rule.noMatchFallback[1]
	}
	return false, rule.noMatchFallback[0]
}

// otherwise decides when no intention source matches.
func (in Intentions) otherwise() (bool, string) {
	t := &in.set.intents
	if t.defaults != "" {
		return t.defaults == Allow, t.defaultsReason
	}
	if in.Fallback == Allow {
		return true, fallbackAllowReason
	}
	return false, fallbackDenyReason
}

// The reasons when neither an intention nor IntentionDefaults decides. A
// fallback other than Allow denies.
const (
	fallbackAllowReason = "no intention matches and no IntentionDefaults; agent default: allow"
	fallbackDenyReason  = "no intention matches and no IntentionDefaults; agent default: deny"
)

// intentionTable holds a set's intentions arranged for the data plane's
// questions, asked on every stream and every request: maps by lower-case
// name, and every reason written once, so that a decision allocates
// nothing.
type intentionTable struct {
	byDst map[string]map[string]*sourceRule // destination, then source; both lower case
	// defaults is the IntentionDefaults action, "" without the document.
	defaults       Action
	defaultsReason string
}

// sourceRule is one intention source with its reasons made.
type sourceRule struct {
	src *IntentionSource
	// reason explains the source's action, or, with permissions, why a
	// per-connection stream is denied.
	reason string
	// The rest are set only with permissions: why a per-request stream is
	// admitted, why each permission decided, and why a request that no
	// permission matches was decided by IntentionDefaults, or by a
	// fallback of deny ([0]) or allow ([1]).
	streamReason    string
	permReasons     []string
	noMatchDefaults string
	noMatchFallback [2]string
}

func newIntentionTable(intentions []*Entry, defaults *Entry) intentionTable {
	t := intentionTable{byDst: make(map[string]map[string]*sourceRule, len(intentions))}
	if defaults != nil {
		if d, ok := defaults.Spec.(*IntentionDefaults); ok {
			t.defaults = d.Action
			t.defaultsReason = "no intention matches; IntentionDefaults: " + string(d.Action)
		}
	}
	for _, e := range intentions {
		it, ok := e.Spec.(*Intention)
		if !ok {
			continue
		}
		sources := make(map[string]*sourceRule, len(it.Sources))
		for i := range it.Sources {
			src := &it.Sources[i]
			key := strings.ToLower(src.Name)
			if _, dup := sources[key]; dup {
				continue // validation refuses it; the first listed decides
			}
			sources[key] = newSourceRule(e.Name, src, &t)
		}
		t.byDst[strings.ToLower(e.Name)] = sources
	}
	return t
}

func newSourceRule(dst string, src *IntentionSource, t *intentionTable) *sourceRule {
	head := fmt.Sprintf("intention %q source %q", dst, src.Name)
	if len(src.Permissions) == 0 {
		return &sourceRule{src: src, reason: head + ": " + string(src.Action)}
	}
	r := &sourceRule{
		src:             src,
		reason:          head + " decides each request (permissions): a per-connection stream is denied",
		streamReason:    head + " has permissions: requests are decided one by one",
		permReasons:     make([]string, len(src.Permissions)),
		noMatchFallback: [2]string{head + ": no permission matches; agent default: deny", head + ": no permission matches; agent default: allow"},
	}
	for i, p := range src.Permissions {
		r.permReasons[i] = fmt.Sprintf("%s permission %d: %s", head, i, p.Action)
	}
	if t.defaults != "" {
		r.noMatchDefaults = head + ": no permission matches; IntentionDefaults: " + string(t.defaults)
	}
	return r
}

// decide returns the source that decides for src calling dst: dst's
// intention for src, else for "*", then the "*" intention's for src, else
// for "*".
func (t *intentionTable) decide(src, dst string) (*sourceRule, bool) {
	src, dst = strings.ToLower(src), strings.ToLower(dst)
	for _, d := range [2]string{dst, Wildcard} {
		sources, ok := t.byDst[d]
		if !ok {
			continue
		}
		if r, ok := sources[src]; ok {
			return r, true
		}
		if r, ok := sources[Wildcard]; ok {
			return r, true
		}
	}
	return nil, false
}

// MayHold reports whether node may hold the identity of service, and why,
// in words fit for a log line: the service's ServiceIdentity document
// decides, else the "*" document, else the ServiceIdentityDefaults mode;
// with none of them, any node may.
func (s *Set) MayHold(node, service string) (bool, string) {
	name := service
	si, ok := s.lookup(KindServiceIdentity, service, false).(*ServiceIdentity)
	if !ok {
		name = Wildcard
		if si, ok = s.lookup(KindServiceIdentity, Wildcard, false).(*ServiceIdentity); !ok {
			if def, ok := s.lookup(KindServiceIdentityDefaults, DefaultsName, false).(*ServiceIdentityDefaults); ok {
				return def.Mode == Allow, fmt.Sprintf("no ServiceIdentity document for %q; ServiceIdentityDefaults: %s", service, def.Mode)
			}
			return true, "no ServiceIdentity document"
		}
	}
	for _, pat := range si.Nodes {
		if matchNode(pat, node) {
			return true, fmt.Sprintf("ServiceIdentity %q lists %q", name, pat)
		}
	}
	return false, fmt.Sprintf("ServiceIdentity %q does not list node %q", name, node)
}

// matchNode reports whether node matches pattern, in which '*' stands for
// any run of characters; case-insensitive.
func matchNode(pattern, node string) bool {
	pattern, node = strings.ToLower(pattern), strings.ToLower(node)
	first, rest, wild := strings.Cut(pattern, "*")
	if !wild {
		return pattern == node
	}
	if !strings.HasPrefix(node, first) {
		return false
	}
	node = node[len(first):]
	parts := strings.Split(rest, "*")
	last := parts[len(parts)-1]
	for _, p := range parts[:len(parts)-1] {
		i := strings.Index(node, p)
		if i < 0 {
			return false
		}
		node = node[i+len(p):]
	}
	return len(node) >= len(last) && strings.HasSuffix(node, last)
}

// Lookup finds stored documents; CheckReferences uses it.
type Lookup func(kind Kind, name string) (*Document, bool)

// CheckReferences reports references that a set of documents would leave
// dangling: a Route naming a Split that does not exist. Only routes are
// checked, given by routes; lookup sees the state after the change.
func CheckReferences(routes []*Document, lookup Lookup) error {
	for _, d := range routes {
		r, ok := d.Spec.(*Route)
		if !ok {
			continue
		}
		for i, rule := range r.Routes {
			if _, ok := lookup(KindSplit, rule.Split); !ok {
				return &FieldError{Kind: d.Kind, Name: d.Name, Path: fmt.Sprintf("routes[%d].split", i),
					Msg: fmt.Sprintf("Split %q does not exist", rule.Split)}
			}
		}
	}
	return nil
}
