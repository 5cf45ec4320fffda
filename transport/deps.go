package transport

import (
	"fmt"
	"net"
	"net/netip"
	"os/user"
	"strconv"
	"sync"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// Identity supplies this agent's certificate and judges peers'; see
// tunnel.Identity for its contract.
type Identity = tunnel.Identity

// Catalog is the catalog as gossip publishes it; *catalog.Store implements
// it. Both methods are lock-free or nearly so and never block.
type Catalog interface {
	// Current returns the latest snapshot; never nil.
	Current() *catalog.Snapshot
	// Watch returns the latest snapshot and a channel closed when a newer
	// one is published.
	Watch() (*catalog.Snapshot, <-chan struct{})
}

// Source is the verified identity of a caller; see tunnel.Source.
type Source = tunnel.Source

// Authorizer decides whether a caller may reach a destination service; see
// tunnel.Authorizer for its contract.
type Authorizer = tunnel.Authorizer

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc = tunnel.AuthorizerFunc

// IdentityPolicy says which nodes may hold a service's identity: the
// ServiceIdentity policy documents and the ServiceIdentityDefaults mode
// (policy.Set.MayHold through a small adapter). A calling agent asks it
// before it sends a connection for a service to an instance, so that a node
// the policy does not list gets none of the service's traffic, whatever its
// certificate names. It is called on every connect attempt, concurrently,
// and must not block: read an in-memory copy of the policy.
type IdentityPolicy interface {
	// MayHold returns the verdict and a short reason for logs.
	MayHold(node, service string) (allowed bool, reason string)
}

// SplitTarget is one weighted subset of a traffic split.
type SplitTarget struct {
	// Service is the service the subset belongs to; "" means the split
	// service itself.
	Service string
	// Tags select instances carrying every one of them; none means any.
	Tags []string
	// Meta selects instances whose meta has every key with that value.
	Meta map[string]string
	// Weight is relative to the other targets; 0 sends nothing.
	Weight uint32
}

// SplitSource returns the traffic split of a service, read per connection.
// It is called concurrently and must not block. nil Splits means no split.
type SplitSource interface {
	// SplitFor returns the targets of service's split, or nil for none.
	SplitFor(service string) []SplitTarget
}

// RouteSource gives the traffic split of one request of a per-request
// service: the first of the service's Route rules that matches req picks
// its Split; with none, the service's default split. It is called per
// request, concurrently, and must not block.
type RouteSource interface {
	// RouteFor returns the name of the Route rule that matched (the name
	// of the Split it sends to; "" for the default split), which labels
	// the request's metrics, and the targets of the split req goes to; nil
	// sends it to every instance of service.
	RouteFor(service string, req policy.Request) (route string, targets []SplitTarget)
}

// RouteOptionSource is implemented by a RouteSource that also gives the
// retry options of the Route rule a request matches (policy.RouteRule's
// retry_non_idempotent and hedge). It is called per request,
// concurrently, and must not block. A RouteSource without it marks no
// request.
type RouteOptionSource interface {
	RouteOptionsFor(service string, req policy.Request) policy.RouteOptions
}

// Upstream is an explicit upstream of a local service: a listener on this
// host whose connections go to Service with the identity of the service
// that declares it.
type Upstream struct {
	// Service is the destination service.
	Service string
	// LocalBind is the "ip:port" the agent listens on.
	LocalBind string
	// Port is the destination port; 0 means each instance's main port.
	Port int
}

// LocalService is one service instance defined on this node.
type LocalService struct {
	// Name is the service name.
	Name string
	// Address is where the instance listens; "" means 127.0.0.1.
	Address string
	// Ports are the ports the instance declares; inbound streams may reach
	// these and no others.
	Ports []int
	// User is the unix user (name or numeric uid) the service runs as; ""
	// means unknown. Callers connecting to a VIP from that uid get the
	// service's identity.
	User string
	// Upstreams are the service's explicit upstreams.
	Upstreams []Upstream
}

// LocalServices reports the services defined on this node. Local returns
// the current definitions (callers must not modify them) and a channel
// closed when they change. It must not block.
type LocalServices interface {
	Local() ([]LocalService, <-chan struct{})
}

// StaticLocal is a LocalServices whose definitions are set by hand: the
// agent's registration code pushes its definitions with Set. Safe for
// concurrent use.
type StaticLocal struct {
	mu      sync.Mutex
	svcs    []LocalService
	changed chan struct{}
}

// NewStaticLocal returns definitions holding svcs.
func NewStaticLocal(svcs ...LocalService) *StaticLocal {
	return &StaticLocal{svcs: svcs, changed: make(chan struct{})}
}

// Local implements LocalServices.
func (s *StaticLocal) Local() ([]LocalService, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svcs, s.changed
}

// Set replaces the definitions and wakes the watchers.
func (s *StaticLocal) Set(svcs []LocalService) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svcs = svcs
	close(s.changed)
	s.changed = make(chan struct{})
}

// ParseID splits a SPIFFE ID of trustDomain into a Source; see
// tunnel.ParseID.
func ParseID(trustDomain, id string) (Source, error) { return tunnel.ParseID(trustDomain, id) }

// LookupUID resolves a user name or numeric uid.
func LookupUID(u string) (uint32, error) {
	if n, err := strconv.ParseUint(u, 10, 32); err == nil {
		return uint32(n), nil
	}
	usr, err := user.Lookup(u)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(usr.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q: uid %q: %w", u, usr.Uid, err)
	}
	return uint32(n), nil
}

// PeerUIDFunc returns the uid owning the caller's end of a TCP connection
// accepted on a loopback address. The default uses sock_diag.
type PeerUIDFunc func(c net.Conn) (uint32, error)

// addrOrLoopback returns the address to dial a local instance at.
func addrOrLoopback(a string) netip.Addr {
	if ip, err := netip.ParseAddr(a); err == nil && !ip.IsUnspecified() {
		return ip.Unmap()
	}
	return netip.MustParseAddr("127.0.0.1")
}
