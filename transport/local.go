package transport

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshwork/meshwork/transport/tunnel"
)

// localState indexes the local service definitions for the hot path.
type localState struct {
	services map[string]*tunnel.Service // lower-cased name
	byUID    map[uint32]string          // uid -> service name, unambiguous ones only
	defs     []LocalService
}

// service returns the local service called name, merging its instances
// on this node: what inbound streams may reach (tunnel.Deps.Services).
func (ls *localState) service(name string) (*tunnel.Service, bool) {
	svc, ok := ls.services[strings.ToLower(name)]
	return svc, ok
}

func buildLocal(defs []LocalService, warn func(msg string, args ...any)) *localState {
	ls := &localState{services: map[string]*tunnel.Service{}, byUID: map[uint32]string{}, defs: defs}
	uidOwners := map[uint32]map[string]bool{}
	for _, d := range defs {
		if d.Name == "" {
			continue
		}
		key := strings.ToLower(d.Name)
		li := ls.services[key]
		if li == nil {
			li = &tunnel.Service{Name: d.Name, Ports: map[int]netip.Addr{}}
			ls.services[key] = li
		}
		for _, p := range d.Ports {
			if p > 0 && p < 65536 {
				li.Ports[p] = addrOrLoopback(d.Address)
			}
		}
		if d.User != "" {
			uid, err := LookupUID(d.User)
			if err != nil {
				warn("service user unknown; its callers get the node identity", "service", d.Name, "user", d.User, "err", err)
				continue
			}
			if uidOwners[uid] == nil {
				uidOwners[uid] = map[string]bool{}
			}
			uidOwners[uid][d.Name] = true
		}
	}
	for uid, owners := range uidOwners {
		if len(owners) == 1 {
			for name := range owners {
				ls.byUID[uid] = name
			}
			continue
		}
		// Two services under one uid cannot be told apart: their VIP
		// callers get the node identity, which is never more privileged
		// than guessing wrong.
		names := make([]string, 0, len(owners))
		for n := range owners {
			names = append(names, n)
		}
		warn("services share a unix user; their VIP callers get the node identity", "uid", strconv.Itoa(int(uid)), "services", strings.Join(names, ","))
	}
	return ls
}

// allPorts is the set of ports the local services declare.
func (ls *localState) allPorts() map[int]bool {
	out := map[int]bool{}
	for _, li := range ls.services {
		for p := range li.Ports {
			out[p] = true
		}
	}
	return out
}
