package raftstore

import (
	"net"
	"sort"
	"strconv"
	"sync"

	"github.com/meshwork/meshwork/catalog"
)

// ServerInfo is a server agent as gossip sees it.
type ServerInfo struct {
	// ID is the node name, which is also its Raft server ID.
	ID string `json:"id"`
	// Addr is "ip:port" of its server port (Raft and RPC).
	Addr string `json:"addr"`
	// Status is what gossip says about the node.
	Status catalog.MemberStatus `json:"status"`
	// Expect is the bootstrap_expect the server runs with; 0 if none.
	Expect int `json:"bootstrap_expect,omitempty"`
}

// Discovery tells which server agents exist. Watch returns the current list
// (in any order; the caller must not modify it) and a channel closed when it
// may have changed. Watch must not block and is called from several
// goroutines at once.
type Discovery interface {
	Watch() ([]ServerInfo, <-chan struct{})
}

// MemberMeta returns the gossip meta a server agent publishes so that
// CatalogDiscovery finds it: its server port and bootstrap_expect. Client
// agents publish nothing. The agent sets catalog.Record.Server too.
func MemberMeta(cfg Config) map[string]string {
	if !cfg.Server {
		return nil
	}
	cfg = cfg.withDefaults()
	m := map[string]string{}
	if _, port, err := net.SplitHostPort(cfg.AdvertiseAddr); err == nil {
		m[MetaRaftPort] = port
	}
	if cfg.BootstrapExpect > 0 {
		m[MetaBootstrapExpect] = strconv.Itoa(cfg.BootstrapExpect)
	}
	return m
}

// CatalogDiscovery finds servers in the gossip catalog: members with the
// Server flag and a raft_port in their meta.
func CatalogDiscovery(st *catalog.Store) Discovery { return catalogDiscovery{st} }

type catalogDiscovery struct{ st *catalog.Store }

func (c catalogDiscovery) Watch() ([]ServerInfo, <-chan struct{}) {
	snap, ch := c.st.Watch()
	return ServersFromSnapshot(snap), ch
}

// ServersFromSnapshot lists the servers of a catalog snapshot, sorted by ID.
func ServersFromSnapshot(snap *catalog.Snapshot) []ServerInfo {
	var out []ServerInfo
	for _, m := range snap.Members() {
		if !m.Server {
			continue
		}
		port := m.Meta[MetaRaftPort]
		if port == "" || m.Addr == "" {
			continue
		}
		exp, _ := strconv.Atoi(m.Meta[MetaBootstrapExpect])
		out = append(out, ServerInfo{ID: m.Node, Addr: net.JoinHostPort(m.Addr, port), Status: m.Status, Expect: exp})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// StaticDiscovery is a Discovery whose list is set by hand: tests, and
// agents started with a fixed list of servers.
type StaticDiscovery struct {
	mu      sync.Mutex
	servers []ServerInfo
	changed chan struct{}
}

// NewStaticDiscovery returns a StaticDiscovery holding servers.
func NewStaticDiscovery(servers ...ServerInfo) *StaticDiscovery {
	return &StaticDiscovery{servers: servers, changed: make(chan struct{})}
}

// Watch implements Discovery.
func (d *StaticDiscovery) Watch() ([]ServerInfo, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.servers, d.changed
}

// Set replaces the list and wakes the watchers.
func (d *StaticDiscovery) Set(servers []ServerInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.servers = append([]ServerInfo(nil), servers...)
	close(d.changed)
	d.changed = make(chan struct{})
}

// Update changes the server called id with f (adding it when f is given a
// zero ServerInfo with ID set), and wakes the watchers.
func (d *StaticDiscovery) Update(id string, f func(*ServerInfo)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	list := append([]ServerInfo(nil), d.servers...)
	found := false
	for i := range list {
		if list[i].ID == id {
			f(&list[i])
			found = true
		}
	}
	if !found {
		si := ServerInfo{ID: id}
		f(&si)
		list = append(list, si)
	}
	d.servers = list
	close(d.changed)
	d.changed = make(chan struct{})
}

// alive returns the servers gossip says are alive (or suspect).
func alive(list []ServerInfo) []ServerInfo {
	var out []ServerInfo
	for _, s := range list {
		if s.Status.Reachable() {
			out = append(out, s)
		}
	}
	return out
}
