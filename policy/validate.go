package policy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meshwork/meshwork/internal/strictyaml"
)

// Bounds of the numeric fields, documented in docs/policy.md.
const (
	MaxRetryAttempts = 10
	maxNameLen       = 63
	maxLimit         = 1 << 20 // circuit-breaker limits
	maxDuration      = 24 * time.Hour
)

// nameRE is a DNS label, as service names are: letters, digits, '-' and '_'
// inside, starting with a letter or digit. Dots are allowed for split names.
var (
	nameRE      = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$`)
	splitNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)
	headerRE    = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
	// nodePatternRE is a node name as the CA accepts it (1 to 128 letters,
	// digits, '.', '-' and '_'), with '*' allowed anywhere.
	nodePatternRE = regexp.MustCompile(`^[A-Za-z0-9._*-]{1,128}$`)
	// methodRE is an HTTP method: a token (RFC 9110) without lower-case
	// letters, since methods compare case-sensitively and every standard
	// one is upper case.
	methodRE = regexp.MustCompile("^[A-Z][!#$%&'*+.^_`|~0-9A-Z-]{0,31}$")
)

// MaxPermissions bounds the permissions of one intention source: the data
// plane tries them in order on every request.
const MaxPermissions = 64

// Validate checks a document built in code, as Parse does for parsed ones.
// Its error joins one *FieldError for each wrong field.
func (d *Document) Validate() error {
	if errs := validateDoc(d, 1, 0); len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

func validateDoc(d *Document, pos, line int) []error {
	v := &validator{kind: d.Kind, name: d.Name, doc: pos, line: line}
	if d.Spec == nil || newSpec(d.Kind) == nil {
		v.add("kind", "%q is unknown (want one of %s)", d.Kind, kindList())
		return v.errs
	}
	if d.Spec.Kind() != d.Kind {
		v.add("kind", "%s does not match its body (%s)", d.Kind, d.Spec.Kind())
		return v.errs
	}
	switch d.Kind {
	case KindIntentionDefaults, KindServiceIdentityDefaults:
		if d.Name != DefaultsName {
			v.add("name", "%q: a%s %s document must be named %q", strictyaml.Truncate(d.Name), article(d.Kind), d.Kind, DefaultsName)
		}
	case KindServiceDefaults, KindResilience, KindFault, KindIntention, KindServiceIdentity:
		if d.Name != Wildcard {
			v.serviceName("name", d.Name)
		}
	case KindSplit:
		if !splitNameRE.MatchString(d.Name) {
			v.add("name", "%q must be 1 to 63 letters, digits, '-', '_' or '.'", strictyaml.Truncate(d.Name))
		}
	default:
		v.serviceName("name", d.Name)
	}
	d.Spec.validate(v)
	return v.errs
}

// validator collects field errors for one document.
type validator struct {
	kind Kind
	name string
	doc  int
	line int
	errs []error
}

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Kind: v.kind, Name: v.name, Doc: v.doc, Line: v.line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) serviceName(path, s string) {
	if s == "" {
		v.add(path, "required")
		return
	}
	if !nameRE.MatchString(s) {
		v.add(path, "%q must be a service name: 1 to 63 letters, digits, '-' or '_'", strictyaml.Truncate(s))
	}
}

func (v *validator) intRange(path string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(path, "%d must be between %d and %d", n, lo, hi)
	}
}

func (v *validator) duration(path string, d Duration, allowZero bool) {
	switch {
	case d < 0:
		v.add(path, "%s must not be negative", d)
	case d == 0 && !allowZero:
		v.add(path, "must be more than 0")
	case d.D() > maxDuration:
		v.add(path, "%s is longer than %s", d, maxDuration)
	}
}

func (s *ServiceDefaults) validate(v *validator) {
	switch s.Protocol {
	case "", ProtocolTCP, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC:
	default:
		v.add("protocol", "%q is unknown (want tcp, http, http2 or grpc)", strictyaml.Truncate(string(s.Protocol)))
	}
}

