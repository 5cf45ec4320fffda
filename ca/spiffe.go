package ca

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Identity is the set of SPIFFE IDs one leaf certificate carries: the node
// and every service the node hosts.
type Identity struct {
	// TrustDomain is the SPIFFE trust domain, such as "mesh.example".
	TrustDomain string `json:"trust_domain"`
	// Node is the node name; its ID is spiffe://<trust-domain>/node/<node>.
	Node string `json:"node"`
	// Services are the service names, sorted and unique; each ID is
	// spiffe://<trust-domain>/svc/<service>.
	Services []string `json:"services,omitempty"`
}

// maxNameLen bounds node and service names, which become URI path segments.
const maxNameLen = 128

// maxServices bounds the services one certificate may carry.
const maxServices = 256

// NodeID returns the SPIFFE ID of node in trust domain td.
func NodeID(td, node string) string { return "spiffe://" + td + "/node/" + node }

// ServiceID returns the SPIFFE ID of service svc in trust domain td.
func ServiceID(td, svc string) string { return "spiffe://" + td + "/svc/" + svc }

// IDs returns the identity's SPIFFE IDs, the node first.
func (id Identity) IDs() []string {
	out := make([]string, 0, 1+len(id.Services))
	out = append(out, NodeID(id.TrustDomain, id.Node))
	for _, s := range id.Services {
		out = append(out, ServiceID(id.TrustDomain, s))
	}
	return out
}

// URIs returns IDs as parsed URLs, for a CSR or certificate template.
func (id Identity) URIs() []*url.URL {
	ids := id.IDs()
	out := make([]*url.URL, len(ids))
	for i, s := range ids {
		out[i] = &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: strings.TrimPrefix(s, "spiffe://"+id.TrustDomain)}
	}
	return out
}

// Validate checks the trust domain and every name.
func (id Identity) Validate() error {
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if err := ValidateName("node", id.Node); err != nil {
		return err
	}
	if len(id.Services) > maxServices {
		return fmt.Errorf("%w: %d services, at most %d", ErrBadRequest, len(id.Services), maxServices)
	}
	for _, s := range id.Services {
		if err := ValidateName("service", s); err != nil {
			return err
		}
	}
	return nil
}

// NewIdentity returns the identity of node with services, sorted and
// deduplicated, after validating every name.
func NewIdentity(td, node string, services []string) (Identity, error) {
	id := Identity{TrustDomain: td, Node: node, Services: normServices(services)}
	return id, id.Validate()
}

func normServices(services []string) []string {
	if len(services) == 0 {
		return nil
	}
	out := slices.Clone(services)
	slices.Sort(out)
	return slices.Compact(out)
}

// Equal reports whether both identities name the same IDs.
func (id Identity) Equal(o Identity) bool {
	return id.TrustDomain == o.TrustDomain && id.Node == o.Node && slices.Equal(id.Services, o.Services)
}

// ValidateTrustDomain checks td against the SPIFFE rules: 1 to 255 characters
// among lowercase letters, digits, '.', '-' and '_'.
func ValidateTrustDomain(td string) error {
	if td == "" || len(td) > 255 {
		return fmt.Errorf("%w: trust domain %q: want 1 to 255 characters", ErrBadRequest, td)
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%w: trust domain %q: character %q not allowed (lowercase letters, digits, '.', '-', '_')", ErrBadRequest, td, c)
		}
	}
	return nil
}

// ValidateName checks a node or service name, which becomes one SPIFFE path
// segment: 1 to 128 characters among letters, digits, '.', '-' and '_', and
// not "." or "..". kind names the field in the error.
func ValidateName(kind, name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: %s name %q: want 1 to %d characters", ErrBadRequest, kind, name, maxNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: %s name %q is not allowed", ErrBadRequest, kind, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %s name %q: character %q not allowed (letters, digits, '.', '-', '_')", ErrBadRequest, kind, name, c)
		}
	}
	return nil
}

// ParseIdentity reads the identity from a certificate's or CSR's URI SANs. It
// requires exactly one node ID, allows service IDs, and refuses any other URI
// or any ID of another trust domain than td.
func ParseIdentity(td string, uris []*url.URL) (Identity, error) {
	id := Identity{TrustDomain: td}
	if len(uris) > maxServices+1 {
		return id, fmt.Errorf("%w: %d URI SANs", ErrBadRequest, len(uris))
	}
	for _, u := range uris {
		if u.Scheme != "spiffe" {
			return id, fmt.Errorf("%w: URI SAN %q is not a SPIFFE ID", ErrTrustDomain, u.String())
		}
		if u.Host != td {
			return id, fmt.Errorf("%w: %q is not in trust domain %q", ErrTrustDomain, u.String(), td)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.Port() != "" {
			return id, fmt.Errorf("%w: SPIFFE ID %q has parts a SPIFFE ID may not have", ErrBadRequest, u.String())
		}
		kind, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if !ok {
			return id, fmt.Errorf("%w: SPIFFE ID %q: want /node/<name> or /svc/<name>", ErrBadRequest, u.String())
		}
		switch kind {
		case "node":
			if err := ValidateName("node", name); err != nil {
				return id, err
			}
			if id.Node != "" {
				return id, fmt.Errorf("%w: two node IDs (%q and %q)", ErrBadRequest, id.Node, name)
			}
			id.Node = name
		case "svc":
			if err := ValidateName("service", name); err != nil {
				return id, err
			}
			id.Services = append(id.Services, name)
		default:
			return id, fmt.Errorf("%w: SPIFFE ID %q: want /node/<name> or /svc/<name>", ErrBadRequest, u.String())
		}
	}
	if id.Node == "" {
		return id, fmt.Errorf("%w: no node ID (spiffe://%s/node/<name>) among the URI SANs", ErrBadRequest, td)
	}
	n := len(id.Services)
	id.Services = normServices(id.Services)
	if len(id.Services) != n {
		return id, fmt.Errorf("%w: a service ID is repeated", ErrBadRequest)
	}
	return id, nil
}
