package local

import (
	"errors"
	"fmt"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
)

// Errors of the data-plane lookups.
var (
	// ErrNoService: no local service runs as that user.
	ErrNoService = errors.New("no local service runs as this user")
	// ErrAmbiguous: services of different names run as that user, so the
	// caller's identity cannot be told from its uid.
	ErrAmbiguous = errors.New("several local services run as this user")
)

// DataPlane is what the tunnel and proxy code needs from the local state:
// where to dial a local instance for inbound traffic, and which service a
// local caller is, from the uid sock_diag reports. Both are safe for
// concurrent use, take no lock on the hot path, and never block, except
// that ServiceByUID may read the user database for a name it has not
// resolved in the last minute.
type DataPlane interface {
	// LocalInstances returns the local instances of service (name compared
	// case-insensitively) that declare port, passing ones first.
	LocalInstances(service string, port int) []Instance
	// ServiceByUID returns the name of the local service that runs as uid,
	// or ErrNoService, or ErrAmbiguous.
	ServiceByUID(uid uint32) (string, error)
}

var _ DataPlane = (*Manager)(nil)

// Instance is a local service instance as the data plane dials it.
type Instance struct {
	ServiceID string
	Service   string
	// Addr is the service address (127.0.0.1 when it declares none) and the
	// requested port.
	Addr   netip.AddrPort
	Health catalog.Health
}

// view is an immutable index of the local services for the data plane,
// rebuilt on every publication.
type view struct {
	byName map[string][]viewService // by lower-cased name
	users  []viewUser
}

type viewService struct {
	id, name string
	addr     netip.Addr
	ports    []int
	health   catalog.Health
}

type viewUser struct {
	user    string // as written: a name or a numeric uid
	service string
}

var loopback = netip.MustParseAddr("127.0.0.1")

func (m *Manager) buildViewLocked() *view {
	v := &view{byName: map[string][]viewService{}}
	for _, s := range m.services {
		vs := viewService{id: s.def.ID, name: s.def.Name, addr: loopback, health: m.healthLocked(s)}
		if a, err := netip.ParseAddr(s.def.Address); err == nil {
			vs.addr = a
		}
		if s.def.Port != 0 {
			vs.ports = append(vs.ports, s.def.Port)
		}
		for _, p := range s.def.Ports {
			vs.ports = append(vs.ports, p.Port)
		}
		key := strings.ToLower(s.def.Name)
		v.byName[key] = append(v.byName[key], vs)
		if s.def.User != "" {
			v.users = append(v.users, viewUser{user: s.def.User, service: s.def.Name})
		}
	}
	return v
}

// LocalInstances implements DataPlane.
func (m *Manager) LocalInstances(service string, port int) []Instance {
	var passing, other []Instance
	for _, vs := range m.view.Load().byName[strings.ToLower(service)] {
		for _, p := range vs.ports {
			if p != port {
				continue
			}
			inst := Instance{ServiceID: vs.id, Service: vs.name, Addr: netip.AddrPortFrom(vs.addr, uint16(port)), Health: vs.health}
			if vs.health == catalog.Passing {
				passing = append(passing, inst)
			} else {
				other = append(other, inst)
			}
			break
		}
	}
	return append(passing, other...)
}

// ServiceByUID implements DataPlane.
func (m *Manager) ServiceByUID(uid uint32) (string, error) {
	return m.serviceBy(func(u string) bool {
		if n, err := strconv.ParseUint(u, 10, 32); err == nil {
			return uint32(n) == uid
		}
		got, ok := m.users.lookup(u)
		return ok && got == uid
	}, fmt.Sprintf("uid %d", uid))
}

// ServiceByUser returns the name of the local service that runs as the
// named user (or as its uid), or ErrNoService, or ErrAmbiguous.
func (m *Manager) ServiceByUser(name string) (string, error) {
	uid, known := m.users.lookup(name)
	return m.serviceBy(func(u string) bool {
		if u == name {
			return true
		}
		if !known {
			return false
		}
		if n, err := strconv.ParseUint(u, 10, 32); err == nil {
			return uint32(n) == uid
		}
		got, ok := m.users.lookup(u)
		return ok && got == uid
	}, fmt.Sprintf("user %q", name))
}

func (m *Manager) serviceBy(match func(user string) bool, who string) (string, error) {
	found := ""
	for _, vu := range m.view.Load().users {
		if !match(vu.user) {
			continue
		}
		if found != "" && !strings.EqualFold(found, vu.service) {
			return "", fmt.Errorf("local: %s: %w (%s and %s)", who, ErrAmbiguous, found, vu.service)
		}
		found = vu.service
	}
	if found == "" {
		return "", fmt.Errorf("local: %s: %w", who, ErrNoService)
	}
	return found, nil
}

// userCache remembers user-name lookups for a minute, failures for ten
// seconds, so that the data plane does not read /etc/passwd per connection.
type userCache struct {
	lookupFn func(string) (uint32, error)
	clock    clock.Clock

	mu      sync.Mutex
	entries map[string]userEntry
}

type userEntry struct {
	uid     uint32
	ok      bool
	expires time.Time
}

func newUserCache(fn func(string) (uint32, error), clk clock.Clock) *userCache {
	return &userCache{lookupFn: fn, clock: clk, entries: map[string]userEntry{}}
}

func (c *userCache) lookup(name string) (uint32, bool) {
	now := c.clock.Now()
	c.mu.Lock()
	e, hit := c.entries[name]
	c.mu.Unlock()
	if hit && now.Before(e.expires) {
		return e.uid, e.ok
	}
	uid, err := c.lookupFn(name)
	e = userEntry{uid: uid, ok: err == nil, expires: now.Add(time.Minute)}
	if err != nil {
		e.expires = now.Add(10 * time.Second)
	}
	c.mu.Lock()
	c.entries[name] = e
	c.mu.Unlock()
	return e.uid, e.ok
}

// reset forgets every lookup; called when the services change, since a new
// definition may name a user created since.
func (c *userCache) reset() {
	c.mu.Lock()
	clear(c.entries)
	c.mu.Unlock()
}

func lookupUser(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	return uint32(n), nil
}
