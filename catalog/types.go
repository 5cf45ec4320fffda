// Package catalog holds the types of the service catalog and its immutable
// snapshot. It is a leaf package: every component that answers questions about
// nodes and services (DNS, the data plane, the HTTP API) reads a *Snapshot, and
// only the gossip layer writes new ones through a Store.
package catalog

import (
	"fmt"
	"net/netip"
	"strings"
)

// Health is the status of a check or, aggregated, of a service instance.
type Health string

// Health values, from best to worst. The aggregate of several checks is the
// worst of them.
const (
	Passing  Health = "passing"
	Warning  Health = "warning"
	Critical Health = "critical"
)

// Valid reports whether h is one of the known health values.
func (h Health) Valid() bool {
	return h == Passing || h == Warning || h == Critical
}

// Worse returns the worse of h and o. An unknown value counts as critical.
func (h Health) Worse(o Health) Health {
	if h.rank() >= o.rank() {
		return h
	}
	return o
}

func (h Health) rank() int {
	switch h {
	case Passing:
		return 0
	case Warning:
		return 1
	default:
		return 2
	}
}

// MemberStatus is what gossip says about a node.
type MemberStatus string

// Member statuses. Suspect nodes still serve traffic: suspicion is often a
// slow node, and Lifeguard lets it refute. Failed and left nodes do not.
const (
	StatusAlive   MemberStatus = "alive"
	StatusSuspect MemberStatus = "suspect"
	StatusFailed  MemberStatus = "failed"
	StatusLeft    MemberStatus = "left"
)

// Reachable reports whether instances on a node with this status may be used.
func (s MemberStatus) Reachable() bool {
	return s == StatusAlive || s == StatusSuspect
}

// Port is an extra named port of a service, beside its main Port.
type Port struct {
	Name string `json:"name" msgpack:"n"`
	Port int    `json:"port" msgpack:"p"`
}

// Service is one service instance as its owning node publishes it.
type Service struct {
	// ID is unique on its node. It defaults to Name.
	ID string `json:"id" msgpack:"i"`
	// Name is the service name used in DNS and policy.
	Name string `json:"name" msgpack:"n"`
	// Address overrides the node address when set.
	Address string `json:"address,omitempty" msgpack:"a,omitempty"`
	// Port is the main port. 0 means the service declares no port.
	Port int `json:"port" msgpack:"p"`
	// Ports are extra named ports.
	Ports []Port            `json:"ports,omitempty" msgpack:"ps,omitempty"`
	Tags  []string          `json:"tags,omitempty" msgpack:"t,omitempty"`
	Meta  map[string]string `json:"meta,omitempty" msgpack:"m,omitempty"`
	// Health is the aggregate of the instance's checks, as its owner saw it.
	Health Health `json:"health" msgpack:"h"`
}

// AllPorts returns the main port (when set) followed by the named ports.
func (s *Service) AllPorts() []int {
	out := make([]int, 0, 1+len(s.Ports))
	if s.Port != 0 {
		out = append(out, s.Port)
	}
	for _, p := range s.Ports {
		out = append(out, p.Port)
	}
	return out
}

// HasPort reports whether the service declares port p.
func (s *Service) HasPort(p int) bool {
	if p == 0 {
		return false
	}
	if s.Port == p {
		return true
	}
	for _, np := range s.Ports {
		if np.Port == p {
			return true
		}
	}
	return false
}

// HasTag reports whether the service carries tag, compared case-insensitively
// as DNS names are.
func (s *Service) HasTag(tag string) bool {
	for _, t := range s.Tags {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

// Record is the unit of gossip: everything one node publishes about itself.
// Only its owner changes it, and a higher Version always wins.
type Record struct {
	Node string `json:"node" msgpack:"n"`
	// Version increases with every change the owner makes. Owners seed it from
	// the wall clock so that it keeps increasing across restarts.
	Version uint64 `json:"version" msgpack:"v"`
	// Addr is the address other agents use to reach this node.
	Addr string `json:"addr" msgpack:"a"`
	// TunnelPort is the UDP port of the node's QUIC listener; 0 when none.
	TunnelPort int `json:"tunnel_port,omitempty" msgpack:"tp,omitempty"`
	// Server is true for server agents (Raft voters and candidates).
	Server bool `json:"server,omitempty" msgpack:"s,omitempty"`
	// Meta carries small node attributes such as the Raft port.
	Meta     map[string]string `json:"meta,omitempty" msgpack:"m,omitempty"`
	Services []Service         `json:"services,omitempty" msgpack:"sv,omitempty"`
}

// Validate checks a record received from the network, so that one bad peer
// cannot put garbage in every catalog.
func (r *Record) Validate() error {
	if r.Node == "" {
		return fmt.Errorf("catalog: record: node name is empty")
	}
	if _, err := netip.ParseAddr(r.Addr); err != nil {
		return fmt.Errorf("catalog: record %q: addr %q: %w", r.Node, r.Addr, err)
	}
	if r.TunnelPort < 0 || r.TunnelPort > 65535 {
		return fmt.Errorf("catalog: record %q: tunnel_port %d out of range", r.Node, r.TunnelPort)
	}
	ids := make(map[string]bool, len(r.Services))
	for i := range r.Services {
		s := &r.Services[i]
		if s.Name == "" || s.ID == "" {
			return fmt.Errorf("catalog: record %q: service %d: name and id are required", r.Node, i)
		}
		if ids[s.ID] {
			return fmt.Errorf("catalog: record %q: service id %q is duplicated", r.Node, s.ID)
		}
		ids[s.ID] = true
		for _, p := range s.AllPorts() {
			if p < 0 || p > 65535 {
				return fmt.Errorf("catalog: record %q: service %q: port %d out of range", r.Node, s.ID, p)
			}
		}
		if s.Address != "" {
			if _, err := netip.ParseAddr(s.Address); err != nil {
				return fmt.Errorf("catalog: record %q: service %q: address %q: %w", r.Node, s.ID, s.Address, err)
			}
		}
		if !s.Health.Valid() {
			return fmt.Errorf("catalog: record %q: service %q: health %q is unknown", r.Node, s.ID, s.Health)
		}
	}
	return nil
}

// Member is a node as gossip currently sees it, joined with its record.
type Member struct {
	Record
	Status MemberStatus `json:"status"`
	// IP is Addr parsed; the zero Addr when the record has none yet.
	IP netip.Addr `json:"-"`
}
