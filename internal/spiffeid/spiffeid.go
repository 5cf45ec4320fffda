// Package spiffeid owns the form of the mesh's SPIFFE IDs:
//
//	spiffe://<trust-domain>/node/<node>     the identity of a node (its agent)
//	spiffe://<trust-domain>/svc/<service>   the identity of a service
//
// It builds them, parses them from strings (the claimed source of a tunnel
// stream) and from certificate URI SANs, and validates trust domains and
// names. The CA, the data plane and their test doubles all call it, so that
// the format is written in one place.
//
// A trust domain is 1 to 255 characters among lowercase letters, digits, '.',
// '-' and '_' (the SPIFFE rules). A name is one path segment: 1 to 128
// characters among letters, digits, '.', '-' and '_', and not "." or "..".
// Because neither admits '%', '?', '#', '@', ':' or '/', an ID that parses has
// exactly one spelling, and String gives it back byte for byte.
package spiffeid

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Sentinel errors. Every error of the package matches one of them with
// errors.Is; its text names the ID or name and what is wrong with it, without
// the sentinel's own words, so that a caller can put its own sentinel in front
// (`fmt.Errorf("%w: %w", ErrBadRequest, err)`).
var (
	// ErrInvalid means a trust domain, a name or an ID is malformed.
	ErrInvalid = errors.New("invalid SPIFFE ID")
	// ErrForeign means a URI is not a SPIFFE ID at all, or is one of another
	// trust domain than the one expected.
	ErrForeign = errors.New("not a SPIFFE ID of the trust domain")
)

// Error is an error of this package: a message and the sentinel it matches.
type Error struct {
	// Sentinel is ErrInvalid or ErrForeign.
	Sentinel error
	// Msg names what was wrong.
	Msg string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the sentinel, for errors.Is.
func (e *Error) Unwrap() error { return e.Sentinel }

func invalid(format string, args ...any) error {
	return &Error{Sentinel: ErrInvalid, Msg: fmt.Sprintf(format, args...)}
}

func foreign(format string, args ...any) error {
	return &Error{Sentinel: ErrForeign, Msg: fmt.Sprintf(format, args...)}
}

// Kind is what an ID names: the path segment before the name.
type Kind string

// The kinds of ID.
const (
	KindNode    Kind = "node"
	KindService Kind = "svc"
)

// Limits.
const (
	// MaxTrustDomainLen is the longest trust domain (SPIFFE's limit).
	MaxTrustDomainLen = 255
	// MaxNameLen is the longest node or service name.
	MaxNameLen = 128
)

const scheme = "spiffe://"

// ID is a parsed SPIFFE ID of the mesh.
type ID struct {
	TrustDomain string
	Kind        Kind
	Name        string
}

// String returns the ID's one spelling.
func (id ID) String() string { return build(id.TrustDomain, id.Kind, id.Name) }

// URL returns the ID as a URL, for a certificate or CSR template.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/" + string(id.Kind) + "/" + id.Name}
}

// Node returns the SPIFFE ID of node in trust domain td. It does not
// validate; callers hold names that were validated where they entered.
func Node(td, node string) string { return build(td, KindNode, node) }

// Service returns the SPIFFE ID of service svc in trust domain td. It does
// not validate.
func Service(td, svc string) string { return build(td, KindService, svc) }

func build(td string, kind Kind, name string) string {
	return scheme + td + "/" + string(kind) + "/" + name
}

// Parse reads a SPIFFE ID of trust domain td from its string form. It fails
// with ErrForeign for any other scheme or trust domain, and with ErrInvalid
// for a path other than /node/<name> or /svc/<name> or an invalid name. It
// does not allocate on success: the ID's fields are substrings of s.
func Parse(td, s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, scheme)
	if !ok {
		return ID{}, foreign("%q is not a SPIFFE ID", s)
	}
	host, path, _ := strings.Cut(rest, "/")
	if host != td {
		return ID{}, foreign("%q is not in trust domain %q", s, td)
	}
	if err := ValidateTrustDomain(td); err != nil {
		return ID{}, err
	}
	kind, name, ok := strings.Cut(path, "/")
	if !ok {
		return ID{}, invalid("SPIFFE ID %q: want /node/<name> or /svc/<name>", s)
	}
	return finish(s, td, kind, name)
}

// FromURL reads a SPIFFE ID of trust domain td from a certificate's or CSR's
// URI SAN, with the errors of Parse. A URL with a user, port, query or
// fragment is refused: a SPIFFE ID has none of them.
func FromURL(td string, u *url.URL) (ID, error) {
	if u.Scheme != "spiffe" {
		return ID{}, foreign("URI SAN %q is not a SPIFFE ID", u.String())
	}
	if u.Host != td {
		return ID{}, foreign("%q is not in trust domain %q", u.String(), td)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" || u.Port() != "" {
		return ID{}, invalid("SPIFFE ID %q has parts a SPIFFE ID may not have", u.String())
	}
	if err := ValidateTrustDomain(td); err != nil {
		return ID{}, err
	}
	kind, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok {
		return ID{}, invalid("SPIFFE ID %q: want /node/<name> or /svc/<name>", u.String())
	}
	return finish(u.String(), td, kind, name)
}

func finish(s, td, kind, name string) (ID, error) {
	var k Kind
	switch kind {
	case string(KindNode):
		k = KindNode
	case string(KindService):
		k = KindService
	default:
		return ID{}, invalid("SPIFFE ID %q: want /node/<name> or /svc/<name>", s)
	}
	if err := ValidateName(k.field(), name); err != nil {
		return ID{}, err
	}
	return ID{TrustDomain: td, Kind: k, Name: name}, nil
}

// field is how errors call a name of this kind.
func (k Kind) field() string {
	if k == KindService {
		return "service"
	}
	return "node"
}

// ValidateTrustDomain checks td against the SPIFFE rules: 1 to 255
// characters among lowercase letters, digits, '.', '-' and '_'.
func ValidateTrustDomain(td string) error {
	if td == "" || len(td) > MaxTrustDomainLen {
		return invalid("trust domain %q: want 1 to %d characters", td, MaxTrustDomainLen)
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return invalid("trust domain %q: character %q not allowed (lowercase letters, digits, '.', '-', '_')", td, c)
		}
	}
	return nil
}

// ValidateName checks a name that becomes one path segment of an ID: 1 to
// 128 characters among letters, digits, '.', '-' and '_', and not "." or
// "..". field names it in the error ("node", "service", ...).
func ValidateName(field, name string) error {
	if name == "" || len(name) > MaxNameLen {
		return invalid("%s name %q: want 1 to %d characters", field, name, MaxNameLen)
	}
	if name == "." || name == ".." {
		return invalid("%s name %q is not allowed", field, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return invalid("%s name %q: character %q not allowed (letters, digits, '.', '-', '_')", field, name, c)
		}
	}
	return nil
}
