package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/transport/vip"
)

// listenerSet is the VIP and upstream listeners of this host, and the
// state of their reconciliation with the catalog and local services.
type listenerSet struct {
	vips        *vip.Allocator
	reconcileMu sync.Mutex    // serialises reconciliation between the watchers
	reconciled  atomic.Uint64 // index of the last catalog snapshot reconciled
	mu          sync.Mutex
	byBind      map[string]*outListener
}

// outListener is a TCP listener of outbound connections: a VIP port or an
// explicit upstream.
type outListener struct {
	kind    string // "vip" or "upstream"
	bind    string
	service string
	port    int    // destination port; 0 means each instance's main port
	source  string // claimed identity; "" means find it per connection
	destID  string // the destination's SPIFFE ID, for records
	ln      *net.TCPListener
	once    sync.Once
}

func (l *outListener) close() { l.once.Do(func() { l.ln.Close() }) }

func (l *outListener) same(o *outListener) bool {
	return l.kind == o.kind && strings.EqualFold(l.service, o.service) && l.port == o.port && l.source == o.source
}

func (t *Transport) watchCatalog() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.ResyncInterval)
	defer tick.Stop()
	for {
		snap, changed := t.deps.Catalog.Watch()
		t.reconcileCatalog(snap)
		select {
		case <-t.ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

func (t *Transport) watchLocal() {
	defer t.wg.Done()
	for {
		_, changed := t.deps.Local.Local()
		select {
		case <-t.ctx.Done():
			return
		case <-changed:
			t.reconcileLocal()
			t.reconcileCatalog(t.deps.Catalog.Current())
		}
	}
}

// reconcileCatalog follows a new snapshot: VIPs and their listeners, peers
// of nodes that left, balancer state of instances that left.
func (t *Transport) reconcileCatalog(snap *catalog.Snapshot) {
	t.lns.reconcileMu.Lock()
	defer t.lns.reconcileMu.Unlock()
	if t.ctx.Err() != nil {
		return
	}
	defer t.lns.reconciled.Store(snap.Index())
	// Forget the balancer state of instances no longer passing, so that an
	// instance coming back starts afresh and nothing stale lingers.
	passing := map[epKey]bool{}
	for _, name := range snap.ServiceNames() {
		for _, inst := range snap.Passing(name, "") {
			passing[epKey{strings.ToLower(inst.Member.Node), inst.Service.ID}] = true
		}
	}
	t.lb.eps.Retain(func(k epKey) bool { return passing[k] })
	t.lb.skipLogged.Range(func(k, _ any) bool {
		if !passing[k.(epKey)] {
			t.lb.skipLogged.Delete(k)
		}
		return true
	})
	// Nodes that gossip declared failed, or that are gone from the
	// catalog: close their connections now rather than at the QUIC idle
	// timeout. A node that left is draining (Drain): it takes no new
	// streams, but those in flight carry on until it closes the connection
	// itself.
	t.tun.DropPeers(func(node string) bool {
		m, ok := snap.Member(node)
		return ok && (m.Status.Reachable() || m.Status == catalog.StatusLeft)
	})

	want := map[string]*outListener{}
	if !t.cfg.DisableVIPs {
		names := snap.ServiceNames()
		if _, _, err := t.lns.vips.Sync(names); err != nil {
			t.log.Error("virtual IPs not allocated", "err", err)
		}
		localPorts := t.local.Load().allPorts()
		for _, name := range names {
			ip, ok := t.lns.vips.VIP(name)
			if !ok {
				continue
			}
			for _, port := range servicePorts(snap.Instances(name)) {
				if localPorts[port] {
					// A local service may listen on 0.0.0.0:port, and a
					// listener on VIP:port would then fail to bind or,
					// worse, keep it from binding. Documented limitation.
					continue
				}
				bind := netip.AddrPortFrom(ip, uint16(port)).String()
				want[bind] = &outListener{kind: "vip", bind: bind, service: name, port: port,
					destID: spiffeid.Service(t.cfg.TrustDomain, name)}
			}
		}
	}
	t.syncListeners("vip", want)
}

// servicePorts is the union of the ports the instances declare, sorted.
func servicePorts(insts []catalog.Instance) []int {
	set := map[int]bool{}
	for _, in := range insts {
		for _, p := range in.Service.AllPorts() {
			if p > 0 && p < 65536 {
				set[p] = true
			}
		}
	}
	out := make([]int, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// reconcileLocal follows new local definitions: the uid map, the ports
// inbound streams may reach, and the explicit upstream listeners.
func (t *Transport) reconcileLocal() {
	t.lns.reconcileMu.Lock()
	defer t.lns.reconcileMu.Unlock()
	if t.ctx.Err() != nil {
		return
	}
	defs, _ := t.deps.Local.Local()
	t.local.Store(buildLocal(defs, t.log.Warn))
	want := map[string]*outListener{}
	for _, d := range defs {
		for _, u := range d.Upstreams {
			ap, err := netip.ParseAddrPort(u.LocalBind)
			if err != nil {
				t.log.Warn("upstream ignored: local_bind is not ip:port", "service", d.Name, "upstream", u.Service, "local_bind", u.LocalBind)
				continue
			}
			bind := ap.String()
			if prev, dup := want[bind]; dup {
				t.log.Warn("upstream ignored: local_bind already used", "service", d.Name, "upstream", u.Service, "local_bind", bind, "used_by", prev.source)
				continue
			}
			want[bind] = &outListener{kind: "upstream", bind: bind, service: u.Service, port: u.Port, source: spiffeid.Service(t.cfg.TrustDomain, d.Name),
				destID: spiffeid.Service(t.cfg.TrustDomain, u.Service)}
		}
	}
	t.syncListeners("upstream", want)
}

// syncListeners makes the listeners of kind exactly want: it closes the
// others and opens the missing ones. Existing connections are not touched.
// The caller holds reconcileMu, which Drain takes too.
func (t *Transport) syncListeners(kind string, want map[string]*outListener) {
	t.lns.mu.Lock()
	defer t.lns.mu.Unlock()
	for bind, l := range t.lns.byBind {
		if l.kind != kind {
			continue
		}
		if w, ok := want[bind]; ok && w.same(l) {
			continue
		}
		l.close()
		delete(t.lns.byBind, bind)
		t.m.listeners.WithLabelValues(kind).Dec()
		t.log.Debug("listener closed", "kind", kind, "addr", bind, "service", l.service)
	}
	if t.ctx.Err() != nil || t.tun.Draining() {
		return // closing or draining: open nothing new
	}
	for bind, w := range want {
		if _, ok := t.lns.byBind[bind]; ok {
			continue
		}
		ln, err := t.listen(bind)
		if err != nil {
			t.m.listenErrors.WithLabelValues(kind).Inc()
			t.log.Warn("listener failed to bind; will retry", "kind", kind, "addr", bind, "service", w.service, "err", err)
			continue
		}
		w.ln = ln
		t.lns.byBind[bind] = w
		t.m.listeners.WithLabelValues(kind).Inc()
		t.log.Debug("listener open", "kind", kind, "addr", bind, "service", w.service)
		t.wg.Add(1)
		go t.serveListener(w)
	}
}

// listen opens one outbound listener, through Deps.Listen when set.
func (t *Transport) listen(bind string) (*net.TCPListener, error) {
	if t.deps.Listen == nil {
		ln, err := net.Listen("tcp", bind)
		if err != nil {
			return nil, err
		}
		return ln.(*net.TCPListener), nil
	}
	ln, err := t.deps.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("transport: Deps.Listen returned %T for %s, not a *net.TCPListener", ln, bind)
	}
	return tl, nil
}

func (t *Transport) serveListener(l *outListener) {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || t.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("accept failed", "addr", l.bind, "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		t.wg.Add(1)
		go t.handleOutbound(c, l)
	}
}

// closeListeners closes every VIP and upstream listener. Connections
// already accepted are not touched.
func (t *Transport) closeListeners() {
	t.lns.mu.Lock()
	defer t.lns.mu.Unlock()
	for bind, l := range t.lns.byBind {
		l.close()
		delete(t.lns.byBind, bind)
		t.m.listeners.WithLabelValues(l.kind).Dec()
	}
}

// ListenerInfo describes one open outbound listener.
type ListenerInfo struct {
	// Kind is "vip" or "upstream".
	Kind string `json:"kind"`
	// Addr is the ip:port listened on.
	Addr string `json:"addr"`
	// Service is the destination service.
	Service string `json:"service"`
	// Port is the destination port; 0 means each instance's main port.
	Port int `json:"port"`
	// Source is the fixed identity of an upstream; "" for VIPs, whose
	// callers are identified per connection.
	Source string `json:"source,omitempty"`
}

// Listeners lists the open outbound listeners, sorted by address.
func (t *Transport) Listeners() []ListenerInfo {
	t.lns.mu.Lock()
	out := make([]ListenerInfo, 0, len(t.lns.byBind))
	for _, l := range t.lns.byBind {
		out = append(out, ListenerInfo{Kind: l.kind, Addr: l.bind, Service: l.service, Port: l.port, Source: l.source})
	}
	t.lns.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}