func (r *Route) validate(v *validator) {
	if len(r.Routes) == 0 {
		v.add("routes", "at least one route is required")
	}
	for i, rule := range r.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		v.match(p+".match", &rule.Match)
		if rule.Hedge && len(rule.Match.Methods) > 0 && !slices.ContainsFunc(rule.Match.Methods, IdempotentMethod) {
			v.add(p+".hedge", "hedges only idempotent requests (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), and methods %v lists none", rule.Match.Methods)
		}
		if rule.Split == "" {
			v.add(p+".split", "required: the name of a Split document")
		} else if !splitNameRE.MatchString(rule.Split) {
			v.add(p+".split", "%q is not a valid split name", strictyaml.Truncate(rule.Split))
		}
	}
}

// match checks the conditions of a route rule or a permission; path is
// where the match sits ("routes[0].match").
func (v *validator) match(path string, m *RouteMatch) {
	if m.PathExact != "" && m.PathPrefix != "" {
		v.add(path+".path_exact", "set path_exact or path_prefix, not both")
	}
	if m.PathExact != "" && !strings.HasPrefix(m.PathExact, "/") {
		v.add(path+".path_exact", "%q must start with \"/\"", strictyaml.Truncate(m.PathExact))
	}
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		v.add(path+".path_prefix", "%q must start with \"/\"", strictyaml.Truncate(m.PathPrefix))
	}
	for j, h := range m.Headers {
		if !headerRE.MatchString(h.Name) {
			v.add(fmt.Sprintf("%s.headers[%d].name", path, j),
				"%q is not an HTTP header name: 1 to 128 letters, digits and !#$%%&'*+-.^_`|~", strictyaml.Truncate(h.Name))
		}
	}
	for j, meth := range m.Methods {
		if methodRE.MatchString(meth) {
			continue
		}
		p := fmt.Sprintf("%s.methods[%d]", path, j)
		if up := strings.ToUpper(meth); methodRE.MatchString(up) {
			v.add(p, "%q must be an upper-case HTTP method such as GET (methods compare case-sensitively): write %q", meth, up)
		} else {
			v.add(p, "%q must be an upper-case HTTP method such as GET", strictyaml.Truncate(meth))
		}
	}
}

func (s *Split) validate(v *validator) {
	if s.Service != "" {
		v.serviceName("service", s.Service)
	} else if !nameRE.MatchString(v.name) {
		v.add("service", "required when the name %q is not a service name", strictyaml.Truncate(v.name))
	}
	if len(s.Splits) == 0 {
		v.add("splits", "at least one split is required")
		return
	}
	sum, bad := 0, false
	for i, t := range s.Splits {
		p := fmt.Sprintf("splits[%d]", i)
		if t.Weight < 0 || t.Weight > 100 {
			v.add(p+".weight", "%d must be between 0 and 100", t.Weight)
			bad = true
		}
		sum += t.Weight
		for j, tag := range t.Subset.Tags {
			if tag == "" {
				v.add(fmt.Sprintf("%s.subset.tags[%d]", p, j), "must not be empty")
			}
		}
		for k := range t.Subset.Meta {
			if k == "" {
				v.add(p+".subset.meta", "keys must not be empty")
			}
		}
	}
	if !bad && sum != 100 {
		v.add("splits", "weights sum to %d, they must sum to 100", sum)
	}
}

