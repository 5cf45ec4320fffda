package ca

import (
	"errors"
	"fmt"
	"net/url"
	"slices"

	"github.com/meshwork/meshwork/internal/spiffeid"
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

// maxServices bounds the services one certificate may carry.
const maxServices = 256

// IDs returns the identity's SPIFFE IDs, the node first.
func (id Identity) IDs() []string {
	out := make([]string, 0, 1+len(id.Services))
	out = append(out, spiffeid.Node(id.TrustDomain, id.Node))
	for _, s := range id.Services {
		out = append(out, spiffeid.Service(id.TrustDomain, s))
	}
	return out
}

// URIs returns IDs as parsed URLs, for a CSR or certificate template.
func (id Identity) URIs() []*url.URL {
	out := make([]*url.URL, 0, 1+len(id.Services))
	out = append(out, spiffeid.ID{TrustDomain: id.TrustDomain, Kind: spiffeid.KindNode, Name: id.Node}.URL())
	for _, s := range id.Services {
		out = append(out, spiffeid.ID{TrustDomain: id.TrustDomain, Kind: spiffeid.KindService, Name: s}.URL())
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

// ValidateTrustDomain checks td against the SPIFFE rules (spiffeid's), as
// an ErrBadRequest.
func ValidateTrustDomain(td string) error {
	if err := spiffeid.ValidateTrustDomain(td); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return nil
}

// ValidateName checks a node or service name, which becomes one SPIFFE path
// segment (spiffeid's rule), as an ErrBadRequest. kind names the field in
// the error.
func ValidateName(kind, name string) error {
	if err := spiffeid.ValidateName(kind, name); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
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
		sid, err := spiffeid.FromURL(td, u)
		switch {
		case errors.Is(err, spiffeid.ErrForeign):
			return id, fmt.Errorf("%w: %w", ErrTrustDomain, err)
		case err != nil:
			return id, fmt.Errorf("%w: %w", ErrBadRequest, err)
		case sid.Kind == spiffeid.KindNode:
			if id.Node != "" {
				return id, fmt.Errorf("%w: two node IDs (%q and %q)", ErrBadRequest, id.Node, sid.Name)
			}
			id.Node = sid.Name
		default:
			id.Services = append(id.Services, sid.Name)
		}
	}
	if id.Node == "" {
		return id, fmt.Errorf("%w: no node ID (%s) among the URI SANs", ErrBadRequest, spiffeid.Node(td, "<name>"))
	}
	n := len(id.Services)
	id.Services = normServices(id.Services)
	if len(id.Services) != n {
		return id, fmt.Errorf("%w: a service ID is repeated", ErrBadRequest)
	}
	return id, nil
}
