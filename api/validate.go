package api

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid is matched (errors.Is) by every *ValidationError.
var ErrInvalid = errors.New("invalid service definition")

// ValidationError says which field of which service definition is wrong.
type ValidationError struct {
	// Service is the definition's ID, or its name, or "" when both are empty.
	Service string
	// Field is the path of the field, such as "checks[0].interval".
	Field string
	// Problem says what is wrong, naming the value.
	Problem string
}

func (e *ValidationError) Error() string {
	if e.Service == "" {
		return fmt.Sprintf("service: %s: %s", e.Field, e.Problem)
	}
	return fmt.Sprintf("service %q: %s: %s", e.Service, e.Field, e.Problem)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Limits that keep one node's gossiped record small and its names usable in
// DNS. They are generous for real services.
const (
	MaxTags         = 64
	MaxMetaKeys     = 64
	MaxMetaKeyLen   = 128
	MaxMetaValueLen = 512
	MaxChecks       = 32
	MaxIDLen        = 128
	// MinInterval keeps a typo such as "1ns" from turning a check into a
	// busy loop.
	MinInterval = 10 * time.Millisecond
	// DefaultCheckTimeout is the timeout of a probe that sets none.
	DefaultCheckTimeout = 10 * time.Second
)

// Validate checks the definition as an operator wrote it, before Normalize.
// The error is a *ValidationError naming the service, the field and the
// value, such as `service "web": checks[0].interval: "0s" must be > 0`.
func (d *ServiceDefinition) Validate() error {
	svc := d.ID
	if svc == "" {
		svc = d.Name
	}
	fail := func(field, format string, args ...any) error {
		return &ValidationError{Service: svc, Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if d.Name == "" {
		return fail("name", "is required")
	}
	if !isDNSLabel(d.Name) {
		return fail("name", "%q must be letters, digits and inner hyphens, at most 63 characters", d.Name)
	}
	if d.ID != "" {
		if msg := checkID(d.ID); msg != "" {
			return fail("id", "%q %s", d.ID, msg)
		}
	}
	if d.Address != "" {
		if _, err := netip.ParseAddr(d.Address); err != nil {
			return fail("address", "%q is not an IP address", d.Address)
		}
	}
	if d.Port < 0 || d.Port > 65535 {
		return fail("port", "%d is out of range 0-65535", d.Port)
	}
	names := map[string]bool{}
	for i, p := range d.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if !isDNSLabel(p.Name) {
			return fail(f+".name", "%q must be letters, digits and inner hyphens, at most 63 characters", p.Name)
		}
		if names[strings.ToLower(p.Name)] {
			return fail(f+".name", "%q is duplicated", p.Name)
		}
		names[strings.ToLower(p.Name)] = true
		if p.Port < 1 || p.Port > 65535 {
			return fail(f+".port", "%d is out of range 1-65535", p.Port)
		}
	}
	if len(d.Tags) > MaxTags {
		return fail("tags", "%d tags, at most %d are allowed", len(d.Tags), MaxTags)
	}
	for i, t := range d.Tags {
		if t == "" || len(t) > 255 || strings.ContainsFunc(t, isSpaceOrControl) {
			return fail(fmt.Sprintf("tags[%d]", i), "%q must be 1-255 characters without spaces", t)
		}
	}
	if len(d.Meta) > MaxMetaKeys {
		return fail("meta", "%d keys, at most %d are allowed", len(d.Meta), MaxMetaKeys)
	}
	for _, k := range slices.Sorted(maps.Keys(d.Meta)) {
		if k == "" || len(k) > MaxMetaKeyLen || strings.ContainsFunc(k, isSpaceOrControl) {
			return fail("meta", "key %q must be 1-%d characters without spaces", k, MaxMetaKeyLen)
		}
		if len(d.Meta[k]) > MaxMetaValueLen {
			return fail("meta."+k, "value is %d bytes long, at most %d are allowed", len(d.Meta[k]), MaxMetaValueLen)
		}
	}
	n := len(d.Checks)
	if d.Check != nil {
		n++
	}
	if n > MaxChecks {
		return fail("checks", "%d checks, at most %d are allowed", n, MaxChecks)
	}
	if d.Check != nil {
		if err := d.Check.validate(svc, "check"); err != nil {
			return err
		}
	}
	for i := range d.Checks {
		if err := d.Checks[i].validate(svc, fmt.Sprintf("checks[%d]", i)); err != nil {
			return err
		}
	}
	// Check IDs must be unique once the defaults are filled in.
	seen := map[string]string{}
	norm := d.Normalize()
	for i, c := range norm.Checks {
		field := checkField(d, i)
		if prev, dup := seen[c.ID]; dup {
			return fail(field+".id", "%q is already used by %s", c.ID, prev)
		}
		seen[c.ID] = field
	}
	binds := map[string]bool{}
	for i, u := range d.Upstreams {
		f := fmt.Sprintf("upstreams[%d]", i)
		if !isDNSLabel(u.Service) {
			return fail(f+".service", "%q must be a service name", u.Service)
		}
		ap, err := netip.ParseAddrPort(u.LocalBind)
		if err != nil || ap.Port() == 0 {
			return fail(f+".local_bind", "%q must be an ip:port with a port other than 0", u.LocalBind)
		}
		if binds[ap.String()] {
			return fail(f+".local_bind", "%q is duplicated", u.LocalBind)
		}
		binds[ap.String()] = true
		if u.Port < 0 || u.Port > 65535 {
			return fail(f+".port", "%d is out of range 0-65535", u.Port)
		}
	}
	if d.User != "" && !isUnixUser(d.User) {
		return fail("user", "%q must be a unix user name or a numeric uid", d.User)
	}
	return nil
}

// checkField names the i-th check of d.Normalize() as the operator wrote it.
func checkField(d *ServiceDefinition, i int) string {
	if d.Check != nil {
		if i == 0 {
			return "check"
		}
		i--
	}
	return fmt.Sprintf("checks[%d]", i)
}

// Validate checks one check on its own, for callers that hold a check
// without its service. field prefixes the error's field path.
func (c *CheckDefinition) Validate(field string) error {
	return c.validate("", field)
}

func (c *CheckDefinition) validate(svc, field string) error {
	fail := func(sub, format string, args ...any) error {
		return &ValidationError{Service: svc, Field: field + sub, Problem: fmt.Sprintf(format, args...)}
	}
	kinds := 0
	for _, set := range []bool{c.HTTP != "", c.TCP != "", c.TTL != 0} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return fail("", "must set exactly one of http, tcp and ttl (%d are set)", kinds)
	}
	if c.ID != "" {
		if msg := checkID(c.ID); msg != "" {
			return fail(".id", "%q %s", c.ID, msg)
		}
		for _, p := range reservedCheckPrefixes {
			if strings.HasPrefix(c.ID, p) {
				return fail(".id", "%q begins with %q, a prefix reserved for the checks of maintenance mode; choose another ID", c.ID, p)
			}
		}
	}
	if len(c.Name) > 256 {
		return fail(".name", "is %d bytes long, at most 256 are allowed", len(c.Name))
	}
	switch c.Status {
	case "", HealthPassing, HealthWarning, HealthCritical:
	default:
		return fail(".status", "%q must be passing, warning or critical", c.Status)
	}
	if c.DeregisterCriticalAfter < 0 {
		return fail(".deregister_critical_after", "%q must not be negative", c.DeregisterCriticalAfter)
	}
	if c.Timeout < 0 {
		return fail(".timeout", "%q must not be negative", c.Timeout)
	}
	if c.HTTP == "" && (c.Method != "" || len(c.Header) > 0) {
		return fail(".method", "method and header are only for http checks")
	}
	switch c.Kind() {
	case CheckTTL:
		if c.TTL < 0 {
			return fail(".ttl", "%q must be > 0", c.TTL)
		}
		if c.Interval != 0 {
			return fail(".interval", "%q is not used by a ttl check; remove it", c.Interval)
		}
		if c.Timeout != 0 {
			return fail(".timeout", "%q is not used by a ttl check; remove it", c.Timeout)
		}
		return nil
	case CheckHTTP:
		u, err := url.Parse(c.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fail(".http", "%q must be an http:// or https:// URL with a host", c.HTTP)
		}
		if c.Method != "" && !isToken(c.Method) {
			return fail(".method", "%q is not an HTTP method", c.Method)
		}
		for _, k := range slices.Sorted(maps.Keys(c.Header)) {
			if !isToken(k) {
				return fail(".header", "%q is not a valid header name", k)
			}
			for _, v := range c.Header[k] {
				if strings.ContainsAny(v, "\r\n\x00") {
					return fail(".header."+k, "value %q contains a line break", v)
				}
			}
		}
	case CheckTCP:
		host, port, err := net.SplitHostPort(c.TCP)
		if err != nil || host == "" {
			return fail(".tcp", "%q must be host:port", c.TCP)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fail(".tcp", "%q must have a port in 1-65535", c.TCP)
		}
	}
	if c.Interval <= 0 {
		return fail(".interval", "%q must be > 0", c.Interval)
	}
	if c.Interval.D() < MinInterval {
		return fail(".interval", "%q must be at least %s", c.Interval, MinInterval)
	}
	return nil
}

// Normalize returns a deep copy of d with the defaults filled in: ID, the
// single Check moved to the front of Checks, and each check's ID, name,
// method, timeout and initial status. It does not validate.
func (d ServiceDefinition) Normalize() ServiceDefinition {
	out := d
	if out.ID == "" {
		out.ID = out.Name
	}
	// Empty lists and maps become nil, so that equal definitions compare
	// equal however they were written.
	out.Ports = cloneOrNil(d.Ports)
	out.Tags = cloneOrNil(d.Tags)
	out.Upstreams = cloneOrNil(d.Upstreams)
	out.Meta = nil
	if len(d.Meta) > 0 {
		out.Meta = maps.Clone(d.Meta)
	}
	out.Checks = nil
	if d.Check != nil {
		out.Checks = append(out.Checks, *d.Check)
	}
	out.Checks = append(out.Checks, d.Checks...)
	out.Check = nil
	for i := range out.Checks {
		c := &out.Checks[i]
		if len(c.Header) == 0 {
			c.Header = nil
		} else {
			h := make(map[string][]string, len(c.Header))
			for k, v := range c.Header {
				h[k] = slices.Clone(v)
			}
			c.Header = h
		}
		if c.ID == "" {
			c.ID = "service:" + out.ID
			if len(out.Checks) > 1 {
				c.ID += ":" + strconv.Itoa(i+1)
			}
		}
		if c.Name == "" {
			c.Name = fmt.Sprintf("Service '%s' check", out.Name)
		}
		if c.Status == "" {
			c.Status = HealthCritical
		}
		if c.Kind() != CheckTTL {
			if c.Timeout == 0 {
				c.Timeout = Duration(DefaultCheckTimeout)
			}
			if c.HTTP != "" && c.Method == "" {
				c.Method = "GET"
			}
		}
	}
	if len(out.Checks) == 0 {
		out.Checks = nil
	}
	return out
}

func cloneOrNil[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// isDNSLabel reports whether s can be one label of a DNS name.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// checkID returns why s cannot be a service or check ID, or "". IDs travel
// in URL paths, so they may not hold slashes, spaces or control characters.
// reservedCheckPrefixes begin the IDs of the checks that maintenance mode
// shows (agent/local): a check registered with such an ID would be listed
// beside them, and read as one of them.
var reservedCheckPrefixes = []string{NodeMaintenanceCheckID, strings.TrimSuffix(ServiceMaintenanceCheckPrefix, ":")}

func checkID(s string) string {
	if len(s) > MaxIDLen {
		return fmt.Sprintf("is longer than %d characters", MaxIDLen)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r == '/' || r == '?' || r == '#' || r == '%' || isSpaceOrControl(r) }) {
		return "must not contain spaces, control characters or any of / ? # %"
	}
	return ""
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f || r == 0x85 || r == 0xa0 || r == 0xfffd
}

// isToken reports whether s is an HTTP token (RFC 9110), as methods and
// header names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// isUnixUser accepts a numeric uid or a user name as useradd accepts it.
func isUnixUser(s string) bool {
	if len(s) > 32 {
		return false
	}
	if _, err := strconv.ParseUint(s, 10, 32); err == nil {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9', c == '-', c == '.':
			if i == 0 {
				return false
			}
		case c == '$':
			if i != len(s)-1 || i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}