func (r *Resilience) validate(v *validator) {
	if r.Retries == nil && r.Timeouts == nil && r.CircuitBreaker == nil && r.OutlierDetection == nil {
		v.add("", "sets nothing: give retries, timeouts, circuit_breaker or outlier_detection")
	}
	if rt := r.Retries; rt != nil {
		v.intRange("retries.attempts", rt.Attempts, 0, MaxRetryAttempts)
		for i, c := range rt.RetryOn {
			if !validCondition(c) {
				v.add(fmt.Sprintf("retries.retry_on[%d]", i), "%q is unknown (want one of %s)", strictyaml.Truncate(string(c)), conditionList())
			}
		}
		v.duration("retries.per_try_timeout", rt.PerTryTimeout, true)
		if b := rt.Budget; b != nil {
			v.intRange("retries.budget.percent", b.Percent, 0, 100)
			v.intRange("retries.budget.min_per_second", b.MinPerSecond, 0, 10000)
		}
	}
	if t := r.Timeouts; t != nil {
		v.duration("timeouts.connect", t.Connect, true)
		v.duration("timeouts.request", t.Request, true)
		v.duration("timeouts.idle", t.Idle, true)
		if r.Retries != nil && r.Retries.PerTryTimeout > 0 && t.Request > 0 && r.Retries.PerTryTimeout > t.Request {
			v.add("retries.per_try_timeout", "%s is longer than timeouts.request %s", r.Retries.PerTryTimeout, t.Request)
		}
	}
	if cb := r.CircuitBreaker; cb != nil {
		v.intRange("circuit_breaker.max_connections", cb.MaxConnections, 0, maxLimit)
		v.intRange("circuit_breaker.max_pending", cb.MaxPending, 0, maxLimit)
		v.intRange("circuit_breaker.max_requests", cb.MaxRequests, 0, maxLimit)
	}
	if o := r.OutlierDetection; o != nil {
		v.intRange("outlier_detection.consecutive_errors", o.ConsecutiveErrors, 1, 1000)
		v.duration("outlier_detection.interval", o.Interval, true)
		v.duration("outlier_detection.base_ejection_time", o.BaseEjectionTime, true)
		v.intRange("outlier_detection.max_ejected_percent", o.MaxEjectedPercent, 0, 100)
	}
}

// MaxFaultDelay bounds a Fault's delay: a test that wants a request held
// longer wants it to time out, which a shorter deadline does.
const MaxFaultDelay = time.Hour

// maxFaultHeaders bounds a Fault's match: the receiving agent tries it on
// every request.
const maxFaultHeaders = 16

func (f *Fault) validate(v *validator) {
	if f.Abort == nil && f.Delay == nil {
		v.add("", "sets nothing: give abort, delay or both")
	}
	if a := f.Abort; a != nil {
		v.percent("abort.percent", a.Percent)
		if a.HTTPStatus == 0 && a.GRPCStatus == 0 {
			v.add("abort", "give http_status (400 to 599), grpc_status (1 to 16) or both")
		}
		if a.HTTPStatus != 0 {
			v.intRange("abort.http_status", a.HTTPStatus, 400, 599)
		}
		if a.GRPCStatus != 0 {
			v.intRange("abort.grpc_status", a.GRPCStatus, 1, 16)
		}
	}
	if d := f.Delay; d != nil {
		v.percent("delay.percent", d.Percent)
		switch {
		case d.Fixed <= 0:
			v.add("delay.fixed", "required: a duration more than 0, such as \"200ms\"")
		case d.Fixed.D() > MaxFaultDelay:
			v.add("delay.fixed", "%s is longer than %s", d.Fixed, MaxFaultDelay)
		}
	}
	if m := f.Match; m != nil {
		switch {
		case len(m.Headers) == 0:
			v.add("match.headers", "at least one header is required (leave match out to apply to every request)")
		case len(m.Headers) > maxFaultHeaders:
			v.add("match.headers", "%d headers, at most %d", len(m.Headers), maxFaultHeaders)
		default:
			v.match("match", &RouteMatch{Headers: m.Headers})
		}
	}
}

// percent checks a share written in percent, decimals allowed.
func (v *validator) percent(path string, p float64) {
	if !(p >= 0 && p <= 100) { // NaN too
		v.add(path, "%v must be between 0 and 100", p)
	}
}

func validCondition(c RetryCondition) bool {
	for _, k := range retryConditions {
		if c == k {
			return true
		}
	}
	return false
}

