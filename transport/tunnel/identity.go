package tunnel

import (
	"crypto/tls"
	"fmt"
	"net/netip"

	"github.com/meshwork/meshwork/internal/spiffeid"
)

// Identity supplies this agent's certificate and judges peers'. The agent's
// certificate manager (ca/) implements it. Its methods are called
// concurrently from TLS handshakes and must not block on the network:
// GetCertificate and GetClientCertificate return the current leaf (they are
// asked on every handshake, so a renewed leaf is used from the next one on,
// while established connections and their streams carry on), and
// VerifyPeer checks a peer's chain against the current trust bundle (so
// that rotated roots apply at once).
type Identity interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// VerifyPeer returns the peer's SPIFFE IDs in the mesh trust domain, or
	// an error when the chain does not verify.
	VerifyPeer(rawCerts [][]byte) (spiffeIDs []string, err error)
}

// Source is the verified identity of a caller, as the receiving agent
// hands it to the Authorizer.
type Source struct {
	// ID is the SPIFFE ID claimed and proven by the certificate.
	ID string
	// Service is the calling service for a service identity, else "".
	Service string
	// Node is the calling node: the node identity claimed, or for a service
	// identity the node that the same certificate names, so that an
	// Authorizer can check the node may hold the service's identity. ""
	// when the certificate names no node.
	Node string
}

// Authorizer decides whether a caller may reach a destination service.
// policy.Set's Intentions implement it through a small adapter. It is
// called on every inbound stream, concurrently, and must not block: read
// an in-memory copy of the policy.
type Authorizer interface {
	// Allowed returns the verdict and a short reason for logs and refusals.
	Allowed(src Source, dst string) (allowed bool, reason string)
}

// StreamAuthorizer is an Authorizer that tells a stream carrying one
// request (decided again per request by the receiving handler) from a
// per-connection stream. Admit uses AllowedStream when the Authorizer
// has it.
type StreamAuthorizer interface {
	Authorizer
	AllowedStream(src Source, dst string, perRequest bool) (allowed bool, reason string)
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(src Source, dst string) (bool, string)

// Allowed calls f.
func (f AuthorizerFunc) Allowed(src Source, dst string) (bool, string) { return f(src, dst) }

// ParseID splits a SPIFFE ID of trustDomain into a Source. It fails for
// another trust domain, a path other than /node/<n> or /svc/<s>, or an
// invalid name.
func ParseID(trustDomain, id string) (Source, error) {
	sid, err := spiffeid.Parse(trustDomain, id)
	if err != nil {
		return Source{}, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	if sid.Kind == spiffeid.KindService {
		return Source{ID: id, Service: sid.Name}, nil
	}
	return Source{ID: id, Node: sid.Name}, nil
}

// Service is a local service that inbound streams may reach.
type Service struct {
	// Name is the service's name as defined on this node.
	Name string
	// Ports maps each declared port to the address to dial it at.
	Ports map[int]netip.Addr
}
