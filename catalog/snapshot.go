package catalog

import (
	"net/netip"
	"sort"
	"strings"
	"time"
)

// Instance is one service instance joined with the node that hosts it.
type Instance struct {
	Member  *Member
	Service *Service
	// IP is the service address when set, else the node address.
	IP netip.Addr
	// Passing is true when the service is passing and its node is reachable.
	Passing bool
}

// Snapshot is an immutable view of the whole catalog at one index. Readers
// share it without locks; nothing reachable from it may be modified.
// Name and tag lookups are case-insensitive, as DNS names are.
type Snapshot struct {
	index uint64
	// restoredAt is when the members restored from disk that this
	// snapshot holds were saved; zero when it is gossip's view alone.
	restoredAt time.Time
	members    []*Member
	byNode     map[string]*Member
	byIP       map[netip.Addr][]string
	services   map[string]*serviceEntry
	names      []string
}

type serviceEntry struct {
	name    string
	all     []Instance
	passing []Instance
	byTag   map[string][]Instance // passing instances, by lower-cased tag
}

// NewSnapshot builds a snapshot at index from members. It takes ownership of
// members: the caller must not modify them afterwards.
func NewSnapshot(index uint64, members []Member) *Snapshot {
	s := &Snapshot{
		index:    index,
		members:  make([]*Member, 0, len(members)),
		byNode:   make(map[string]*Member, len(members)),
		byIP:     make(map[netip.Addr][]string),
		services: make(map[string]*serviceEntry),
	}
	for i := range members {
		m := &members[i]
		if ip, err := netip.ParseAddr(m.Addr); err == nil {
			m.IP = ip
		}
		s.members = append(s.members, m)
		s.byNode[strings.ToLower(m.Node)] = m
	}
	sort.Slice(s.members, func(i, j int) bool { return s.members[i].Node < s.members[j].Node })

	for _, m := range s.members {
		if m.IP.IsValid() {
			s.byIP[m.IP] = appendUnique(s.byIP[m.IP], m.Node+".node")
		}
		for i := range m.Services {
			svc := &m.Services[i]
			ip := m.IP
			if a, err := netip.ParseAddr(svc.Address); err == nil {
				ip = a
				s.byIP[ip] = appendUnique(s.byIP[ip], svc.Name+".service")
			}
			key := strings.ToLower(svc.Name)
			e := s.services[key]
			if e == nil {
				e = &serviceEntry{name: svc.Name, byTag: map[string][]Instance{}}
				s.services[key] = e
				s.names = append(s.names, svc.Name)
			}
			inst := Instance{
				Member:  m,
				Service: svc,
				IP:      ip,
				Passing: svc.Health == Passing && m.Status.Reachable(),
			}
			e.all = append(e.all, inst)
			if inst.Passing {
				e.passing = append(e.passing, inst)
				for _, t := range svc.Tags {
					tk := strings.ToLower(t)
					e.byTag[tk] = append(e.byTag[tk], inst)
				}
			}
		}
	}
	sort.Strings(s.names)
	return s
}

func appendUnique(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

// Index is the catalog index of this snapshot. It grows with every change.
func (s *Snapshot) Index() uint64 { return s.index }

// RestoredAt is when the catalog restored from disk, which this snapshot
// still includes, was saved: the zero time when the snapshot is the
// publisher's own view alone (see Store.Restore).
func (s *Snapshot) RestoredAt() time.Time { return s.restoredAt }

// Members returns every known node, sorted by name. The slice is shared.
func (s *Snapshot) Members() []*Member { return s.members }

// Member returns the node called name.
func (s *Snapshot) Member(name string) (*Member, bool) {
	m, ok := s.byNode[strings.ToLower(name)]
	return m, ok
}

// ServiceNames returns the names of every registered service, sorted.
func (s *Snapshot) ServiceNames() []string { return s.names }

// HasService reports whether any node registers a service called name,
// healthy or not. DNS uses it to tell NODATA from NXDOMAIN.
func (s *Snapshot) HasService(name string) bool {
	_, ok := s.services[strings.ToLower(name)]
	return ok
}

// Instances returns every instance of a service, healthy or not. The slice is
// shared and must not be modified.
func (s *Snapshot) Instances(name string) []Instance {
	if e := s.services[strings.ToLower(name)]; e != nil {
		return e.all
	}
	return nil
}

// Passing returns the passing instances of a service, only those carrying tag
// when tag is not empty. The slice is shared and must not be modified.
func (s *Snapshot) Passing(name, tag string) []Instance {
	e := s.services[strings.ToLower(name)]
	if e == nil {
		return nil
	}
	if tag == "" {
		return e.passing
	}
	return e.byTag[strings.ToLower(tag)]
}

// NamesAt returns the names bound to ip, relative to the domain:
// "<node>.node" for node addresses and "<service>.service" for service
// addresses. DNS uses it for PTR answers.
func (s *Snapshot) NamesAt(ip netip.Addr) []string { return s.byIP[ip.Unmap()] }