func conditionList() string {
	s := make([]string, len(retryConditions))
	for i, c := range retryConditions {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

func validAction(path string, a Action, v *validator) {
	if a != Allow && a != Deny {
		v.add(path, "%q must be allow or deny", strictyaml.Truncate(string(a)))
	}
}

func (in *Intention) validate(v *validator) {
	if len(in.Sources) == 0 {
		v.add("sources", "at least one source is required")
	}
	seen := map[string]int{}
	for i, s := range in.Sources {
		p := fmt.Sprintf("sources[%d]", i)
		if s.Name != Wildcard {
			v.serviceName(p+".name", s.Name)
		}
		if j, dup := seen[strings.ToLower(s.Name)]; dup {
			v.add(p+".name", "%q is already listed at sources[%d]", strictyaml.Truncate(s.Name), j)
		}
		seen[strings.ToLower(s.Name)] = i
		switch {
		case s.Action != "" && len(s.Permissions) > 0:
			v.add(p, "sets both action and permissions: give action to decide all traffic from the source, or permissions to decide each request")
		case len(s.Permissions) > 0:
			v.permissions(p+".permissions", s.Permissions)
		case s.Action == "":
			v.add(p+".action", "required: allow or deny (or permissions, to decide each request)")
		default:
			validAction(p+".action", s.Action, v)
		}
		if len(s.Description) > 512 {
			v.add(p+".description", "is longer than 512 characters")
		}
	}
}

// permissions checks the L7 permissions of one intention source.
func (v *validator) permissions(path string, perms []Permission) {
	if len(perms) > MaxPermissions {
		v.add(path, "%d permissions, at most %d", len(perms), MaxPermissions)
		return
	}
	for i := range perms {
		p := fmt.Sprintf("%s[%d]", path, i)
		if perms[i].Action == "" {
			v.add(p+".action", "required: allow or deny")
		} else {
			validAction(p+".action", perms[i].Action, v)
		}
		if perms[i].HTTP.IsEmpty() {
			v.add(p+".http", "required: at least one of path_exact, path_prefix, methods or headers (a permission for every request is the source's action)")
			continue
		}
		v.match(p+".http", &perms[i].HTTP)
	}
}

func (d *IntentionDefaults) validate(v *validator) {
	validAction("action", d.Action, v)
}

func (d *ServiceIdentityDefaults) validate(v *validator) {
	if d.Mode == "" {
		v.add("mode", "required: allow (any node may hold an identity no ServiceIdentity covers) or deny (no node may)")
		return
	}
	validAction("mode", d.Mode, v)
}

// article is the indefinite article's tail before a kind's name.
func article(k Kind) string {
	if strings.ContainsRune("AEIOU", rune(k[0])) {
		return "n"
	}
	return ""
}

// maxNodePatterns bounds a ServiceIdentity's list: the data plane matches it
// on every stream that claims the service.
const maxNodePatterns = 256

func (si *ServiceIdentity) validate(v *validator) {
	if si.Nodes == nil {
		v.add("nodes", "required: the nodes that may hold the identity, or [] for none")
		return
	}
	if len(si.Nodes) > maxNodePatterns {
		v.add("nodes", "%d entries, at most %d", len(si.Nodes), maxNodePatterns)
		return
	}
	seen := map[string]int{}
	for i, n := range si.Nodes {
		p := fmt.Sprintf("nodes[%d]", i)
		switch {
		case n == "":
			v.add(p, "must not be empty")
		case n == "." || n == "..":
			v.add(p, "%q is not a node name", n)
		case !nodePatternRE.MatchString(n):
			v.add(p, "%q must be a node name (1 to 128 letters, digits, '.', '-' or '_'), '*' standing for any characters", strictyaml.Truncate(n))
		}
		if j, dup := seen[strings.ToLower(n)]; dup {
			v.add(p, "%q is already listed at nodes[%d]", strictyaml.Truncate(n), j)
		}
		seen[strings.ToLower(n)] = i
	}
}
