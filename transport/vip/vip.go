// Package vip gives every mesh service a stable virtual IP on this host, in
// a loopback range such as 127.240.0.0/12. Linux routes all of 127.0.0.0/8
// to the loopback interface, so the agent can listen on these addresses
// without adding them anywhere and without iptables.
//
// An address is derived from the service name by hashing, so it is the
// same on every host and across restarts unless two names collide; the
// loser of a collision probes further along a sequence that is also fixed
// by its name. Once given, an address never moves while its service
// exists. Reads (VIP, ServiceAt) take no lock: DNS answers from them.
package vip

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultPrefix is the default range: 127.240.0.0/12, a million addresses,
// far from 127.0.0.1 and Debian's 127.0.1.1.
var DefaultPrefix = netip.MustParsePrefix("127.240.0.0/12")

// reserved holds 127.0.0.1, 127.0.1.1 and their neighbours, which hosts use.
var reserved = netip.MustParsePrefix("127.0.0.0/16")

// ErrPrefix is returned by New for a range it cannot use.
var ErrPrefix = errors.New("vip: unusable range")

// ErrFull is returned by Sync when the range has no free address left.
var ErrFull = errors.New("vip: range exhausted")

// maxProbes bounds the search for a free address; with a range far larger
// than the service count, a handful of probes always suffice.
const maxProbes = 4096

// tombstoneCap bounds the memory of addresses of departed services.
const tombstoneCap = 4096

// Allocator maps service names to virtual IPs and back.
type Allocator struct {
	prefix netip.Prefix
	base   uint32 // first address of the range
	size   uint32 // addresses in the range

	mu         sync.Mutex // serialises Sync
	tombstones map[string]netip.Addr
	cur        atomic.Pointer[table]
}

// table is one immutable generation of the mapping.
type table struct {
	byName map[string]netip.Addr // lower-cased name -> address
	byAddr map[netip.Addr]string // address -> name as the catalog spells it
}

// New returns an allocator over prefix, which must be IPv4, inside
// 127.0.0.0/8, outside 127.0.0.0/16, and hold at least 256 addresses.
func New(prefix netip.Prefix) (*Allocator, error) {
	if err := CheckPrefix(prefix); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPrefix, err)
	}
	prefix = prefix.Masked()
	a4 := prefix.Addr().As4()
	a := &Allocator{
		prefix:     prefix,
		base:       uint32(a4[0])<<24 | uint32(a4[1])<<16 | uint32(a4[2])<<8 | uint32(a4[3]),
		size:       uint32(1) << (32 - prefix.Bits()),
		tombstones: make(map[string]netip.Addr),
	}
	a.cur.Store(&table{byName: map[string]netip.Addr{}, byAddr: map[netip.Addr]string{}})
	return a, nil
}

// Prefix returns the range.
func (a *Allocator) Prefix() netip.Prefix { return a.prefix }

// VIP returns the virtual IP of service; names are case-insensitive.
func (a *Allocator) VIP(service string) (netip.Addr, bool) {
	ip, ok := a.cur.Load().byName[strings.ToLower(service)]
	return ip, ok
}

// ServiceAt returns the service whose virtual IP is ip.
func (a *Allocator) ServiceAt(ip netip.Addr) (string, bool) {
	name, ok := a.cur.Load().byAddr[ip.Unmap()]
	return name, ok
}

// All returns a copy of the current mapping, by service name.
func (a *Allocator) All() map[string]netip.Addr {
	t := a.cur.Load()
	out := make(map[string]netip.Addr, len(t.byAddr))
	for ip, name := range t.byAddr {
		out[name] = ip
	}
	return out
}

// Candidate returns the probe-th address of name's sequence; probe 0 is
// its home address. Exposed so that operators and tests can predict VIPs.
func (a *Allocator) Candidate(name string, probe int) netip.Addr {
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(name)))
	if probe > 0 {
		fmt.Fprintf(h, "#%d", probe)
	}
	// Skip the first and last address of the range.
	off := 1 + uint32(h.Sum64()%uint64(a.size-2))
	v := a.base + off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Sync makes names the set of services with an address: names already
// mapped keep their address, names gone lose theirs, and new names get one,
// in sorted order so that hosts seeing the same set agree. A departed
// service that comes back gets its old address back if it is still free.
// It returns the names added and removed (lower-cased).
func (a *Allocator) Sync(names []string) (added, removed []string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.cur.Load()

	want := make(map[string]string, len(names)) // lower -> spelling
	for _, n := range names {
		k := strings.ToLower(n)
		if prev, ok := want[k]; !ok || n < prev {
			want[k] = n
		}
	}
	next := &table{
		byName: make(map[string]netip.Addr, len(want)),
		byAddr: make(map[netip.Addr]string, len(want)),
	}
	var fresh []string
	for k, spelling := range want {
		if ip, ok := old.byName[k]; ok {
			next.byName[k] = ip
			next.byAddr[ip] = spelling
			continue
		}
		fresh = append(fresh, k)
	}
	for k, ip := range old.byName {
		if _, ok := want[k]; !ok {
			removed = append(removed, k)
			a.bury(k, ip)
		}
	}
	sort.Strings(fresh)
	sort.Strings(removed)

	// Addresses of departed services are avoided while free ones exist
	// nearby, so that a service that flaps keeps its address.
	buried := make(map[netip.Addr]bool, len(a.tombstones))
	for _, ip := range a.tombstones {
		buried[ip] = true
	}
	for _, k := range fresh {
		ip, ok := a.tombstones[k]
		if ok {
			if _, taken := next.byAddr[ip]; taken {
				ok = false
			}
		}
		if !ok {
			ip, ok = a.probe(k, func(c netip.Addr) bool {
				_, taken := next.byAddr[c]
				return !taken && !buried[c]
			})
		}
		if !ok {
			ip, ok = a.probe(k, func(c netip.Addr) bool {
				_, taken := next.byAddr[c]
				return !taken
			})
		}
		if !ok {
			return nil, nil, fmt.Errorf("%w: no free address for %q in %s after %d probes", ErrFull, want[k], a.prefix, maxProbes)
		}
		delete(a.tombstones, k)
		next.byName[k] = ip
		next.byAddr[ip] = want[k]
		added = append(added, k)
	}
	a.cur.Store(next)
	return added, removed, nil
}

func (a *Allocator) probe(name string, free func(netip.Addr) bool) (netip.Addr, bool) {
	for i := range maxProbes {
		if c := a.Candidate(name, i); free(c) {
			return c, true
		}
	}
	return netip.Addr{}, false
}

// bury remembers ip as the last address of a departed name.
func (a *Allocator) bury(name string, ip netip.Addr) {
	if len(a.tombstones) >= tombstoneCap {
		for k := range a.tombstones { // forget an arbitrary one
			delete(a.tombstones, k)
			break
		}
	}
	a.tombstones[name] = ip
}
